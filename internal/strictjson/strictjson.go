// Package strictjson reads JSON request bodies strictly, for APIs whose
// bodies say what is to be signed or allowed.
//
// Check walks a whole body once before it is decoded: it must be one JSON
// object, nested no deeper than a limit, with no key repeated in any object.
// Duplicate keys are refused because encoding/json keeps the last of them
// while other parsers, and the canonicalizers used to verify authorization
// signatures, may keep the first: a relay could append a second "to" that
// the signer of the request never saw. Refusing duplicates removes the
// ambiguity.
//
// ParseObject then decodes one object at a time, keeping its values raw
// until a field parser takes them, and Object.Only refuses keys the schema
// does not have: inside params an unknown key is almost always a
// misspelling (chainId for chain_id), and ignoring it would sign or store
// something other than what the client meant.
//
// Every problem at a place in the body is an *Error naming its JSON path
// ("params.transaction.nonce", "rules[2].conditions[0]"), so that a client
// can find what to fix; a problem with the body as a whole is ErrSyntax,
// ErrNotObject or ErrTrailingData. Reasons never repeat a value, and Only
// never repeats a key longer than MaxKeyChars, so that a large or hostile
// input is not echoed back. Callers convert these errors to their own types
// at their API's boundary.
//
// The APIs that share this package name a few things differently (empty and
// over-long keys, where a hint is offered); each says how once, in Options.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/cachet-custody/cachet/internal/clip"
)

const (
	// MaxKeyChars is the longest key an error names: Only reports a longer
	// unknown key by its length, and by default Check names it "…".
	MaxKeyChars = 64
	// MaxPathChars caps Error.Path, which is built from the client's keys.
	MaxPathChars = 256
)

// Problems with the body as a whole, which have no path.
var (
	ErrSyntax       = errors.New("strictjson: the body is not valid JSON")
	ErrNotObject    = errors.New("strictjson: the body is not a JSON object")
	ErrTrailingData = errors.New("strictjson: the body has data after its JSON value")
	ErrInvalidUTF8  = errors.New("strictjson: the body is not valid UTF-8")
)

// Error is a problem at one place in a body. Path is the place's JSON path,
// "" for the body's own object; Reason says what is wrong without repeating
// the value.
type Error struct {
	Path   string
	Reason string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return "invalid body: " + e.Reason
	}
	return "invalid " + e.Path + ": " + e.Reason
}

func newError(path, format string, args ...any) *Error {
	path = clip.To(path, MaxPathChars)
	return &Error{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// Options are what the APIs that share this package do differently. An API
// sets them once; the zero value is usable and a nil *Options is the zero
// value.
type Options struct {
	// Hints maps keys clients often send by mistake (camelCase spellings,
	// other APIs' names) to the key meant, for Only's "did you mean" reason.
	Hints map[string]string
	// HintAnywhere offers a hint even in an object where the key it names
	// is not allowed either, which points at a field sent at the wrong
	// level. By default a hint is offered only where its key is allowed.
	HintAnywhere bool
	// DropEmptyKeys names an empty key by its object's path ("a" rather
	// than JoinPath's "a.").
	DropEmptyKeys bool
	// KeepLongKeys names a key longer than MaxKeyChars in full in the paths
	// of the values below it (Error.Path is capped all the same) and reports
	// a duplicate of it at its object. By default such a key is named "…"
	// in every path.
	KeepLongKeys bool
}

var zeroOptions Options

func (opt *Options) orZero() *Options {
	if opt == nil {
		return &zeroOptions
	}
	return opt
}

func (opt *Options) join(parent, key string) string {
	if key == "" && opt.DropEmptyKeys {
		return parent
	}
	return JoinPath(parent, key)
}

// Check checks that body is one JSON object, nested no deeper than maxDepth
// objects and arrays (the body's own object is the first), with no key
// repeated in any object. It reads the body in order and reports the first
// problem it meets: ErrNotObject as soon as the first token is not "{",
// ErrSyntax where the JSON breaks, ErrTrailingData for anything after the
// object, or an *Error for a duplicate key or a value nested too deep.
func (opt *Options) Check(body []byte, maxDepth int) error {
	return opt.orZero().check(body, maxDepth, true)
}

// CheckValue is Check for a body that may be any one JSON value. A caller
// that wants an object but prefers to report what is wrong inside a value of
// another type first checks the type after CheckValue.
func (opt *Options) CheckValue(body []byte, maxDepth int) error {
	return opt.orZero().check(body, maxDepth, false)
}

func (opt *Options) check(body []byte, maxDepth int, object bool) error {
	// Invalid UTF-8 is refused before anything else, anywhere in the body:
	// encoding/json would read it as U+FFFD, so two different bodies would
	// mean one thing, and the signer's canonical form and ours could differ.
	if !utf8.Valid(body) {
		return ErrInvalidUTF8
	}
	p := getDecoder(body)
	defer putDecoder(p)
	dec := p.dec
	tok, err := dec.ReadToken()
	if err != nil {
		return ErrSyntax
	}
	if object && tok.Kind() != '{' {
		return ErrNotObject
	}
	w := walker{dec: dec, opt: opt, maxDepth: maxDepth}
	if err := w.value(tok.Kind(), "", 0); err != nil {
		return err
	}
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return ErrTrailingData
	}
	return nil
}

// walker reads a body token by token with jsontext, the tokenizer of
// encoding/json/v2, which itself refuses repeated member names (compared
// after unescaping), invalid UTF-8 and unpaired surrogate escapes; the
// walker adds the depth bound and names every problem by its path. Its
// recursion is bounded by maxDepth.
type walker struct {
	dec      *jsontext.Decoder
	opt      *Options
	maxDepth int
}

// value walks the value whose first token, of kind k, has been read, at
// path, inside depth enclosing objects and arrays.
func (w *walker) value(k jsontext.Kind, path string, depth int) error {
	if k != '{' && k != '[' {
		return nil
	}
	if depth+1 > w.maxDepth {
		return newError(path, "is nested more than %d levels deep", w.maxDepth)
	}
	if k == '{' {
		return w.object(path, depth+1)
	}
	for i := 0; ; i++ {
		tok, err := w.dec.ReadToken()
		if err != nil {
			return w.syntax(err, path)
		}
		if tok.Kind() == ']' {
			return nil
		}
		if err := w.value(tok.Kind(), IndexPath(path, i), depth+1); err != nil {
			return err
		}
	}
}

// object walks the members of an object whose "{" has been read.
func (w *walker) object(path string, depth int) error {
	for {
		tok, err := w.dec.ReadToken()
		if err != nil {
			return w.syntax(err, path)
		}
		if tok.Kind() == '}' {
			return nil
		}
		key := tok.String()
		child := w.opt.join(path, key)
		if len(key) > MaxKeyChars && !w.opt.KeepLongKeys {
			child = w.opt.join(path, "…")
		}
		vt, err := w.dec.ReadToken()
		if err != nil {
			return w.syntax(err, path)
		}
		if err := w.value(vt.Kind(), child, depth); err != nil {
			return err
		}
	}
}

// syntax converts a tokenizer error inside the object or array at path: a
// repeated name is an *Error at the name, anything else ErrSyntax.
func (w *walker) syntax(err error, path string) error {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) && errors.Is(se.Err, jsontext.ErrDuplicateName) {
		key := se.JSONPointer.LastToken()
		switch {
		case len(key) > MaxKeyChars && w.opt.KeepLongKeys:
			return newError(path, "duplicate key")
		case len(key) > MaxKeyChars:
			key = "…"
		}
		return newError(w.opt.join(path, key), "duplicate key")
	}
	return ErrSyntax
}

// Object is a decoded JSON object whose values stay raw until a field
// parser takes them. It knows its own path, to name its fields.
type Object struct {
	path   string
	fields map[string]json.RawMessage
	opt    *Options
}

// ParseObject decodes raw as a JSON object at path. A missing or null value
// is an *Error "is required" and any other value "must be a JSON object";
// callers check Present first where the object is optional. Path "" is the
// body itself, for which either is ErrNotObject.
//
// ParseObject does not look for duplicate keys: Check has, for the whole
// body, before anything is parsed.
func (opt *Options) ParseObject(raw json.RawMessage, path string) (*Object, error) {
	raw = bytes.TrimSpace(raw)
	if !Present(raw) {
		if path == "" {
			return nil, ErrNotObject
		}
		return nil, newError(path, "is required")
	}
	m, ok := members(raw)
	if !ok {
		if path == "" {
			return nil, ErrNotObject
		}
		return nil, newError(path, "must be a JSON object")
	}
	return &Object{path: path, fields: m, opt: opt.orZero()}, nil
}

// members reads raw, which must be exactly one JSON object, into its
// members, each value a subslice of raw. One jsontext pass reads the
// object: a request's nested objects (body, params, transaction) are each
// read once per level, where encoding/json validated and then decoded each
// (two scans and a reflect map per level, half the cost of parsing a
// signing request). jsontext refuses what Check refuses (a repeated name,
// invalid UTF-8), so a value that passed Check reads the same.
func members(raw []byte) (map[string]json.RawMessage, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false
	}
	p := getDecoder(raw)
	defer putDecoder(p)
	dec := p.dec
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil, false
	}
	m := map[string]json.RawMessage{}
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil || tok.Kind() != '"' {
			return nil, false
		}
		name := tok.String() // before the next read voids tok
		v, err := dec.ReadValue()
		if err != nil {
			return nil, false
		}
		end := int(dec.InputOffset())
		m[name] = raw[end-len(v) : end : end]
	}
	if _, err := dec.ReadToken(); err != nil { // the closing brace
		return nil, false
	}
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return nil, false
	}
	return m, true
}

// decoders are reused: a decoder's buffer is most of what reading one
// small object allocates.
var decoders = sync.Pool{New: func() any {
	p := &pooledDecoder{}
	p.dec = jsontext.NewDecoder(&p.r)
	return p
}}

type pooledDecoder struct {
	dec *jsontext.Decoder
	r   bytes.Reader
}

func getDecoder(raw []byte) *pooledDecoder {
	p := decoders.Get().(*pooledDecoder)
	p.r.Reset(raw)
	p.dec.Reset(&p.r)
	return p
}

// putDecoder returns p to the pool holding nothing of the body it read.
func putDecoder(p *pooledDecoder) {
	p.r.Reset(nil)
	p.dec.Reset(&p.r)
	decoders.Put(p)
}

// elements is members for a JSON array.
func elements(raw []byte) ([]json.RawMessage, bool) {
	if len(raw) == 0 || raw[0] != '[' {
		return nil, false
	}
	p := getDecoder(raw)
	defer putDecoder(p)
	dec := p.dec
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '[' {
		return nil, false
	}
	items := []json.RawMessage{}
	for dec.PeekKind() != ']' {
		v, err := dec.ReadValue()
		if err != nil {
			return nil, false
		}
		end := int(dec.InputOffset())
		items = append(items, raw[end-len(v):end:end])
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, false
	}
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return nil, false
	}
	return items, true
}

// ParseArray decodes raw as a JSON array at path, its elements left raw. A
// missing or null value, like any other that is not an array, is an *Error
// "must be an array".
func ParseArray(raw json.RawMessage, path string) ([]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	items, ok := elements(raw)
	if !ok {
		return nil, newError(path, "must be an array")
	}
	return items, nil
}

// Field returns the path of the object's key name.
func (o *Object) Field(name string) string { return o.opt.join(o.path, name) }

// Get returns the raw value of name, or nil if it is absent or JSON null:
// clients written in JavaScript send null for "not set".
func (o *Object) Get(name string) json.RawMessage {
	v := o.fields[name]
	if !Present(v) {
		return nil
	}
	return v
}

// Has reports whether the object has the key name, even with a null value.
func (o *Object) Has(name string) bool {
	_, ok := o.fields[name]
	return ok
}

// Keys returns the object's keys in sorted order.
func (o *Object) Keys() []string {
	keys := make([]string, 0, len(o.fields))
	for k := range o.fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Only refuses any key not in allowed. Of several, it reports the first in
// sorted order, so that the error is deterministic: at the key's path, with
// a hint when Options.Hints has one for it (and, unless HintAnywhere, the
// key the hint names is in allowed), or at the object's path, by its
// length, when the key is longer than MaxKeyChars.
func (o *Object) Only(allowed ...string) error {
	var k string
	found := false
	for key := range o.fields {
		if !slices.Contains(allowed, key) && (!found || key < k) {
			k, found = key, true
		}
	}
	if !found {
		return nil
	}
	if len(k) > MaxKeyChars {
		return newError(o.path, "has an unknown field with a %d-character name", len(k))
	}
	if hint, ok := o.opt.Hints[k]; ok && (o.opt.HintAnywhere || slices.Contains(allowed, hint)) {
		return newError(o.Field(k), "unknown field; did you mean %q?", hint)
	}
	return newError(o.Field(k), "unknown field")
}

// JoinPath returns the path of key name in the object at parent: "a.b", or
// just name for the body's own object (parent "").
func JoinPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// IndexPath returns the path of element i of the array at parent: "a[2]".
func IndexPath(parent string, i int) string { return parent + "[" + strconv.Itoa(i) + "]" }

// Present reports whether raw holds a value other than JSON null.
func Present(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
}
