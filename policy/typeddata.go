package policy

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/internal/strictjson"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

const eip712Domain = "EIP712Domain"

// typedSpec is a compiled "typed_data": the types a request must have for
// the condition to apply.
type typedSpec struct {
	types   apitypes.Types // without EIP712Domain
	primary string
}

var typeNameRE = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]*$`)

// compileTypedSpec checks spec. Errors name the element under
// "typed_data", e.g. "types.Mail[1].type".
func compileTypedSpec(spec *TypedDataSpec) (*typedSpec, string, error) {
	if spec == nil {
		return nil, "", errors.New("is required for ethereum_typed_data_message")
	}
	if len(spec.Types) > MaxTypedDataTypes {
		return nil, "types", fmt.Errorf("has more than %d types", MaxTypedDataTypes)
	}
	ts := &typedSpec{types: apitypes.Types{}, primary: spec.PrimaryType}
	names := make([]string, 0, len(spec.Types))
	for name := range spec.Types {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fields := spec.Types[name]
		p := "types." + name
		if len(name) > 64 || !typeNameRE.MatchString(name) {
			return nil, "types", errors.New("has an invalid type name")
		}
		if len(fields) > MaxTypedDataFields {
			return nil, p, fmt.Errorf("has more than %d fields", MaxTypedDataFields)
		}
		if name == eip712Domain {
			continue // ignored when comparing; see the package comment
		}
		seen := map[string]bool{}
		for i, f := range fields {
			fp := strictjson.IndexPath(p, i)
			if f.Name == "" || len(f.Name) > 64 {
				return nil, fp + ".name", errors.New("must be 1 to 64 characters")
			}
			if seen[f.Name] {
				return nil, fp + ".name", errors.New("duplicate field name")
			}
			seen[f.Name] = true
			if err := checkTypedType(spec.Types, f.Type); err != nil {
				return nil, fp + ".type", err
			}
		}
		ts.types[name] = slices.Clone(fields)
	}
	if spec.PrimaryType == eip712Domain {
		return nil, "primary_type", errors.New("EIP712Domain cannot be the primary type of a message")
	}
	if _, ok := ts.types[spec.PrimaryType]; !ok {
		return nil, "primary_type", errors.New("is not defined in types")
	}
	return ts, "", nil
}

// checkTypedType checks an EIP-712 member type: an elementary type, a
// struct defined in types, or an array of either.
func checkTypedType(types apitypes.Types, t string) error {
	if len(t) > 96 {
		return errors.New("is too long")
	}
	base, _, err := splitTypedArray(t)
	if err != nil {
		return err
	}
	if _, ok := elementaryKind(base); ok {
		return nil
	}
	if _, ok := types[base]; ok && base != eip712Domain {
		return nil
	}
	return fmt.Errorf("%q is neither an EIP-712 elementary type nor a type defined in types", clip.To(base, 64))
}

// splitTypedArray splits "Person[2][]" into "Person" and [2, -1].
func splitTypedArray(t string) (string, []int, error) {
	base, dims, err := splitArrayType(t)
	if err != nil {
		return "", nil, errors.New("has a malformed array suffix")
	}
	return base, dims, nil
}

// elementaryKind maps an EIP-712 elementary type to a field kind.
func elementaryKind(t string) (kind, bool) {
	switch t {
	case "address":
		return kindAddress, true
	case "bool":
		return kindBool, true
	case "string":
		return kindString, true
	case "bytes":
		return kindBytes, true
	}
	if n, ok := strings.CutPrefix(t, "bytes"); ok {
		if s, err := strconv.Atoi(n); err == nil && s >= 1 && s <= 32 && strconv.Itoa(s) == n {
			return kindBytes, true
		}
		return 0, false
	}
	n, ok := strings.CutPrefix(t, "uint")
	if !ok {
		n, ok = strings.CutPrefix(t, "int")
	}
	if ok {
		if s, err := strconv.Atoi(n); err == nil && s >= 8 && s <= 256 && s%8 == 0 && strconv.Itoa(s) == n {
			return kindNumber, true
		}
	}
	return 0, false
}

// typedStep is one step of a path into a typed-data message.
type typedStep struct {
	name  string
	index int // when name == ""
}

// compileTypedPath resolves "to.wallet" or "items.0.amount" from the
// primary type.
func compileTypedPath(ts *typedSpec, field string) ([]typedStep, kind, error) {
	if field == "" {
		return nil, 0, errors.New("must name a path into the message")
	}
	segs := strings.Split(field, ".")
	if len(segs) > maxPathSegments {
		return nil, 0, fmt.Errorf("has more than %d segments", maxPathSegments)
	}
	cur := ts.primary
	walked := ""
	var steps []typedStep
	for _, s := range segs {
		base, dims, _ := splitTypedArray(cur)
		switch {
		case len(dims) > 0:
			n, ok := parseIndex(s)
			if !ok {
				return nil, 0, fmt.Errorf("%s is an array; %q is not an index", typedWalked(walked), clip.To(s, 64))
			}
			last := dims[len(dims)-1]
			if last > 0 && n >= last {
				return nil, 0, fmt.Errorf("%s has %d elements; index %d is out of range", typedWalked(walked), last, n)
			}
			steps = append(steps, typedStep{index: n})
			cur = cur[:strings.LastIndexByte(cur, '[')]
		case isStruct(ts.types, base):
			fields := ts.types[base]
			j := slices.IndexFunc(fields, func(f apitypes.Type) bool { return f.Name == s })
			if j < 0 {
				return nil, 0, fmt.Errorf("type %s has no field %q", clip.To(base, 64), clip.To(s, 64))
			}
			steps = append(steps, typedStep{name: s})
			cur = fields[j].Type
		default:
			return nil, 0, fmt.Errorf("%s is a %s; it has no %q", typedWalked(walked), clip.To(cur, 64), clip.To(s, 64))
		}
		walked = joinPath(walked, s)
	}
	if _, dims, _ := splitTypedArray(cur); len(dims) > 0 {
		return nil, 0, fmt.Errorf("%s is an array; add an element index", clip.To(walked, 64))
	}
	k, ok := elementaryKind(cur)
	if !ok {
		return nil, 0, fmt.Errorf("%s is a struct (%s); name one of its fields", clip.To(walked, 64), clip.To(cur, 64))
	}
	return steps, k, nil
}

func isStruct(types apitypes.Types, name string) bool {
	_, ok := types[name]
	return ok
}

func typedWalked(w string) string {
	if w == "" {
		return "the message"
	}
	return clip.To(w, 64)
}

// matches reports whether td has exactly ts's types (EIP712Domain aside:
// same type names, same fields in the same order, same type strings) and
// primary type.
func (ts *typedSpec) matches(td *apitypes.TypedData) bool {
	if td.PrimaryType != ts.primary {
		return false
	}
	n := 0
	for name, fields := range td.Types {
		if name == eip712Domain {
			continue
		}
		n++
		want, ok := ts.types[name]
		if !ok || len(want) != len(fields) {
			return false
		}
		for i := range fields {
			if fields[i].Name != want[i].Name || fields[i].Type != want[i].Type {
				return false
			}
		}
	}
	return n == len(ts.types)
}

var errMissingInMessage = errors.New("the path does not exist in the request's message")

// typedLeaf walks steps through a message parsed by package wallet and
// converts the leaf to k.
func typedLeaf(msg map[string]any, steps []typedStep, k kind) (val, error) {
	var cur any = msg
	for _, s := range steps {
		if s.name != "" {
			m, ok := cur.(map[string]any)
			if !ok {
				return val{}, errMissingInMessage
			}
			if cur, ok = m[s.name]; !ok {
				return val{}, errMissingInMessage
			}
			continue
		}
		a, ok := cur.([]any)
		if !ok {
			return val{}, errMissingInMessage
		}
		if s.index >= len(a) {
			return val{}, errIndexRange
		}
		cur = a[s.index]
	}
	return anyLeaf(cur, k)
}

var errLeafType = errors.New("the request's value does not have the field's type")

// anyLeaf converts a typed-data value as package wallet leaves it: integers
// as *big.Int, addresses and bytes as 0x-hex strings, bools, strings.
func anyLeaf(x any, k kind) (val, error) {
	switch k {
	case kindNumber:
		switch n := x.(type) {
		case *big.Int:
			if n != nil {
				return val{kind: kindNumber, num: n}, nil
			}
		case string:
			if v, err := parseNumber(n); err == nil {
				return val{kind: kindNumber, num: v}, nil
			}
		}
	case kindAddress:
		if s, ok := x.(string); ok {
			if a, ok := looseAddress(s); ok {
				return val{kind: kindAddress, addr: a}, nil
			}
		}
	case kindBool:
		if b, ok := x.(bool); ok {
			return val{kind: kindBool, b: b}, nil
		}
	case kindString:
		if s, ok := x.(string); ok {
			return val{kind: kindString, str: s}, nil
		}
	case kindBytes:
		if s, ok := x.(string); ok {
			if h, ok := strings.CutPrefix(s, "0x"); ok {
				if b, err := hex.DecodeString(h); err == nil {
					return val{kind: kindBytes, bytes: b}, nil
				}
			}
		}
	}
	return val{}, errLeafType
}

// looseAddress reads a 0x address in any case: request addresses were
// checked by package wallet, and comparisons are case-insensitive.
func looseAddress(s string) (common.Address, bool) {
	h, ok := strings.CutPrefix(s, "0x")
	if !ok || len(h) != 40 {
		return common.Address{}, false
	}
	var a common.Address
	if _, err := hex.Decode(a[:], []byte(h)); err != nil {
		return common.Address{}, false
	}
	return a, true
}
