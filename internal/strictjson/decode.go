package strictjson

import (
	"errors"
	"reflect"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// decodeOptions are encoding/json/v2's semantics, which Decode relies on:
// member names match struct fields exactly (encoding/json v1 matches them
// case-insensitively with Unicode folding, so "PARAMS" or "paramſ" would
// fill Params while every canonicalizer and JavaScript reader sees another
// member), a member the struct does not have is refused, a repeated name
// and invalid UTF-8 are refused.
var decodeOptions = jsonv2.JoinOptions(
	jsonv2.RejectUnknownMembers(true),
	jsonv2.MatchCaseInsensitiveNames(false),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
)

// Decode decodes the JSON value raw, found at path ("" for a whole body),
// into v, a pointer to a struct (or to a slice or map of them) whose
// fields carry json tags. Every object name must equal a field's tag
// exactly; an unknown or case-variant name, a type mismatch or a repeated
// name is an *Error naming the place below path. Decode does not bound
// depth: callers run Check on the whole body first.
//
// Nested json.RawMessage fields are left raw: their own parsers read them
// with ParseObject (exact names too) or Decode.
func Decode(raw []byte, path string, v any) error {
	err := jsonv2.Unmarshal(raw, v, decodeOptions)
	if err == nil {
		return nil
	}
	var se *jsonv2.SemanticError
	var sy *jsontext.SyntacticError
	switch {
	case errors.As(err, &se):
		at := pointerPath(path, se.JSONPointer)
		switch {
		case errors.Is(se.Err, jsonv2.ErrUnknownName):
			name := se.JSONPointer.LastToken()
			if len(name) > MaxKeyChars {
				return newError(pointerPath(path, se.JSONPointer.Parent()), "has an unknown field with a %d-character name", len(name))
			}
			return newError(at, "unknown field")
		case se.JSONKind != 0 && se.GoType != nil:
			return newError(at, "must be %s, not %s", goKind(se.GoType), jsonKind(se.JSONKind))
		default:
			return newError(at, "has an invalid value")
		}
	case errors.As(err, &sy):
		if errors.Is(sy.Err, jsontext.ErrDuplicateName) {
			return newError(pointerPath(path, sy.JSONPointer), "duplicate key")
		}
		if path == "" {
			return ErrSyntax
		}
		return newError(path, "is not valid JSON")
	}
	if path == "" {
		return ErrSyntax
	}
	return newError(path, "is not valid JSON")
}

// pointerPath renders a JSON pointer below path as this package's paths
// ("a.b[2]"). A token of digits is taken for an array index: the request
// schemas have no object keys made of digits.
func pointerPath(path string, p jsontext.Pointer) string {
	for tok := range p.Tokens() {
		if tok != "" && strings.Trim(tok, "0123456789") == "" {
			path += "[" + tok + "]"
			continue
		}
		if len(tok) > MaxKeyChars {
			tok = "…"
		}
		path = JoinPath(path, tok)
	}
	return path
}

func jsonKind(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 'f', 't':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return "this value"
}

func goKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a value of type " + t.String()
}
