package custody_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/policy"
	"github.com/cachet-custody/cachet/store"
)

// fakeEngine is a policy engine above the boundary: policies named "pol_*"
// exist for appA; "pol_deny" denies by rule, "pol_broken" cannot decide,
// any other allows. It records what it was asked.
type fakeEngine struct {
	mu     sync.Mutex
	inputs []policy.Input
}

var errEngine = errors.New("policy engine: rule store unreadable")

func (f *fakeEngine) Exist(_ context.Context, app string, ids []string) error {
	for _, id := range ids {
		if app != appA || !strings.HasPrefix(id, "pol_") {
			return fmt.Errorf("%w: %q", policy.ErrNotFound, id)
		}
	}
	return nil
}

func (f *fakeEngine) Evaluate(_ context.Context, in policy.Input) (policy.Decision, error) {
	f.mu.Lock()
	f.inputs = append(f.inputs, in)
	f.mu.Unlock()
	return f.decide(in)
}

func (f *fakeEngine) decide(in policy.Input) (policy.Decision, error) {
	switch {
	case slices.Contains(in.PolicyIDs, "pol_deny"):
		return policy.Decision{Allowed: false, RuleID: "rule_7", RuleName: "no transfers to dead addresses", Reason: "to is 0x…dEaD"}, nil
	case slices.Contains(in.PolicyIDs, "pol_broken"):
		return policy.Decision{}, errEngine
	}
	return policy.Decision{Allowed: true, Reason: "allowed by rule_1"}, nil
}

// Commit decides as Evaluate does; the fake keeps no aggregations.
func (f *fakeEngine) Commit(ctx context.Context, _ *store.Tx, in policy.Input) (policy.Decision, error) {
	return f.decide(in)
}

func (f *fakeEngine) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.inputs)
}

func (f *fakeEngine) last() policy.Input {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inputs[len(f.inputs)-1]
}

func TestPolicyGate(t *testing.T) {
	eng := &fakeEngine{}
	e := newEnv(t, envConfig{policy: eng})
	ko, k1, k2 := newAuthKey(t), newAuthKey(t), newAuthKey(t)
	s1 := e.quorumOf(appA, 1, keysOf(k1))
	s2 := e.quorumOf(appA, 1, keysOf(k2))
	w := e.createWallet(appA, string(mustJSON(t, map[string]any{
		"chain_type": "ethereum", "owner": map[string]string{"public_key": ko.pub}, "policy_ids": []string{"pol_wallet"},
		"additional_signers": []map[string]any{
			{"signer_id": s1.ID, "override_policy_ids": []string{"pol_signer"}},
			{"signer_id": s2.ID},
		},
	})))
	if len(w.PolicyIDs) != 1 || w.PolicyIDs[0] != "pol_wallet" || w.AdditionalSigners[0].OverridePolicyIDs[0] != "pol_signer" {
		t.Fatalf("wallet = %+v", w)
	}
	setPolicy := func(t *testing.T, id string) {
		t.Helper()
		if _, err := e.updateWallet(request{body: []byte(`{"policy_ids":["` + id + `"]}`), signers: keysOf(ko)}, w.ID); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("the engine gets the principal's policies", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			signer authKey
			want   []string
		}{
			{"owner: the wallet's", ko, []string{"pol_wallet"}},
			{"signer with an override: its own alone", k1, []string{"pol_signer"}},
			{"signer without override: the wallet's", k2, []string{"pol_wallet"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e.check(t, opRPC, w.ID, "", keysOf(tc.signer), 0)
				in := eng.last()
				if in.AppID != appA || !slices.Equal(in.PolicyIDs, tc.want) || in.Request == nil || in.Request.Method != "eth_signTransaction" {
					t.Errorf("engine input = {%s %v %+v}, want {%s %v eth_signTransaction}", in.AppID, in.PolicyIDs, in.Request, appA, tc.want)
				}
				if d, ok := e.lastDetail("wallet.rpc")["policy"].(map[string]any); !ok || d["allowed"] != true {
					t.Errorf("audit detail policy = %v, want the allowing decision", e.lastDetail("wallet.rpc")["policy"])
				}
			})
		}
	})
	t.Run("an unauthorized request never reaches the engine", func(t *testing.T) {
		n := eng.calls()
		e.check(t, opRPC, w.ID, "", keysOf(newAuthKey(t)), custody.Unauthorized)
		if eng.calls() != n {
			t.Errorf("the engine was asked about an unauthorized request")
		}
	})
	t.Run("a deny is a policy violation naming the rule", func(t *testing.T) {
		setPolicy(t, "pol_deny")
		for _, signer := range []authKey{ko, k2} {
			// A denial is recorded, with its decision, and nothing else
			// changes: no signature, no replay digest, no idempotency key.
			before := e.snapshot()
			denials := e.audits("wallet.rpc", "deny")
			_, err := e.rpc(request{body: signTxBody(), signers: keysOf(signer)}, w.ID)
			ce := wantKind(t, err, custody.PolicyViolation)
			if ce.RuleID != "rule_7" || ce.RuleName != "no transfers to dead addresses" || !ce.Audited {
				t.Errorf("violation = %+v, want rule_7, its name, and already audited", ce)
			}
			if e.audits("wallet.rpc", "deny") != denials+1 {
				t.Errorf("the denial was not recorded")
			}
			if d, ok := e.lastDetail("wallet.rpc")["policy"].(map[string]any); !ok || d["rule_id"] != "rule_7" {
				t.Errorf("denial record's policy = %v", e.lastDetail("wallet.rpc")["policy"])
			}
			after := e.snapshot()
			for tbl := range after {
				if tbl != "audit_records" && before[tbl] != after[tbl] {
					t.Errorf("a denied request changed table %s", tbl)
				}
			}
		}
		// The signer with an override is governed by its own policy alone.
		e.check(t, opRPC, w.ID, "", keysOf(k1), 0)
	})
	t.Run("an engine error refuses: fail closed", func(t *testing.T) {
		setPolicy(t, "pol_broken")
		before := e.snapshot()
		out, err := e.rpc(request{body: signTxBody(), signers: keysOf(ko)}, w.ID)
		if err == nil {
			t.Fatalf("RPC signed (%s) although the engine could not decide", out)
		}
		var ce *custody.Error
		if errors.As(err, &ce) {
			t.Errorf("engine failure surfaced as a client error %s %q; want a server error", kindName(ce.Kind), ce.Message)
		}
		if !errors.Is(err, errEngine) {
			t.Errorf("error %v does not wrap the engine's", err)
		}
		e.unchanged(t, before)
	})
	t.Run("null clears the wallet's policy", func(t *testing.T) {
		got, err := e.updateWallet(request{body: []byte(`{"policy_ids":null}`), signers: keysOf(ko)}, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.PolicyIDs == nil || len(got.PolicyIDs) != 0 {
			t.Fatalf("policy_ids = %#v, want []", got.PolicyIDs)
		}
		e.check(t, opRPC, w.ID, "", keysOf(ko), 0)
		if in := eng.last(); len(in.PolicyIDs) != 0 {
			t.Errorf("engine got policies %v, want none", in.PolicyIDs)
		}
	})
	t.Run("a policy the engine does not know", func(t *testing.T) {
		e.refused(t, custody.Invalid, func() error {
			_, err := e.updateWallet(request{body: []byte(`{"policy_ids":["nope"]}`), signers: keysOf(ko)}, w.ID)
			return err
		})
		e.refused(t, custody.Invalid, func() error {
			_, err := e.createWalletReq(request{app: appB, body: []byte(`{"chain_type":"ethereum","policy_ids":["pol_wallet"]}`)})
			return err
		})
	})
}
