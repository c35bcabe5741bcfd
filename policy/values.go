package policy

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"

	"github.com/ethereum/go-ethereum/common"
	"github.com/holiman/uint256"
)

// kind is the type of a field, fixed by its source (and, for calldata and
// typed data, by the ABI or EIP-712 type of the leaf).
type kind uint8

const (
	kindNumber kind = iota + 1
	kindAddress
	kindString
	kindBytes
	kindBool
)

func (k kind) String() string {
	switch k {
	case kindNumber:
		return "number"
	case kindAddress:
		return "address"
	case kindString:
		return "string"
	case kindBytes:
		return "bytes"
	case kindBool:
		return "bool"
	}
	return "unknown"
}

// op is an operator.
type op uint8

const (
	opEq op = iota + 1
	opNeq
	opGt
	opGte
	opLt
	opLte
	opIn
	opInSet
	opContains
	opStartsWith
	opEndsWith
)

var opNames = map[string]op{
	"eq": opEq, "neq": opNeq, "gt": opGt, "gte": opGte, "lt": opLt, "lte": opLte,
	"in": opIn, "in_condition_set": opInSet,
	"contains": opContains, "starts_with": opStartsWith, "ends_with": opEndsWith,
}

// allowed reports whether o applies to fields of kind k.
func (o op) allowed(k kind) bool {
	switch o {
	case opEq, opNeq, opIn, opInSet:
		return true
	case opGt, opGte, opLt, opLte:
		return k == kindNumber
	case opContains, opStartsWith, opEndsWith:
		return k == kindString || k == kindBytes
	}
	return false
}

// maxNumberChars bounds a number's text before it is parsed: 2^256 has 78
// decimal digits and 64 hex digits; leading zeros are allowed.
const maxNumberChars = 100

var errNotNumber = errors.New("must be a non-negative integer in decimal or 0x hex, at most 2^256-1")

// parseNumber parses a policy number: decimal digits, or "0x" and hex
// digits (either case), fitting 256 bits.
func parseNumber(s string) (*big.Int, error) {
	if s == "" || len(s) > maxNumberChars {
		return nil, errNotNumber
	}
	base, digits := 10, s
	if h, ok := strings.CutPrefix(s, "0x"); ok {
		base, digits = 16, h
	}
	if digits == "" {
		return nil, errNotNumber
	}
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		switch {
		case c >= '0' && c <= '9':
		case base == 16 && (c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'):
		default:
			return nil, errNotNumber
		}
	}
	n, ok := new(big.Int).SetString(digits, base)
	if !ok || n.BitLen() > 256 {
		return nil, errNotNumber
	}
	return n, nil
}

var errNotAddress = errors.New("must be a 0x-prefixed 20-byte hex address (a mixed-case address needs a valid EIP-55 checksum)")

// parseAddress parses a policy address. All-lowercase and all-uppercase
// addresses are taken as they are; a mixed-case one must carry a valid
// EIP-55 checksum (as the wallet API requires of requests), since a
// mixed-case address with a bad checksum is most likely a typo.
func parseAddress(s string) (common.Address, error) {
	digits, ok := strings.CutPrefix(s, "0x")
	if !ok || len(digits) != 40 {
		return common.Address{}, errNotAddress
	}
	var a common.Address
	if _, err := hex.Decode(a[:], []byte(digits)); err != nil {
		return common.Address{}, errNotAddress
	}
	if digits != strings.ToLower(digits) && digits != strings.ToUpper(digits) && a.Hex() != s {
		return common.Address{}, errNotAddress
	}
	return a, nil
}

var errNotBytes = errors.New("must be 0x-prefixed hex with an even number of digits")

func parseBytes(s string) ([]byte, error) {
	digits, ok := strings.CutPrefix(s, "0x")
	if !ok || len(digits)%2 != 0 {
		return nil, errNotBytes
	}
	b, err := hex.DecodeString(digits)
	if err != nil {
		return nil, errNotBytes
	}
	return b, nil
}

var errNotBool = errors.New(`must be "true" or "false"`)

func parseBool(s string) (bool, error) {
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, errNotBool
}

// val is a request's value of a field. Exactly the member of its kind is
// set.
type val struct {
	kind  kind
	num   *big.Int
	addr  common.Address
	str   string
	bytes []byte
	b     bool
}

// String renders v for the trace: numbers in decimal, addresses and bytes
// in lowercase 0x hex.
func (v val) String() string {
	switch v.kind {
	case kindNumber:
		if v.num == nil {
			return ""
		}
		return v.num.String()
	case kindAddress:
		return "0x" + hex.EncodeToString(v.addr[:])
	case kindString:
		return v.str
	case kindBytes:
		return "0x" + hex.EncodeToString(v.bytes)
	case kindBool:
		if v.b {
			return "true"
		}
		return "false"
	}
	return ""
}

// operand is a condition's compiled value (one, or the list of "in").
type operand struct {
	nums  []*big.Int
	addrs []common.Address
	strs  []string
	bytes [][]byte
	bools []bool
	setID string
}

func (o *operand) add(k kind, s string) error {
	switch k {
	case kindNumber:
		n, err := parseNumber(s)
		if err != nil {
			return err
		}
		o.nums = append(o.nums, n)
	case kindAddress:
		a, err := parseAddress(s)
		if err != nil {
			return err
		}
		o.addrs = append(o.addrs, a)
	case kindString:
		o.strs = append(o.strs, s)
	case kindBytes:
		b, err := parseBytes(s)
		if err != nil {
			return err
		}
		o.bytes = append(o.bytes, b)
	case kindBool:
		b, err := parseBool(s)
		if err != nil {
			return err
		}
		o.bools = append(o.bools, b)
	}
	return nil
}

var errNegative = errors.New("is negative; numbers compare as unsigned 256-bit integers")

// compare applies a scalar or list operator (not in_condition_set) to v.
func compare(o op, v val, x *operand) (bool, error) {
	if v.kind == kindNumber && v.num.Sign() < 0 {
		return false, errNegative
	}
	switch o {
	case opIn:
		return member(v, x), nil
	case opEq:
		return member(v, x), nil
	case opNeq:
		return !member(v, x), nil
	}
	switch v.kind {
	case kindNumber:
		c := v.num.Cmp(x.nums[0])
		switch o {
		case opGt:
			return c > 0, nil
		case opGte:
			return c >= 0, nil
		case opLt:
			return c < 0, nil
		case opLte:
			return c <= 0, nil
		}
	case kindString:
		switch o {
		case opContains:
			return strings.Contains(v.str, x.strs[0]), nil
		case opStartsWith:
			return strings.HasPrefix(v.str, x.strs[0]), nil
		case opEndsWith:
			return strings.HasSuffix(v.str, x.strs[0]), nil
		}
	case kindBytes:
		switch o {
		case opContains:
			return bytes.Contains(v.bytes, x.bytes[0]), nil
		case opStartsWith:
			return bytes.HasPrefix(v.bytes, x.bytes[0]), nil
		case opEndsWith:
			return bytes.HasSuffix(v.bytes, x.bytes[0]), nil
		}
	}
	// Compile refuses every other combination.
	return false, errors.New("operator does not apply to this field")
}

// member reports whether v equals one of x's values.
func member(v val, x *operand) bool {
	switch v.kind {
	case kindNumber:
		for _, n := range x.nums {
			if v.num.Cmp(n) == 0 {
				return true
			}
		}
	case kindAddress:
		for _, a := range x.addrs {
			if v.addr == a {
				return true
			}
		}
	case kindString:
		for _, s := range x.strs {
			if v.str == s {
				return true
			}
		}
	case kindBytes:
		for _, b := range x.bytes {
			if bytes.Equal(v.bytes, b) {
				return true
			}
		}
	case kindBool:
		for _, b := range x.bools {
			if v.b == b {
				return true
			}
		}
	}
	return false
}

// ConditionSet is a condition set's items, indexed for membership tests.
// Items are untyped strings; a test compares them as the field's kind does:
// an address field matches an item that is the same address in any case, a
// number field an item that is the same number in decimal or 0x hex, a bytes
// field the same bytes in any case of hex, and string and bool fields the
// exact text. A ConditionSet is immutable and safe for concurrent use, so a
// resolver may cache it until the set changes.
type ConditionSet struct {
	exact map[string]struct{}
	addrs map[common.Address]struct{}
	nums  map[uint256.Int]struct{}
	bytes map[string]struct{} // decoded bytes, as a string key
}

// NewConditionSet indexes items.
func NewConditionSet(items []string) *ConditionSet {
	s := &ConditionSet{
		exact: make(map[string]struct{}, len(items)),
		addrs: map[common.Address]struct{}{},
		nums:  map[uint256.Int]struct{}{},
		bytes: map[string]struct{}{},
	}
	for _, it := range items {
		s.exact[it] = struct{}{}
		if a, err := parseAddress(it); err == nil {
			s.addrs[a] = struct{}{}
		} else if len(it) == 42 && strings.HasPrefix(it, "0x") {
			// A set item with a bad checksum still names the address;
			// membership is case-insensitive.
			var b common.Address
			if _, err := hex.Decode(b[:], []byte(it[2:])); err == nil {
				s.addrs[b] = struct{}{}
			}
		}
		if n, err := parseNumber(it); err == nil {
			var u uint256.Int
			u.SetFromBig(n)
			s.nums[u] = struct{}{}
		}
		if b, err := parseBytes(it); err == nil {
			s.bytes[string(b)] = struct{}{}
		}
	}
	return s
}

// Len returns the number of distinct items.
func (s *ConditionSet) Len() int { return len(s.exact) }

func (s *ConditionSet) has(v val) (bool, error) {
	switch v.kind {
	case kindNumber:
		if v.num.Sign() < 0 {
			return false, errNegative
		}
		var u uint256.Int
		if u.SetFromBig(v.num) {
			return false, nil // wider than any item
		}
		_, ok := s.nums[u]
		return ok, nil
	case kindAddress:
		_, ok := s.addrs[v.addr]
		return ok, nil
	case kindBytes:
		_, ok := s.bytes[string(v.bytes)]
		return ok, nil
	case kindBool:
		_, ok := s.exact[v.String()]
		return ok, nil
	default:
		_, ok := s.exact[v.str]
		return ok, nil
	}
}
