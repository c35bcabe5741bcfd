package wallet

import (
	"bytes"
	"encoding/json"
	"maps"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/internal/strictjson"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// domainFields are the EIP-712 domain fields in the order EIP-712 lists them,
// which is also the order ethers and viem use when they derive the
// EIP712Domain type from a domain object.
var domainFields = []apitypes.Type{
	{Name: "name", Type: "string"},
	{Name: "version", Type: "string"},
	{Name: "chainId", Type: "uint256"},
	{Name: "verifyingContract", Type: "address"},
	{Name: "salt", Type: "bytes32"},
}

var typeNameRE = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]*$`)

// parseTypedData parses params.typed_data {domain, types, message,
// primary_type} into apitypes.TypedData and checks the message against the
// types, so that apitypes never meets a shape it mishandles.
//
// Decisions:
//   - primary_type is Privy's name; primaryType (the EIP-712 JSON name) is
//     accepted too, and both together must agree.
//   - types without "EIP712Domain" get one derived from the domain fields
//     present, in EIP-712 order, as ethers and viem do. Privy's viem adapter
//     passes viem's types, which never contain EIP712Domain, so this is what
//     its clients need.
//   - domain keys other than name, version, chainId, verifyingContract and
//     salt are refused: apitypes would drop them silently and sign a
//     different domain than the one the client declared.
//   - an empty domain, and primary_type "EIP712Domain", are refused:
//     go-ethereum's apitypes cannot hash either.
//   - a type the primary type does not reach is refused (see unusedType).
//   - JSON numbers in the message must be integers and become *big.Int;
//     decoding them as float64 (what apitypes does) silently rounds values
//     above 2^53. null anywhere in the message is refused (apitypes panics on
//     null array elements).
//   - every struct must have exactly its declared fields, and fixed-size
//     arrays exactly their length; apitypes checks neither fully.
func parseTypedData(raw json.RawMessage, path string) (*apitypes.TypedData, bool, error) {
	o, err := parseObject(raw, path)
	if err != nil {
		return nil, false, err
	}
	if err := o.only("domain", "types", "message", "primary_type", "primaryType"); err != nil {
		return nil, false, err
	}
	td := &apitypes.TypedData{}

	pt, pc := o.Get("primary_type"), o.Get("primaryType")
	switch {
	case pt != nil && pc != nil:
		a, err1 := parseString(pt, o.Field("primary_type"))
		b, err2 := parseString(pc, o.Field("primaryType"))
		if err1 != nil || err2 != nil || a != b {
			return nil, false, inputErr(o.Field("primaryType"), "differs from primary_type")
		}
		td.PrimaryType = a
	case pt != nil:
		td.PrimaryType, err = parseString(pt, o.Field("primary_type"))
	case pc != nil:
		td.PrimaryType, err = parseString(pc, o.Field("primaryType"))
	default:
		return nil, false, inputErr(o.Field("primary_type"), "is required")
	}
	if err != nil {
		return nil, false, err
	}

	if td.Types, err = parseTypes(o.Get("types"), o.Field("types")); err != nil {
		return nil, false, err
	}
	if td.PrimaryType == "EIP712Domain" {
		return nil, false, inputErr(o.Field("primary_type"), "EIP712Domain as primary type is not supported")
	}
	if _, ok := td.Types[td.PrimaryType]; !ok {
		return nil, false, inputErr(o.Field("primary_type"), "is not defined in types")
	}
	if name := unusedType(td.Types, td.PrimaryType); name != "" {
		return nil, false, inputErr(strictjson.JoinPath(o.Field("types"), name), "is not used by the primary type %s", clip.To(td.PrimaryType, 64))
	}

	domain, present, err := parseDomain(o.Get("domain"), o.Field("domain"))
	if err != nil {
		return nil, false, err
	}
	td.Domain = domain
	derived := false
	if _, ok := td.Types["EIP712Domain"]; !ok {
		var dt []apitypes.Type
		for _, f := range domainFields {
			if present[f.Name] {
				dt = append(dt, f)
			}
		}
		td.Types["EIP712Domain"] = dt
		derived = true
	} else if err := checkDomainType(td.Types["EIP712Domain"], present, o.Field("types.EIP712Domain")); err != nil {
		return nil, false, err
	}

	msgRaw := o.Get("message")
	if msgRaw == nil {
		return nil, false, inputErr(o.Field("message"), "is required")
	}
	dec := json.NewDecoder(bytes.NewReader(msgRaw))
	dec.UseNumber()
	var msg any
	if err := dec.Decode(&msg); err != nil {
		return nil, false, inputErr(o.Field("message"), "must be a JSON object")
	}
	m, err := checkStruct(td.Types, td.PrimaryType, msg, o.Field("message"), 0)
	if err != nil {
		return nil, false, err
	}
	td.Message = m

	// Hash once here so that every input apitypes rejects is an InputError
	// at parse time rather than a failure inside Sign.
	if _, _, err := apitypes.TypedDataAndHash(*td); err != nil {
		return nil, false, inputErr(path, "cannot be hashed: %s", clip.To(err.Error(), 200))
	}
	return td, derived, nil
}

// unusedType returns a type of types, other than EIP712Domain, that the
// primary type does not reach through its fields, or "". EIP-712 hashes
// only the types the primary type reaches, so such a type changes nothing
// that is signed; but a policy's typed-data rule applies only to requests
// whose types equal its own (Privy's rule), so an unused type would make a
// DENY rule stop applying to the very message it denies. Refusing it keeps
// one meaning per signature. ethers refuses such types too.
func unusedType(types apitypes.Types, primary string) string {
	used := map[string]bool{primary: true}
	for queue := []string{primary}; len(queue) > 0; queue = queue[1:] {
		for _, f := range types[queue[0]] {
			base, _, _ := strings.Cut(f.Type, "[")
			if _, ok := types[base]; ok && !used[base] {
				used[base] = true
				queue = append(queue, base)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(types)) {
		if name != "EIP712Domain" && !used[name] {
			return name
		}
	}
	return ""
}

func parseTypes(raw json.RawMessage, path string) (apitypes.Types, error) {
	o, err := parseObject(raw, path)
	if err != nil {
		return nil, err
	}
	types := apitypes.Types{}
	for _, name := range o.Keys() {
		p := o.Field(name)
		if len(name) > 64 || !typeNameRE.MatchString(name) {
			return nil, inputErr(path, "has an invalid type name")
		}
		members, err := strictjson.ParseArray(o.Get(name), p)
		if err != nil {
			return nil, inputErr(p, "must be an array of {name, type}")
		}
		list := make([]apitypes.Type, 0, len(members))
		seen := map[string]bool{}
		for i, m := range members {
			mp := strictjson.IndexPath(p, i)
			mo, err := parseObject(m, mp)
			if err != nil {
				return nil, err
			}
			if err := mo.only("name", "type"); err != nil {
				return nil, err
			}
			var t apitypes.Type
			if t.Name, err = parseString(mo.Get("name"), mo.Field("name")); err != nil {
				return nil, err
			}
			if t.Type, err = parseString(mo.Get("type"), mo.Field("type")); err != nil {
				return nil, err
			}
			if t.Name == "" || len(t.Name) > 64 || t.Type == "" || len(t.Type) > 96 {
				return nil, inputErr(mp, "needs a non-empty name (at most 64 characters) and type (at most 96)")
			}
			if seen[t.Name] {
				return nil, inputErr(mo.Field("name"), "duplicate member name")
			}
			seen[t.Name] = true
			list = append(list, t)
		}
		types[name] = list
	}
	// Reference checks (undefined types, self-reference, malformed array
	// suffixes) are apitypes' own, run when the data is hashed.
	return types, nil
}

// parseDomain parses the EIP-712 domain and reports which fields it has.
func parseDomain(raw json.RawMessage, path string) (apitypes.TypedDataDomain, map[string]bool, error) {
	var d apitypes.TypedDataDomain
	o, err := parseObject(raw, path)
	if err != nil {
		return d, nil, err
	}
	if err := o.only("name", "version", "chainId", "verifyingContract", "salt"); err != nil {
		return d, nil, err
	}
	present := map[string]bool{}
	if v := o.Get("name"); v != nil {
		if d.Name, err = parseString(v, o.Field("name")); err != nil {
			return d, nil, err
		}
		present["name"] = true
	}
	if v := o.Get("version"); v != nil {
		if d.Version, err = parseString(v, o.Field("version")); err != nil {
			return d, nil, err
		}
		present["version"] = true
	}
	if v := o.Get("chainId"); v != nil {
		// EIP-712 JSON commonly carries chainId as a number, a decimal
		// string or a hex string; all three are accepted here (unlike Privy
		// quantities) because this is EIP-712 data, not a Privy field.
		n, err := parseEIP712Int(v, o.Field("chainId"))
		if err != nil {
			return d, nil, err
		}
		if n.Sign() < 0 || n.BitLen() > 256 {
			return d, nil, inputErr(o.Field("chainId"), "must fit uint256")
		}
		d.ChainId = (*math.HexOrDecimal256)(n)
		present["chainId"] = true
	}
	if v := o.Get("verifyingContract"); v != nil {
		a, err := parseAddress(v, o.Field("verifyingContract"))
		if err != nil {
			return d, nil, err
		}
		d.VerifyingContract = a.Hex()
		present["verifyingContract"] = true
	}
	if v := o.Get("salt"); v != nil {
		b, err := parseFixedHex(v, o.Field("salt"), 32)
		if err != nil {
			return d, nil, err
		}
		d.Salt = "0x" + bytesHex(b)
		present["salt"] = true
	}
	if len(present) == 0 {
		return d, nil, inputErr(path, "must have at least one of name, version, chainId, verifyingContract, salt")
	}
	// apitypes drops empty strings from the domain, so a declared but empty
	// name or version could not be hashed as declared.
	if present["name"] && d.Name == "" {
		return d, nil, inputErr(o.Field("name"), "empty domain name is not supported")
	}
	if present["version"] && d.Version == "" {
		return d, nil, inputErr(o.Field("version"), "empty domain version is not supported")
	}
	return d, present, nil
}

// checkDomainType checks a client-supplied EIP712Domain type against the
// domain: the same set of fields, each with its EIP-712 type.
func checkDomainType(dt []apitypes.Type, present map[string]bool, path string) error {
	declared := map[string]bool{}
	for i, f := range dt {
		j := slices.IndexFunc(domainFields, func(d apitypes.Type) bool { return d.Name == f.Name })
		if j < 0 {
			return inputErr(strictjson.IndexPath(path, i), "is not an EIP-712 domain field")
		}
		if domainFields[j].Type != f.Type {
			return inputErr(strictjson.IndexPath(path, i), "domain field %s must have type %s", f.Name, domainFields[j].Type)
		}
		declared[f.Name] = true
	}
	for _, f := range domainFields {
		if declared[f.Name] != present[f.Name] {
			return inputErr(path, "declares different fields than the domain has (%s)", f.Name)
		}
	}
	return nil
}

// checkStruct checks v against struct type typ and returns it with JSON
// numbers converted to *big.Int.
func checkStruct(types apitypes.Types, typ string, v any, path string, depth int) (map[string]any, error) {
	if depth > maxJSONDepth {
		return nil, inputErr(path, "is nested more than %d levels deep", maxJSONDepth)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, inputErr(path, "must be an object of type %s", clip.To(typ, 64))
	}
	fields := types[typ]
	// Sorted, so that the error for several undeclared keys always names
	// the same one.
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.ContainsFunc(fields, func(f apitypes.Type) bool { return f.Name == k }) {
			if len(k) > 64 {
				return nil, inputErr(path, "has a field not declared in type %s", clip.To(typ, 64))
			}
			return nil, inputErr(strictjson.JoinPath(path, k), "is not declared in type %s", clip.To(typ, 64))
		}
	}
	out := make(map[string]any, len(m))
	for _, f := range fields {
		fv, ok := m[f.Name]
		if !ok {
			return nil, inputErr(strictjson.JoinPath(path, f.Name), "is required by type %s", clip.To(typ, 64))
		}
		cv, err := checkValue(types, f.Type, fv, strictjson.JoinPath(path, f.Name), depth+1)
		if err != nil {
			return nil, err
		}
		out[f.Name] = cv
	}
	return out, nil
}

func checkValue(types apitypes.Types, typ string, v any, path string, depth int) (any, error) {
	if v == nil {
		return nil, inputErr(path, "must not be null")
	}
	if strings.HasSuffix(typ, "]") {
		open := strings.LastIndexByte(typ, '[')
		if open <= 0 {
			return nil, inputErr(path, "has a malformed array type")
		}
		elem, size := typ[:open], typ[open+1:len(typ)-1]
		arr, ok := v.([]any)
		if !ok {
			return nil, inputErr(path, "must be an array")
		}
		if size != "" {
			n, err := strconv.Atoi(size)
			if err != nil || n < 0 {
				return nil, inputErr(path, "has a malformed array type")
			}
			if len(arr) != n {
				return nil, inputErr(path, "must have exactly %d elements", n)
			}
		}
		out := make([]any, len(arr))
		for i, e := range arr {
			cv, err := checkValue(types, elem, e, strictjson.IndexPath(path, i), depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = cv
		}
		return out, nil
	}
	if _, ok := types[typ]; ok {
		return checkStruct(types, typ, v, path, depth)
	}
	switch {
	case typ == "bool":
		if _, ok := v.(bool); !ok {
			return nil, inputErr(path, "must be a boolean")
		}
	case typ == "string":
		if _, ok := v.(string); !ok {
			return nil, inputErr(path, "must be a string")
		}
	case typ == "address":
		s, ok := v.(string)
		if !ok {
			return nil, inputErr(path, "must be an address string")
		}
		if _, err := parseAddressString(s, path); err != nil {
			return nil, err
		}
	case strings.HasPrefix(typ, "bytes"):
		s, ok := v.(string)
		if !ok || !strings.HasPrefix(s, "0x") {
			return nil, inputErr(path, "must be a 0x-hex string")
		}
		if _, err := decodeHex(s[2:], path, MaxHexBytes); err != nil {
			return nil, err
		}
	case strings.HasPrefix(typ, "uint") || strings.HasPrefix(typ, "int"):
		switch x := v.(type) {
		case json.Number:
			n, ok := new(big.Int).SetString(x.String(), 10)
			if !ok {
				return nil, inputErr(path, "must be an integer without fraction or exponent")
			}
			return n, nil
		case string:
			// Converted here so that apitypes sees one representation and
			// the policy engine compares numbers, not spellings.
			return parseEIP712IntString(x, path)
		default:
			return nil, inputErr(path, "must be an integer")
		}
	default:
		if _, ok := v.(json.Number); ok {
			return nil, inputErr(path, "a number does not fit type %s", clip.To(typ, 64))
		}
		// Unknown type names are reported by apitypes when hashing.
	}
	return v, nil
}

// parseEIP712Int accepts a JSON integer, a decimal string or a 0x-hex string,
// the forms EIP-712 JSON uses for integers.
func parseEIP712Int(raw json.RawMessage, path string) (*big.Int, error) {
	if raw[0] == '"' {
		s, err := parseString(raw, path)
		if err != nil {
			return nil, err
		}
		return parseEIP712IntString(s, path)
	}
	if bytes.ContainsAny(raw, ".eE") || len(raw) > maxQuantityChars {
		return nil, inputErr(path, "must be an integer without fraction or exponent")
	}
	n, ok := new(big.Int).SetString(string(raw), 10)
	if !ok {
		return nil, inputErr(path, "must be an integer")
	}
	return n, nil
}

func parseEIP712IntString(s, path string) (*big.Int, error) {
	if len(s) > maxQuantityChars {
		return nil, inputErr(path, "integer is too long")
	}
	if h, ok := strings.CutPrefix(s, "0x"); ok {
		n, ok := new(big.Int).SetString(h, 16)
		if !ok || h == "" || strings.ContainsAny(h, "+-_") {
			return nil, inputErr(path, "is not a valid hex integer")
		}
		return n, nil
	}
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || strings.ContainsAny(s, "+_") {
		return nil, inputErr(path, "must be an integer")
	}
	return n, nil
}

func bytesHex(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 2*len(b))
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(out)
}
