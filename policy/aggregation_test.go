package policy

import (
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

func mustAggregation(t testing.TB, id, body string) *CompiledAggregation {
	t.Helper()
	a, err := ParseAggregation([]byte(body))
	if err != nil {
		t.Fatalf("ParseAggregation: %v", err)
	}
	a.ID = id
	if err := ValidateAggregation(a, nil); err != nil {
		t.Fatalf("ValidateAggregation: %v", err)
	}
	c, err := CompileAggregation(a)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ethPerDay sums the value of eth_signTransaction requests per wallet.
const ethPerDay = `{"name":"ETH per day","method":"eth_signTransaction",
 "metric":{"field_source":"ethereum_transaction","field":"value","function":"sum"},
 "window":{"type":"rolling","seconds":86400}}`

// usdcPerRecipient sums USDC transfers per recipient, on mainnet only.
var usdcPerRecipient = `{"name":"USDC per recipient","method":"eth_signTransaction",
 "metric":{"field_source":"ethereum_calldata","field":"transfer._value","abi":` + erc20ABI + `,"function":"sum"},
 "window":{"type":"rolling","seconds":3600},
 "conditions":[{"field_source":"ethereum_transaction","field":"to","operator":"eq","value":"` + usdc + `"},
               {"field_source":"ethereum_transaction","field":"chain_id","operator":"eq","value":"1"}],
 "group_by":[{"field_source":"ethereum_calldata","field":"transfer._to","abi":` + erc20ABI + `}]}`

func refPolicy(aggID, op, limit string) string {
	return policyJSON(`[{"name":"within limit","method":"eth_signTransaction","action":"ALLOW","conditions":[
		{"field_source":"reference","field":"aggregation.` + aggID + `","operator":"` + op + `","value":"` + limit + `"}]}]`)
}

func TestAggregationReference(t *testing.T) {
	eth := mustAggregation(t, "agg_eth", ethPerDay)
	usdcAgg := mustAggregation(t, "agg_usdc", usdcPerRecipient)
	oneEth := big10("1000000000000000000")
	half := new(big.Int).Div(oneEth, big.NewInt(2))
	data := calldata(t)
	aliceKey := `["` + alice + `"]`

	tests := []struct {
		name    string
		aggID   string
		op      string
		limit   string
		body    string
		prior   map[string]*big.Int // group key → recorded sum
		allowed bool
		actual  string
		key     string // the group key queried
	}{
		{"below the limit with the request", "agg_eth", "lte", "1000000000000000000", txBody(bob, "0x58d15e17628000" /* 0.025 ETH */, ""), map[string]*big.Int{"": half}, true, "525000000000000000", ""},
		{"exactly at the limit with the request", "agg_eth", "lte", "0xde0b6b3a7640000", txBody(bob, "0x6f05b59d3b20000" /* 0.5 ETH */, ""), map[string]*big.Int{"": half}, true, "1000000000000000000", ""},
		{"one wei above the limit with the request", "agg_eth", "lte", "1000000000000000000", txBody(bob, "0x6f05b59d3b20001", ""), map[string]*big.Int{"": half}, false, "1000000000000000001", ""},
		{"prior alone already above", "agg_eth", "lt", "1000000000000000000", txBody(bob, "0x0", ""), map[string]*big.Int{"": oneEth}, false, "1000000000000000000", ""},
		{"nothing recorded", "agg_eth", "lte", "0", txBody(bob, "0x0", ""), nil, true, "0", ""},
		{"grouped: this recipient's sum plus the request", "agg_usdc", "lte", "2000000", txBody(usdc, "", data["transfer"]), map[string]*big.Int{aliceKey: big.NewInt(1_000_000), `["` + bob + `"]`: big.NewInt(5_000_000)}, true, "2000000", aliceKey},
		{"grouped: above for this recipient", "agg_usdc", "lt", "2000000", txBody(usdc, "", data["transfer"]), map[string]*big.Int{aliceKey: big.NewInt(1_000_000)}, false, "2000000", aliceKey},
		{"request does not count (other token): prior only", "agg_usdc", "lte", "1000000", txBody(weth, "", data["transfer"]), map[string]*big.Int{aliceKey: big.NewInt(1_000_000)}, true, "1000000", aliceKey},
		{"request does not count (approve, not transfer): prior only", "agg_usdc", "lte", "0", txBody(usdc, "", data["approve"]), nil, false, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			aggs := &fakeAggs{aggs: map[string]*CompiledAggregation{"agg_eth": eth, "agg_usdc": usdcAgg}, sums: map[string]*big.Int{}}
			for k, v := range tc.prior {
				aggs.sums[tc.aggID+"|wallet_1|"+k] = v
			}
			env := testEnv()
			env.Aggregates = aggs
			c := mustCompile(t, refPolicy(tc.aggID, tc.op, tc.limit), testRefs2(tc.aggID))
			d := c.Evaluate(mustParseRPC(t, tc.body), env)
			got := trace(t, d).Rules[0].Conditions[0]
			if d.Allowed != tc.allowed || got.Actual != tc.actual {
				t.Fatalf("allowed=%v actual=%q, want %v %q\n%s", d.Allowed, got.Actual, tc.allowed, tc.actual, d.Trace)
			}
			if tc.actual == "" {
				if got.Result != ResultError {
					t.Fatalf("want an error: %+v", got)
				}
				return
			}
			if len(aggs.queries) != 1 {
				t.Fatalf("%d sum queries", len(aggs.queries))
			}
			q := aggs.queries[0]
			window := 24 * time.Hour
			if tc.aggID == "agg_usdc" {
				window = time.Hour
			}
			if q.GroupKey != tc.key || q.WalletID != "wallet_1" || !q.Until.Equal(testNow) || !q.Since.Equal(testNow.Add(-window)) {
				t.Fatalf("query %+v", q)
			}
		})
	}
}

func testRefs2(aggID string) Refs { return refs{aggs: []string{aggID}} }

func TestAggregationFailsClosed(t *testing.T) {
	eth := mustAggregation(t, "agg_eth", ethPerDay)
	body := policyJSON(`[{"name":"within","method":"eth_signTransaction","action":"ALLOW","conditions":[{"field_source":"reference","field":"aggregation.agg_eth","operator":"lte","value":"100"}]},
		{"name":"over","method":"eth_signTransaction","action":"DENY","conditions":[{"field_source":"reference","field":"aggregation.agg_eth","operator":"gt","value":"100"}]}]`)
	c := mustCompile(t, body, nil)
	req := mustParseRPC(t, txBody(bob, "0x1", ""))
	tests := []struct {
		name string
		env  func(Env) Env
	}{
		{"deleted aggregation", func(e Env) Env { e.Aggregates = &fakeAggs{}; return e }},
		{"no resolver", func(e Env) Env { e.Aggregates = nil; return e }},
		{"no clock", func(e Env) Env { e.Now = time.Time{}; return e }},
		{"store error", func(e Env) Env { e.Aggregates = failingSum{eth}; return e }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := testEnv()
			env.Aggregates = &fakeAggs{aggs: map[string]*CompiledAggregation{"agg_eth": eth}}
			d := c.Evaluate(req, tc.env(env))
			tr := trace(t, d)
			if d.Allowed || d.RuleID != "rule_1" || tr.Rules[0].Conditions[0].Result != ResultError || tr.Rules[1].Conditions[0].Result != ResultError {
				t.Fatalf("%+v\n%s", d, d.Trace)
			}
		})
	}
}

type failingSum struct{ a *CompiledAggregation }

func (f failingSum) Aggregation(string) (*CompiledAggregation, error) { return f.a, nil }
func (failingSum) Sum(SumQuery) (*big.Int, error)                     { return nil, errors.New("database is locked") }

func TestContribution(t *testing.T) {
	eth := mustAggregation(t, "agg_eth", ethPerDay)
	usdcAgg := mustAggregation(t, "agg_usdc", usdcPerRecipient)
	data := calldata(t)
	send := `{"method":"eth_sendTransaction","caip2":"eip155:1","params":{"transaction":{"to":"` + bob + `","value":"0x10"}}}`
	tests := []struct {
		name   string
		agg    *CompiledAggregation
		body   string
		counts bool
		amount string
		key    string
		err    bool
	}{
		{"value counts", eth, txBody(bob, "0x10", ""), true, "16", "", false},
		{"zero value counts zero", eth, txBody(bob, "", ""), true, "0", "", false},
		{"other method does not count", eth, send, false, "", "", false},
		{"personal_sign does not count", eth, personalSign("x", "utf-8"), false, "", "", false},
		{"USDC transfer counts per recipient", usdcAgg, txBody(cs(usdc), "", data["transfer"]), true, "1000000", `["` + alice + `"]`, false},
		{"transfer of another token does not count", usdcAgg, txBody(weth, "", data["transfer"]), false, "", "", false},
		{"approve does not count", usdcAgg, txBody(usdc, "", data["approve"]), false, "", "", false},
		{"plain ETH transfer to USDC calls no transfer", usdcAgg, txBody(usdc, "0x1", ""), false, "", "", false},
		{"truncated transfer cannot be measured", usdcAgg, txBody(usdc, "", data["truncated"]), false, "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			amount, key, counts, err := tc.agg.Contribution(mustParseRPC(t, tc.body), testEnv())
			if (err != nil) != tc.err || counts != tc.counts || key != tc.key {
				t.Fatalf("amount=%v key=%q counts=%v err=%v", amount, key, counts, err)
			}
			if counts && amount.String() != tc.amount {
				t.Fatalf("amount %v, want %s", amount, tc.amount)
			}
			if !counts && amount != nil {
				t.Fatalf("amount %v without counting", amount)
			}
		})
	}
	if eth.ID() != "agg_eth" || eth.Window() != 24*time.Hour || eth.Method() != "eth_signTransaction" {
		t.Fatal("accessors")
	}
}

func TestValidateAggregationPaths(t *testing.T) {
	base := map[string]string{
		"name":   `"n"`,
		"method": `"eth_signTransaction"`,
		"metric": `{"field_source":"ethereum_transaction","field":"value","function":"sum"}`,
		"window": `{"type":"rolling","seconds":3600}`,
	}
	body := func(over map[string]string) string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range over {
			m[k] = v
		}
		var parts []string
		for _, k := range []string{"name", "method", "metric", "window", "conditions", "group_by", "owner", "owner_id", "extra"} {
			if v, ok := m[k]; ok && v != "" {
				parts = append(parts, `"`+k+`":`+v)
			}
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	tests := []struct {
		name string
		over map[string]string
		path string
	}{
		{"unknown key", map[string]string{"extra": "1"}, "extra"},
		{"name missing", map[string]string{"name": ""}, "name"},
		{"name too long", map[string]string{"name": `"` + strings.Repeat("n", 256) + `"`}, "name"},
		{"method personal_sign", map[string]string{"method": `"personal_sign"`}, "method"},
		{"method user operation", map[string]string{"method": `"eth_signUserOperation"`}, "method"},
		{"metric unknown key", map[string]string{"metric": `{"field_source":"ethereum_transaction","field":"value","function":"sum","fn":"x"}`}, "metric.fn"},
		{"metric source message", map[string]string{"metric": `{"field_source":"message","field":"byte_length","function":"sum"}`}, "metric.field_source"},
		{"metric address field", map[string]string{"metric": `{"field_source":"ethereum_transaction","field":"to","function":"sum"}`}, "metric.field"},
		{"metric unknown field", map[string]string{"metric": `{"field_source":"ethereum_transaction","field":"gas","function":"sum"}`}, "metric.field"},
		{"metric calldata without abi", map[string]string{"metric": `{"field_source":"ethereum_calldata","field":"transfer._value","function":"sum"}`}, "metric.abi"},
		{"metric calldata function alone", map[string]string{"metric": `{"field_source":"ethereum_calldata","field":"transfer","abi":` + erc20ABI + `,"function":"sum"}`}, "metric.field"},
		{"metric abi on transaction", map[string]string{"metric": `{"field_source":"ethereum_transaction","field":"value","abi":` + erc20ABI + `,"function":"sum"}`}, "metric.abi"},
		{"metric function", map[string]string{"metric": `{"field_source":"ethereum_transaction","field":"value","function":"avg"}`}, "metric.function"},
		{"window type", map[string]string{"window": `{"type":"fixed","seconds":3600}`}, "window.type"},
		{"window too short", map[string]string{"window": `{"type":"rolling","seconds":3599}`}, "window.seconds"},
		{"window too long", map[string]string{"window": `{"type":"rolling","seconds":259201}`}, "window.seconds"},
		{"window seconds a string", map[string]string{"window": `{"type":"rolling","seconds":"3600"}`}, "window.seconds"},
		{"window seconds fractional", map[string]string{"window": `{"type":"rolling","seconds":3600.5}`}, "window.seconds"},
		{"condition reference", map[string]string{"conditions": `[{"field_source":"reference","field":"aggregation.x","operator":"lte","value":"1"}]`}, "conditions[0].field_source"},
		{"condition message", map[string]string{"conditions": `[{"field_source":"message","field":"content","operator":"eq","value":"x"}]`}, "conditions[0].field_source"},
		{"condition bad value", map[string]string{"conditions": `[{"field_source":"ethereum_transaction","field":"to","operator":"eq","value":"x"}]`}, "conditions[0].value"},
		{"three group_by", map[string]string{"group_by": `[{"field_source":"ethereum_transaction","field":"to"},{"field_source":"ethereum_transaction","field":"to"},{"field_source":"ethereum_transaction","field":"to"}]`}, "group_by"},
		{"group_by system", map[string]string{"group_by": `[{"field_source":"system","field":"current_unix_timestamp"}]`}, "group_by[0].field_source"},
		{"group_by unknown key", map[string]string{"group_by": `[{"field_source":"ethereum_transaction","field":"to","operator":"eq"}]`}, "group_by[0].operator"},
		{"group_by unknown param", map[string]string{"group_by": `[{"field_source":"ethereum_calldata","field":"transfer.x","abi":` + erc20ABI + `}]`}, "group_by[0].field"},
		{"owner and owner_id", map[string]string{"owner": `{"user_id":"u"}`, "owner_id": `"q"`}, "owner_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a *Aggregation
			got, failed := firstPath(t, body(tc.over),
				func(b []byte) (err error) { a, err = ParseAggregation(b); return err },
				func() error { return ValidateAggregation(a, nil) })
			if !failed || got != tc.path {
				t.Fatalf("error at %q (failed=%v), want %q", got, failed, tc.path)
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		a, err := ParseAggregation([]byte(usdcPerRecipient))
		if err != nil {
			t.Fatal(err)
		}
		if err := ValidateAggregation(a, nil); err != nil {
			t.Fatal(err)
		}
	})
}
