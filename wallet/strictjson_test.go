package wallet

import (
	"errors"
	"strings"
	"testing"
)

// TestStrictJSONMessages pins the messages of the strict-JSON checks as the
// client sees them: problems with the body as a whole are at "body", an
// over-long key is named "…", an empty key ends its path with ".", and a
// hint is offered wherever its key is unknown.
func TestStrictJSONMessages(t *testing.T) {
	long := strings.Repeat("k", 65)
	tests := []struct {
		name string
		body string
		want string
	}{
		{"empty body", ``, "invalid body: is not valid JSON"},
		{"not JSON", `{"method":`, "invalid body: is not valid JSON"},
		{"array body", `[{"a":1,"a":2}]`, "invalid body: must be a JSON object"},
		{"truncated array body", `[`, "invalid body: must be a JSON object"},
		{"trailing object", `{"method":"personal_sign","params":{"message":"a"}} {}`, "invalid body: has data after the JSON object"},
		{"trailing garbage", `{}x`, "invalid body: has data after the JSON object"},
		{"duplicate before broken JSON", `{"method":1,"method":2`, "invalid method: duplicate key"},
		{"duplicate in an array", `{"params":{"transaction":{"access_list":[{},{"address":1,"address":2}]}}}`, "invalid params.transaction.access_list[1].address: duplicate key"},
		{"duplicate empty key at the top", `{"":1,"":2}`, "invalid : duplicate key"},
		{"duplicate empty key", `{"params":{"":1,"":2}}`, "invalid params.: duplicate key"},
		{"duplicate long key", `{"params":{"` + long + `":1,"` + long + `":2}}`, "invalid params.…: duplicate key"},
		{"too deep below a long key", `{"params":{"` + long + `":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}}`, "invalid params.…" + strings.Repeat("[0]", 62) + ": is nested more than 64 levels deep"},
		{"unknown empty key", `{"method":"personal_sign","params":{"message":"a","":1}}`, "invalid params.: unknown field"},
		{"unknown long key", `{"method":"personal_sign","params":{"message":"a","` + long + `":1}}`, "invalid params: has an unknown field with a 65-character name"},
		{"hint at the wrong level", `{"method":"eth_signTransaction","params":{"chainId":1,"transaction":{}}}`, `invalid params.chainId: unknown field; did you mean "chain_id"?`},
		{"params null", `{"method":"personal_sign","params":null}`, "invalid params: is required"},
		{"params not an object", `{"method":"personal_sign","params":[]}`, "invalid params: must be a JSON object"},
		{"access list not an array", `{"method":"eth_signTransaction","params":{"transaction":{"access_list":{}}}}`, "invalid params.transaction.access_list: must be an array"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRPC([]byte(tc.body))
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("got %T %v, want an *InputError", err, err)
			}
			if err.Error() != tc.want {
				t.Fatalf("got  %q\nwant %q", err.Error(), tc.want)
			}
		})
	}
}
