package custody_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/custody"
)

type op int

const (
	opRPC op = iota
	opUpdate
	opArchive
)

func (o op) String() string { return [...]string{"rpc", "update", "archive"}[o] }

// do runs one operation on a wallet; each call is a request of its own
// (an update names the row, an RPC signs a fresh nonce), so no accepted
// request is a replay of another.
func (e *env) do(t *testing.T, o op, walletID, name string, signers []authKey) error {
	t.Helper()
	var err error
	switch o {
	case opRPC:
		var out json.RawMessage
		out, err = e.rpc(request{body: signTxBody(), signers: signers}, walletID)
		if err == nil {
			signedTx(t, out)
		}
	case opUpdate:
		var w custody.Wallet
		w, err = e.updateWallet(request{body: mustJSON(t, map[string]string{"display_name": name}), signers: signers}, walletID)
		if err == nil && (w.DisplayName == nil || *w.DisplayName != name) {
			t.Fatalf("UpdateWallet returned display_name %v, want %q", w.DisplayName, name)
		}
	case opArchive:
		var w custody.Wallet
		w, err = e.archiveWallet(request{signers: signers}, walletID)
		if err == nil && w.ArchivedAt == nil {
			t.Fatalf("ArchiveWallet returned archived_at null")
		}
	}
	return err
}

// check runs one row: a refusal must leave the store as it was; an accepted
// request must be recorded once in the audit log.
func (e *env) check(t *testing.T, o op, walletID, name string, signers []authKey, want custody.Kind) {
	t.Helper()
	if want != 0 {
		e.refused(t, want, func() error { return e.do(t, o, walletID, name, signers) })
		return
	}
	action := map[op]string{opRPC: "wallet.rpc", opUpdate: "wallet.update", opArchive: "wallet.archive"}[o]
	before := e.audits(action, "allow")
	if err := e.do(t, o, walletID, name, signers); err != nil {
		t.Fatalf("%s: %v", o, err)
	}
	if got := e.audits(action, "allow"); got != before+1 {
		t.Errorf("%s audit records = %d, want %d", action, got, before+1)
	}
}

// lastDetail is the detail of the newest audit record of an action.
func (e *env) lastDetail(action string) map[string]any {
	e.t.Helper()
	var d string
	if err := e.st.DB().QueryRowContext(e.ctx, `SELECT detail FROM audit_records WHERE action = ? ORDER BY seq DESC LIMIT 1`, action).Scan(&d); err != nil {
		e.t.Fatalf("read %s record: %v", action, err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(d), &m); err != nil {
		e.t.Fatalf("%s detail %q: %v", action, d, err)
	}
	return m
}

// TestAuthorizationMatrix: a wallet owned by a 2-of-3 key quorum with an
// additional signer (a 1-of-1 quorum of key S). The owner's threshold may
// sign and manage; fewer keys, or any foreign signature, are refused; the
// signer may only sign.
func TestAuthorizationMatrix(t *testing.T) {
	e := newEnv(t, envConfig{})
	k1, k2, k3, s, x := newAuthKey(t), newAuthKey(t), newAuthKey(t), newAuthKey(t), newAuthKey(t)
	owner := e.quorumOf(appA, 2, keysOf(k1, k2, k3))
	signer := e.quorumOf(appA, 1, keysOf(s))
	w1 := e.ownedWallet(owner.ID, signer.ID)
	w2 := e.ownedWallet(owner.ID, signer.ID)
	if w1.OwnerID == nil || *w1.OwnerID != owner.ID || len(w1.AdditionalSigners) != 1 || w1.AdditionalSigners[0].SignerID != signer.ID {
		t.Fatalf("wallet = %+v, want owner %s and signer %s", w1, owner.ID, signer.ID)
	}

	for i, tc := range []struct {
		name    string
		op      op
		wallet  string
		signers []authKey
		want    custody.Kind
	}{
		{"owner 2 of 3 signs", opRPC, w1.ID, keysOf(k1, k2), 0},
		{"owner 3 of 3 signs", opRPC, w1.ID, keysOf(k1, k2, k3), 0},
		{"owner 2 of 3 in another order signs", opRPC, w1.ID, keysOf(k3, k1), 0},
		{"one owner key cannot sign", opRPC, w1.ID, keysOf(k2), custody.Unauthorized},
		{"the same owner key twice is one approval", opRPC, w1.ID, keysOf(k1, k1), custody.Unauthorized},
		{"a foreign key beside two owner keys refuses the request", opRPC, w1.ID, keysOf(k1, k2, x), custody.Unauthorized},
		{"the signer's key beside two owner keys refuses the request", opRPC, w1.ID, keysOf(k1, k2, s), custody.Unauthorized},
		{"a foreign key alone", opRPC, w1.ID, keysOf(x), custody.Unauthorized},
		{"no signature on an owned wallet", opRPC, w1.ID, nil, custody.Unauthorized},
		{"additional signer signs", opRPC, w1.ID, keysOf(s), 0},
		{"owner updates", opUpdate, w1.ID, keysOf(k1, k3), 0},
		{"one owner key cannot update", opUpdate, w1.ID, keysOf(k3), custody.Unauthorized},
		{"a foreign key beside two owner keys cannot update", opUpdate, w1.ID, keysOf(k1, k2, x), custody.Unauthorized},
		{"unsigned update of an owned wallet", opUpdate, w1.ID, nil, custody.Unauthorized},
		{"additional signer cannot update", opUpdate, w1.ID, keysOf(s), custody.Forbidden},
		{"additional signer cannot archive", opArchive, w2.ID, keysOf(s), custody.Forbidden},
		{"one owner key cannot archive", opArchive, w2.ID, keysOf(k1), custody.Unauthorized},
		{"unsigned archive of an owned wallet", opArchive, w2.ID, nil, custody.Unauthorized},
		{"owner archives", opArchive, w2.ID, keysOf(k2, k3), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.check(t, tc.op, tc.wallet, fmt.Sprintf("row-%d", i), tc.signers, tc.want)
			if tc.op == opRPC && tc.want == 0 {
				want := "owner"
				if len(tc.signers) == 1 && tc.signers[0] == s {
					want = "additional signer " + signer.ID
				}
				if got := e.lastDetail("wallet.rpc")["principal"]; got != want {
					t.Errorf("audit principal = %v, want %q", got, want)
				}
			}
		})
	}

	got, err := e.svc.GetWallet(e.ctx, appA, w2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ArchivedAt == nil {
		t.Errorf("wallet %s is not archived after the owner archived it", w2.ID)
	}
}

// TestWalletWithoutOwner: the app alone signs and manages a wallet without
// owner.
func TestWalletWithoutOwner(t *testing.T) {
	e := newEnv(t, envConfig{})
	w := e.ownedWallet("")
	if w.OwnerID != nil {
		t.Fatalf("owner_id = %q, want null", *w.OwnerID)
	}
	for _, tc := range []struct {
		name string
		op   op
	}{
		{"rpc", opRPC},
		{"update", opUpdate},
		{"archive", opArchive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.check(t, tc.op, w.ID, "app-"+tc.name, nil, 0)
			if tc.op == opRPC {
				if got := e.lastDetail("wallet.rpc")["principal"]; !strings.HasPrefix(fmt.Sprint(got), "app") {
					t.Errorf("audit principal = %v, want the app", got)
				}
			}
		})
	}
}

// TestNestedOwner: parent 2-of-2 {key A, child 2-of-2 {B, C}}. The child
// approves as one member once both its keys sign.
func TestNestedOwner(t *testing.T) {
	e := newEnv(t, envConfig{})
	a, b, c, x := newAuthKey(t), newAuthKey(t), newAuthKey(t), newAuthKey(t)
	child := e.quorumOf(appA, 2, keysOf(b, c))
	parent := e.quorumOf(appA, 2, keysOf(a), child.ID)
	if len(parent.KeyQuorumIDs) != 1 || parent.KeyQuorumIDs[0] != child.ID || parent.AuthorizationThreshold != 2 {
		t.Fatalf("parent = %+v", parent)
	}
	w := e.ownedWallet(parent.ID)
	for i, tc := range []struct {
		name    string
		op      op
		signers []authKey
		want    custody.Kind
	}{
		{"A and the whole child", opRPC, keysOf(a, b, c), 0},
		{"A and half the child", opRPC, keysOf(a, b), custody.Unauthorized},
		{"the child without A", opRPC, keysOf(b, c), custody.Unauthorized},
		{"A alone", opRPC, keysOf(a), custody.Unauthorized},
		{"everyone and a foreign key", opRPC, keysOf(a, b, c, x), custody.Unauthorized},
		{"update by A and the whole child", opUpdate, keysOf(c, a, b), 0},
		{"update by A and half the child", opUpdate, keysOf(a, c), custody.Unauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.check(t, tc.op, w.ID, fmt.Sprintf("nested-%d", i), tc.signers, tc.want)
		})
	}
}

// TestOwnerChange: the current owner hands the wallet to a new key; the old
// keys lose every right at once; a null owner leaves it to the app.
func TestOwnerChange(t *testing.T) {
	e := newEnv(t, envConfig{})
	old, next, other := newAuthKey(t), newAuthKey(t), newAuthKey(t)
	w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"public_key":"`+old.pub+`"}}`)
	if w.OwnerID == nil {
		t.Fatal("a wallet created with owner.public_key has no owner_id")
	}
	implicit, err := e.svc.GetQuorum(e.ctx, appA, *w.OwnerID)
	if err != nil {
		t.Fatalf("GetQuorum(owner of the wallet): %v", err)
	}
	if implicit.AuthorizationThreshold != 1 || len(implicit.AuthorizationKeys) != 1 || implicit.AuthorizationKeys[0].PublicKey != old.pub {
		t.Fatalf("implicit owner quorum = %+v, want 1 of {old key}", implicit)
	}

	toNext := mustJSON(t, map[string]any{"owner": map[string]string{"public_key": next.pub}})
	t.Run("the new owner cannot take the wallet", func(t *testing.T) {
		e.refused(t, custody.Unauthorized, func() error {
			_, err := e.updateWallet(request{body: toNext, signers: keysOf(next)}, w.ID)
			return err
		})
	})
	t.Run("the old owner hands over", func(t *testing.T) {
		got, err := e.updateWallet(request{body: toNext, signers: keysOf(old)}, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.OwnerID == nil || *got.OwnerID == *w.OwnerID {
			t.Fatalf("owner_id after the change = %v, want a new quorum", got.OwnerID)
		}
		q, err := e.svc.GetQuorum(e.ctx, appA, *got.OwnerID)
		if err != nil || len(q.AuthorizationKeys) != 1 || q.AuthorizationKeys[0].PublicKey != next.pub {
			t.Fatalf("new owner quorum = %+v, %v; want 1 of {new key}", q, err)
		}
	})
	for i, tc := range []struct {
		name    string
		op      op
		signers []authKey
		want    custody.Kind
	}{
		{"old key cannot sign", opRPC, keysOf(old), custody.Unauthorized},
		{"old key cannot update", opUpdate, keysOf(old), custody.Unauthorized},
		{"a stranger cannot sign", opRPC, keysOf(other), custody.Unauthorized},
		{"new key signs", opRPC, keysOf(next), 0},
		{"new key updates", opUpdate, keysOf(next), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.check(t, tc.op, w.ID, fmt.Sprintf("change-%d", i), tc.signers, tc.want)
		})
	}
	t.Run("the new owner removes the owner", func(t *testing.T) {
		got, err := e.updateWallet(request{body: []byte(`{"owner":null}`), signers: keysOf(next)}, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.OwnerID != nil {
			t.Fatalf("owner_id = %q after owner: null", *got.OwnerID)
		}
	})
	for _, tc := range []struct {
		name string
		op   op
	}{
		{"app alone signs", opRPC},
		{"app alone updates", opUpdate},
		{"app alone archives", opArchive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.check(t, tc.op, w.ID, "after-"+tc.op.String(), nil, 0)
		})
	}
}
