package policy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"testing"

	"github.com/cachet-custody/cachet/wallet"
	"github.com/ethereum/go-ethereum/common"
)

// nestedABI has the shapes whose ABI encoding lets offsets alias.
const nestedABI = `[{"type":"function","name":"nested","inputs":[{"name":"a","type":"uint256[][][]"},{"name":"b","type":"bytes[2][]"},
 {"name":"c","type":"tuple[]","components":[{"name":"x","type":"uint256"},{"name":"s","type":"string"},{"name":"t","type":"tuple","components":[{"name":"y","type":"int8"},{"name":"z","type":"bytes"}]}]}]}]`

// fuzzMisc covers what bench20Rules does not: aliasing-prone calldata,
// typed data arrays, "*" rules reading fields the method lacks.
func fuzzMisc() string {
	n := func(field, op, value string) string { return cd(nestedABI, field, op, value) }
	return policyJSON(`[
	 {"name":"nested numbers","method":"eth_signTransaction","action":"ALLOW","conditions":[` + n("nested.a.0.1.2", "lte", `"1000"`) + `,` + n("nested.c.3.t.y", "eq", `"1"`) + `]},
	 {"name":"nested bytes","method":"eth_signTransaction","action":"DENY","conditions":[` + n("nested.b.0.1", "starts_with", `"0xa9059cbb"`) + `,` + n("nested.c.0.s", "contains", `"x"`) + `]},
	 {"name":"nested fn","method":"eth_signTransaction","action":"ALLOW","conditions":[` + n("nested", "eq", `"nested"`) + `,` + n("nested.c.1.t.z", "ends_with", `"0x00"`) + `]},
	 {"name":"anything but garbage","method":"*","action":"DENY","conditions":[` + cd(erc20ABI, "transfer._value", "gt", `"0"`) + `]},
	 {"name":"permit","method":"eth_signTypedData_v4","action":"ALLOW","conditions":[
	   {"field_source":"ethereum_typed_data_message","field":"tags.0","operator":"eq","value":"0xdeadbeef","typed_data":{"types":` + permitTypes + `,"primary_type":"Permit"}},
	   {"field_source":"ethereum_typed_data_message","field":"value","operator":"lte","value":"1000000","typed_data":{"types":` + permitTypes + `,"primary_type":"Permit"}},
	   {"field_source":"ethereum_typed_data_domain","field":"verifyingContract","operator":"in_condition_set","value":"set_allow"}]},
	 {"name":"mail","method":"*","action":"DENY","conditions":[
	   {"field_source":"ethereum_typed_data_message","field":"from.wallet","operator":"eq","value":"` + bob + `","typed_data":{"types":` + mailTypesNoDomain + `,"primary_type":"Mail"}}]},
	 {"name":"messages","method":"*","action":"ALLOW","conditions":[
	   {"field_source":"message","field":"byte_length","operator":"lt","value":"64"},{"field_source":"message","field":"content","operator":"ends_with","value":"!"}]},
	 {"name":"delegations","method":"*","action":"ALLOW","conditions":[{"field_source":"ethereum_7702_authorization","field":"contract","operator":"in_condition_set","value":"set_allow"}]},
	 {"name":"limits","method":"*","action":"DENY","conditions":[{"field_source":"reference","field":"aggregation.agg_usdc","operator":"gt","value":"1000000000"}]},
	 {"name":"hashes","method":"*","action":"ALLOW","conditions":[{"field_source":"system","field":"current_unix_timestamp","operator":"gte","value":"0"}]}]`)
}

func fuzzPolicies(t testing.TB) []*Compiled {
	return []*Compiled{
		mustCompile(t, bench20Rules(), nil),
		mustCompile(t, string(loadExample(t).Policy), nil),
		mustCompile(t, fuzzMisc(), nil),
	}
}

// checkEvaluation evaluates req under each policy twice and checks that
// the outcomes agree, that the trace encoder agrees with encoding/json, and
// that a decision always says why.
func checkEvaluation(t *testing.T, pols []*Compiled, aggs []*CompiledAggregation, req *wallet.Request, env Env) {
	t.Helper()
	for _, c := range pols {
		d1, tr := c.evaluate(req, env)
		d1.Trace = tr.appendJSON(nil)
		std, err := json.Marshal(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d1.Trace, std) {
			t.Fatalf("trace encoders differ:\n%s\n%s", d1.Trace, std)
		}
		d2 := c.Evaluate(req, env)
		if d1.Allowed != d2.Allowed || d1.RuleID != d2.RuleID || d1.RuleName != d2.RuleName || d1.Reason != d2.Reason || !bytes.Equal(d1.Trace, d2.Trace) {
			t.Fatalf("two evaluations differ:\n%s\n%s", d1.Trace, d2.Trace)
		}
		// Rule names are never empty; ids may be (the API assigns them).
		if d1.Reason == "" || (d1.Allowed && d1.RuleName == "") || (!d1.Allowed && d1.RuleName == "" && d1.Reason != DefaultDenyReason) {
			t.Fatalf("decision allowed=%v rule=%q reason=%q", d1.Allowed, d1.RuleName, d1.Reason)
		}
	}
	for _, a := range aggs {
		amt1, key1, counts1, err1 := a.Contribution(req, env)
		amt2, key2, counts2, err2 := a.Contribution(req, env)
		if counts1 != counts2 || key1 != key2 || (err1 == nil) != (err2 == nil) || (counts1 && amt1.Cmp(amt2) != 0) {
			t.Fatalf("contributions differ")
		}
		if counts1 && (amt1 == nil || amt1.Sign() < 0 || err1 != nil) {
			t.Fatalf("contribution %v %v", amt1, err1)
		}
	}
}

// FuzzParsePolicy: arbitrary bodies never panic the parser, the validator
// or the compiler; every error is a *ValidationError; a policy that
// validates compiles, survives storage (encoding/json) and evaluates.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(loadExample(f).Policy))
	reqs := []*wallet.Request{
		mustParseRPC(f, txBody(usdc, "", calldata(f)["transfer"])),
		mustParseRPC(f, txBody(router, "0x1", calldata(f)["batch"])),
		mustParseRPC(f, mailBody(mailTypes, alice)),
		mustParseRPC(f, permitBody("1")),
		mustParseRPC(f, personalSign("hello world", "utf-8")),
		mustParseRPC(f, authBody(delegate)),
		{Method: MethodExportPrivateKey},
	}
	env := benchEnv(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		var ve *ValidationError
		p, err := ParsePolicy(body)
		if err != nil {
			if !errors.As(err, &ve) {
				t.Fatalf("ParsePolicy error %T %v", err, err)
			}
			return
		}
		if err := Validate(p, testRefs); err != nil {
			if !errors.As(err, &ve) {
				t.Fatalf("Validate error %T %v", err, err)
			}
			return
		}
		c, err := Compile(p)
		if err != nil {
			t.Fatalf("validates but does not compile: %v", err)
		}
		stored, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var back Policy
		if err := json.Unmarshal(stored, &back); err != nil {
			t.Fatalf("stored form does not decode: %v", err)
		}
		if err := Validate(&back, testRefs); err != nil {
			t.Fatalf("stored form does not validate: %v", err)
		}
		for _, req := range reqs {
			checkEvaluation(t, []*Compiled{c}, nil, req, env)
		}
	})
}

// FuzzEvaluate: arbitrary RPC bodies that wallet.ParseRPC accepts never
// panic the evaluation, which is deterministic.
func FuzzEvaluate(f *testing.F) {
	pols := fuzzPolicies(f)
	aggs := []*CompiledAggregation{mustAggregation(f, "agg_eth", ethPerDay), mustAggregation(f, "agg_usdc", usdcPerRecipient)}
	env := benchEnv(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := wallet.ParseRPC(body)
		if err != nil {
			return
		}
		checkEvaluation(t, pols, aggs, req, env)
	})
}

// FuzzCalldata: arbitrary calldata in a transaction never panics the
// evaluation, and the pre-decoding scan refuses nothing that go-ethereum
// decodes, except for its size limit.
func FuzzCalldata(f *testing.F) {
	pols := fuzzPolicies(f)
	aggs := []*CompiledAggregation{mustAggregation(f, "agg_usdc", usdcPerRecipient)}
	env := benchEnv(f)
	var fns []*fnInfo
	for _, s := range []string{erc20ABI, routerABI, nestedABI} {
		info, err := parseABI(json.RawMessage(s))
		if err != nil {
			f.Fatal(err)
		}
		for _, fn := range info.bySelector {
			fns = append(fns, fn)
		}
	}
	to := common.HexToAddress(usdc)
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &wallet.Request{Method: wallet.MethodSignTransaction, Tx: &wallet.TxRequest{
			To: &to, Value: new(big.Int), ChainID: big.NewInt(1), Data: data}}
		checkEvaluation(t, pols, aggs, req, env)
		if len(data) < 4 || len(data) > 2048 {
			return // go-ethereum alone, below, must not meet a decoding bomb
		}
		for _, fn := range fns {
			if !bytes.Equal(fn.method.ID, data[:4]) {
				continue
			}
			_, err := decodeArgs(fn, data[4:])
			_, rawErr := rawUnpack(fn, data[4:])
			if rawErr == nil && err != nil && !errors.Is(err, errTooComplex) {
				t.Fatalf("%s: the scan refuses calldata go-ethereum decodes: %v", fn.sig, err)
			}
			if rawErr != nil && err == nil {
				t.Fatalf("%s: decoded what go-ethereum refuses: %v", fn.sig, rawErr)
			}
		}
	})
}

func rawUnpack(fn *fnInfo, args []byte) (v []any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errDecodePanics
		}
	}()
	return fn.method.Inputs.Unpack(args)
}

// aliasingBomb is calldata for nested(uint256[][][],…) in which every
// element of a and of each a[i] points at the same array: about 10 KB that
// describe n³ values.
func aliasingBomb(t testing.TB, n int) []byte {
	info, err := parseABI(json.RawMessage(nestedABI))
	if err != nil {
		t.Fatal(err)
	}
	var sel []byte
	for _, fn := range info.bySelector {
		sel = fn.method.ID
	}
	word := func(x int) []byte {
		var w [32]byte
		binary.BigEndian.PutUint64(w[24:], uint64(x))
		return w[:]
	}
	out := append([]byte(nil), sel...)
	// Head: offsets of a, b and c; b and c are empty arrays after a.
	aAt := 3 * 32
	// a: length n, n offsets (relative to the element area) to one middle
	// array right after them.
	a := word(n)
	for range n {
		a = append(a, word(32*n)...)
	}
	// middle: length n, n offsets to one inner array right after them.
	a = append(a, word(n)...)
	for range n {
		a = append(a, word(32*n)...)
	}
	// inner: length n, n words.
	a = append(a, word(n)...)
	for i := range n {
		a = append(a, word(i)...)
	}
	empty := aAt + len(a)
	out = append(out, word(aAt)...)
	out = append(out, word(empty)...)
	out = append(out, word(empty)...)
	out = append(out, a...)
	out = append(out, word(0)...)
	return out
}

func TestCalldataAliasingBomb(t *testing.T) {
	c := mustCompile(t, fuzzMisc(), nil)
	for _, tc := range []struct {
		n    int
		want Result
	}{{3, ResultTrue}, {30, ResultError}, {100, ResultError}} {
		data := aliasingBomb(t, tc.n)
		req := &wallet.Request{Method: wallet.MethodSignTransaction, Tx: &wallet.TxRequest{
			To: new(common.Address), Value: new(big.Int), ChainID: big.NewInt(1), Data: data}}
		d := c.Evaluate(req, benchEnv(t))
		got := trace(t, d).Rules[2].Conditions[0]
		if got.Result != tc.want {
			t.Fatalf("n=%d (%d bytes): %+v", tc.n, len(data), got)
		}
		if tc.want == ResultError && !bytes.Contains([]byte(got.Error), []byte("alias")) {
			t.Fatalf("error %q", got.Error)
		}
	}
}

// TestFuzzCorpusPresent keeps the committed seed corpora from going
// missing: `go test` runs them as tests only if they are there.
func TestFuzzCorpusPresent(t *testing.T) {
	for _, name := range []string{"FuzzParsePolicy", "FuzzEvaluate", "FuzzCalldata"} {
		entries, err := os.ReadDir("testdata/fuzz/" + name)
		if err != nil || len(entries) < 5 {
			t.Errorf("%s: %d seed files (%v)", name, len(entries), err)
		}
	}
}
