package custody_test

import (
	"context"
	"testing"
	"time"

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

// Whatever commits between the check of a release's signatures and its
// commit is seen at the commit: the versions compared there are the ones
// the check read, and the user keys that approved must still be live. Each
// change runs right after the check (SetAfterAuthorize), for a signature
// and for an export.
func TestChangeBetweenCheckAndRelease(t *testing.T) {
	e, idp := newUserEnv(t, custody.Options{MaxUserKeys: 1, UserKeyLifetime: time.Hour})
	owner1, owner2, newcomer := newAuthKey(t), newAuthKey(t), newAuthKey(t)
	alice := e.createUser("alice")

	type setup struct {
		w      custody.Wallet
		signBy []authKey
		change func()
	}
	cases := []struct {
		name string
		make func(t *testing.T) setup
	}{
		{"owner replaced", func(t *testing.T) setup {
			q := e.quorumOf(appA, 1, keysOf(owner1, owner2))
			w := e.ownedWallet(q.ID)
			return setup{w, keysOf(owner1), func() {
				if _, err := e.updateWallet(request{body: []byte(`{"owner":{"public_key":"` + newcomer.pub + `"}}`), signers: keysOf(owner2)}, w.ID); err != nil {
					t.Fatal(err)
				}
			}}
		}},
		{"approving key removed from the owner quorum", func(t *testing.T) setup {
			q := e.quorumOf(appA, 1, keysOf(owner1, owner2))
			w := e.ownedWallet(q.ID)
			return setup{w, keysOf(owner1), func() {
				if _, err := e.updateQuorum(request{body: []byte(`{"public_keys":["` + owner2.pub + `"]}`), signers: keysOf(owner2)}, q.ID); err != nil {
					t.Fatal(err)
				}
			}}
		}},
		{"approving key removed from a nested quorum", func(t *testing.T) setup {
			child := e.quorumOf(appA, 1, keysOf(owner1, owner2))
			q := e.quorumOf(appA, 1, keysOf(newcomer), child.ID)
			w := e.ownedWallet(q.ID)
			return setup{w, keysOf(owner1), func() {
				if _, err := e.updateQuorum(request{body: []byte(`{"public_keys":["` + owner2.pub + `"]}`), signers: keysOf(owner2)}, child.ID); err != nil {
					t.Fatal(err)
				}
			}}
		}},
		{"approving user key revoked", func(t *testing.T) setup {
			q := e.createQuorum(appA, `{"user_ids":["`+alice.ID+`"],"authorization_threshold":1}`)
			w := e.ownedWallet(q.ID)
			uk, _ := e.authenticate(idp.token("alice", time.Hour, nil))
			return setup{w, keysOf(uk), func() {
				// MaxUserKeys is 1: a new key for alice revokes the one
				// that approved.
				e.authenticate(idp.token("alice", time.Hour, nil))
			}}
		}},
		{"approving user key expired", func(t *testing.T) setup {
			q := e.createQuorum(appA, `{"user_ids":["`+alice.ID+`"],"authorization_threshold":1}`)
			w := e.ownedWallet(q.ID)
			uk, _ := e.authenticate(idp.token("alice", 3*time.Hour, nil))
			return setup{w, keysOf(uk), func() { e.clock.Advance(time.Hour) }}
		}},
	}
	for _, op := range []string{"rpc", "export"} {
		for _, tc := range cases {
			t.Run(op+"/"+tc.name, func(t *testing.T) {
				su := tc.make(t)
				before := e.audits("wallet."+op, "allow")
				ran := false
				custody.SetAfterAuthorize(e.svc, func() {
					custody.SetAfterAuthorize(e.svc, nil)
					ran = true
					su.change()
				})
				defer custody.SetAfterAuthorize(e.svc, nil)
				var err error
				if op == "rpc" {
					_, err = e.rpc(request{body: signTxBody(), signers: su.signBy}, su.w.ID)
				} else {
					_, err = e.export(su.w.ID, false, su.signBy...)
				}
				if !ran {
					t.Fatalf("the change did not run (err %v)", err)
				}
				wantKind(t, err, custody.Conflict)
				if n := e.audits("wallet."+op, "allow"); n != before {
					t.Fatalf("%d releases after the authorization changed", n-before)
				}
			})
		}
	}
}

// A change of a resource's owner (or of the owner quorum) that commits
// between the check of the owner's signatures, made outside the writer, and
// the write itself refuses the write: the writer checks the approval it was
// given still holds, without verifying anything.
func TestOwnerChangeBetweenCheckAndWrite(t *testing.T) {
	e := newEnv(t, envConfig{})
	owner1, owner2, newcomer := newAuthKey(t), newAuthKey(t), newAuthKey(t)
	for _, tc := range []struct {
		name  string
		write func(q custody.KeyQuorum, w custody.Wallet) error
	}{
		{"wallet update", func(_ custody.KeyQuorum, w custody.Wallet) error {
			_, err := e.updateWallet(request{body: []byte(`{"policy_ids":[]}`), signers: keysOf(owner1)}, w.ID)
			return err
		}},
		{"wallet archive", func(_ custody.KeyQuorum, w custody.Wallet) error {
			_, err := e.archiveWallet(request{signers: keysOf(owner1)}, w.ID)
			return err
		}},
		{"quorum update", func(q custody.KeyQuorum, _ custody.Wallet) error {
			_, err := e.updateQuorum(request{body: []byte(`{"authorization_threshold":1}`), signers: keysOf(owner1)}, q.ID)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := e.quorumOf(appA, 1, keysOf(owner1, owner2))
			w := e.ownedWallet(q.ID)
			custody.SetAfterAuthorize(e.svc, func() {
				custody.SetAfterAuthorize(e.svc, nil)
				// owner2 takes owner1 out of the quorum.
				if _, err := e.updateQuorum(request{body: []byte(`{"public_keys":["` + owner2.pub + `","` + newcomer.pub + `"]}`), signers: keysOf(owner2)}, q.ID); err != nil {
					t.Fatal(err)
				}
			})
			defer custody.SetAfterAuthorize(e.svc, nil)
			wantKind(t, tc.write(q, w), custody.Conflict)
		})
	}
}
