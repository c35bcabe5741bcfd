package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

var testRefs = refs{sets: []string{"set_ok"}, aggs: []string{"agg_ok"}}

// firstPath parses and validates body and returns the first error's path.
func firstPath(t *testing.T, body string, parse func([]byte) error, validate func() error) (string, bool) {
	t.Helper()
	err := parse([]byte(body))
	if err == nil {
		err = validate()
	}
	if err == nil {
		return "", false
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error is not a *ValidationError: %T %v", err, err)
	}
	if ve.Reason == "" {
		t.Errorf("no reason for %s", ve.Path)
	}
	return ve.Path, true
}

// rule1 is a policy with rules: one rule of method with conds, then ok
// rules so the bad one is rules[2] when pad is true.
func withRule(method, conds string) string {
	ok := `{"name":"ok","method":"*","action":"ALLOW","conditions":[]}`
	return policyJSON(`[` + ok + `,` + ok + `,{"name":"r","method":"` + method + `","action":"ALLOW","conditions":[` + conds + `]}]`)
}

func condJSON(src, field, op, value string) string {
	return `{"field_source":"` + src + `","field":"` + field + `","operator":"` + op + `","value":` + value + `}`
}

func TestValidatePolicyPaths(t *testing.T) {
	tx := "eth_signTransaction"
	badChecksum := "0x" + strings.ToLower(cs(usdc)[2:3]) + strings.ToUpper(cs(usdc)[3:4]) + cs(usdc)[4:]
	if _, err := parseAddress(badChecksum); err == nil {
		t.Fatal("test address has a valid checksum")
	}
	bigABI := `[{"type":"function","name":"f","inputs":[` + strings.Repeat(`{"name":"a","type":"uint256"},`, 3000) + `{"name":"b","type":"uint256"}]}]`
	tdCond := func(field, types, primary string) string {
		return `{"field_source":"ethereum_typed_data_message","field":"` + field + `","operator":"eq","value":"x","typed_data":{"types":` + types + `,"primary_type":"` + primary + `"}}`
	}
	var many []string
	for range 101 {
		many = append(many, `{"name":"r","method":"*","action":"ALLOW","conditions":[]}`)
	}
	var manyConds []string
	for range 101 {
		manyConds = append(manyConds, condJSON("system", "current_unix_timestamp", "gt", `"0"`))
	}
	var manyValues []string
	for range 101 {
		manyValues = append(manyValues, `"1"`)
	}
	const p = "rules[2].conditions[0]."
	tests := []struct {
		name string
		body string
		path string
	}{
		// Shapes (ParsePolicy).
		{"not JSON", `{"version":`, ""},
		{"not an object", `["version"]`, ""},
		{"trailing data", policyJSON(`[]`) + `{}`, ""},
		{"unknown top-level key", `{"id":"x","version":"1.0","name":"n","chain_type":"ethereum","rules":[]}`, "id"},
		{"duplicate key", `{"version":"1.0","name":"n","name":"m","chain_type":"ethereum","rules":[]}`, "name"},
		{"duplicate key in a condition", withRule(tx, `{"field_source":"system","field":"current_unix_timestamp","field":"x","operator":"gt","value":"0"}`), p + "field"},
		{"name not a string", `{"version":"1.0","name":5,"chain_type":"ethereum","rules":[]}`, "name"},
		{"rules missing", `{"version":"1.0","name":"n","chain_type":"ethereum"}`, "rules"},
		{"rules not an array", `{"version":"1.0","name":"n","chain_type":"ethereum","rules":{}}`, "rules"},
		{"rule id refused", policyJSON(`[{"id":"r1","name":"r","method":"*","action":"ALLOW","conditions":[]}]`), "rules[0].id"},
		{"rule without conditions", policyJSON(`[{"name":"r","method":"*","action":"ALLOW"}]`), "rules[0].conditions"},
		{"rule not an object", policyJSON(`[1]`), "rules[0]"},
		{"condition key in camelCase", withRule(tx, `{"fieldSource":"system","field":"current_unix_timestamp","operator":"gt","value":"0"}`), p + "fieldSource"},
		{"value missing", withRule(tx, `{"field_source":"system","field":"current_unix_timestamp","operator":"gt"}`), p + "value"},
		{"value an object", withRule(tx, condJSON("system", "current_unix_timestamp", "gt", `{"x":1}`)), p + "value"},
		{"value list with an object", withRule(tx, condJSON("system", "current_unix_timestamp", "in", `["1",{}]`)), p + "value[1]"},
		{"owner with both keys", `{"version":"1.0","name":"n","chain_type":"ethereum","rules":[],"owner":{"user_id":"u","public_key":"k"}}`, "owner"},
		{"owner and owner_id", `{"version":"1.0","name":"n","chain_type":"ethereum","rules":[],"owner":{"user_id":"u"},"owner_id":"q"}`, "owner_id"},
		{"typed_data types entry not an array", withRule("eth_signTypedData_v4", tdCond("a", `{"Mail":{}}`, "Mail")), p + "typed_data.types.Mail"},
		{"nested too deep", policyJSON(`[{"name":"r","method":"*","action":"ALLOW","conditions":[],"x":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}]`), "rules[0].x" + strings.Repeat("[0]", 61)},

		// Policy and rule fields.
		{"version", `{"version":"2.0","name":"n","chain_type":"ethereum","rules":[]}`, "version"},
		{"chain_type solana", `{"version":"1.0","name":"n","chain_type":"solana","rules":[]}`, "chain_type"},
		{"empty name", `{"version":"1.0","name":"","chain_type":"ethereum","rules":[]}`, "name"},
		{"name of 51 characters", `{"version":"1.0","name":"` + strings.Repeat("é", 51) + `","chain_type":"ethereum","rules":[]}`, "name"},
		{"101 rules", policyJSON(`[` + strings.Join(many, ",") + `]`), "rules"},
		{"rule name empty", policyJSON(`[{"name":"","method":"*","action":"ALLOW","conditions":[]}]`), "rules[0].name"},
		{"unknown method", withRule("eth_sign", ``), "rules[2].method"},
		{"Solana method", withRule("signAndSendTransaction", ``), "rules[2].method"},
		{"user operation method", withRule("eth_signUserOperation", ``), "rules[2].method"},
		{"lowercase action", policyJSON(`[{"name":"r","method":"*","action":"allow","conditions":[]}]`), "rules[0].action"},
		{"101 conditions", withRule(tx, strings.Join(manyConds, ",")), "rules[2].conditions"},

		// Conditions.
		{"unknown field source", withRule(tx, condJSON("ethereum_block", "number", "eq", `"1"`)), p + "field_source"},
		{"Solana field source", withRule(tx, condJSON("solana_program_instruction", "programId", "eq", `"x"`)), p + "field_source"},
		{"message source on a transaction rule", withRule(tx, condJSON("message", "content", "eq", `"x"`)), p + "field_source"},
		{"transaction source on personal_sign", withRule("personal_sign", condJSON("ethereum_transaction", "to", "eq", `"`+usdc+`"`)), p + "field_source"},
		{"reference on typed data", withRule("eth_signTypedData_v4", condJSON("reference", "aggregation.agg_ok", "lte", `"1"`)), p + "field_source"},
		{"7702 on a transaction", withRule(tx, condJSON("ethereum_7702_authorization", "contract", "eq", `"`+usdc+`"`)), p + "field_source"},
		{"calldata on raw hashes", withRule("secp256k1_sign", condJSON("ethereum_calldata", "transfer", "eq", `"transfer"`)), p + "field_source"},
		{"unknown operator", withRule(tx, condJSON("ethereum_transaction", "to", "equals", `"`+usdc+`"`)), p + "operator"},
		{"unknown transaction field", withRule(tx, condJSON("ethereum_transaction", "from", "eq", `"`+usdc+`"`)), p + "field"},
		{"unknown domain field", withRule("eth_signTypedData_v4", condJSON("ethereum_typed_data_domain", "salt", "eq", `"0x00"`)), p + "field"},
		{"unknown system field", withRule(tx, condJSON("system", "block_number", "gt", `"0"`)), p + "field"},
		{"empty field", withRule(tx, condJSON("ethereum_transaction", "", "eq", `"1"`)), p + "field"},
		{"field too long", withRule(tx, condJSON("ethereum_transaction", strings.Repeat("a", 300), "eq", `"1"`)), p + "field"},
		{"gt on an address", withRule(tx, condJSON("ethereum_transaction", "to", "gt", `"`+usdc+`"`)), p + "operator"},
		{"contains on a number", withRule(tx, condJSON("ethereum_transaction", "value", "contains", `"1"`)), p + "operator"},
		{"starts_with on a bool", withRule(tx, `{"field_source":"ethereum_calldata","field":"odd.flag","operator":"starts_with","value":"t","abi":`+routerABI+`}`), p + "operator"},
		{"in with one value", withRule(tx, condJSON("ethereum_transaction", "value", "in", `"1"`)), p + "value"},
		{"in with no values", withRule(tx, condJSON("ethereum_transaction", "value", "in", `[]`)), p + "value"},
		{"in with 101 values", withRule(tx, condJSON("ethereum_transaction", "value", "in", `[`+strings.Join(manyValues, ",")+`]`)), p + "value"},
		{"eq with a list", withRule(tx, condJSON("ethereum_transaction", "value", "eq", `["1"]`)), p + "value"},
		{"number with a fraction", withRule(tx, condJSON("ethereum_transaction", "value", "lte", `1.5`)), p + "value"},
		{"number with an exponent", withRule(tx, condJSON("ethereum_transaction", "value", "lte", `1e18`)), p + "value"},
		{"negative number", withRule(tx, condJSON("ethereum_transaction", "value", "gte", `"-1"`)), p + "value"},
		{"empty hex", withRule(tx, condJSON("ethereum_transaction", "value", "lte", `"0x"`)), p + "value"},
		{"uppercase 0X", withRule(tx, condJSON("ethereum_transaction", "value", "lte", `"0X10"`)), p + "value"},
		{"number over 256 bits", withRule(tx, condJSON("ethereum_transaction", "value", "lte", `"0x1`+strings.Repeat("0", 64)+`"`)), p + "value"},
		{"number with spaces", withRule(tx, condJSON("ethereum_transaction", "value", "lte", `" 1"`)), p + "value"},
		{"short address", withRule(tx, condJSON("ethereum_transaction", "to", "eq", `"0x1234"`)), p + "value"},
		{"address without 0x", withRule(tx, condJSON("ethereum_transaction", "to", "eq", `"`+usdc[2:]+`"`)), p + "value"},
		{"address with a bad checksum", withRule(tx, condJSON("ethereum_transaction", "to", "eq", `"`+badChecksum+`"`)), p + "value"},
		{"bad address in a list", withRule(tx, condJSON("ethereum_transaction", "to", "in", `["`+usdc+`","0xzz"]`)), p + "value[1]"},
		{"bool value", withRule(tx, `{"field_source":"ethereum_calldata","field":"odd.flag","operator":"eq","value":"yes","abi":`+routerABI+`}`), p + "value"},
		{"bytes value with odd digits", withRule(tx, `{"field_source":"ethereum_calldata","field":"odd.tag","operator":"eq","value":"0xabc","abi":`+routerABI+`}`), p + "value"},
		{"value too long", withRule("personal_sign", condJSON("message", "content", "eq", `"`+strings.Repeat("a", 5000)+`"`)), p + "value"},
		{"unknown condition set", withRule(tx, condJSON("ethereum_transaction", "to", "in_condition_set", `"set_gone"`)), p + "value"},
		{"empty condition set id", withRule(tx, condJSON("ethereum_transaction", "to", "in_condition_set", `""`)), p + "value"},
		{"condition set id as a list", withRule(tx, condJSON("ethereum_transaction", "to", "in_condition_set", `["set_ok"]`)), p + "value"},
		{"unknown aggregation", withRule(tx, condJSON("reference", "aggregation.agg_gone", "lte", `"1"`)), p + "field"},
		{"reference without id", withRule(tx, condJSON("reference", "aggregation.", "lte", `"1"`)), p + "field"},
		{"reference without prefix", withRule(tx, condJSON("reference", "agg_ok", "lte", `"1"`)), p + "field"},
		{"reference with in", withRule(tx, condJSON("reference", "aggregation.agg_ok", "in", `["1"]`)), p + "operator"},
		{"reference with a non-number", withRule(tx, condJSON("reference", "aggregation.agg_ok", "lte", `"lots"`)), p + "value"},

		// ABIs and calldata paths.
		{"calldata without abi", withRule(tx, condJSON("ethereum_calldata", "transfer._to", "eq", `"`+usdc+`"`)), p + "abi"},
		{"abi on another source", withRule(tx, `{"field_source":"ethereum_transaction","field":"to","operator":"eq","value":"`+usdc+`","abi":`+erc20ABI+`}`), p + "abi"},
		{"abi a string", withRule(tx, `{"field_source":"ethereum_calldata","field":"f","operator":"eq","value":"f","abi":"transfer(address,uint256)"}`), p + "abi"},
		{"abi without functions", withRule(tx, `{"field_source":"ethereum_calldata","field":"f","operator":"eq","value":"f","abi":[{"type":"event","name":"E","inputs":[]}]}`), p + "abi"},
		{"abi item of unknown type", withRule(tx, `{"field_source":"ethereum_calldata","field":"f","operator":"eq","value":"f","abi":[{"type":"method","name":"f","inputs":[]}]}`), p + "abi"},
		{"abi with a bad type", withRule(tx, `{"field_source":"ethereum_calldata","field":"f.a","operator":"eq","value":"1","abi":[{"type":"function","name":"f","inputs":[{"name":"a","type":"uint7"}]}]}`), p + "abi"},
		{"abi with a malformed array", withRule(tx, `{"field_source":"ethereum_calldata","field":"f.a","operator":"eq","value":"1","abi":[{"type":"function","name":"f","inputs":[{"name":"a","type":"uint256[x]"}]}]}`), p + "abi"},
		{"abi with a huge array", withRule(tx, `{"field_source":"ethereum_calldata","field":"f.a.0","operator":"eq","value":"1","abi":[{"type":"function","name":"f","inputs":[{"name":"a","type":"uint256[99999999999]"}]}]}`), p + "abi"},
		{"abi larger than any calldata", withRule(tx, `{"field_source":"ethereum_calldata","field":"f.a.0","operator":"eq","value":"1","abi":[{"type":"function","name":"f","inputs":[{"name":"a","type":"uint256[5000]"}]}]}`), p + "abi"},
		{"abi with a huge nested array in an event", withRule(tx, `{"field_source":"ethereum_calldata","field":"f","operator":"eq","value":"f","abi":[{"type":"function","name":"f","inputs":[]},{"type":"event","name":"E","inputs":[{"name":"a","type":"tuple","components":[{"name":"b","type":"uint8[65536][65536]"}]}]}]}`), p + "abi"},
		{"abi with an empty tuple", withRule(tx, `{"field_source":"ethereum_calldata","field":"f","operator":"eq","value":"f","abi":[{"type":"function","name":"f","inputs":[{"name":"a","type":"tuple","components":[]}]}]}`), p + "abi"},
		{"abi over 64 KiB", withRule(tx, `{"field_source":"ethereum_calldata","field":"f.b","operator":"eq","value":"1","abi":`+bigABI+`}`), p + "abi"},
		{"unknown function", withRule(tx, `{"field_source":"ethereum_calldata","field":"transferz._to","operator":"eq","value":"`+usdc+`","abi":`+erc20ABI+`}`), p + "field"},
		{"unknown parameter", withRule(tx, `{"field_source":"ethereum_calldata","field":"transfer.to","operator":"eq","value":"`+usdc+`","abi":`+erc20ABI+`}`), p + "field"},
		{"parameter index out of range", withRule(tx, `{"field_source":"ethereum_calldata","field":"transfer.2","operator":"eq","value":"1","abi":`+erc20ABI+`}`), p + "field"},
		{"path into an address", withRule(tx, `{"field_source":"ethereum_calldata","field":"transfer._to.x","operator":"eq","value":"1","abi":`+erc20ABI+`}`), p + "field"},
		{"path ends at a tuple", withRule(tx, `{"field_source":"ethereum_calldata","field":"exactInput.params","operator":"eq","value":"1","abi":`+routerABI+`}`), p + "field"},
		{"path ends at an array", withRule(tx, `{"field_source":"ethereum_calldata","field":"batch.transfers","operator":"eq","value":"1","abi":`+routerABI+`}`), p + "field"},
		{"unknown tuple component", withRule(tx, `{"field_source":"ethereum_calldata","field":"exactInput.params.amount","operator":"eq","value":"1","abi":`+routerABI+`}`), p + "field"},
		{"array index not a number", withRule(tx, `{"field_source":"ethereum_calldata","field":"batch.transfers.first.to","operator":"eq","value":"`+usdc+`","abi":`+routerABI+`}`), p + "field"},
		{"static array index out of range", withRule(tx, `{"field_source":"ethereum_calldata","field":"batch.transfers.0.legs.2.share","operator":"eq","value":"1","abi":`+routerABI+`}`), p + "field"},
		{"negative array index", withRule(tx, `{"field_source":"ethereum_calldata","field":"batch.transfers.-1.to","operator":"eq","value":"`+usdc+`","abi":`+routerABI+`}`), p + "field"},

		// Typed data.
		{"typed data message without typed_data", withRule("eth_signTypedData_v4", condJSON("ethereum_typed_data_message", "to.wallet", "eq", `"`+usdc+`"`)), p + "typed_data"},
		{"typed_data on the domain", withRule("eth_signTypedData_v4", `{"field_source":"ethereum_typed_data_domain","field":"chainId","operator":"eq","value":"1","typed_data":{"types":`+mailTypes+`,"primary_type":"Mail"}}`), p + "typed_data"},
		{"primary type not in types", withRule("eth_signTypedData_v4", tdCond("contents", mailTypes, "Letter")), p + "typed_data.primary_type"},
		{"primary type EIP712Domain", withRule("eth_signTypedData_v4", tdCond("name", mailTypes, "EIP712Domain")), p + "typed_data.primary_type"},
		{"undefined member type", withRule("eth_signTypedData_v4", tdCond("contents", `{"Mail":[{"name":"from","type":"Person"},{"name":"contents","type":"string"}]}`, "Mail")), p + "typed_data.types.Mail[0].type"},
		{"bad elementary type", withRule("eth_signTypedData_v4", tdCond("contents", `{"Mail":[{"name":"n","type":"uint7"},{"name":"contents","type":"string"}]}`, "Mail")), p + "typed_data.types.Mail[0].type"},
		{"duplicate member", withRule("eth_signTypedData_v4", tdCond("contents", `{"Mail":[{"name":"contents","type":"string"},{"name":"contents","type":"string"}]}`, "Mail")), p + "typed_data.types.Mail[1].name"},
		{"bad type name", withRule("eth_signTypedData_v4", tdCond("contents", `{"Ma il":[{"name":"contents","type":"string"}]}`, "Ma il")), p + "typed_data.types"},
		{"path not in types", withRule("eth_signTypedData_v4", tdCond("to.address", mailTypes, "Mail")), p + "field"},
		{"path ends at a struct", withRule("eth_signTypedData_v4", tdCond("to", mailTypes, "Mail")), p + "field"},
		{"path into a string", withRule("eth_signTypedData_v4", tdCond("contents.x", mailTypes, "Mail")), p + "field"},
		{"path ends at an array", withRule("eth_signTypedData_v4", tdCond("tags", permitTypes, "Permit")), p + "field"},
		{"index into a struct", withRule("eth_signTypedData_v4", tdCond("to.0", mailTypes, "Mail")), p + "field"},
		{"empty path", withRule("eth_signTypedData_v4", tdCond("", mailTypes, "Mail")), p + "field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var pol *Policy
			got, failed := firstPath(t, tc.body,
				func(b []byte) (err error) { pol, err = ParsePolicy(b); return err },
				func() error { return Validate(pol, testRefs) })
			if !failed {
				t.Fatalf("accepted; want an error at %q", tc.path)
			}
			if got != tc.path {
				t.Fatalf("error at %q, want %q", got, tc.path)
			}
		})
	}
}

// TestValidateAccepts checks bodies that must pass, including Privy's own
// example and its hex value.
func TestValidateAccepts(t *testing.T) {
	tests := []struct{ name, body string }{
		{"empty rules", policyJSON(`[]`)},
		{"owner", `{"version":"1.0","name":"n","chain_type":"ethereum","rules":[],"owner":{"public_key":"MFkw"}}`},
		{"owner_id and nulls", `{"version":"1.0","name":"n","chain_type":"ethereum","rules":[],"owner":null,"owner_id":"q"}`},
		{"every method", policyJSON(`[` + strings.Join(func() []string {
			var rs []string
			for _, m := range ruleMethods {
				rs = append(rs, `{"name":"r","method":"`+m+`","action":"DENY","conditions":[{"field_source":"system","field":"current_unix_timestamp","operator":"gte","value":"0"}]}`)
			}
			return rs
		}(), ",") + `]`)},
		{"any source under *", withRule("*", strings.Join([]string{
			condJSON("ethereum_transaction", "to", "eq", `"`+usdc+`"`),
			condJSON("message", "byte_length", "lte", `100`),
			condJSON("ethereum_7702_authorization", "contract", "eq", `"`+delegate+`"`),
			condJSON("ethereum_typed_data_domain", "verifying_contract", "eq", `"`+usdc+`"`),
			condJSON("reference", "aggregation.agg_ok", "lte", `"0x10"`),
		}, ","))},
		{"abi with events, errors, constructor, overloads", withRule("eth_signTransaction", `{"field_source":"ethereum_calldata","field":"f0.b","operator":"eq","value":"1","abi":[
			{"type":"constructor","inputs":[{"name":"x","type":"uint256"}]},{"type":"error","name":"Bad","inputs":[{"name":"c","type":"uint256"}]},
			{"type":"receive","stateMutability":"payable"},{"type":"fallback"},
			{"name":"f","inputs":[{"name":"a","type":"address"}]},{"type":"function","name":"f","inputs":[{"name":"a","type":"address"},{"name":"b","type":"uint256"}]}]}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if err := Validate(p, testRefs); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestValidateReportsAll(t *testing.T) {
	p, err := ParsePolicy([]byte(`{"version":"0.9","name":"","chain_type":"ethereum","rules":[
		{"name":"a","method":"eth_sign","action":"ALLOW","conditions":[]},
		{"name":"b","method":"*","action":"MAYBE","conditions":[{"field_source":"system","field":"now","operator":"gt","value":"0"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(p, nil)
	var all ValidationErrors
	if !errors.As(err, &all) {
		t.Fatalf("%T %v", err, err)
	}
	var paths []string
	for _, e := range all {
		paths = append(paths, e.Path)
	}
	want := []string{"version", "name", "rules[0].method", "rules[1].action", "rules[1].conditions[0].field"}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Fatalf("paths %v, want %v", paths, want)
	}
	var first *ValidationError
	if !errors.As(err, &first) || first.Path != "version" {
		t.Fatalf("errors.As gives %v", first)
	}
}

func TestValidateWithoutRefs(t *testing.T) {
	// Compile and Validate(nil) accept ids they cannot check; evaluation
	// fails closed if the set or aggregation is gone.
	body := withRule("eth_signTransaction", condJSON("ethereum_transaction", "to", "in_condition_set", `"set_gone"`)+","+condJSON("reference", "aggregation.agg_gone", "lte", `"1"`))
	c := mustCompile(t, body, nil)
	if got := c.ConditionSetIDs(); len(got) != 1 || got[0] != "set_gone" {
		t.Errorf("sets %v", got)
	}
	if got := c.AggregationIDs(); len(got) != 1 || got[0] != "agg_gone" {
		t.Errorf("aggregations %v", got)
	}
}

func TestParseRuleAndUpdate(t *testing.T) {
	r, err := ParseRule([]byte(`{"name":"r","method":"eth_signTransaction","action":"DENY","conditions":[{"field_source":"ethereum_transaction","field":"to","operator":"gt","value":"` + usdc + `"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var ve *ValidationError
	if err := ValidateRule(r, nil); !errors.As(err, &ve) || ve.Path != "conditions[0].operator" {
		t.Fatalf("ValidateRule: %v", err)
	}
	if _, err := ParseRule([]byte(`{"name":"r","method":"*","action":"DENY","conditions":[],"extra":1}`)); !errors.As(err, &ve) || ve.Path != "extra" {
		t.Fatalf("ParseRule: %v", err)
	}

	u, err := ParsePolicyUpdate([]byte(`{"name":"new","owner_id":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if u.Name == nil || *u.Name != "new" || u.Rules != nil || !u.OwnerSet || u.Owner != nil || u.OwnerID != nil {
		t.Fatalf("update %+v", u)
	}
	u, err = ParsePolicyUpdate([]byte(`{"rules":[]}`))
	if err != nil || u.Rules == nil || len(*u.Rules) != 0 || u.OwnerSet {
		t.Fatalf("update %+v %v", u, err)
	}
	if _, err := ParsePolicyUpdate([]byte(`{"version":"1.0"}`)); !errors.As(err, &ve) || ve.Path != "version" {
		t.Fatalf("update with version: %v", err)
	}
}

// TestPolicyRoundTrip checks that a parsed policy survives encoding/json,
// the form the API stores.
func TestPolicyRoundTrip(t *testing.T) {
	body := withRule("eth_signTransaction", condJSON("ethereum_transaction", "value", "in", `[1,"0x2"]`)+`,{"field_source":"ethereum_calldata","field":"transfer._to","operator":"eq","value":"`+usdc+`","abi":`+erc20ABI+`}`)
	p, err := ParsePolicy([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back Policy
	if err := json.Unmarshal(stored, &back); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(&back)
	if string(again) != string(stored) {
		t.Fatalf("round trip differs:\n%s\n%s", stored, again)
	}
	if err := Validate(&back, nil); err != nil {
		t.Fatal(err)
	}
	if v := back.Rules[2].Conditions[0].Value; !v.IsList || v.List[0] != "1" || v.List[1] != "0x2" {
		t.Fatalf("value %+v", v)
	}
}
