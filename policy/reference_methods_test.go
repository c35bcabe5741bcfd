package policy

import (
	"math/big"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/wallet"
)

// TestReferenceOnOtherMethodsFailsClosed: a "*" rule may use the reference
// source, but only transactions have the amount an aggregation sums. On any
// other request the reference cannot be evaluated, and fails closed, as every
// other field the request's method does not have does. Otherwise a "*" ALLOW
// rule written as a spending limit ("aggregation.daily lte 1 ETH") would
// allow, uncounted and unlimited, a raw hash (which may be a transaction's),
// a permit, or a 7702 delegation of the wallet while the recorded sum is
// below the limit.
func TestReferenceOnOtherMethodsFailsClosed(t *testing.T) {
	eth := mustAggregation(t, "agg_eth", ethPerDay)
	ref := func(name, action, op string) string {
		return `{"name":"` + name + `","method":"*","action":"` + action + `","conditions":[
			{"field_source":"reference","field":"aggregation.agg_eth","operator":"` + op + `","value":"1000000000000000000"}]}`
	}
	hash := "0x" + strings.Repeat("ab", 32)
	raw, err := wallet.ParseRawSign([]byte(`{"params":{"hash":"` + hash + `"}}`))
	if err != nil {
		t.Fatal(err)
	}
	requests := map[string]*wallet.Request{
		"personal_sign":             mustParseRPC(t, personalSign("hello", "utf-8")),
		"secp256k1_sign":            mustParseRPC(t, `{"method":"secp256k1_sign","params":{"hash":"`+hash+`"}}`),
		"raw_sign":                  raw,
		"eth_sign7702Authorization": mustParseRPC(t, authBody(delegate)),
		"eth_signTypedData_v4":      mustParseRPC(t, permitBody("1")),
	}
	for _, tc := range []struct {
		name  string
		rules string
	}{
		{"* ALLOW within the limit does not allow", "[" + ref("within", "ALLOW", "lte") + "]"},
		{"* DENY over the limit denies", "[" + ref("over", "DENY", "gt") + `,{"name":"all","method":"*","action":"ALLOW","conditions":[]}]`},
	} {
		c := mustCompile(t, policyJSON(tc.rules), testRefs2("agg_eth"))
		for method, req := range requests {
			t.Run(tc.name+"/"+method, func(t *testing.T) {
				env := testEnv()
				env.Aggregates = &fakeAggs{aggs: map[string]*CompiledAggregation{"agg_eth": eth}, sums: map[string]*big.Int{}}
				d := c.Evaluate(req, env)
				if d.Allowed {
					t.Fatalf("allowed by %q\n%s", d.RuleName, d.Trace)
				}
				if got := trace(t, d).Rules[0].Conditions[0].Result; got != ResultError {
					t.Fatalf("reference result %q, want %q\n%s", got, ResultError, d.Trace)
				}
			})
		}
	}
	t.Run("a transaction still reads the sum", func(t *testing.T) {
		c := mustCompile(t, policyJSON("["+ref("within", "ALLOW", "lte")+"]"), testRefs2("agg_eth"))
		env := testEnv()
		env.Aggregates = &fakeAggs{aggs: map[string]*CompiledAggregation{"agg_eth": eth}, sums: map[string]*big.Int{}}
		if d := c.Evaluate(mustParseRPC(t, txBody(bob, "0x1", "")), env); !d.Allowed {
			t.Fatalf("a transaction within the limit: %s\n%s", d.Reason, d.Trace)
		}
	})
}

// TestReferenceToAnotherMethodFailsClosed: an aggregation counts the
// requests of its one method. A rule that references it for a request of
// the other transaction method (an eth_sendTransaction rule over an
// eth_signTransaction aggregation, Privy's only kind) would compare a sum
// this request never joins: every send would pass while the signed
// transactions stay under the limit, and none would be counted. The
// reference fails closed instead, so the mistake shows in the trace rather
// than as a limit that never binds.
func TestReferenceToAnotherMethodFailsClosed(t *testing.T) {
	eth := mustAggregation(t, "agg_eth", ethPerDay)                                                                                           // eth_signTransaction
	send := `{"method":"eth_sendTransaction","caip2":"eip155:1","params":{"transaction":{"to":"` + bob + `","value":"0x56bc75e2d63100000"}}}` // 100 ETH
	for _, tc := range []struct{ name, rules string }{
		{"send ALLOW within a signing limit", `[{"name":"within","method":"eth_sendTransaction","action":"ALLOW","conditions":[
			{"field_source":"reference","field":"aggregation.agg_eth","operator":"lte","value":"1000000000000000000"}]}]`},
		{"* ALLOW within a signing limit", `[{"name":"within","method":"*","action":"ALLOW","conditions":[
			{"field_source":"reference","field":"aggregation.agg_eth","operator":"lte","value":"1000000000000000000"}]}]`},
		{"send DENY over a signing limit", `[{"name":"over","method":"eth_sendTransaction","action":"DENY","conditions":[
			{"field_source":"reference","field":"aggregation.agg_eth","operator":"gt","value":"1000000000000000000"}]},
			{"name":"all","method":"eth_sendTransaction","action":"ALLOW","conditions":[]}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustCompile(t, policyJSON(tc.rules), testRefs2("agg_eth"))
			env := testEnv()
			env.Aggregates = &fakeAggs{aggs: map[string]*CompiledAggregation{"agg_eth": eth}, sums: map[string]*big.Int{}}
			d := c.Evaluate(mustParseRPC(t, send), env)
			if d.Allowed {
				t.Fatalf("a 100 ETH send allowed by %q under a 1 ETH signing limit\n%s", d.RuleName, d.Trace)
			}
			if got := trace(t, d).Rules[0].Conditions[0].Result; got != ResultError {
				t.Fatalf("reference result %q, want %q\n%s", got, ResultError, d.Trace)
			}
		})
	}
}
