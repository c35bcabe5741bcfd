package custody

import (
	"bytes"
	"errors"

	"github.com/cachet-custody/cachet/internal/strictjson"
)

// maxBodyDepth bounds the nesting of the small bodies decodeBody reads.
const maxBodyDepth = 8

// DecodeBody decodes a request body into v strictly: one JSON object, no
// repeated key (a relay could otherwise add a second value the client never
// sent), no unknown field, every name matched exactly (never by case or
// Unicode folding), valid UTF-8, and a type error names its field. An empty
// body is an empty object.
func DecodeBody(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if err := checkBody(body); err != nil {
		return err
	}
	return decodeAt(body, "", v)
}

// decodeAt decodes raw, a value already checked as part of its body, found
// at path, into v with DecodeBody's rules.
func decodeAt(raw []byte, path string, v any) error {
	if err := strictjson.Decode(raw, path, v); err != nil {
		var se *strictjson.Error
		if errors.As(err, &se) {
			return errorf(Invalid, "%s", se.Error())
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

// checkBody refuses a body that is not one JSON object, is not valid
// UTF-8, nests too deep or repeats a key.
func checkBody(body []byte) error {
	return strictError((*strictjson.Options)(nil).Check(body, maxBodyDepth), "The body is not a JSON object.")
}

// checkValue is checkBody for a body that may be any JSON value (an array
// of items, say).
func checkValue(body []byte) error {
	return strictError((*strictjson.Options)(nil).CheckValue(body, maxBodyDepth), "The body is not valid JSON.")
}

// strictError converts a strictjson check's error to Invalid; otherwise is
// the message for a body that does not parse.
func strictError(err error, otherwise string) error {
	var se *strictjson.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return errorf(Invalid, "%s", se.Error())
	case errors.Is(err, strictjson.ErrInvalidUTF8):
		return errorf(Invalid, "The body is not valid UTF-8.")
	}
	return errorf(Invalid, "%s", otherwise)
}
