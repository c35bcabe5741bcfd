package policy

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/cachet-custody/cachet/internal/strictjson"
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
	raw := o.Get("rules")
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
	if o.Get("name") != nil {
		n, err := o.requiredString("name")
		if err != nil {
			return nil, err
		}
		u.Name = &n
	}
	if raw := o.Get("rules"); raw != nil {
		rules, err := parseRules(raw, "rules")
		if err != nil {
			return nil, err
		}
		u.Rules = &rules
	}
	u.OwnerSet = o.Has("owner") || o.Has("owner_id")
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

	mo, err := parseObject(o.Get("metric"), "metric")
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

	wo, err := parseObject(o.Get("window"), "window")
	if err != nil {
		return nil, err
	}
	if err := wo.only("type", "seconds"); err != nil {
		return nil, err
	}
	if a.Window.Type, err = wo.requiredString("type"); err != nil {
		return nil, err
	}
	sec := wo.Get("seconds")
	if sec == nil {
		return nil, verr(wo.Field("seconds"), "is required")
	}
	var n json.Number
	if sec[0] < '0' || sec[0] > '9' || json.Unmarshal(sec, &n) != nil {
		return nil, verr(wo.Field("seconds"), "must be a positive integer")
	}
	if a.Window.Seconds, err = n.Int64(); err != nil {
		return nil, verr(wo.Field("seconds"), "must be an integer number of seconds")
	}

	if raw := o.Get("conditions"); raw != nil {
		if a.Conditions, err = parseConditions(raw, "conditions"); err != nil {
			return nil, err
		}
	}
	if raw := o.Get("group_by"); raw != nil {
		items, err := parseArray(raw, "group_by")
		if err != nil {
			return nil, err
		}
		a.GroupBy = make([]GroupByField, len(items))
		for i, it := range items {
			p := strictjson.IndexPath("group_by", i)
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
		if rules[i], err = parseRule(it, strictjson.IndexPath(path, i)); err != nil {
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
	c := o.Get("conditions")
	if c == nil {
		return r, verr(o.Field("conditions"), "is required (use [] for a rule that always matches)")
	}
	if r.Conditions, err = parseConditions(c, o.Field("conditions")); err != nil {
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
		p := strictjson.IndexPath(path, i)
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
		v := o.Get("value")
		if v == nil {
			return nil, verr(o.Field("value"), "is required")
		}
		s, list, isList, err := decodeValue(v)
		if err != nil {
			var ie *itemError
			if errors.As(err, &ie) {
				return nil, verr(strictjson.IndexPath(o.Field("value"), ie.index), "%s", errValueShape.Error())
			}
			return nil, verr(o.Field("value"), "%s", errValueShape.Error())
		}
		c.Value = Value{Scalar: s, List: list, IsList: isList}
		c.ABI = o.rawABI()
		if td := o.Get("typed_data"); td != nil {
			if c.TypedData, err = parseTypedDataSpec(td, o.Field("typed_data")); err != nil {
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
	to, err := parseObject(o.Get("types"), o.Field("types"))
	if err != nil {
		return nil, err
	}
	for _, name := range to.Keys() {
		p := to.Field(name)
		items, err := parseArray(to.Get(name), p)
		if err != nil {
			return nil, err
		}
		fields := make([]apitypes.Type, len(items))
		for i, it := range items {
			fo, err := parseObject(it, strictjson.IndexPath(p, i))
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

// strict reads policy bodies (see package strictjson). Paths join as
// policy's own do (an empty key names its object), a key longer than
// strictjson.MaxKeyChars stays in the paths below it, and a hint is offered
// only where the key it names is allowed.
var strict = &strictjson.Options{Hints: fieldHints, DropEmptyKeys: true, KeepLongKeys: true}

// object is a decoded JSON object whose values stay raw until a field parser
// takes them.
type object struct{ *strictjson.Object }

// parseObject decodes raw as the JSON object at path; path "" is the body.
func parseObject(raw json.RawMessage, path string) (object, error) {
	o, err := strict.ParseObject(raw, path)
	return object{o}, fromStrict(err)
}

func parseArray(raw json.RawMessage, path string) ([]json.RawMessage, error) {
	items, err := strictjson.ParseArray(raw, path)
	return items, fromStrict(err)
}

// only refuses keys outside allowed, reporting the first in sorted order.
func (o object) only(allowed ...string) error { return fromStrict(o.Only(allowed...)) }

var fieldHints = map[string]string{
	"fieldSource": "field_source",
	"primaryType": "primary_type",
	"chainType":   "chain_type",
	"ownerId":     "owner_id",
	"groupBy":     "group_by",
	"typedData":   "typed_data",
}

func (o object) requiredString(name string) (string, error) {
	raw := o.Get(name)
	if raw == nil {
		return "", verr(o.Field(name), "is required")
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", verr(o.Field(name), "must be a string")
	}
	return s, nil
}

// rawABI returns the "abi" value compacted, or nil. Its shape is checked by
// Validate.
func (o object) rawABI() json.RawMessage {
	raw := o.Get("abi")
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
func (o object) owner() (*Owner, *string, error) {
	var owner *Owner
	var ownerID *string
	if raw := o.Get("owner"); raw != nil {
		oo, err := parseObject(raw, o.Field("owner"))
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
			if oo.Get(f.name) != nil {
				s, err := oo.requiredString(f.name)
				if err != nil {
					return nil, nil, err
				}
				*f.dst = &s
			}
		}
		if (owner.PublicKey == nil) == (owner.UserID == nil) {
			return nil, nil, verr(o.Field("owner"), "give exactly one of public_key and user_id")
		}
	}
	if o.Get("owner_id") != nil {
		s, err := o.requiredString("owner_id")
		if err != nil {
			return nil, nil, err
		}
		ownerID = &s
	}
	if owner != nil && ownerID != nil {
		return nil, nil, verr(o.Field("owner_id"), "owner and owner_id are mutually exclusive")
	}
	return owner, ownerID, nil
}

// checkJSON checks that body is exactly one JSON object, nested at most
// maxJSONDepth levels, without duplicate keys in any object. Invalid JSON
// (trailing data included) is reported before anything else, and a body of
// another type is walked before it is refused, so a duplicate key or deep
// nesting inside it is what is reported.
func checkJSON(body []byte) error {
	if !json.Valid(body) {
		return verr("", "the body is not valid JSON")
	}
	if err := strict.CheckValue(body, maxJSONDepth); err != nil {
		return fromStrict(err)
	}
	if bytes.TrimSpace(body)[0] != '{' {
		return verr("", "the body must be a JSON object")
	}
	return nil
}

// fromStrict converts an error from package strictjson into a
// *ValidationError; a problem with the body as a whole is at "".
func fromStrict(err error) error {
	if err == nil {
		return nil // the common case, before e (which escapes) is allocated
	}
	var e *strictjson.Error
	switch {
	case errors.As(err, &e):
		return verr(e.Path, "%s", e.Reason)
	case errors.Is(err, strictjson.ErrNotObject):
		return verr("", "the body must be a JSON object")
	}
	return verr("", "the body is not valid JSON")
}
