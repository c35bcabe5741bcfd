package policy

import (
	"encoding/json"
	"os"
	"testing"
)

// exampleFixture is testdata/privy-example.json.
type exampleFixture struct {
	Source   string          `json:"source"`
	Policy   json.RawMessage `json:"policy"`
	Requests []struct {
		Name    string          `json:"name"`
		Body    json.RawMessage `json:"body"`
		Allowed bool            `json:"allowed"`
		Rule    string          `json:"rule"`
	} `json:"requests"`
}

func loadExample(t testing.TB) exampleFixture {
	t.Helper()
	f, err := os.Open("testdata/privy-example.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var x exampleFixture
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&x); err != nil {
		t.Fatal(err)
	}
	if x.Source == "" || len(x.Requests) == 0 {
		t.Fatal("fixture without source or requests")
	}
	return x
}

func TestPrivyExample(t *testing.T) {
	x := loadExample(t)
	c := mustCompile(t, string(x.Policy), nil)
	for _, r := range x.Requests {
		t.Run(r.Name, func(t *testing.T) {
			d := c.Evaluate(mustParseRPC(t, string(r.Body)), testEnv())
			if d.Allowed != r.Allowed || d.RuleName != r.Rule {
				t.Fatalf("allowed=%v rule=%q, want %v %q\n%s", d.Allowed, d.RuleName, r.Allowed, r.Rule, d.Trace)
			}
		})
	}
}
