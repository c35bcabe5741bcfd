package custody_test

import (
	"context"
	"testing"

	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/policy"
	"github.com/cachet-custody/cachet/store"
)

// midwayEngine allows every request, but first runs a change: it stands for
// another request that commits after the signing request was authorized and
// before its signature is released.
type midwayEngine struct {
	change func()
}

func (m *midwayEngine) Exist(context.Context, string, []string) error { return nil }

func (m *midwayEngine) Commit(context.Context, *store.Tx, policy.Input) (policy.Decision, error) {
	return policy.Decision{Allowed: true, Reason: "test"}, nil
}

func (m *midwayEngine) Evaluate(ctx context.Context, in policy.Input) (policy.Decision, error) {
	if m.change != nil {
		m.change()
		m.change = nil
	}
	return policy.Decision{Allowed: true, Reason: "test"}, nil
}

// A wallet or quorum change that commits between the authorization of a
// signing request and its commit stops the signature: nothing is released
// under an authorization that no longer holds.
func TestChangeWhileSigningRefuses(t *testing.T) {
	eng := &midwayEngine{}
	e := newEnv(t, envConfig{policy: eng})
	owner1, owner2, signer, newMember := newAuthKey(t), newAuthKey(t), newAuthKey(t), newAuthKey(t)
	ownerQ := e.quorumOf(appA, 1, keysOf(owner1, owner2))
	signerQ := e.quorumOf(appA, 1, keysOf(signer))

	for _, tc := range []struct {
		name   string
		signBy authKey
		change func(w custody.Wallet)
	}{
		{"wallet archived", owner1, func(w custody.Wallet) {
			if _, err := e.archiveWallet(request{signers: keysOf(owner2)}, w.ID); err != nil {
				t.Fatal(err)
			}
		}},
		{"owner changed", owner1, func(w custody.Wallet) {
			if _, err := e.updateWallet(request{body: []byte(`{"owner":{"public_key":"` + newMember.pub + `"}}`), signers: keysOf(owner2)}, w.ID); err != nil {
				t.Fatal(err)
			}
		}},
		{"signer removed", signer, func(w custody.Wallet) {
			if _, err := e.updateWallet(request{body: []byte(`{"additional_signers":[]}`), signers: keysOf(owner2)}, w.ID); err != nil {
				t.Fatal(err)
			}
		}},
		{"signer quorum members changed", signer, func(w custody.Wallet) {
			if _, err := e.updateQuorum(request{body: []byte(`{"public_keys":["` + newMember.pub + `"]}`), signers: keysOf(signer)}, signerQ.ID); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := e.createWallet(appA, string(mustJSON(t, map[string]any{
				"chain_type": "ethereum", "owner_id": ownerQ.ID,
				"additional_signers": []map[string]any{{"signer_id": signerQ.ID}},
			})))
			signed := e.audits("wallet.rpc", "allow")
			eng.change = func() { tc.change(w) }
			// The store does change here (the midway change commits), so
			// only the refusal and the absence of a signature are checked.
			_, err := e.rpc(request{body: signTxBody(), signers: keysOf(tc.signBy)}, w.ID)
			wantKind(t, err, custody.Conflict)
			if e.audits("wallet.rpc", "allow") != signed {
				t.Fatal("a signature was released after its authorization changed")
			}
			if eng.change != nil {
				t.Fatal("the change did not run")
			}
		})
	}
}
