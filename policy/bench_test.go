package policy

import (
	"fmt"
	"math/big"
	"strings"
	"testing"
)

// bench20Rules is a 20-rule policy: transaction, ERC-20 calldata,
// nested-tuple calldata, typed data, message, 7702, system conditions, a
// condition set and an aggregation reference.
func bench20Rules() string {
	blocked := make([]string, 10)
	for i := range blocked {
		blocked[i] = `"0x` + strings.Repeat("0", 38) + string(rune('0'+i)) + `0"`
	}
	erc := func(field, op, value string) string { return cd(erc20ABI, field, op, value) }
	rt := func(field, op, value string) string { return cd(routerABI, field, op, value) }
	tx := func(field, op, value string) string {
		return `{"field_source":"ethereum_transaction","field":"` + field + `","operator":"` + op + `","value":` + value + `}`
	}
	sys := func(op, value string) string {
		return `{"field_source":"system","field":"current_unix_timestamp","operator":"` + op + `","value":"` + value + `"}`
	}
	rule := func(name, method, action string, conds ...string) string {
		return `{"name":"` + name + `","method":"` + method + `","action":"` + action + `","conditions":[` + strings.Join(conds, ",") + `]}`
	}
	rules := []string{
		rule("blocked recipients", "eth_signTransaction", "DENY", tx("to", "in_condition_set", `"set_blocked"`)),
		rule("no large ETH", "eth_signTransaction", "DENY", tx("value", "gt", `"10000000000000000000"`)),
		rule("mainnet only", "eth_signTransaction", "DENY", tx("chain_id", "neq", `1`)),
		rule("blocked token recipients", "eth_signTransaction", "DENY", erc("transfer._to", "in", "["+strings.Join(blocked, ",")+"]")),
		rule("expired", "*", "DENY", sys("gt", "1900000000")),
		rule("no unlimited approvals", "eth_signTransaction", "DENY", erc("approve.amount", "eq", `"0x`+strings.Repeat("f", 64)+`"`)),
		rule("no transferFrom", "eth_signTransaction", "DENY", erc("transferFrom", "eq", `"transferFrom"`)),
		rule("swaps to treasury", "eth_signTransaction", "ALLOW", tx("to", "eq", `"`+router+`"`), rt("exactInput.params.recipient", "eq", `"`+bob+`"`), rt("exactInput.params.amountIn", "lte", `"0xde0b6b3a7640000"`)),
		rule("batches", "eth_signTransaction", "ALLOW", tx("to", "eq", `"`+router+`"`), rt("batch.transfers.0.to", "in_condition_set", `"set_allow"`), rt("batch.transfers.0.legs.0.venue", "eq", `"uni"`)),
		rule("multicall of transfers", "eth_signTransaction", "ALLOW", rt("multicall.data.0", "starts_with", `"0xa9059cbb"`)),
		rule("mail to alice", "eth_signTypedData_v4", "ALLOW", `{"field_source":"ethereum_typed_data_message","field":"to.wallet","operator":"eq","value":"`+alice+`","typed_data":{"types":`+mailTypes+`,"primary_type":"Mail"}}`),
		rule("permits", "eth_signTypedData_v4", "ALLOW", `{"field_source":"ethereum_typed_data_domain","field":"chainId","operator":"eq","value":"1"}`),
		rule("login messages", "personal_sign", "ALLOW", `{"field_source":"message","field":"content","operator":"starts_with","value":"Sign in to"}`),
		rule("delegation", "eth_sign7702Authorization", "ALLOW", `{"field_source":"ethereum_7702_authorization","field":"contract","operator":"eq","value":"`+delegate+`"}`),
		rule("small ETH", "eth_signTransaction", "ALLOW", tx("value", "lte", `"0x2386f26fc10000"`), tx("to", "in_condition_set", `"set_allow"`)),
		rule("WETH transfers", "eth_signTransaction", "ALLOW", tx("to", "eq", `"`+weth+`"`), erc("transfer._value", "lte", `"1000000000000000000"`)),
		rule("USDC transfers within the daily limit", "eth_signTransaction", "ALLOW",
			tx("to", "eq", `"`+cs(usdc)+`"`), erc("transfer._to", "in_condition_set", `"set_allow"`),
			erc("transfer._value", "lte", `"1000000000000"`), sys("lt", "1900000000"),
			`{"field_source":"reference","field":"aggregation.agg_usdc","operator":"lte","value":"10000000000000"}`),
		rule("USDC approvals to the router", "eth_signTransaction", "ALLOW", tx("to", "eq", `"`+usdc+`"`), erc("approve.spender", "eq", `"`+router+`"`)),
		rule("hashes", "secp256k1_sign", "DENY"),
		rule("exports", "exportPrivateKey", "DENY"),
	}
	return policyJSON("[" + strings.Join(rules, ",") + "]")
}

// cachedSets is a SetResolver over pre-built sets, as the API's cache is.
type cachedSets map[string]*ConditionSet

func (c cachedSets) ConditionSet(id string) (*ConditionSet, error) {
	s, ok := c[id]
	if !ok {
		return nil, errSetNotFound
	}
	return s, nil
}

func benchEnv(t testing.TB) Env {
	var allow []string
	for i := range 200 {
		allow = append(allow, fmt.Sprintf("0x%040x", 0x1000+i))
	}
	allow = append(allow, cs(alice), bob)
	return Env{
		Now:      testNow,
		WalletID: "wallet_1",
		Sets: cachedSets{
			"set_allow":   NewConditionSet(allow),
			"set_blocked": NewConditionSet([]string{zeroAddr, "0x000000000000000000000000000000000000dead"}),
		},
		Aggregates: &staticAggs{a: mustAggregation(t, "agg_usdc", usdcPerRecipient), sum: big.NewInt(5_000_000)},
	}
}

// staticAggs answers every Sum with the same amount, without recording.
type staticAggs struct {
	a   *CompiledAggregation
	sum *big.Int
}

func (s *staticAggs) Aggregation(id string) (*CompiledAggregation, error) {
	if id != s.a.ID() {
		return nil, errSetNotFound
	}
	return s.a, nil
}

func (s *staticAggs) Sum(SumQuery) (*big.Int, error) { return s.sum, nil }

func TestBench20Rules(t *testing.T) {
	c := mustCompile(t, bench20Rules(), nil)
	if len(c.rules) != 20 {
		t.Fatalf("%d rules", len(c.rules))
	}
	d := c.Evaluate(mustParseRPC(t, txBody(usdc, "", calldata(t)["transfer"])), benchEnv(t))
	if !d.Allowed || d.RuleName != "USDC transfers within the daily limit" {
		t.Fatalf("%+v\n%s", d, d.Trace)
	}
	tr := trace(t, d)
	if tr.RulesForOtherMethods != 6 || len(tr.Rules) != 14 {
		t.Fatalf("listed %d, other %d", len(tr.Rules), tr.RulesForOtherMethods)
	}
}

// BenchmarkEvaluate20Rules evaluates the 20-rule policy against an ERC-20
// transfer eth_signTransaction, trace included.
func BenchmarkEvaluate20Rules(b *testing.B) {
	c := mustCompile(b, bench20Rules(), nil)
	req := mustParseRPC(b, txBody(usdc, "", calldata(b)["transfer"]))
	env := benchEnv(b)
	b.ReportAllocs()
	for b.Loop() {
		if d := c.Evaluate(req, env); !d.Allowed {
			b.Fatal(d.Reason)
		}
	}
}

// BenchmarkParsePolicy parses the 20-rule policy's body strictly.
func BenchmarkParsePolicy(b *testing.B) {
	body := []byte(bench20Rules())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParsePolicy(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompile validates and compiles the parsed 20-rule policy (ABIs,
// typed-data types, numbers, addresses, paths).
func BenchmarkCompile(b *testing.B) {
	p, err := ParsePolicy([]byte(bench20Rules()))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(p); err != nil {
			b.Fatal(err)
		}
	}
}
