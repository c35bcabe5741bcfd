package custody_test

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/custody"
)

func pemOf(t testing.TB, k authKey) string {
	t.Helper()
	der, err := base64.StdEncoding.DecodeString(k.pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// sameJSON reports whether a and b have the same JSON form.
func sameJSON(t testing.TB, a, b any) bool {
	t.Helper()
	return string(mustJSON(t, a)) == string(mustJSON(t, b))
}

func quoted(ss ...string) string {
	b, _ := json.Marshal(ss)
	return string(b)
}

func TestCreateQuorum(t *testing.T) {
	e := newEnv(t, envConfig{})
	k1, k2, k3 := newAuthKey(t), newAuthKey(t), newAuthKey(t)
	leaf := e.quorumOf(appA, 1, keysOf(k1))
	parent := e.quorumOf(appA, 1, keysOf(k2), leaf.ID)
	foreign := e.quorumOf(appB, 1, keysOf(k1))
	var six []string
	for range 6 {
		six = append(six, e.quorumOf(appA, 1, keysOf(newAuthKey(t))).ID)
	}
	var many []string
	for range 51 {
		many = append(many, newAuthKey(t).pub)
	}

	t.Run("valid", func(t *testing.T) {
		for _, tc := range []struct {
			name      string
			body      string
			threshold int
			keys      []string
			children  []string
			display   string
		}{
			{"threshold defaults to every key", `{"public_keys":` + quoted(k1.pub, k2.pub, k3.pub) + `}`, 3, []string{k1.pub, k2.pub, k3.pub}, nil, ""},
			{"a child counts as one member", `{"public_keys":` + quoted(k3.pub) + `,"key_quorum_ids":` + quoted(leaf.ID) + `}`, 2, []string{k3.pub}, []string{leaf.ID}, ""},
			{"explicit threshold and display name", `{"public_keys":` + quoted(k1.pub, k2.pub) + `,"authorization_threshold":1,"display_name":"ops"}`, 1, []string{k1.pub, k2.pub}, nil, "ops"},
			{"a PEM key is stored canonical", `{"public_keys":` + quoted(pemOf(t, k2)) + `}`, 1, []string{k2.pub}, nil, ""},
			{"five children", `{"key_quorum_ids":` + quoted(six[:5]...) + `,"authorization_threshold":3}`, 3, nil, six[:5], ""},
			{"empty user_ids beside keys", `{"public_keys":` + quoted(k1.pub) + `,"user_ids":[]}`, 1, []string{k1.pub}, nil, ""},
			{"display name of 50 characters, more bytes", `{"public_keys":` + quoted(k1.pub) + `,"display_name":"` + strings.Repeat("é", 50) + `"}`, 1, []string{k1.pub}, nil, strings.Repeat("é", 50)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				q, err := e.createQuorumErr(appA, tc.body)
				if err != nil {
					t.Fatal(err)
				}
				if q.AuthorizationThreshold != tc.threshold {
					t.Errorf("threshold = %d, want %d", q.AuthorizationThreshold, tc.threshold)
				}
				var got []string
				for _, k := range q.AuthorizationKeys {
					got = append(got, k.PublicKey)
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.keys) || fmt.Sprint(q.KeyQuorumIDs) != fmt.Sprint(tc.children) {
					t.Errorf("members = %v %v, want %v %v", got, q.KeyQuorumIDs, tc.keys, tc.children)
				}
				if (tc.display == "") != (q.DisplayName == nil) || tc.display != "" && *q.DisplayName != tc.display {
					t.Errorf("display_name = %v, want %q", q.DisplayName, tc.display)
				}
				stored, err := e.svc.GetQuorum(e.ctx, appA, q.ID)
				if err != nil {
					t.Fatal(err)
				}
				if !sameJSON(t, stored, q) {
					t.Errorf("GetQuorum = %+v, want the created %+v", stored, q)
				}
				if len(q.ID) != 24 {
					t.Errorf("id %q is not 24 characters", q.ID)
				}
			})
		}
	})

	t.Run("invalid", func(t *testing.T) {
		for _, tc := range []struct{ name, body string }{
			{"no member field", `{}`},
			{"zero keys", `{"public_keys":[]}`},
			{"zero keys and zero children", `{"public_keys":[],"key_quorum_ids":[]}`},
			{"threshold 0", `{"public_keys":` + quoted(k1.pub, k2.pub) + `,"authorization_threshold":0}`},
			{"negative threshold", `{"public_keys":` + quoted(k1.pub) + `,"authorization_threshold":-1}`},
			{"threshold above the members", `{"public_keys":` + quoted(k1.pub, k2.pub) + `,"authorization_threshold":3}`},
			{"threshold above keys and children", `{"public_keys":` + quoted(k1.pub) + `,"key_quorum_ids":` + quoted(leaf.ID) + `,"authorization_threshold":3}`},
			{"duplicate key", `{"public_keys":` + quoted(k1.pub, k2.pub, k1.pub) + `}`},
			{"duplicate key in PEM and base64", `{"public_keys":` + quoted(k1.pub, pemOf(t, k1)) + `}`},
			{"not a key", `{"public_keys":["bm90IGEga2V5"]}`},
			{"51 keys", `{"public_keys":` + quoted(many...) + `}`},
			{"user_ids", `{"public_keys":` + quoted(k1.pub) + `,"user_ids":["did:privy:abc"]}`},
			{"child with children of its own", `{"public_keys":` + quoted(k3.pub) + `,"key_quorum_ids":` + quoted(parent.ID) + `}`},
			{"six children", `{"key_quorum_ids":` + quoted(six...) + `,"authorization_threshold":1}`},
			{"duplicate child", `{"key_quorum_ids":` + quoted(leaf.ID, leaf.ID) + `}`},
			{"unknown child", `{"key_quorum_ids":["nosuchquorum000000000000"]}`},
			{"another app's child", `{"key_quorum_ids":` + quoted(foreign.ID) + `}`},
			{"display name of 51 characters", `{"public_keys":` + quoted(k1.pub) + `,"display_name":"` + strings.Repeat("a", 51) + `"}`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e.refused(t, custody.Invalid, func() error { _, err := e.createQuorumErr(appA, tc.body); return err })
			})
		}
	})
}

func TestUpdateQuorum(t *testing.T) {
	e := newEnv(t, envConfig{})
	k1, k2, k3, k4, k5, x := newAuthKey(t), newAuthKey(t), newAuthKey(t), newAuthKey(t), newAuthKey(t), newAuthKey(t)
	q := e.quorumOf(appA, 2, keysOf(k1, k2, k3))
	w := e.ownedWallet(q.ID)
	leaf := e.quorumOf(appA, 1, keysOf(x))
	parent := e.quorumOf(appA, 2, keysOf(k5), leaf.ID)
	other := e.quorumOf(appA, 1, keysOf(k4))

	patch := func(id, body string, signers ...authKey) (custody.KeyQuorum, error) {
		return e.updateQuorum(request{body: []byte(body), signers: signers}, id)
	}
	for _, tc := range []struct {
		name    string
		id      string
		body    string
		signers []authKey
		want    custody.Kind
	}{
		{"unsigned", q.ID, `{"display_name":"a"}`, nil, custody.Unauthorized},
		{"one of its keys", q.ID, `{"display_name":"b"}`, keysOf(k1), custody.Unauthorized},
		{"threshold and a foreign key", q.ID, `{"display_name":"c"}`, keysOf(k1, k2, x), custody.Unauthorized},
		{"a foreign threshold", q.ID, `{"display_name":"d"}`, keysOf(k4), custody.Unauthorized},
		{"threshold above the members", q.ID, `{"authorization_threshold":4}`, keysOf(k1, k2), custody.Invalid},
		{"new keys below the old threshold", q.ID, `{"public_keys":` + quoted(k4.pub) + `}`, keysOf(k1, k2), custody.Invalid},
		{"itself as a child", q.ID, `{"key_quorum_ids":` + quoted(q.ID) + `}`, keysOf(k1, k2), custody.Invalid},
		{"a child that has children", q.ID, `{"key_quorum_ids":` + quoted(parent.ID) + `}`, keysOf(k1, k2), custody.Invalid},
		{"a nested quorum gains a child", leaf.ID, `{"key_quorum_ids":` + quoted(other.ID) + `}`, keysOf(x), custody.Invalid},
		{"user_ids", q.ID, `{"user_ids":["did:privy:abc"]}`, keysOf(k1, k2), custody.Invalid},
		{"unknown quorum", "nosuchquorum000000000000", `{"display_name":"e"}`, keysOf(k1, k2), custody.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.refused(t, tc.want, func() error { _, err := patch(tc.id, tc.body, tc.signers...); return err })
		})
	}

	t.Run("its threshold replaces the given fields", func(t *testing.T) {
		got, err := patch(q.ID, `{"public_keys":`+quoted(k4.pub, k5.pub)+`,"authorization_threshold":1,"display_name":"rotated"}`, k3, k1)
		if err != nil {
			t.Fatal(err)
		}
		if got.AuthorizationThreshold != 1 || len(got.AuthorizationKeys) != 2 || got.AuthorizationKeys[0].PublicKey != k4.pub ||
			got.AuthorizationKeys[1].PublicKey != k5.pub || got.DisplayName == nil || *got.DisplayName != "rotated" || got.CreatedAt != q.CreatedAt {
			t.Fatalf("updated quorum = %+v", got)
		}
		stored, err := e.svc.GetQuorum(e.ctx, appA, q.ID)
		if err != nil || !sameJSON(t, stored, got) {
			t.Fatalf("GetQuorum = %+v, %v; want %+v", stored, err, got)
		}
	})
	t.Run("an absent field is left alone", func(t *testing.T) {
		got, err := patch(q.ID, `{"display_name":"renamed"}`, k5)
		if err != nil {
			t.Fatal(err)
		}
		if got.AuthorizationThreshold != 1 || len(got.AuthorizationKeys) != 2 || *got.DisplayName != "renamed" {
			t.Fatalf("updated quorum = %+v", got)
		}
	})
	t.Run("the old keys lost the quorum and its wallet", func(t *testing.T) {
		e.refused(t, custody.Unauthorized, func() error { _, err := patch(q.ID, `{"display_name":"old"}`, k1, k2); return err })
		e.check(t, opRPC, w.ID, "", keysOf(k1, k2), custody.Unauthorized)
		e.check(t, opRPC, w.ID, "", keysOf(k4), 0)
	})
	t.Run("a child may be added by the new keys", func(t *testing.T) {
		got, err := patch(q.ID, `{"key_quorum_ids":`+quoted(other.ID)+`}`, k4)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.KeyQuorumIDs) != 1 || got.KeyQuorumIDs[0] != other.ID || len(got.AuthorizationKeys) != 2 {
			t.Fatalf("updated quorum = %+v", got)
		}
	})
}

func TestDeleteQuorum(t *testing.T) {
	e := newEnv(t, envConfig{})
	ko, ks, kc, kp, ku1, ku2 := newAuthKey(t), newAuthKey(t), newAuthKey(t), newAuthKey(t), newAuthKey(t), newAuthKey(t)
	owner := e.quorumOf(appA, 1, keysOf(ko))
	signer := e.quorumOf(appA, 1, keysOf(ks))
	child := e.quorumOf(appA, 1, keysOf(kc))
	parent := e.quorumOf(appA, 2, keysOf(kp), child.ID)
	unused := e.quorumOf(appA, 2, keysOf(ku1, ku2))
	w := e.ownedWallet(owner.ID, signer.ID)

	del := func(id string, signers ...authKey) func() error {
		return func() error { return e.deleteQuorum(request{signers: signers}, id) }
	}
	for _, tc := range []struct {
		name string
		run  func() error
		want custody.Kind
	}{
		{"owner of a wallet", del(owner.ID, ko), custody.Conflict},
		{"additional signer of a wallet", del(signer.ID, ks), custody.Conflict},
		{"child of a quorum", del(child.ID, kc), custody.Conflict},
		{"unsigned", del(unused.ID), custody.Unauthorized},
		{"below its threshold", del(unused.ID, ku1), custody.Unauthorized},
		{"in use and unsigned: the signature is checked first", del(owner.ID), custody.Unauthorized},
		{"another app's quorum", func() error { return e.deleteQuorum(request{app: appB, signers: keysOf(ku1, ku2)}, unused.ID) }, custody.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) { e.refused(t, tc.want, tc.run) })
	}

	deleted := func(t *testing.T, id string, signers ...authKey) {
		t.Helper()
		if err := del(id, signers...)(); err != nil {
			t.Fatalf("DeleteQuorum(%s): %v", id, err)
		}
		_, err := e.svc.GetQuorum(e.ctx, appA, id)
		wantKind(t, err, custody.NotFound)
	}
	t.Run("unused", func(t *testing.T) {
		deleted(t, unused.ID, ku2, ku1)
		// A replay of the accepted request: the owner's approval is checked
		// first, against a quorum that is gone.
		e.refused(t, custody.NotFound, del(unused.ID, ku1, ku2))
		e.refused(t, custody.NotFound, func() error {
			return e.deleteQuorum(request{signers: keysOf(ku1, ku2), expiry: e.clock.Now().Add(time.Minute)}, unused.ID)
		})
		e.refused(t, custody.Invalid, func() error {
			_, err := e.createWalletReq(request{body: []byte(`{"chain_type":"ethereum","owner_id":"` + unused.ID + `"}`)})
			return err
		})
		e.refused(t, custody.Invalid, func() error {
			_, err := e.createQuorumErr(appA, `{"key_quorum_ids":`+quoted(unused.ID)+`}`)
			return err
		})
	})
	t.Run("a parent, then its child", func(t *testing.T) {
		deleted(t, parent.ID, kp, kc)
		deleted(t, child.ID, kc)
	})
	t.Run("the quorums of an archived wallet", func(t *testing.T) {
		if _, err := e.archiveWallet(request{signers: keysOf(ko)}, w.ID); err != nil {
			t.Fatal(err)
		}
		deleted(t, owner.ID, ko)
		deleted(t, signer.ID, ks)
	})
	if n := e.audits("key_quorum.delete", "allow"); n != 5 {
		t.Errorf("%d key_quorum.delete records, want 5", n)
	}
}
