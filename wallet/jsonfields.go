package wallet

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"unicode/utf8"

	"github.com/cachet-custody/cachet/internal/strictjson"
	"github.com/ethereum/go-ethereum/common"
)

// Limits on request bodies. They bound work and memory before anything is
// signed; the HTTP edge also caps the body size.
const (
	// MaxHexBytes caps decoded hex payloads (transaction data, personal_sign
	// messages). Privy's OpenAPI gives `Hex` a 150,000 limit; we read it as
	// decoded bytes, which admits the largest init code EIP-3860 allows
	// (49,152 bytes) with room to spare.
	MaxHexBytes = 150_000
	// MaxRawSignBytesChars caps the raw_sign "bytes" string, as Privy does.
	MaxRawSignBytesChars = 100_002
	// maxJSONDepth caps nesting in a body. Typed data is the only deep part.
	maxJSONDepth = 64
	// maxQuantityChars bounds a quantity's text before it is parsed: 2^256
	// has 78 decimal digits and 64 hex digits, and leading zeros are allowed.
	maxQuantityChars = 100
)

// strict reads request bodies (see package strictjson). A hint is offered
// wherever its key is unknown, which also points at a field sent at the
// wrong level ("chainId" in params rather than in params.transaction).
var strict = &strictjson.Options{Hints: fieldHints, HintAnywhere: true}

// object is a JSON object of the body whose values stay raw until a field
// parser takes them.
type object struct{ *strictjson.Object }

// parseObject decodes raw as the JSON object at path. A null or absent
// object is an error: callers use strictjson.Present first where the object
// is optional.
func parseObject(raw json.RawMessage, path string) (object, error) {
	o, err := strict.ParseObject(raw, path)
	return object{o}, fromStrict(err)
}

// parseArray decodes raw as the JSON array at path.
func parseArray(raw json.RawMessage, path string) ([]json.RawMessage, error) {
	items, err := strictjson.ParseArray(raw, path)
	return items, fromStrict(err)
}

// only refuses any key not in allowed (see strictjson.Object.Only). Inside
// params, an unknown key is almost always a misspelling (chainId for
// chain_id, gas for gas_limit) and ignoring it would sign something other
// than what the client meant.
func (o object) only(allowed ...string) error { return fromStrict(o.Only(allowed...)) }

// fieldHints maps common camelCase spellings to Privy's snake_case names.
var fieldHints = map[string]string{
	"chainId":              "chain_id",
	"gas":                  "gas_limit",
	"gasLimit":             "gas_limit",
	"gasPrice":             "gas_price",
	"maxFeePerGas":         "max_fee_per_gas",
	"maxPriorityFeePerGas": "max_priority_fee_per_gas",
	"accessList":           "access_list",
	"authorizationList":    "authorization_list",
	"storageKeys":          "storage_keys",
	"yParity":              "y_parity",
	"typedData":            "typed_data",
	"hashFunction":         "hash_function",
	"input":                "data",
}

// checkJSON checks the whole body before it is decoded: one JSON object,
// nested no deeper than maxJSONDepth, with no key repeated in any object
// (see package strictjson for why duplicates are refused).
func checkJSON(body []byte) error { return fromStrict(strict.Check(body, maxJSONDepth)) }

// fromStrict converts an error from package strictjson into an *InputError;
// a problem with the body as a whole is at "body".
func fromStrict(err error) error {
	if err == nil {
		return nil // the common case, before e (which escapes) is allocated
	}
	var e *strictjson.Error
	switch {
	case errors.As(err, &e):
		return inputErr(e.Path, "%s", e.Reason)
	case errors.Is(err, strictjson.ErrNotObject):
		return inputErr("body", "must be a JSON object")
	case errors.Is(err, strictjson.ErrTrailingData):
		return inputErr("body", "has data after the JSON object")
	}
	return inputErr("body", "is not valid JSON")
}

// parseString decodes a JSON string.
func parseString(raw json.RawMessage, field string) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", inputErr(field, "must be a string")
	}
	// Fast path for the common case, a string without escapes; raw comes
	// from an already validated document, so no second validation is needed.
	if n := len(raw); n >= 2 && raw[n-1] == '"' {
		inner := raw[1 : n-1]
		if plainJSONString(inner) {
			return string(inner), nil
		}
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", inputErr(field, "must be a string")
	}
	return s, nil
}

// plainJSONString reports whether b, the inside of a JSON string literal,
// has no escapes, quotes or control characters and is valid UTF-8, so that
// it is its own decoded value.
func plainJSONString(b []byte) bool {
	for _, c := range b {
		if c == '\\' || c == '"' || c < 0x20 {
			return false
		}
	}
	return utf8.Valid(b)
}

// parseQuantity parses one of Privy's quantities: a "0x"-prefixed hex string
// or a non-negative JSON integer, no wider than bits.
//
// Decisions: decimal strings ("100") are rejected, as Privy's OpenAPI
// `Quantity` is "a hex string starting with '0x' or a non-negative integer";
// hex digits may have leading zeros ("0x01"), which Privy's own SDK sends;
// "0x" alone is not zero but an error; JSON numbers with a fraction or an
// exponent (1.5, 1e18) are rejected even when integral, because JavaScript
// prints integers of 1e21 and above in exponent form after they have already
// been rounded. Integers are read from the JSON text, so no precision is lost
// on this side.
func parseQuantity(raw json.RawMessage, field string, bits int) (*big.Int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, inputErr(field, "is required")
	}
	var n *big.Int
	switch c := raw[0]; {
	case c == '"':
		s, err := parseString(raw, field)
		if err != nil {
			return nil, err
		}
		if n, err = parseHexQuantity(s, field); err != nil {
			return nil, err
		}
	case c == '-':
		return nil, inputErr(field, "must not be negative")
	case c >= '0' && c <= '9':
		if bytes.ContainsAny(raw, ".eE") {
			return nil, inputErr(field, "must be an integer without fraction or exponent")
		}
		if len(raw) > maxQuantityChars {
			return nil, inputErr(field, "exceeds %d bits", bits)
		}
		var ok bool
		if n, ok = new(big.Int).SetString(string(raw), 10); !ok {
			return nil, inputErr(field, "must be a 0x-hex string or a non-negative JSON integer")
		}
	default:
		return nil, inputErr(field, "must be a 0x-hex string or a non-negative JSON integer")
	}
	if n.BitLen() > bits {
		return nil, inputErr(field, "exceeds %d bits", bits)
	}
	return n, nil
}

func parseHexQuantity(s, field string) (*big.Int, error) {
	digits, ok := strings.CutPrefix(s, "0x")
	if !ok {
		if s != "" && strings.Trim(s, "0123456789") == "" {
			return nil, inputErr(field, "decimal strings are not accepted; send 0x-hex or a JSON integer")
		}
		return nil, inputErr(field, "hex quantity must start with 0x")
	}
	if digits == "" {
		return nil, inputErr(field, "empty hex quantity (zero is 0x0)")
	}
	if len(digits) > maxQuantityChars {
		return nil, inputErr(field, "hex quantity is too long")
	}
	n, ok := new(big.Int).SetString(digits, 16)
	if !ok || strings.ContainsAny(digits, "+-_ ") {
		return nil, inputErr(field, "is not valid hex")
	}
	return n, nil
}

// parseUint64 is parseQuantity for fields that go-ethereum holds as uint64
// (nonce, gas limit, chain ids in CAIP-2).
func parseUint64(raw json.RawMessage, field string) (uint64, error) {
	n, err := parseQuantity(raw, field, 64)
	if err != nil {
		return 0, err
	}
	return n.Uint64(), nil
}

// parseAddress parses a 0x-prefixed 20-byte hex address. An all-lowercase or
// all-uppercase address is accepted as is; a mixed-case one must carry a
// correct EIP-55 checksum, because a mixed-case address with a bad checksum
// is most likely a typo, and a typo here sends funds nowhere.
func parseAddress(raw json.RawMessage, field string) (common.Address, error) {
	s, err := parseString(raw, field)
	if err != nil {
		return common.Address{}, err
	}
	return parseAddressString(s, field)
}

func parseAddressString(s, field string) (common.Address, error) {
	digits, ok := strings.CutPrefix(s, "0x")
	if !ok || len(digits) != 40 {
		return common.Address{}, inputErr(field, "must be a 0x-prefixed 20-byte hex address")
	}
	b, err := hex.DecodeString(digits)
	if err != nil {
		return common.Address{}, inputErr(field, "must be a 0x-prefixed 20-byte hex address")
	}
	a := common.BytesToAddress(b)
	if digits != strings.ToLower(digits) && digits != strings.ToUpper(digits) && a.Hex() != s {
		return common.Address{}, inputErr(field, "mixed-case address with a wrong EIP-55 checksum")
	}
	return a, nil
}

// parseHexBytes parses a 0x-prefixed hex string of even length into at most
// max bytes. "0x" is the empty byte string.
func parseHexBytes(raw json.RawMessage, field string, max int) ([]byte, error) {
	s, err := parseString(raw, field)
	if err != nil {
		return nil, err
	}
	digits, ok := strings.CutPrefix(s, "0x")
	if !ok {
		return nil, inputErr(field, "hex data must start with 0x")
	}
	return decodeHex(digits, field, max)
}

func decodeHex(digits, field string, max int) ([]byte, error) {
	if len(digits)%2 != 0 {
		return nil, inputErr(field, "hex has an odd number of digits")
	}
	if len(digits)/2 > max {
		return nil, inputErr(field, "exceeds %d bytes", max)
	}
	b, err := hex.DecodeString(digits)
	if err != nil {
		return nil, inputErr(field, "is not valid hex")
	}
	return b, nil
}

// parseFixedHex parses a 0x-prefixed hex string of exactly n bytes.
func parseFixedHex(raw json.RawMessage, field string, n int) ([]byte, error) {
	b, err := parseHexBytes(raw, field, n)
	if err != nil {
		return nil, err
	}
	if len(b) != n {
		return nil, inputErr(field, "must be exactly %d bytes", n)
	}
	return b, nil
}
