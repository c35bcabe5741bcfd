package policy

import (
	"errors"
	"strings"
	"testing"
)

// TestStrictJSONMessages pins the messages of the strict-JSON checks as the
// client sees them: invalid JSON (trailing data included) comes first and
// problems with the body as a whole are at "", a body of another type is
// walked before it is refused, an over-long key is named in full below it
// and a duplicate of it is reported at its object, an empty key is named
// by its object, and a hint is offered only where its key is allowed.
func TestStrictJSONMessages(t *testing.T) {
	long := strings.Repeat("k", 65)
	tests := []struct {
		name string
		body string
		want string
	}{
		{"empty body", ``, "invalid policy: the body is not valid JSON"},
		{"trailing object", `{} {}`, "invalid policy: the body is not valid JSON"},
		{"duplicate before broken JSON", `{"name":1,"name":2`, "invalid policy: the body is not valid JSON"},
		{"array body", `[1]`, "invalid policy: the body must be a JSON object"},
		{"null body", `null`, "invalid policy: the body must be a JSON object"},
		{"duplicate in an array body", `[{"a":1,"a":2}]`, "invalid [0].a: duplicate key"},
		{"duplicate in a rule", `{"rules":[{"name":1},{"name":1,"name":2}]}`, "invalid rules[1].name: duplicate key"},
		{"duplicate empty key", `{"rules":[{"":1,"":2}]}`, "invalid rules[0]: duplicate key"},
		{"duplicate long key", `{"rules":[{"` + long + `":1,"` + long + `":2}]}`, "invalid rules[0]: duplicate key"},
		{"duplicate below a long key", `{"` + long + `":{"a":1,"a":2}}`, "invalid " + long + ".a: duplicate key"},
		{"unknown empty key", `{"version":"1.0","name":"n","chain_type":"ethereum","rules":[{"":1}]}`, "invalid rules[0]: unknown field"},
		{"unknown long key at the top", `{"` + long + `":1}`, "invalid policy: has an unknown field with a 65-character name"},
		{"hint where allowed", `{"chainType":"ethereum"}`, `invalid chainType: unknown field; did you mean "chain_type"?`},
		{"no hint where not allowed", `{"version":"1.0","name":"n","chain_type":"ethereum","rules":[{"chainType":1}]}`, "invalid rules[0].chainType: unknown field"},
		{"rules not an array", `{"version":"1.0","name":"n","chain_type":"ethereum","rules":{}}`, "invalid rules: must be an array"},
		{"rule not an object", `{"version":"1.0","name":"n","chain_type":"ethereum","rules":[null]}`, "invalid rules[0]: is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tc.body))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("got %T %v, want a *ValidationError", err, err)
			}
			if err.Error() != tc.want {
				t.Fatalf("got  %q\nwant %q", err.Error(), tc.want)
			}
		})
	}
}
