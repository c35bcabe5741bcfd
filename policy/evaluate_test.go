package policy

import (
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/wallet"
	"github.com/ethereum/go-ethereum/common"
)

// condCase is one condition evaluated against one request.
type condCase struct {
	name   string
	method string // the rule's method; "" means the request's
	cond   string // the condition, as JSON
	body   string // the request body
	want   Result
}

// runCondCases evaluates each case twice: as the only condition of an
// ALLOW rule (allowed iff the condition holds), and as the only condition
// of a DENY rule next to an ALLOW-all rule (denied iff the condition holds
// or cannot be evaluated: fail closed).
func runCondCases(t *testing.T, cases []condCase, env Env) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := mustParseRPC(t, tc.body)
			method := tc.method
			if method == "" {
				method = req.Method
			}
			rule := func(name, action, conds string) string {
				return `{"name":"` + name + `","method":"` + method + `","action":"` + action + `","conditions":` + conds + `}`
			}

			allow := mustCompile(t, policyJSON(`[`+rule("under test", "ALLOW", `[`+tc.cond+`]`)+`]`), nil)
			d := allow.Evaluate(req, env)
			tr := trace(t, d)
			if len(tr.Rules) != 1 || len(tr.Rules[0].Conditions) != 1 {
				t.Fatalf("trace has %d rules: %s", len(tr.Rules), d.Trace)
			}
			got := tr.Rules[0].Conditions[0]
			if got.Result != tc.want {
				t.Fatalf("ALLOW rule: result %s, want %s\ntrace: %s", got.Result, tc.want, d.Trace)
			}
			if d.Allowed != (tc.want == ResultTrue) {
				t.Errorf("ALLOW rule: allowed=%v with result %s", d.Allowed, got.Result)
			}
			if (got.Error != "") != (tc.want == ResultError) {
				t.Errorf("error text %q with result %s", got.Error, got.Result)
			}

			deny := mustCompile(t, policyJSON(`[`+rule("everything", "ALLOW", `[]`)+`,`+rule("under test", "DENY", `[`+tc.cond+`]`)+`]`), nil)
			d = deny.Evaluate(req, env)
			wantDenied := tc.want == ResultTrue || tc.want == ResultError
			if d.Allowed == wantDenied {
				t.Errorf("DENY rule: allowed=%v, want %v (result %s)\ntrace: %s", d.Allowed, !wantDenied, tc.want, d.Trace)
			}
			if wantDenied && (d.RuleID != "rule_1" || d.RuleName != "under test") {
				t.Errorf("DENY rule: decided by %q %q", d.RuleID, d.RuleName)
			}
			if tc.want == ResultNotApplicable && !d.Allowed {
				t.Errorf("a rule that does not apply must not deny")
			}
		})
	}
}

func TestTransactionFields(t *testing.T) {
	value := func(v string) string { return txBody(usdc, v, "") }
	noChain := `{"method":"eth_signTransaction","params":{"transaction":{"to":"` + usdc + `","value":"0x1"}}}`
	sendOnPolygon := `{"method":"eth_sendTransaction","caip2":"eip155:137","params":{"transaction":{"to":"` + usdc + `"}}}`
	create := `{"method":"eth_signTransaction","params":{"transaction":{"chain_id":1,"data":"0x6000"}}}`
	cases := []condCase{
		{"to eq: checksummed policy, lowercase request", "", `{"field_source":"ethereum_transaction","field":"to","operator":"eq","value":"` + cs(usdc) + `"}`, txBody(usdc, "", ""), ResultTrue},
		{"to eq: lowercase policy, checksummed request", "", `{"field_source":"ethereum_transaction","field":"to","operator":"eq","value":"` + usdc + `"}`, txBody(cs(usdc), "", ""), ResultTrue},
		{"to eq: uppercase policy", "", `{"field_source":"ethereum_transaction","field":"to","operator":"eq","value":"0x` + strings.ToUpper(usdc[2:]) + `"}`, txBody(usdc, "", ""), ResultTrue},
		{"to eq other", "", `{"field_source":"ethereum_transaction","field":"to","operator":"eq","value":"` + bob + `"}`, txBody(usdc, "", ""), ResultFalse},
		{"to neq other", "", `{"field_source":"ethereum_transaction","field":"to","operator":"neq","value":"` + bob + `"}`, txBody(usdc, "", ""), ResultTrue},
		{"to neq same in other case", "", `{"field_source":"ethereum_transaction","field":"to","operator":"neq","value":"` + cs(usdc) + `"}`, txBody(usdc, "", ""), ResultFalse},
		{"to in", "", `{"field_source":"ethereum_transaction","field":"to","operator":"in","value":["` + bob + `","` + cs(usdc) + `"]}`, txBody(usdc, "", ""), ResultTrue},
		{"to not in", "", `{"field_source":"ethereum_transaction","field":"to","operator":"in","value":["` + bob + `"]}`, txBody(usdc, "", ""), ResultFalse},
		{"to in set (checksummed item, lowercase request)", "", `{"field_source":"ethereum_transaction","field":"to","operator":"in_condition_set","value":"set_allow"}`, txBody(alice, "", ""), ResultTrue},
		{"to in set (uppercase item, checksummed request)", "", `{"field_source":"ethereum_transaction","field":"to","operator":"in_condition_set","value":"set_allow"}`, txBody(cs(bob), "", ""), ResultTrue},
		{"to not in set", "", `{"field_source":"ethereum_transaction","field":"to","operator":"in_condition_set","value":"set_allow"}`, txBody(usdc, "", ""), ResultFalse},
		{"to in empty set", "", `{"field_source":"ethereum_transaction","field":"to","operator":"in_condition_set","value":"set_empty"}`, txBody(usdc, "", ""), ResultFalse},
		{"to in deleted set fails closed", "", `{"field_source":"ethereum_transaction","field":"to","operator":"in_condition_set","value":"set_deleted"}`, txBody(usdc, "", ""), ResultError},
		{"to of a contract creation fails closed", "", `{"field_source":"ethereum_transaction","field":"to","operator":"neq","value":"` + bob + `"}`, create, ResultError},

		{"value lte hex, equal", "", `{"field_source":"ethereum_transaction","field":"value","operator":"lte","value":"0x2386f26fc10000"}`, value("0x2386f26fc10000"), ResultTrue},
		{"value lte uppercase hex digits (Privy's example)", "", `{"field_source":"ethereum_transaction","field":"value","operator":"lte","value":"0x2386F26FC10000"}`, value("0x2386f26fc10000"), ResultTrue},
		{"value lte hex, one wei over", "", `{"field_source":"ethereum_transaction","field":"value","operator":"lte","value":"0x2386f26fc10000"}`, value("0x2386f26fc10001"), ResultFalse},
		{"value lte decimal, equal", "", `{"field_source":"ethereum_transaction","field":"value","operator":"lte","value":"` + oneCentUS + `"}`, value("0x2386f26fc10000"), ResultTrue},
		{"value lte decimal, one wei over", "", `{"field_source":"ethereum_transaction","field":"value","operator":"lte","value":"` + oneCentUS + `"}`, value("0x2386f26fc10001"), ResultFalse},
		{"value eq JSON number", "", `{"field_source":"ethereum_transaction","field":"value","operator":"eq","value":10000000000000000}`, value("0x2386f26fc10000"), ResultTrue},
		{"value lt", "", `{"field_source":"ethereum_transaction","field":"value","operator":"lt","value":"0x2386f26fc10000"}`, value("0x2386f26fc10000"), ResultFalse},
		{"value gt", "", `{"field_source":"ethereum_transaction","field":"value","operator":"gt","value":"0"}`, value("0x1"), ResultTrue},
		{"value gte", "", `{"field_source":"ethereum_transaction","field":"value","operator":"gte","value":"2"}`, value("0x1"), ResultFalse},
		{"absent value is zero", "", `{"field_source":"ethereum_transaction","field":"value","operator":"eq","value":"0x0"}`, txBody(usdc, "", ""), ResultTrue},
		{"value at 2^256-1", "", `{"field_source":"ethereum_transaction","field":"value","operator":"eq","value":"115792089237316195423570985008687907853269984665640564039457584007913129639935"}`, value("0x" + strings.Repeat("f", 64)), ResultTrue},
		{"value in mixed spellings", "", `{"field_source":"ethereum_transaction","field":"value","operator":"in","value":["1","0x2386F26FC10000"]}`, value("0x2386f26fc10000"), ResultTrue},
		{"value in set (hex item)", "", `{"field_source":"ethereum_transaction","field":"value","operator":"in_condition_set","value":"set_nums"}`, value("0xf4240"), ResultTrue},
		{"value in set (decimal item)", "", `{"field_source":"ethereum_transaction","field":"value","operator":"in_condition_set","value":"set_nums"}`, value("0x7"), ResultTrue},
		{"value not in set", "", `{"field_source":"ethereum_transaction","field":"value","operator":"in_condition_set","value":"set_nums"}`, value("0x8"), ResultFalse},

		{"chain_id eq decimal", "", `{"field_source":"ethereum_transaction","field":"chain_id","operator":"eq","value":"1"}`, txBody(usdc, "", ""), ResultTrue},
		{"chain_id eq hex", "", `{"field_source":"ethereum_transaction","field":"chain_id","operator":"eq","value":"0x1"}`, txBody(usdc, "", ""), ResultTrue},
		{"chain_id from caip2", "", `{"field_source":"ethereum_transaction","field":"chain_id","operator":"in","value":["1","137"]}`, sendOnPolygon, ResultTrue},
		{"chain_id neq", "", `{"field_source":"ethereum_transaction","field":"chain_id","operator":"neq","value":"137"}`, txBody(usdc, "", ""), ResultTrue},
		{"chain_id absent fails closed", "", `{"field_source":"ethereum_transaction","field":"chain_id","operator":"neq","value":"137"}`, noChain, ResultError},
	}
	runCondCases(t, cases, testEnv())
}

// calldata returns the calldata used by the calldata tests.
func calldata(t testing.TB) map[string]string {
	legs := [2]leg{{"uni", 60}, {"curve", 40}}
	path := append(append(common.FromHex(weth), 0x00, 0x01, 0xf4), common.FromHex(usdc)...)
	transfer := pack(t, erc20ABI, "transfer", addr(alice), big.NewInt(1_000_000))
	approve := pack(t, erc20ABI, "approve", addr(router), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1)))
	return map[string]string{
		"transfer": transfer,
		"approve":  approve,
		"exactInput": pack(t, routerABI, "exactInput", exactInputParams{
			Path: path, Recipient: addr(bob), Deadline: big.NewInt(1_700_000_000),
			AmountIn: big10("1000000000000000000"), AmountOutMinimum: big.NewInt(0),
		}),
		"batch": pack(t, routerABI, "batch", addr(usdc), []transferItem{
			{To: addr(alice), Amount: big.NewInt(5), Legs: legs},
			{To: addr(bob), Amount: big.NewInt(7), Legs: legs},
		}),
		"multicall": pack(t, routerABI, "multicall", big.NewInt(1_700_000_000), [][]byte{common.FromHex(transfer), common.FromHex(approve)}),
		"odd":       pack(t, routerABI, "odd", big.NewInt(-5), true, [4]byte{0xde, 0xad, 0xbe, 0xef}, "memo", uint64(42)),
		"ping":      pack(t, routerABI, "ping"),
		// transfer's selector with one argument word instead of two.
		"truncated": transfer[:2+8+64],
		// A selector in neither ABI.
		"unknown": "0xdeadbeef" + strings.Repeat("00", 64),
	}
}

func cd(abiJSON, field, op, value string) string {
	return `{"field_source":"ethereum_calldata","field":"` + field + `","operator":"` + op + `","value":` + value + `,"abi":` + abiJSON + `}`
}

func TestCalldataFields(t *testing.T) {
	data := calldata(t)
	erc := func(name string) string { return txBody(usdc, "", data[name]) }
	rt := func(name string) string { return txBody(router, "", data[name]) }
	cases := []condCase{
		{"transfer._to eq checksummed", "", cd(erc20ABI, "transfer._to", "eq", `"`+cs(alice)+`"`), erc("transfer"), ResultTrue},
		{"transfer._to eq other", "", cd(erc20ABI, "transfer._to", "eq", `"`+bob+`"`), erc("transfer"), ResultFalse},
		{"transfer._to by position", "", cd(erc20ABI, "transfer.0", "eq", `"`+alice+`"`), erc("transfer"), ResultTrue},
		{"transfer._to in set", "", cd(erc20ABI, "transfer._to", "in_condition_set", `"set_allow"`), erc("transfer"), ResultTrue},
		{"transfer._value lte decimal", "", cd(erc20ABI, "transfer._value", "lte", `"1000000"`), erc("transfer"), ResultTrue},
		{"transfer._value lt hex", "", cd(erc20ABI, "transfer._value", "lt", `"0xf4240"`), erc("transfer"), ResultFalse},
		{"approve.amount eq max uint256", "", cd(erc20ABI, "approve.amount", "eq", `"0x`+strings.Repeat("F", 64)+`"`), erc("approve"), ResultTrue},
		{"fn alone eq its name", "", cd(erc20ABI, "transfer", "eq", `"transfer"`), erc("transfer"), ResultTrue},
		{"fn alone in names", "", cd(erc20ABI, "transfer", "in", `["approve","transfer"]`), erc("transfer"), ResultTrue},
		{"fn alone, call to another function of the ABI", "", cd(erc20ABI, "approve", "eq", `"approve"`), erc("transfer"), ResultFalse},
		{"param of another function of the ABI", "", cd(erc20ABI, "approve.spender", "neq", `"`+bob+`"`), erc("transfer"), ResultFalse},
		{"no calldata fails closed", "", cd(erc20ABI, "transfer._to", "neq", `"`+bob+`"`), txBody(alice, "0x1", ""), ResultError},
		{"truncated arguments fail closed", "", cd(erc20ABI, "transfer._to", "neq", `"`+bob+`"`), erc("truncated"), ResultError},
		{"truncated arguments, fn alone, fails closed", "", cd(erc20ABI, "transfer", "eq", `"transfer"`), erc("truncated"), ResultError},
		{"selector not in the ABI fails closed", "", cd(erc20ABI, "transfer._to", "neq", `"`+bob+`"`), erc("unknown"), ResultError},
		{"single ABI object", "", cd(`{"type":"function","name":"transfer","inputs":[{"name":"to","type":"address"},{"name":"amount","type":"uint256"}]}`, "transfer.amount", "eq", `"1000000"`), erc("transfer"), ResultTrue},

		{"nested tuple: exactInput.params.recipient", "", cd(routerABI, "exactInput.params.recipient", "eq", `"`+cs(bob)+`"`), rt("exactInput"), ResultTrue},
		{"nested tuple: amountIn gte 1 ether", "", cd(routerABI, "exactInput.params.amountIn", "gte", `"0xde0b6b3a7640000"`), rt("exactInput"), ResultTrue},
		{"nested tuple: bytes starts_with", "", cd(routerABI, "exactInput.params.path", "starts_with", `"0x`+strings.ToUpper(weth[2:])+`"`), rt("exactInput"), ResultTrue},
		{"nested tuple: bytes ends_with", "", cd(routerABI, "exactInput.params.path", "ends_with", `"0x`+strings.ToUpper(usdc[2:])+`"`), rt("exactInput"), ResultTrue},
		{"nested tuple: bytes contains fee tier", "", cd(routerABI, "exactInput.params.path", "contains", `"0x0001f4"`), rt("exactInput"), ResultTrue},
		{"nested tuple: bytes contains other", "", cd(routerABI, "exactInput.params.path", "contains", `"0x0bb8"`), rt("exactInput"), ResultFalse},
		{"array of tuples: element 1", "", cd(routerABI, "batch.transfers.1.to", "eq", `"`+bob+`"`), rt("batch"), ResultTrue},
		{"array of tuples: element 0 amount", "", cd(routerABI, "batch.transfers.0.amount", "lte", `5`), rt("batch"), ResultTrue},
		{"tuple in array in tuple in array", "", cd(routerABI, "batch.transfers.1.legs.0.venue", "eq", `"uni"`), rt("batch"), ResultTrue},
		{"uint8 in nested static array", "", cd(routerABI, "batch.transfers.1.legs.1.share", "eq", `"40"`), rt("batch"), ResultTrue},
		{"array index beyond the calldata fails closed", "", cd(routerABI, "batch.transfers.2.to", "neq", `"`+bob+`"`), rt("batch"), ResultError},
		{"address param beside the array", "", cd(routerABI, "batch.token", "in", `["`+usdc+`"]`), rt("batch"), ResultTrue},
		{"bytes[] element starts_with transfer selector", "", cd(routerABI, "multicall.data.0", "starts_with", `"0xa9059cbb"`), rt("multicall"), ResultTrue},
		{"bytes[] element 1 is not a transfer", "", cd(routerABI, "multicall.data.1", "starts_with", `"0xa9059cbb"`), rt("multicall"), ResultFalse},
		{"bytes[] index beyond fails closed", "", cd(routerABI, "multicall.data.5", "starts_with", `"0xa9059cbb"`), rt("multicall"), ResultError},
		{"negative int fails closed", "", cd(routerABI, "odd.delta", "gte", `"0"`), rt("odd"), ResultError},
		{"bool eq string", "", cd(routerABI, "odd.flag", "eq", `"true"`), rt("odd"), ResultTrue},
		{"bool eq JSON bool", "", cd(routerABI, "odd.flag", "eq", `false`), rt("odd"), ResultFalse},
		{"bytes4 eq in any case", "", cd(routerABI, "odd.tag", "eq", `"0xDEADBEEF"`), rt("odd"), ResultTrue},
		{"string ends_with", "", cd(routerABI, "odd.note", "ends_with", `"mo"`), rt("odd"), ResultTrue},
		{"uint64 eq", "", cd(routerABI, "odd.small", "eq", `"0x2a"`), rt("odd"), ResultTrue},
		{"function without arguments", "", cd(routerABI, "ping", "eq", `"ping"`), rt("ping"), ResultTrue},
		{"* rule on a personal_sign fails closed", "*", cd(erc20ABI, "transfer._to", "neq", `"`+bob+`"`), personalSign("hi", "utf-8"), ResultError},
	}
	runCondCases(t, cases, testEnv())
}

func TestTypedDataFields(t *testing.T) {
	td := func(field, op, value, types, primary string) string {
		return `{"field_source":"ethereum_typed_data_message","field":"` + field + `","operator":"` + op + `","value":` + value +
			`,"typed_data":{"types":` + types + `,"primary_type":"` + primary + `"}}`
	}
	dom := func(field, op, value string) string {
		return `{"field_source":"ethereum_typed_data_domain","field":"` + field + `","operator":"` + op + `","value":` + value + `}`
	}
	reordered := `{"Person":[{"name":"wallet","type":"address"},{"name":"name","type":"string"}],"Mail":[{"name":"from","type":"Person"},{"name":"to","type":"Person"},{"name":"contents","type":"string"}]}`
	extraType := `{"Person":[{"name":"name","type":"string"},{"name":"wallet","type":"address"}],"Mail":[{"name":"from","type":"Person"},{"name":"to","type":"Person"},{"name":"contents","type":"string"}],"Extra":[{"name":"x","type":"uint8"}]}`
	otherTypeString := `{"Person":[{"name":"name","type":"string"},{"name":"wallet","type":"address"}],"Mail":[{"name":"from","type":"Person"},{"name":"to","type":"Person"},{"name":"contents","type":"bytes"}]}`
	mail := mailBody(mailTypes, alice)
	mailViem := mailBody(mailTypesNoDomain, cs(alice))
	cases := []condCase{
		{"domain chainId eq", "", dom("chainId", "eq", `"1"`), mail, ResultTrue},
		{"domain chain_id alias, hex", "", dom("chain_id", "eq", `"0x1"`), permitBody("1"), ResultTrue},
		{"domain chainId gt", "", dom("chainId", "gt", `1`), mail, ResultFalse},
		{"domain verifyingContract eq lowercase", "", dom("verifyingContract", "eq", `"0xcccccccccccccccccccccccccccccccccccccccc"`), mail, ResultTrue},
		{"domain verifying_contract alias in", "", dom("verifying_contract", "in", `["`+usdc+`"]`), permitBody("1"), ResultTrue},
		{"domain verifyingContract in set", "", dom("verifyingContract", "in_condition_set", `"set_allow"`), mail, ResultFalse},

		{"message to.wallet eq (policy has EIP712Domain, request too)", "", td("to.wallet", "eq", `"`+cs(alice)+`"`, mailTypes, "Mail"), mail, ResultTrue},
		{"message to.wallet eq (policy has EIP712Domain, request not)", "", td("to.wallet", "eq", `"`+alice+`"`, mailTypes, "Mail"), mailViem, ResultTrue},
		{"message to.wallet eq (policy without EIP712Domain)", "", td("to.wallet", "eq", `"`+alice+`"`, mailTypesNoDomain, "Mail"), mail, ResultTrue},
		{"message to.wallet eq other", "", td("to.wallet", "eq", `"`+bob+`"`, mailTypes, "Mail"), mail, ResultFalse},
		{"message to.wallet in set", "", td("to.wallet", "in_condition_set", `"set_allow"`, mailTypes, "Mail"), mail, ResultTrue},
		{"message string contains", "", td("contents", "contains", `"Bob"`, mailTypes, "Mail"), mail, ResultTrue},
		{"message nested string eq", "", td("from.name", "eq", `"Cow"`, mailTypes, "Mail"), mail, ResultTrue},
		{"types: fields in another order → not applicable", "", td("to.wallet", "eq", `"`+alice+`"`, reordered, "Mail"), mail, ResultNotApplicable},
		{"types: an extra type → not applicable", "", td("to.wallet", "eq", `"`+alice+`"`, extraType, "Mail"), mail, ResultNotApplicable},
		{"types: another type string → not applicable", "", td("to.wallet", "eq", `"`+alice+`"`, otherTypeString, "Mail"), mail, ResultNotApplicable},
		{"types: another primary type → not applicable", "", td("wallet", "eq", `"`+alice+`"`, mailTypes, "Person"), mail, ResultNotApplicable},

		{"permit value lte", "", td("value", "lte", `"1000000"`, permitTypes, "Permit"), permitBody(`"0xf4240"`), ResultTrue},
		{"permit value gt", "", td("value", "gt", `"1000000"`, permitTypes, "Permit"), permitBody("1000000"), ResultFalse},
		{"permit spender eq", "", td("spender", "eq", `"`+router+`"`, permitTypes, "Permit"), permitBody("1"), ResultTrue},
		{"permit deadline eq hex", "", td("deadline", "eq", `"1700000000"`, permitTypes, "Permit"), permitBody("1"), ResultTrue},
		{"permit bytes4 array element", "", td("tags.0", "eq", `"0xDEADBEEF"`, permitTypes, "Permit"), permitBody("1"), ResultTrue},
		{"permit array index beyond fails closed", "", td("tags.1", "eq", `"0xdeadbeef"`, permitTypes, "Permit"), permitBody("1"), ResultError},
		{"permit bool", "", td("ok", "eq", `true`, permitTypes, "Permit"), permitBody("1"), ResultTrue},
		{"permit negative int fails closed", "", td("delta", "lt", `"10"`, permitTypes, "Permit"), permitBody("1"), ResultError},
		{"* rule, typed-data field on a transaction fails closed", "*", td("to.wallet", "eq", `"`+alice+`"`, mailTypes, "Mail"), txBody(usdc, "", ""), ResultError},
	}
	runCondCases(t, cases, testEnv())
}

func TestOtherFields(t *testing.T) {
	msg := func(field, op, value string) string {
		return `{"field_source":"message","field":"` + field + `","operator":"` + op + `","value":` + value + `}`
	}
	auth := func(op, value string) string {
		return `{"field_source":"ethereum_7702_authorization","field":"contract","operator":"` + op + `","value":` + value + `}`
	}
	sys := func(op, value string) string {
		return `{"field_source":"system","field":"current_unix_timestamp","operator":"` + op + `","value":` + value + `}`
	}
	now := testNow.Unix()
	hello := personalSign("hello world", "utf-8")
	cases := []condCase{
		{"content eq", "", msg("content", "eq", `"hello world"`), hello, ResultTrue},
		{"content eq is case-sensitive", "", msg("content", "eq", `"Hello world"`), hello, ResultFalse},
		{"content starts_with", "", msg("content", "starts_with", `"hello"`), hello, ResultTrue},
		{"content ends_with", "", msg("content", "ends_with", `"world"`), hello, ResultTrue},
		{"content contains", "", msg("content", "contains", `"lo wo"`), hello, ResultTrue},
		{"content does not contain", "", msg("content", "contains", `"xyz"`), hello, ResultFalse},
		{"content in", "", msg("content", "in", `["a","hello world"]`), hello, ResultTrue},
		{"content in set", "", msg("content", "in_condition_set", `"set_allow"`), personalSign("hello", "utf-8"), ResultTrue},
		{"content of a hex message", "", msg("content", "eq", `"hello"`), personalSign("0x68656c6c6f", "hex"), ResultTrue},
		{"content of a non-UTF-8 hex message fails closed", "", msg("content", "neq", `"x"`), personalSign("0xff00", "hex"), ResultError},
		{"byte_length of a non-UTF-8 hex message", "", msg("byte_length", "eq", `"2"`), personalSign("0xff00", "hex"), ResultTrue},
		{"byte_length counts bytes, not characters", "", msg("byte_length", "eq", `"4"`), personalSign("é€", "utf-8"), ResultFalse},
		{"byte_length eq", "", msg("byte_length", "eq", `11`), hello, ResultTrue},
		{"byte_length lte", "", msg("byte_length", "lte", `"10"`), hello, ResultFalse},
		{"byte_length gt hex", "", msg("byte_length", "gt", `"0xa"`), hello, ResultTrue},

		{"7702 contract eq", "", auth("eq", `"`+cs(delegate)+`"`), authBody(delegate), ResultTrue},
		{"7702 contract neq", "", auth("neq", `"`+delegate+`"`), authBody(cs(delegate)), ResultFalse},
		{"7702 contract in", "", auth("in", `["`+alice+`","`+delegate+`"]`), authBody(delegate), ResultTrue},
		{"7702 contract in deleted set fails closed", "", auth("in_condition_set", `"gone"`), authBody(delegate), ResultError},

		{"system before a deadline", "", sys("lt", `"`+big.NewInt(now+1).String()+`"`), hello, ResultTrue},
		{"system at a deadline", "", sys("lt", `"`+big.NewInt(now).String()+`"`), hello, ResultFalse},
		{"system after a start", "", sys("gte", `"0x`+big.NewInt(now).Text(16)+`"`), hello, ResultTrue},
		{"system on a transaction", "", sys("gt", `"0"`), txBody(usdc, "", ""), ResultTrue},
		{"system on a raw hash", "secp256k1_sign", sys("gt", `"0"`), `{"method":"secp256k1_sign","params":{"hash":"0x` + strings.Repeat("ab", 32) + `"}}`, ResultTrue},
	}
	runCondCases(t, cases, testEnv())

	t.Run("no clock fails closed", func(t *testing.T) {
		runCondCases(t, []condCase{{"zero Now", "", sys("gt", `"0"`), hello, ResultError}}, Env{})
	})
	t.Run("no set resolver fails closed", func(t *testing.T) {
		runCondCases(t, []condCase{{"nil Sets", "", msg("content", "in_condition_set", `"set_allow"`), hello, ResultError}}, Env{Now: testNow})
	})
}

// TestEvaluateSemantics covers rule selection and combination.
func TestEvaluateSemantics(t *testing.T) {
	allowAll := func(name, method string) string {
		return `{"name":"` + name + `","method":"` + method + `","action":"ALLOW","conditions":[]}`
	}
	denyAll := func(name, method string) string {
		return `{"name":"` + name + `","method":"` + method + `","action":"DENY","conditions":[]}`
	}
	toIs := func(name, action, a string) string {
		return `{"name":"` + name + `","method":"eth_signTransaction","action":"` + action + `","conditions":[{"field_source":"ethereum_transaction","field":"to","operator":"eq","value":"` + a + `"}]}`
	}
	tx := txBody(usdc, "", "")
	tests := []struct {
		name        string
		rules       []string
		body        string
		wantAllowed bool
		wantRule    string // rule id, "" for the default deny
		wantListed  int
		wantOther   int
	}{
		{"no rules denies", nil, tx, false, "", 0, 0},
		{"empty conditions match", []string{allowAll("all tx", "eth_signTransaction")}, tx, true, "rule_0", 1, 0},
		{"rule for another method does not count", []string{allowAll("send only", "eth_sendTransaction")}, tx, false, "", 0, 1},
		{"* allows any method", []string{allowAll("anything", "*")}, personalSign("x", "utf-8"), true, "rule_0", 1, 0},
		{"* allows raw hashes", []string{allowAll("anything", "*")}, `{"method":"secp256k1_sign","params":{"hash":"0x` + strings.Repeat("00", 32) + `"}}`, true, "rule_0", 1, 0},
		{"secp256k1_sign rule", []string{allowAll("hashes", "secp256k1_sign"), allowAll("tx", "eth_signTransaction")}, `{"method":"secp256k1_sign","params":{"hash":"0x` + strings.Repeat("00", 32) + `"}}`, true, "rule_0", 1, 1},
		{"DENY after ALLOW wins", []string{allowAll("all", "eth_signTransaction"), toIs("no usdc", "DENY", usdc)}, tx, false, "rule_1", 2, 0},
		{"DENY before ALLOW wins", []string{toIs("no usdc", "DENY", usdc), allowAll("all", "eth_signTransaction")}, tx, false, "rule_0", 2, 0},
		{"* DENY wins over a method ALLOW", []string{allowAll("all", "eth_signTransaction"), denyAll("freeze", "*")}, tx, false, "rule_1", 2, 0},
		{"first matching DENY decides", []string{denyAll("first", "*"), denyAll("second", "eth_signTransaction")}, tx, false, "rule_0", 2, 0},
		{"first matching ALLOW decides", []string{toIs("bob", "ALLOW", bob), toIs("usdc", "ALLOW", usdc), allowAll("all", "eth_signTransaction")}, tx, true, "rule_1", 3, 0},
		{"DENY that does not match", []string{toIs("no bob", "DENY", bob), allowAll("all", "eth_signTransaction")}, tx, true, "rule_1", 2, 0},
		{"ALLOW that does not match", []string{toIs("bob", "ALLOW", bob)}, tx, false, "", 1, 0},
		{"export rule", []string{allowAll("export", "exportPrivateKey")}, tx, false, "", 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rules := "[" + strings.Join(tc.rules, ",") + "]"
			c := mustCompile(t, policyJSON(rules), nil)
			d := c.Evaluate(mustParseRPC(t, tc.body), testEnv())
			if d.Allowed != tc.wantAllowed || d.RuleID != tc.wantRule {
				t.Fatalf("allowed=%v rule=%q, want %v %q (%s)", d.Allowed, d.RuleID, tc.wantAllowed, tc.wantRule, d.Reason)
			}
			if tc.wantRule == "" && d.Reason != DefaultDenyReason {
				t.Errorf("reason %q", d.Reason)
			}
			tr := trace(t, d)
			if len(tr.Rules) != tc.wantListed || tr.RulesForOtherMethods != tc.wantOther {
				t.Errorf("trace lists %d rules and counts %d others, want %d and %d", len(tr.Rules), tr.RulesForOtherMethods, tc.wantListed, tc.wantOther)
			}
			if tr.Allowed != d.Allowed || tr.RuleID != d.RuleID || tr.PolicyID != "pol_1" {
				t.Errorf("trace header %+v disagrees with the decision", tr)
			}
		})
	}
}

// TestTraceDetails checks what the trace says, condition by condition.
func TestTraceDetails(t *testing.T) {
	data := calldata(t)
	body := policyJSON(`[{"name":"usdc transfers","method":"eth_signTransaction","action":"ALLOW","conditions":[
		{"field_source":"ethereum_transaction","field":"to","operator":"eq","value":"` + cs(usdc) + `"},
		{"field_source":"ethereum_calldata","field":"approve.spender","operator":"eq","value":"` + router + `","abi":` + erc20ABI + `},
		{"field_source":"ethereum_transaction","field":"value","operator":"eq","value":"0"}]},
	 {"name":"no garbage","method":"eth_signTransaction","action":"DENY","conditions":[
		{"field_source":"ethereum_calldata","field":"transfer._value","operator":"gt","value":"0","abi":` + erc20ABI + `},
		{"field_source":"ethereum_transaction","field":"chain_id","operator":"eq","value":1}]}]`)
	c := mustCompile(t, body, nil)

	t.Run("false stops the rule; later conditions skipped", func(t *testing.T) {
		d := c.Evaluate(mustParseRPC(t, txBody(usdc, "", data["transfer"])), testEnv())
		tr := trace(t, d)
		r := tr.Rules[0]
		if r.Matched || !r.Applicable {
			t.Fatalf("rule 0: %+v", r)
		}
		want := []Result{ResultTrue, ResultFalse, ResultSkipped}
		for i, w := range want {
			if r.Conditions[i].Result != w {
				t.Errorf("condition %d: %s, want %s", i, r.Conditions[i].Result, w)
			}
		}
		if r.Conditions[0].Actual != usdc {
			t.Errorf("actual %q", r.Conditions[0].Actual)
		}
		if r.Conditions[1].Note == "" || r.Conditions[1].Actual != "" {
			t.Errorf("call to another function: note %q actual %q", r.Conditions[1].Note, r.Conditions[1].Actual)
		}
		if string(r.Conditions[2].Value) != `"0"` {
			t.Errorf("value %s", r.Conditions[2].Value)
		}
		// The DENY rule matched because the transfer's value is positive.
		if d.Allowed || d.RuleID != "rule_1" || tr.Rules[1].Conditions[0].Actual != "1000000" {
			t.Errorf("decision %+v", d)
		}
	})
	t.Run("undecodable calldata: ALLOW fails, DENY matches, trace says error", func(t *testing.T) {
		d := c.Evaluate(mustParseRPC(t, txBody(usdc, "", data["truncated"])), testEnv())
		tr := trace(t, d)
		if d.Allowed || d.RuleID != "rule_1" || !strings.Contains(d.Reason, "could not be evaluated") {
			t.Fatalf("decision %+v", d)
		}
		a, dn := tr.Rules[0], tr.Rules[1]
		// The ALLOW rule asks about approve: the selector is transfer's, so
		// that condition is false without decoding (TestCalldataFields has
		// ALLOW rules failing on the decoding error itself).
		if a.Matched || a.Conditions[1].Result != ResultFalse || a.Conditions[2].Result != ResultSkipped {
			t.Errorf("ALLOW rule conditions: %+v", a.Conditions)
		}
		if !dn.Matched || dn.Conditions[0].Result != ResultError || dn.Conditions[0].Error == "" || dn.Conditions[1].Result != ResultTrue {
			t.Errorf("DENY rule: %+v", dn)
		}
	})
	t.Run("an error in a DENY rule does not override a false condition", func(t *testing.T) {
		d := c.Evaluate(mustParseRPC(t, `{"method":"eth_sendTransaction","caip2":"eip155:137","params":{"transaction":{"to":"`+usdc+`","data":"`+data["truncated"]+`"}}}`), testEnv())
		if len(trace(t, d).Rules) != 0 {
			t.Fatalf("rules for eth_signTransaction listed for eth_sendTransaction")
		}
		c2 := mustCompile(t, policyJSON(`[{"name":"all","method":"*","action":"ALLOW","conditions":[]},{"name":"no garbage on mainnet","method":"*","action":"DENY","conditions":[
			{"field_source":"ethereum_calldata","field":"transfer._value","operator":"gt","value":"0","abi":`+erc20ABI+`},
			{"field_source":"ethereum_transaction","field":"chain_id","operator":"eq","value":1}]}]`), nil)
		d = c2.Evaluate(mustParseRPC(t, `{"method":"eth_sendTransaction","caip2":"eip155:137","params":{"transaction":{"to":"`+usdc+`","data":"`+data["truncated"]+`"}}}`), testEnv())
		if !d.Allowed {
			t.Fatalf("denied: %s\n%s", d.Reason, d.Trace)
		}
	})
	t.Run("typed data types mismatch is visible", func(t *testing.T) {
		other := `{"Person":[{"name":"wallet","type":"address"},{"name":"name","type":"string"}],"Mail":[{"name":"from","type":"Person"},{"name":"to","type":"Person"},{"name":"contents","type":"string"}]}`
		c := mustCompile(t, policyJSON(`[{"name":"deny bob","method":"eth_signTypedData_v4","action":"DENY","conditions":[
			{"field_source":"ethereum_typed_data_domain","field":"chainId","operator":"eq","value":"1"},
			{"field_source":"ethereum_typed_data_message","field":"to.wallet","operator":"eq","value":"`+alice+`","typed_data":{"types":`+other+`,"primary_type":"Mail"}}]},
			{"name":"typed data","method":"eth_signTypedData_v4","action":"ALLOW","conditions":[]}]`), nil)
		d := c.Evaluate(mustParseRPC(t, mailBody(mailTypes, alice)), testEnv())
		tr := trace(t, d)
		r := tr.Rules[0]
		if !d.Allowed || r.Applicable || r.Matched || r.Note == "" ||
			r.Conditions[0].Result != ResultSkipped || r.Conditions[1].Result != ResultNotApplicable {
			t.Fatalf("decision %+v, rule %+v", d, r)
		}
	})
	t.Run("long actual values are truncated", func(t *testing.T) {
		c := mustCompile(t, policyJSON(`[{"name":"m","method":"personal_sign","action":"ALLOW","conditions":[{"field_source":"message","field":"content","operator":"starts_with","value":"a"}]}]`), nil)
		d := c.Evaluate(mustParseRPC(t, personalSign(strings.Repeat("a", 10_000), "utf-8")), testEnv())
		got := trace(t, d).Rules[0].Conditions[0].Actual
		if !d.Allowed || len(got) > maxTraceActualChars+len("…") {
			t.Fatalf("allowed=%v, actual has %d bytes", d.Allowed, len(got))
		}
	})
}

// TestDecodeOnce checks that one evaluation decodes the calldata once per
// function, however many conditions (and ABIs) read it.
func TestDecodeOnce(t *testing.T) {
	data := calldata(t)
	var conds []string
	for _, f := range []string{"transfer._to", "transfer._value", "transfer"} {
		conds = append(conds, cd(erc20ABI, f, "neq", `"0x0000000000000000000000000000000000000001"`))
	}
	oneFn := `[{"type":"function","name":"transfer","inputs":[{"name":"to","type":"address"},{"name":"value","type":"uint256"}]}]`
	conds[2] = cd(oneFn, "transfer.value", "gt", `"0"`)
	c := mustCompile(t, policyJSON(`[{"name":"a","method":"eth_signTransaction","action":"DENY","conditions":[`+strings.Join(conds, ",")+`]},
		{"name":"b","method":"eth_signTransaction","action":"ALLOW","conditions":[`+conds[0]+`]}]`), nil)
	e := &evaluation{req: mustParseRPC(t, txBody(usdc, "", data["transfer"])), env: testEnv()}
	for _, r := range c.rules {
		e.rule(r)
	}
	if len(e.decoded) != 1 || e.decoded[0].err != nil {
		t.Fatalf("decoded %d times: %+v", len(e.decoded), e.decoded)
	}
}

func TestResultText(t *testing.T) {
	for r := ResultTrue; r <= ResultSkipped; r++ {
		b, _ := json.Marshal(r)
		var back Result
		if err := json.Unmarshal(b, &back); err != nil || back != r {
			t.Errorf("%s: %s → %v (%v)", r, b, back, err)
		}
	}
	var r Result
	if err := json.Unmarshal([]byte(`"maybe"`), &r); err == nil {
		t.Error("unknown result accepted")
	}
}

func TestNilRequest(t *testing.T) {
	c := mustCompile(t, policyJSON(`[{"name":"a","method":"*","action":"ALLOW","conditions":[]}]`), nil)
	if d := c.Evaluate(nil, testEnv()); d.Allowed {
		t.Fatal("nil request allowed")
	}
}

// TestTraceEncoding holds the trace encoder to encoding/json's output.
func TestTraceEncoding(t *testing.T) {
	odd := "q\"b\\s/<>&\b\f\n\r\t\x01\x1f\x7f é \u2028\u2029 \xff\xfe end"
	tr := &Trace{PolicyID: odd, Method: "m", Allowed: true, RuleID: "r", RulesForOtherMethods: 3, Rules: []RuleTrace{
		{RuleID: odd, Name: odd, Method: "*", Action: "DENY", Applicable: true, Matched: true, Note: odd, Conditions: []ConditionTrace{
			{FieldSource: "s", Field: odd, Operator: "in", Value: json.RawMessage(`["a","\u003c"]`), Actual: odd, Result: ResultError, Error: odd, Note: odd},
			{FieldSource: "s", Field: "f", Operator: "eq", Result: ResultSkipped},
		}},
		{RuleID: "x", Conditions: []ConditionTrace{}},
		{RuleID: "nil conditions"},
	}}
	for _, x := range []*Trace{tr, {Method: "m"}, {Method: "m", Rules: []RuleTrace{}}} {
		want, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		if got := x.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	}
}

// TestConcurrentEvaluate shares one Compiled and one Env between
// goroutines, as the API does; run with -race.
func TestConcurrentEvaluate(t *testing.T) {
	c := mustCompile(t, bench20Rules(), nil)
	env := benchEnv(t)
	data := calldata(t)
	bodies := []string{txBody(usdc, "", data["transfer"]), txBody(router, "", data["batch"]), txBody(usdc, "", data["truncated"]), mailBody(mailTypes, alice)}
	want := make([]Decision, len(bodies))
	for i, b := range bodies {
		want[i] = c.Evaluate(mustParseRPC(t, b), env)
	}
	done := make(chan error)
	for g := range 8 {
		go func() {
			for i := range 50 {
				k := (g + i) % len(bodies)
				req, err := wallet.ParseRPC([]byte(bodies[k]))
				if err != nil {
					done <- err
					return
				}
				if d := c.Evaluate(req, env); d.Allowed != want[k].Allowed || string(d.Trace) != string(want[k].Trace) {
					done <- errors.New("decisions differ between goroutines")
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
