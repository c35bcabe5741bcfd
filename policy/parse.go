package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"

	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// maxJSONDepth caps nesting in a body; ABIs with nested tuples are the only
// deep part.
const maxJSONDepth = 64

// ParsePolicy parses the body of POST /v1/policies strictly: an unknown key,
// a duplicate key or a value of the wrong JSON type is a *ValidationError
// naming its path. It checks shapes only; Validate checks meaning (methods,
// fields, operators, values, limits). "id" is refused, as are rule ids: the
// API assigns them.
func ParsePolicy(body []byte) (*Policy, error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	o, err := parseObject(body, "")
	if err != nil {
		return nil, err
	}
	if err := o.only("version", "name", "chain_type", "owner", "owner_id", "rules"); err != nil {
		return nil, err
	}
	p := &Policy{}
	if p.Version, err = o.requiredString("version"); err != nil {
		return nil, err
	}
	if p.Name, err = o.requiredString("name"); err != nil {
		return nil, err
	}
	if p.ChainType, err = o.requiredString("chain_type"); err != nil {
		return nil, err
	}
	if p.Owner, p.OwnerID, err = o.owner(); err != nil {
		return nil, err
	}
	raw := o.get("rules")
	if raw == nil {
		return nil, verr("rules", "is required")
	}
	if p.Rules, err = parseRules(raw, "rules"); err != nil {
		return nil, err
	}
	return p, nil
}

// PolicyUpdate is the body of PATCH /v1/policies/{id}: each field is nil
// when absent. Rules, when set, replaces the policy's rules (the API assigns
// new rule ids). OwnerSet with Owner and OwnerID nil removes the owner.
type PolicyUpdate struct {
	Name     *string
	Rules    *[]Rule
	Owner    *Owner
	OwnerID  *string
	OwnerSet bool
}

// ParsePolicyUpdate parses the body of PATCH /v1/policies/{id} as strictly
// as ParsePolicy. Apply the update to the stored policy and Validate the
// result.
func ParsePolicyUpdate(body []byte) (*PolicyUpdate, error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	o, err := parseObject(body, "")
	if err != nil {
		return nil, err
	}
	if err := o.only("name", "rules", "owner", "owner_id"); err != nil {
		return nil, err
	}
	u := &PolicyUpdate{}
	if o.get("name") != nil {
		n, err := o.requiredString("name")
		if err != nil {
			return nil, err
		}
		u.Name = &n
	}
	if raw := o.get("rules"); raw != nil {
		rules, err := parseRules(raw, "rules")
		if err != nil {
			return nil, err
		}
		u.Rules = &rules
	}
	_, hasOwner := o.fields["owner"]
	_, hasOwnerID := o.fields["owner_id"]
	u.OwnerSet = hasOwner || hasOwnerID
	if u.Owner, u.OwnerID, err = o.owner(); err != nil {
		return nil, err
	}
	return u, nil
}

// ParseRule parses the body of POST /v1/policies/{id}/rules (and of a rule
// PATCH) strictly. Paths in its errors are relative to the rule
// ("conditions[0].operator"); ValidateRule checks meaning.
func ParseRule(body []byte) (*Rule, error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	r, err := parseRule(body, "")
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// ParseAggregation parses the body of POST /v1/aggregations strictly;
// ValidateAggregation checks meaning.
func ParseAggregation(body []byte) (*Aggregation, error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	o, err := parseObject(body, "")
	if err != nil {
		return nil, err
	}
	if err := o.only("name", "method", "metric", "window", "conditions", "group_by", "owner", "owner_id"); err != nil {
		return nil, err
	}
	a := &Aggregation{}
	if a.Name, err = o.requiredString("name"); err != nil {
		return nil, err
	}
	if a.Method, err = o.requiredString("method"); err != nil {
		return nil, err
	}
	if a.Owner, a.OwnerID, err = o.owner(); err != nil {
		return nil, err
	}

	mo, err := parseObject(o.get("metric"), "metric")
	if err != nil {
		return nil, err
	}
	if err := mo.only("field_source", "field", "abi", "function"); err != nil {
		return nil, err
	}
	if a.Metric.FieldSource, err = mo.requiredString("field_source"); err != nil {
		return nil, err
	}
	if a.Metric.Field, err = mo.requiredString("field"); err != nil {
		return nil, err
	}
	if a.Metric.Function, err = mo.requiredString("function"); err != nil {
		return nil, err
	}
	a.Metric.ABI = mo.rawABI()

	wo, err := parseObject(o.get("window"), "window")
	if err != nil {
		return nil, err
	}
	if err := wo.only("type", "seconds"); err != nil {
		return nil, err
	}
	if a.Window.Type, err = wo.requiredString("type"); err != nil {
		return nil, err
	}
	sec := wo.get("seconds")
	if sec == nil {
		return nil, verr(wo.field("seconds"), "is required")
	}
	var n json.Number
	if sec[0] < '0' || sec[0] > '9' || json.Unmarshal(sec, &n) != nil {
		return nil, verr(wo.field("seconds"), "must be a positive integer")
	}
	if a.Window.Seconds, err = n.Int64(); err != nil {
		return nil, verr(wo.field("seconds"), "must be an integer number of seconds")
	}

	if raw := o.get("conditions"); raw != nil {
		if a.Conditions, err = parseConditions(raw, "conditions"); err != nil {
			return nil, err
		}
	}
	if raw := o.get("group_by"); raw != nil {
		items, err := parseArray(raw, "group_by")
		if err != nil {
			return nil, err
		}
		a.GroupBy = make([]GroupByField, len(items))
		for i, it := range items {
			p := indexPath("group_by", i)
			g, err := parseObject(it, p)
			if err != nil {
				return nil, err
			}
			if err := g.only("field_source", "field", "abi"); err != nil {
				return nil, err
			}
			if a.GroupBy[i].FieldSource, err = g.requiredString("field_source"); err != nil {
				return nil, err
			}
			if a.GroupBy[i].Field, err = g.requiredString("field"); err != nil {
				return nil, err
			}
			a.GroupBy[i].ABI = g.rawABI()
		}
	}
	return a, nil
}

func parseRules(raw json.RawMessage, path string) ([]Rule, error) {
	items, err := parseArray(raw, path)
	if err != nil {
		return nil, err
	}
	rules := make([]Rule, len(items))
	for i, it := range items {
		if rules[i], err = parseRule(it, indexPath(path, i)); err != nil {
			return nil, err
		}
	}
	return rules, nil
}

func parseRule(raw json.RawMessage, path string) (Rule, error) {
	var r Rule
	o, err := parseObject(raw, path)
	if err != nil {
		return r, err
	}
	if err := o.only("name", "method", "conditions", "action"); err != nil {
		return r, err
	}
	if r.Name, err = o.requiredString("name"); err != nil {
		return r, err
	}
	if r.Method, err = o.requiredString("method"); err != nil {
		return r, err
	}
	if r.Action, err = o.requiredString("action"); err != nil {
		return r, err
	}
	c := o.get("conditions")
	if c == nil {
		return r, verr(o.field("conditions"), "is required (use [] for a rule that always matches)")
	}
	if r.Conditions, err = parseConditions(c, o.field("conditions")); err != nil {
		return r, err
	}
	return r, nil
}

func parseConditions(raw json.RawMessage, path string) ([]Condition, error) {
	items, err := parseArray(raw, path)
	if err != nil {
		return nil, err
	}
	conds := make([]Condition, len(items))
	for i, it := range items {
		p := indexPath(path, i)
		o, err := parseObject(it, p)
		if err != nil {
			return nil, err
		}
		if err := o.only("field_source", "field", "operator", "value", "abi", "typed_data"); err != nil {
			return nil, err
		}
		c := &conds[i]
		if c.FieldSource, err = o.requiredString("field_source"); err != nil {
			return nil, err
		}
		if c.Field, err = o.requiredString("field"); err != nil {
			return nil, err
		}
		if c.Operator, err = o.requiredString("operator"); err != nil {
			return nil, err
		}
		v := o.get("value")
		if v == nil {
			return nil, verr(o.field("value"), "is required")
		}
		s, list, isList, err := decodeValue(v)
		if err != nil {
			var ie *itemError
			if errors.As(err, &ie) {
				return nil, verr(indexPath(o.field("value"), ie.index), "%s", errValueShape.Error())
			}
			return nil, verr(o.field("value"), "%s", errValueShape.Error())
		}
		c.Value = Value{Scalar: s, List: list, IsList: isList}
		c.ABI = o.rawABI()
		if td := o.get("typed_data"); td != nil {
			if c.TypedData, err = parseTypedDataSpec(td, o.field("typed_data")); err != nil {
				return nil, err
			}
		}
	}
	return conds, nil
}

func parseTypedDataSpec(raw json.RawMessage, path string) (*TypedDataSpec, error) {
	o, err := parseObject(raw, path)
	if err != nil {
		return nil, err
	}
	if err := o.only("types", "primary_type"); err != nil {
		return nil, err
	}
	spec := &TypedDataSpec{Types: apitypes.Types{}}
	if spec.PrimaryType, err = o.requiredString("primary_type"); err != nil {
		return nil, err
	}
	to, err := parseObject(o.get("types"), o.field("types"))
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(to.fields))
	for k := range to.fields {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, name := range names {
		p := to.field(name)
		items, err := parseArray(to.fields[name], p)
		if err != nil {
			return nil, err
		}
		fields := make([]apitypes.Type, len(items))
		for i, it := range items {
			fo, err := parseObject(it, indexPath(p, i))
			if err != nil {
				return nil, err
			}
			if err := fo.only("name", "type"); err != nil {
				return nil, err
			}
			if fields[i].Name, err = fo.requiredString("name"); err != nil {
				return nil, err
			}
			if fields[i].Type, err = fo.requiredString("type"); err != nil {
				return nil, err
			}
		}
		spec.Types[name] = fields
	}
	return spec, nil
}

// object is a decoded JSON object whose values stay raw until a field parser
// takes them.
type object struct {
	path   string
	fields map[string]json.RawMessage
}

func parseObject(raw json.RawMessage, path string) (*object, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		if path == "" {
			return nil, verr("", "the body must be a JSON object")
		}
		return nil, verr(path, "is required")
	}
	var m map[string]json.RawMessage
	if raw[0] != '{' || json.Unmarshal(raw, &m) != nil {
		if path == "" {
			return nil, verr("", "the body must be a JSON object")
		}
		return nil, verr(path, "must be a JSON object")
	}
	return &object{path: path, fields: m}, nil
}

func parseArray(raw json.RawMessage, path string) ([]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, verr(path, "must be an array")
	}
	return items, nil
}

func (o *object) field(name string) string { return joinPath(o.path, name) }

// get returns the raw value of name, or nil if absent or null.
func (o *object) get(name string) json.RawMessage {
	v := bytes.TrimSpace(o.fields[name])
	if len(v) == 0 || bytes.Equal(v, []byte("null")) {
		return nil
	}
	return v
}

// only refuses keys outside allowed, reporting the first in sorted order.
func (o *object) only(allowed ...string) error {
	var unknown []string
	for k := range o.fields {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	k := unknown[0]
	if len(k) > 64 {
		return verr(o.path, "has an unknown field with a %d-character name", len(k))
	}
	if hint, ok := fieldHints[k]; ok && slices.Contains(allowed, hint) {
		return verr(o.field(k), "unknown field; did you mean %q?", hint)
	}
	return verr(o.field(k), "unknown field")
}

var fieldHints = map[string]string{
	"fieldSource": "field_source",
	"primaryType": "primary_type",
	"chainType":   "chain_type",
	"ownerId":     "owner_id",
	"groupBy":     "group_by",
	"typedData":   "typed_data",
}

func (o *object) requiredString(name string) (string, error) {
	raw := o.get(name)
	if raw == nil {
		return "", verr(o.field(name), "is required")
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", verr(o.field(name), "must be a string")
	}
	return s, nil
}

// rawABI returns the "abi" value compacted, or nil. Its shape is checked by
// Validate.
func (o *object) rawABI() json.RawMessage {
	raw := o.get("abi")
	if raw == nil {
		return nil
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return append(json.RawMessage(nil), raw...)
	}
	return b.Bytes()
}

// owner reads "owner" and "owner_id": mutually exclusive; owner is
// {"public_key"} or {"user_id"}.
func (o *object) owner() (*Owner, *string, error) {
	var owner *Owner
	var ownerID *string
	if raw := o.get("owner"); raw != nil {
		oo, err := parseObject(raw, o.field("owner"))
		if err != nil {
			return nil, nil, err
		}
		if err := oo.only("public_key", "user_id"); err != nil {
			return nil, nil, err
		}
		owner = &Owner{}
		for _, f := range []struct {
			name string
			dst  **string
		}{{"public_key", &owner.PublicKey}, {"user_id", &owner.UserID}} {
			if oo.get(f.name) != nil {
				s, err := oo.requiredString(f.name)
				if err != nil {
					return nil, nil, err
				}
				*f.dst = &s
			}
		}
		if (owner.PublicKey == nil) == (owner.UserID == nil) {
			return nil, nil, verr(o.field("owner"), "give exactly one of public_key and user_id")
		}
	}
	if o.get("owner_id") != nil {
		s, err := o.requiredString("owner_id")
		if err != nil {
			return nil, nil, err
		}
		ownerID = &s
	}
	if owner != nil && ownerID != nil {
		return nil, nil, verr(o.field("owner_id"), "owner and owner_id are mutually exclusive")
	}
	return owner, ownerID, nil
}

// checkJSON checks that body is exactly one JSON value, nested at most
// maxJSONDepth levels, without duplicate keys in any object.
func checkJSON(body []byte) error {
	if !json.Valid(body) {
		return verr("", "the body is not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type frame struct {
		path   string
		object bool
		keys   map[string]bool
		index  int
		key    string
		expect bool // object: expecting a key next
	}
	var stack []*frame
	valuePath := func() string {
		if len(stack) == 0 {
			return ""
		}
		f := stack[len(stack)-1]
		if f.object {
			return joinPath(f.path, f.key)
		}
		return indexPath(f.path, f.index)
	}
	afterValue := func() {
		if len(stack) == 0 {
			return
		}
		f := stack[len(stack)-1]
		if f.object {
			f.expect = true
		} else {
			f.index++
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return verr("", "the body is not valid JSON")
		}
		if len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].expect {
			f := stack[len(stack)-1]
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				afterValue()
				continue
			}
			k, _ := tok.(string)
			if f.keys[k] {
				p := joinPath(f.path, k)
				if len(k) > 64 {
					p = f.path
				}
				return verr(p, "duplicate key")
			}
			f.keys[k] = true
			f.key = k
			f.expect = false
			continue
		}
		switch d := tok.(type) {
		case json.Delim:
			switch d {
			case '{', '[':
				if len(stack) >= maxJSONDepth {
					return verr(valuePath(), "is nested more than %d levels deep", maxJSONDepth)
				}
				stack = append(stack, &frame{path: valuePath(), object: d == '{', keys: map[string]bool{}, expect: d == '{'})
			case ']':
				stack = stack[:len(stack)-1]
				afterValue()
			}
		default:
			afterValue()
		}
	}
	if !strings.HasPrefix(strings.TrimSpace(string(body)), "{") {
		return verr("", "the body must be a JSON object")
	}
	return nil
}
