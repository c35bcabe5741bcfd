package policy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/internal/strictjson"
	"math/big"
	"reflect"
	"strconv"
	"strings"

	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
)

// abiArgJSON and abiEntryJSON are the JSON ABI as Cachet reads it before
// go-ethereum does: Cachet checks sizes and nesting first (go-ethereum
// builds reflect types for every array and tuple, and panics on an array
// type too large for memory), then hands go-ethereum its own re-encoding of
// what it checked, so both read the same ABI.
type abiArgJSON struct {
	Name         string       `json:"name"`
	Type         string       `json:"type"`
	InternalType string       `json:"internalType,omitempty"`
	Components   []abiArgJSON `json:"components,omitempty"`
	Indexed      bool         `json:"indexed,omitempty"`
}

type abiEntryJSON struct {
	Type            string       `json:"type"`
	Name            string       `json:"name,omitempty"`
	Inputs          []abiArgJSON `json:"inputs"`
	Outputs         []abiArgJSON `json:"outputs,omitempty"`
	StateMutability string       `json:"stateMutability,omitempty"`
	Constant        bool         `json:"constant,omitempty"`
	Payable         bool         `json:"payable,omitempty"`
	Anonymous       bool         `json:"anonymous,omitempty"`
}

// abiInfo is a compiled ABI: its functions by selector.
type abiInfo struct {
	parsed     abi.ABI
	bySelector map[[4]byte]*fnInfo
	byName     map[string]*fnInfo
}

// fnInfo is one function of an ABI.
type fnInfo struct {
	name   string // go-ethereum's key: overloads get a numeric suffix
	method *abi.Method
	// sig is the canonical signature, e.g. "transfer(address,uint256)"; it
	// keys the per-evaluation decode cache, since the same signature
	// decodes the same way whatever ABI it came from.
	sig string
}

var errABIShape = errors.New("must be a JSON ABI: an array of ABI items, or one item")

// abiShape explains an ABI that does not decode. The ABI is decoded with
// exact member names and no unknown member (strictjson.Decode): a member
// such as "NAME" or "typе" that another reader would take for a different
// field is refused, not folded into one.
func abiShape(err error) error {
	var se *strictjson.Error
	if errors.As(err, &se) && se.Path != "" {
		return fmt.Errorf("%s: %s", se.Path, se.Reason)
	}
	return errABIShape
}

// parseABI parses and checks a condition's ABI.
func parseABI(raw json.RawMessage) (*abiInfo, error) {
	if len(raw) == 0 {
		return nil, errors.New("is required for ethereum_calldata (even for a function without arguments)")
	}
	if len(raw) > MaxABIBytes {
		return nil, fmt.Errorf("exceeds %d bytes", MaxABIBytes)
	}
	raw = bytes.TrimSpace(raw)
	var entries []abiEntryJSON
	switch {
	case len(raw) > 0 && raw[0] == '[':
		if err := strictjson.Decode(raw, "", &entries); err != nil {
			return nil, abiShape(err)
		}
	case len(raw) > 0 && raw[0] == '{':
		var e abiEntryJSON
		if err := strictjson.Decode(raw, "", &e); err != nil {
			return nil, abiShape(err)
		}
		entries = []abiEntryJSON{e}
	default:
		return nil, errABIShape
	}
	functions := 0
	for i := range entries {
		e := &entries[i]
		if e.Type == "" {
			e.Type = "function" // the ABI specification's default
		}
		switch e.Type {
		case "function", "constructor", "fallback", "receive", "event", "error":
		default:
			return nil, fmt.Errorf("item %d: unknown type %q", i, clip.To(e.Type, 32))
		}
		if e.Type == "function" {
			functions++
			if e.Name == "" {
				return nil, fmt.Errorf("item %d: a function needs a name", i)
			}
			// "indexed" means nothing for a function; go-ethereum would
			// skip such an input when decoding and shift every later one.
			for j := range e.Inputs {
				e.Inputs[j].Indexed = false
			}
		}
		for j, a := range e.Inputs {
			if _, err := checkABIType(a, 0); err != nil {
				return nil, fmt.Errorf("item %d input %d: %w", i, j, err)
			}
		}
		for j, a := range e.Outputs {
			if _, err := checkABIType(a, 0); err != nil {
				return nil, fmt.Errorf("item %d output %d: %w", i, j, err)
			}
		}
	}
	if functions == 0 {
		return nil, errors.New("has no function")
	}
	canon, err := json.Marshal(entries)
	if err != nil {
		return nil, errABIShape
	}
	parsed, err := abi.JSON(bytes.NewReader(canon))
	if err != nil {
		return nil, fmt.Errorf("is not a valid ABI: %s", clip.To(err.Error(), 160))
	}
	info := &abiInfo{parsed: parsed, bySelector: map[[4]byte]*fnInfo{}, byName: map[string]*fnInfo{}}
	for name, m := range parsed.Methods {
		f := &fnInfo{name: name, method: &m, sig: m.Sig}
		var sel [4]byte
		copy(sel[:], m.ID)
		if other, dup := info.bySelector[sel]; dup {
			return nil, fmt.Errorf("functions %q and %q share the selector 0x%x", clip.To(other.name, 64), clip.To(name, 64), sel)
		}
		info.bySelector[sel] = f
		info.byName[name] = f
	}
	return info, nil
}

// checkABIType checks one argument's type string and returns its static
// encoded size in bytes, or 0 if it is dynamic. Sizes saturate above
// maxABIStaticBytes, which no transaction's data can hold.
func checkABIType(a abiArgJSON, depth int) (int, error) {
	if depth > maxABINesting {
		return 0, fmt.Errorf("types nest more than %d levels deep", maxABINesting)
	}
	t := a.Type
	base, dims, err := splitArrayType(t)
	if err != nil {
		return 0, err
	}
	if len(dims)+depth > maxABINesting {
		return 0, fmt.Errorf("types nest more than %d levels deep", maxABINesting)
	}
	var size int // 0: dynamic
	switch {
	case base == "tuple":
		if len(a.Components) == 0 {
			return 0, errors.New("a tuple needs components")
		}
		size = 0
		static := true
		for _, c := range a.Components {
			s, err := checkABIType(c, depth+1+len(dims))
			if err != nil {
				return 0, err
			}
			if s == 0 {
				static = false
			}
			size = satAdd(size, s)
		}
		if !static {
			size = 0
		}
	case base == "string" || base == "bytes":
		size = 0
	default:
		if !abiElementary(base) {
			return 0, fmt.Errorf("unsupported type %q", clip.To(base, 32))
		}
		if len(a.Components) > 0 {
			return 0, fmt.Errorf("type %q takes no components", clip.To(base, 32))
		}
		size = 32
	}
	// Dimensions apply innermost first: uint256[2][] is a slice of [2].
	for _, d := range dims {
		if d < 0 {
			size = 0
			continue
		}
		if size != 0 {
			size = satMul(size, d)
		}
	}
	if size > maxABIStaticBytes {
		return 0, fmt.Errorf("type %q is larger than any transaction's data", clip.To(t, 64))
	}
	return size, nil
}

// abiElementary reports whether t is an elementary Solidity ABI type other
// than string and bytes. go-ethereum also accepts sizes the specification
// does not (uint7, int300).
func abiElementary(t string) bool {
	switch t {
	case "address", "bool", "function":
		return true
	}
	if k, ok := elementaryKind(t); ok {
		return k == kindNumber || k == kindBytes
	}
	return false
}

// splitArrayType splits "uint256[2][]" into "uint256" and [2, -1].
func splitArrayType(t string) (string, []int, error) {
	i := strings.IndexByte(t, '[')
	if i < 0 {
		return t, nil, nil
	}
	base, rest := t[:i], t[i:]
	var dims []int
	for rest != "" {
		if rest[0] != '[' {
			return "", nil, fmt.Errorf("malformed array type %q", clip.To(t, 64))
		}
		j := strings.IndexByte(rest, ']')
		if j < 0 {
			return "", nil, fmt.Errorf("malformed array type %q", clip.To(t, 64))
		}
		d := rest[1:j]
		switch {
		case d == "":
			dims = append(dims, -1)
		case len(d) <= 6 && strings.Trim(d, "0123456789") == "":
			n, _ := strconv.Atoi(d)
			if n < 1 || n > maxABIArrayDimension {
				return "", nil, fmt.Errorf("array length in %q must be 1..%d", clip.To(t, 64), maxABIArrayDimension)
			}
			dims = append(dims, n)
		default:
			return "", nil, fmt.Errorf("malformed array type %q", clip.To(t, 64))
		}
		rest = rest[j+1:]
	}
	return base, dims, nil
}

func satAdd(a, b int) int {
	if a > maxABIStaticBytes || b > maxABIStaticBytes {
		return maxABIStaticBytes + 1
	}
	return a + b
}

func satMul(a, b int) int {
	if a > maxABIStaticBytes || b > maxABIStaticBytes || a*b > maxABIStaticBytes {
		return maxABIStaticBytes + 1
	}
	return a * b
}

// calldataPath is a compiled calldata field: the function, and the walk
// from its arguments to a leaf.
type calldataPath struct {
	abi    *abiInfo
	fn     *fnInfo
	fnOnly bool     // field is the function name alone
	steps  []int    // argument index, then component or element indices
	leaf   abi.Type // type at the end of steps
}

// compileCalldataField resolves "fn" or "fn.param.sub.0.x" against info.
func compileCalldataField(info *abiInfo, field string) (*calldataPath, kind, error) {
	segs := strings.Split(field, ".")
	if len(segs) > maxPathSegments {
		return nil, 0, fmt.Errorf("has more than %d segments", maxPathSegments)
	}
	f, ok := info.byName[segs[0]]
	if !ok {
		return nil, 0, fmt.Errorf("names function %q, which the ABI does not have", clip.To(segs[0], 64))
	}
	p := &calldataPath{abi: info, fn: f}
	if len(segs) == 1 {
		p.fnOnly = true
		return p, kindString, nil
	}
	inputs := f.method.Inputs
	i := -1
	for j, in := range inputs {
		if in.Name == segs[1] {
			i = j
			break
		}
	}
	if i < 0 {
		if n, ok := parseIndex(segs[1]); ok && n < len(inputs) {
			i = n
		} else {
			return nil, 0, fmt.Errorf("function %s has no parameter %q", clip.To(f.name, 64), clip.To(segs[1], 64))
		}
	}
	p.steps = append(p.steps, i)
	t := inputs[i].Type
	walked := segs[0] + "." + segs[1]
	for _, s := range segs[2:] {
		switch t.T {
		case abi.TupleTy:
			k := -1
			for j, n := range t.TupleRawNames {
				if n == s {
					k = j
					break
				}
			}
			if k < 0 {
				if n, ok := parseIndex(s); ok && n < len(t.TupleElems) {
					k = n
				} else {
					return nil, 0, fmt.Errorf("%s is a tuple without component %q", clip.To(walked, 64), clip.To(s, 64))
				}
			}
			p.steps = append(p.steps, k)
			t = *t.TupleElems[k]
		case abi.SliceTy, abi.ArrayTy:
			n, ok := parseIndex(s)
			if !ok {
				return nil, 0, fmt.Errorf("%s is an array; %q is not an index", clip.To(walked, 64), clip.To(s, 64))
			}
			if t.T == abi.ArrayTy && n >= t.Size {
				return nil, 0, fmt.Errorf("%s has %d elements; index %d is out of range", clip.To(walked, 64), t.Size, n)
			}
			p.steps = append(p.steps, n)
			t = *t.Elem
		default:
			return nil, 0, fmt.Errorf("%s is a %s; it has no %q", clip.To(walked, 64), t.String(), clip.To(s, 64))
		}
		walked += "." + s
	}
	p.leaf = t
	k, err := abiKind(t)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %w", clip.To(walked, 64), err)
	}
	return p, k, nil
}

func abiKind(t abi.Type) (kind, error) {
	switch t.T {
	case abi.IntTy, abi.UintTy:
		return kindNumber, nil
	case abi.AddressTy:
		return kindAddress, nil
	case abi.BoolTy:
		return kindBool, nil
	case abi.StringTy:
		return kindString, nil
	case abi.BytesTy, abi.FixedBytesTy, abi.FunctionTy:
		return kindBytes, nil
	case abi.TupleTy:
		return 0, errors.New("is a tuple; name one of its components")
	case abi.SliceTy, abi.ArrayTy:
		return 0, errors.New("is an array; add an element index")
	}
	return 0, fmt.Errorf("has type %s, which policies cannot compare", t.String())
}

// parseIndex parses a decimal array index (no sign, at most 7 digits).
func parseIndex(s string) (int, bool) {
	if s == "" || len(s) > 7 || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// decoded is one function's decoded arguments in one evaluation.
type decoded struct {
	sig    string
	values []any
	err    error
}

var (
	errNoCalldata   = errors.New("the transaction has no calldata (no 4-byte selector)")
	errNoTx         = errors.New("the request is not a transaction")
	errTooComplex   = errors.New("calldata decodes to more values than its size allows (ABI offsets alias)")
	errUnknownFn    = errors.New("the calldata's selector is not a function of the ABI")
	errIndexRange   = errors.New("an array index in the field is out of range for this calldata")
	errDecodePanics = errors.New("calldata decoding failed")
)

// decodeArgs decodes data's arguments for f: first a scan, mirroring
// go-ethereum's layout rules, that counts the values the decoding would
// build and refuses more than eight per 32-byte word of args (plus 256, at
// most maxDecodedABIValues): offsets in ABI encoding may point at the same
// region again and again, so a small input can describe an enormous value,
// whereas an encoding without aliasing yields about one value per word
// (one more per level of static nesting); then go-ethereum's own Unpack.
func decodeArgs(f *fnInfo, args []byte) (values []any, err error) {
	budget := min(maxDecodedABIValues, 8*(len(args)/32)+256)
	if len(args) > 0 {
		virtual := 0
		for i, a := range f.method.Inputs {
			if err := scanValue(&a.Type, (i+virtual)*32, args, &budget); err != nil {
				return nil, err
			}
			if (a.Type.T == abi.ArrayTy || a.Type.T == abi.TupleTy) && !isDynamic(&a.Type) {
				virtual += staticSize(&a.Type)/32 - 1
			}
		}
	}
	defer func() {
		// go-ethereum's decoder has panicked on hostile input before; a
		// panic here must deny the request, not stop the daemon.
		if r := recover(); r != nil {
			values, err = nil, errDecodePanics
		}
	}()
	return f.method.Inputs.Unpack(args)
}

func isDynamic(t *abi.Type) bool {
	switch t.T {
	case abi.StringTy, abi.BytesTy, abi.SliceTy:
		return true
	case abi.ArrayTy:
		return isDynamic(t.Elem)
	case abi.TupleTy:
		for _, e := range t.TupleElems {
			if isDynamic(e) {
				return true
			}
		}
	}
	return false
}

// staticSize is go-ethereum's getTypeSize.
func staticSize(t *abi.Type) int {
	if t.T == abi.ArrayTy && !isDynamic(t.Elem) {
		if t.Elem.T == abi.ArrayTy || t.Elem.T == abi.TupleTy {
			return t.Size * staticSize(t.Elem)
		}
		return t.Size * 32
	}
	if t.T == abi.TupleTy && !isDynamic(t) {
		total := 0
		for _, e := range t.TupleElems {
			total += staticSize(e)
		}
		return total
	}
	return 32
}

var errABILayout = errors.New("calldata does not decode against the ABI")

// scanValue follows go-ethereum's toGoType without building values.
func scanValue(t *abi.Type, index int, out []byte, budget *int) error {
	*budget--
	if *budget < 0 {
		return errTooComplex
	}
	if index < 0 || index+32 > len(out) {
		return errABILayout
	}
	var begin, length int
	if t.T == abi.StringTy || t.T == abi.BytesTy || t.T == abi.SliceTy {
		var err error
		if begin, length, err = lengthPrefix(index, out); err != nil {
			return err
		}
	}
	switch t.T {
	case abi.TupleTy:
		if isDynamic(t) {
			off := new(big.Int).SetBytes(out[index : index+32])
			if !off.IsInt64() || off.Int64() > int64(len(out)) {
				return errABILayout
			}
			return scanTuple(t, out[off.Int64():], budget)
		}
		return scanTuple(t, out[index:], budget)
	case abi.SliceTy:
		return scanEach(t, out[begin:], length, budget)
	case abi.ArrayTy:
		if isDynamic(t.Elem) {
			off := binary.BigEndian.Uint64(out[index+24 : index+32])
			if off > uint64(len(out)) {
				return errABILayout
			}
			return scanEach(t, out[off:], t.Size, budget)
		}
		return scanEach(t, out[index:], t.Size, budget)
	}
	return nil
}

func scanEach(t *abi.Type, out []byte, size int, budget *int) error {
	if size < 0 || size > len(out)/32 {
		return errABILayout
	}
	elemSize := staticSize(t.Elem)
	for i, j := 0, 0; j < size; i, j = i+elemSize, j+1 {
		if err := scanValue(t.Elem, i, out, budget); err != nil {
			return err
		}
	}
	return nil
}

func scanTuple(t *abi.Type, out []byte, budget *int) error {
	virtual := 0
	for i, e := range t.TupleElems {
		if err := scanValue(e, (i+virtual)*32, out, budget); err != nil {
			return err
		}
		if (e.T == abi.ArrayTy || e.T == abi.TupleTy) && !isDynamic(e) {
			virtual += staticSize(e)/32 - 1
		}
	}
	return nil
}

// lengthPrefix is go-ethereum's lengthPrefixPointsTo.
func lengthPrefix(index int, out []byte) (int, int, error) {
	end := new(big.Int).SetBytes(out[index : index+32])
	end.Add(end, big.NewInt(32))
	if !end.IsInt64() || end.Int64() > int64(len(out)) {
		return 0, 0, errABILayout
	}
	e := int(end.Int64())
	length := new(big.Int).SetBytes(out[e-32 : e])
	if !length.IsInt64() || length.Int64() > int64(len(out)-e) {
		return 0, 0, errABILayout
	}
	return e, int(length.Int64()), nil
}

// leaf walks p.steps through go-ethereum's decoded values and converts the
// value at the end.
func (p *calldataPath) leafValue(values []any) (val, error) {
	if len(p.steps) == 0 || p.steps[0] >= len(values) {
		return val{}, errABILayout
	}
	v := reflect.ValueOf(values[p.steps[0]])
	for _, s := range p.steps[1:] {
		switch v.Kind() {
		case reflect.Struct:
			if s >= v.NumField() {
				return val{}, errABILayout
			}
			v = v.Field(s)
		case reflect.Slice, reflect.Array:
			if s >= v.Len() {
				return val{}, errIndexRange
			}
			v = v.Index(s)
		default:
			return val{}, errABILayout
		}
	}
	return abiLeaf(p.leaf, v)
}

func abiLeaf(t abi.Type, v reflect.Value) (val, error) {
	switch t.T {
	case abi.IntTy, abi.UintTy:
		switch v.Kind() {
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			return val{kind: kindNumber, num: new(big.Int).SetUint64(v.Uint())}, nil
		case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			return val{kind: kindNumber, num: big.NewInt(v.Int())}, nil
		case reflect.Pointer:
			if n, ok := v.Interface().(*big.Int); ok && n != nil {
				return val{kind: kindNumber, num: n}, nil
			}
		}
	case abi.AddressTy:
		if a, ok := v.Interface().(common.Address); ok {
			return val{kind: kindAddress, addr: a}, nil
		}
	case abi.BoolTy:
		if v.Kind() == reflect.Bool {
			return val{kind: kindBool, b: v.Bool()}, nil
		}
	case abi.StringTy:
		if v.Kind() == reflect.String {
			return val{kind: kindString, str: v.String()}, nil
		}
	case abi.BytesTy:
		if b, ok := v.Interface().([]byte); ok {
			return val{kind: kindBytes, bytes: b}, nil
		}
	case abi.FixedBytesTy, abi.FunctionTy:
		if v.Kind() == reflect.Array {
			b := make([]byte, v.Len())
			reflect.Copy(reflect.ValueOf(b), v)
			return val{kind: kindBytes, bytes: b}, nil
		}
	}
	return val{}, errABILayout
}
