package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/cachet-custody/cachet/internal/clip"
)

// Result is a condition's outcome in a trace.
type Result uint8

// Condition results.
const (
	// ResultTrue: the condition holds.
	ResultTrue Result = iota + 1
	// ResultFalse: it does not.
	ResultFalse
	// ResultError: it cannot be evaluated (missing field, calldata that
	// does not decode, a deleted condition set, …). It counts as false in
	// an ALLOW rule and as true in a DENY rule: fail closed.
	ResultError
	// ResultNotApplicable: a typed-data message condition whose types
	// differ from the request's; its rule is skipped.
	ResultNotApplicable
	// ResultSkipped: not evaluated, because an earlier condition already
	// decided the rule.
	ResultSkipped
)

var resultNames = [...]string{"", "true", "false", "error", "not_applicable", "skipped"}

func (r Result) String() string {
	if int(r) < len(resultNames) {
		return resultNames[r]
	}
	return "unknown"
}

// MarshalText writes the result's name.
func (r Result) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a result's name.
func (r *Result) UnmarshalText(b []byte) error {
	for i, n := range resultNames {
		if i > 0 && n == string(b) {
			*r = Result(i)
			return nil
		}
	}
	return fmt.Errorf("policy: unknown result %q", clip.To(string(b), 32))
}

// Trace is an evaluation, as written to Decision.Trace.
type Trace struct {
	PolicyID string `json:"policy_id,omitempty"`
	Method   string `json:"method"`
	Allowed  bool   `json:"allowed"`
	RuleID   string `json:"rule_id,omitempty"`
	// RulesForOtherMethods counts the rules not listed because their
	// method is neither the request's nor "*".
	RulesForOtherMethods int         `json:"rules_for_other_methods"`
	Rules                []RuleTrace `json:"rules"`
}

// RuleTrace is one rule considered.
type RuleTrace struct {
	RuleID string `json:"rule_id"`
	Name   string `json:"name"`
	Method string `json:"method"`
	Action string `json:"action"`
	// Applicable is false when typed-data conditions name other types than
	// the request's: the rule neither allows nor denies.
	Applicable bool             `json:"applicable"`
	Matched    bool             `json:"matched"`
	Note       string           `json:"note,omitempty"`
	Conditions []ConditionTrace `json:"conditions"`
}

// ConditionTrace is one condition: the policy's side, the request's side,
// and the result.
type ConditionTrace struct {
	FieldSource string          `json:"field_source"`
	Field       string          `json:"field"`
	Operator    string          `json:"operator"`
	Value       json.RawMessage `json:"value"`
	// Actual is the request's value (numbers in decimal, addresses and
	// bytes in lowercase 0x hex), truncated to 256 characters.
	Actual string `json:"actual,omitempty"`
	Result Result `json:"result"`
	Error  string `json:"error,omitempty"`
	Note   string `json:"note,omitempty"`
}

// appendJSON appends t as encoding/json would marshal it (the tests hold
// the two byte-for-byte equal). It exists because encoding/json re-validates
// every json.RawMessage it writes, and the policy's values are already
// compact JSON: marshalling the trace with it costs more than the rest of
// an evaluation.
func (t *Trace) appendJSON(b []byte) []byte {
	b = append(b, '{')
	if t.PolicyID != "" {
		b = append(b, `"policy_id":`...)
		b = appendJSONString(b, t.PolicyID)
		b = append(b, ',')
	}
	b = append(b, `"method":`...)
	b = appendJSONString(b, t.Method)
	b = append(b, `,"allowed":`...)
	b = strconv.AppendBool(b, t.Allowed)
	if t.RuleID != "" {
		b = append(b, `,"rule_id":`...)
		b = appendJSONString(b, t.RuleID)
	}
	b = append(b, `,"rules_for_other_methods":`...)
	b = strconv.AppendInt(b, int64(t.RulesForOtherMethods), 10)
	b = append(b, `,"rules":`...)
	if t.Rules == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range t.Rules {
			if i > 0 {
				b = append(b, ',')
			}
			b = t.Rules[i].appendJSON(b)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func (r *RuleTrace) appendJSON(b []byte) []byte {
	b = append(b, `{"rule_id":`...)
	b = appendJSONString(b, r.RuleID)
	b = append(b, `,"name":`...)
	b = appendJSONString(b, r.Name)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, r.Method)
	b = append(b, `,"action":`...)
	b = appendJSONString(b, r.Action)
	b = append(b, `,"applicable":`...)
	b = strconv.AppendBool(b, r.Applicable)
	b = append(b, `,"matched":`...)
	b = strconv.AppendBool(b, r.Matched)
	if r.Note != "" {
		b = append(b, `,"note":`...)
		b = appendJSONString(b, r.Note)
	}
	b = append(b, `,"conditions":`...)
	if r.Conditions == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range r.Conditions {
			if i > 0 {
				b = append(b, ',')
			}
			b = r.Conditions[i].appendJSON(b)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func (c *ConditionTrace) appendJSON(b []byte) []byte {
	b = append(b, `{"field_source":`...)
	b = appendJSONString(b, c.FieldSource)
	b = append(b, `,"field":`...)
	b = appendJSONString(b, c.Field)
	b = append(b, `,"operator":`...)
	b = appendJSONString(b, c.Operator)
	b = append(b, `,"value":`...)
	if len(c.Value) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, c.Value...) // compact JSON from Compile
	}
	if c.Actual != "" {
		b = append(b, `,"actual":`...)
		b = appendJSONString(b, c.Actual)
	}
	b = append(b, `,"result":`...)
	b = appendJSONString(b, c.Result.String())
	if c.Error != "" {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, c.Error)
	}
	if c.Note != "" {
		b = append(b, `,"note":`...)
		b = appendJSONString(b, c.Note)
	}
	return append(b, '}')
}

// appendJSONString is encoding/json's string encoding with HTML escaping.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
