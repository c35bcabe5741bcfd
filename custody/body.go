package custody

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/cachet-custody/cachet/internal/strictjson"
)

// maxBodyDepth bounds the nesting of the small bodies decodeBody reads.
const maxBodyDepth = 8

// DecodeBody decodes a request body into v strictly: one JSON object, no
// repeated key (a relay could otherwise add a second value the client never
// sent), no unknown field, and a type error names its field. An empty body
// is an empty object.
func DecodeBody(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if err := checkBody(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return errorf(Invalid, "%s: expected %s, not a JSON %s.", te.Field, te.Type, te.Value)
		}
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			name = strings.Trim(name, `"`)
			if len(name) > strictjson.MaxKeyChars {
				return errorf(Invalid, "The body has an unknown field with a %d-character name.", len(name))
			}
			return errorf(Invalid, "%s: unknown field.", name)
		}
		return errorf(Invalid, "The body is not valid JSON for this request.")
	}
	return nil
}

// required refuses an empty required string field.
func required(name, v string) error {
	if v == "" {
		return errorf(Invalid, "%s: required.", name)
	}
	return nil
}

// checkBody refuses a body that is not one JSON object, nests too deep or
// repeats a key.
func checkBody(body []byte) error {
	if err := (*strictjson.Options)(nil).Check(body, maxBodyDepth); err != nil {
		var se *strictjson.Error
		if errors.As(err, &se) {
			return errorf(Invalid, "%s", se.Error())
		}
		return errorf(Invalid, "The body is not a JSON object.")
	}
	return nil
}
