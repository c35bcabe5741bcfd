package custody_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/cachet-custody/cachet/custody"
)

var walletIDRE = regexp.MustCompile(`^[a-z][a-z0-9]{23}$`)

func TestCreateWallet(t *testing.T) {
	e := newEnv(t, envConfig{})
	k := newAuthKey(t)
	signer := e.quorumOf(appA, 1, keysOf(k))

	t.Run("shape", func(t *testing.T) {
		out, err := e.svc.CreateWallet(e.ctx, e.call(request{method: "POST", path: "/v1/wallets", body: []byte(`{"chain_type":"ethereum"}`)}),
			custody.WalletInput{ChainType: "ethereum"})
		if err != nil {
			t.Fatal(err)
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(out, &raw); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"id", "address", "chain_type", "public_key", "owner_id", "policy_ids", "additional_signers",
			"display_name", "external_id", "created_at", "archived_at", "exported_at", "imported_at"} {
			if _, ok := raw[f]; !ok {
				t.Errorf("response has no %q: %s", f, out)
			}
		}
		for _, f := range []string{"owner_id", "archived_at", "display_name", "external_id"} {
			if string(raw[f]) != "null" {
				t.Errorf("%s = %s, want null", f, raw[f])
			}
		}
		if string(raw["policy_ids"]) != "[]" || string(raw["additional_signers"]) != "[]" {
			t.Errorf("policy_ids = %s, additional_signers = %s; want [] and []", raw["policy_ids"], raw["additional_signers"])
		}
		w := decodeWallet(t, out)
		if !walletIDRE.MatchString(w.ID) || w.ChainType != "ethereum" || w.CreatedAt != e.clock.Now().UnixMilli() {
			t.Errorf("wallet = %+v", w)
		}
		pub, err := hexutil.Decode(w.PublicKey)
		if err != nil || len(pub) != 33 {
			t.Fatalf("public_key %q is not a compressed point", w.PublicKey)
		}
		pk, err := crypto.DecompressPubkey(pub)
		if err != nil {
			t.Fatal(err)
		}
		if addr := crypto.PubkeyToAddress(*pk); addr.Hex() != w.Address {
			t.Errorf("address %s, want %s (EIP-55, of public_key)", w.Address, addr.Hex())
		}
		if !common.IsHexAddress(w.Address) {
			t.Errorf("address %q", w.Address)
		}
		got, err := e.svc.GetWallet(e.ctx, appA, w.ID)
		if err != nil || !sameJSON(t, got, w) {
			t.Errorf("GetWallet = %+v, %v; want %+v", got, err, w)
		}
	})
	t.Run("signers, names and external id", func(t *testing.T) {
		name := strings.Repeat("é", 100)
		w, err := e.createWalletReq(request{body: mustJSON(t, map[string]any{
			"chain_type": "ethereum", "display_name": name, "external_id": "user_42-a",
			"additional_signers": []map[string]any{{"signer_id": signer.ID}},
		})})
		if err != nil {
			t.Fatal(err)
		}
		if *w.DisplayName != name || *w.ExternalID != "user_42-a" || len(w.AdditionalSigners) != 1 ||
			w.AdditionalSigners[0].SignerID != signer.ID || w.AdditionalSigners[0].OverridePolicyIDs == nil {
			t.Errorf("wallet = %+v", w)
		}
	})
	t.Run("null lists are empty lists", func(t *testing.T) {
		out, err := e.svc.CreateWallet(e.ctx, e.call(request{method: "POST", path: "/v1/wallets"}),
			mustParseCreate(t, `{"chain_type":"ethereum","additional_signers":null,"policy_ids":null}`))
		if err != nil {
			t.Fatal(err)
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(out, &raw); err != nil {
			t.Fatal(err)
		}
		if string(raw["policy_ids"]) != "[]" || string(raw["additional_signers"]) != "[]" {
			t.Errorf("policy_ids = %s, additional_signers = %s; want [] and []", raw["policy_ids"], raw["additional_signers"])
		}
	})
	t.Run("the same external id in another app", func(t *testing.T) {
		if _, err := e.createWalletReq(request{app: appB, body: []byte(`{"chain_type":"ethereum","external_id":"user_42-a"}`)}); err != nil {
			t.Fatal(err)
		}
	})

	for _, tc := range []struct {
		name string
		body string
		want custody.Kind
	}{
		{"duplicate external_id", `{"chain_type":"ethereum","external_id":"user_42-a"}`, custody.Conflict},
		{"duplicate external_id with an owner", `{"chain_type":"ethereum","external_id":"user_42-a","owner":{"public_key":"` + k.pub + `"}}`, custody.Conflict},
		{"solana", `{"chain_type":"solana"}`, custody.Invalid},
		{"no chain_type", `{}`, custody.Invalid},
		{"chain_type of the wrong type", `{"chain_type":1}`, custody.Invalid},
		{"owner and owner_id", `{"chain_type":"ethereum","owner":{"public_key":"` + k.pub + `"},"owner_id":"` + signer.ID + `"}`, custody.Invalid},
		{"owner with public_key and user_id", `{"chain_type":"ethereum","owner":{"public_key":"` + k.pub + `","user_id":"did:privy:x"}}`, custody.Invalid},
		{"owner user_id", `{"chain_type":"ethereum","owner":{"user_id":"did:privy:x"}}`, custody.Invalid},
		{"owner with an unknown field", `{"chain_type":"ethereum","owner":{"public_key":"` + k.pub + `","x":1}}`, custody.Invalid},
		{"owner key that is not a key", `{"chain_type":"ethereum","owner":{"public_key":"AAAA"}}`, custody.Invalid},
		{"unknown owner_id", `{"chain_type":"ethereum","owner_id":"nosuchquorum000000000000"}`, custody.Invalid},
		{"unknown field", `{"chain_type":"ethereum","colour":"red"}`, custody.Invalid},
		{"not an object", `[]`, custody.Invalid},
		{"policy_ids naming a policy", `{"chain_type":"ethereum","policy_ids":["pol_a"]}`, custody.Invalid},
		{"two policy_ids", `{"chain_type":"ethereum","policy_ids":["pol_a","pol_b"]}`, custody.Invalid},
		{"override_policy_ids naming a policy", `{"chain_type":"ethereum","additional_signers":[{"signer_id":"` + signer.ID + `","override_policy_ids":["pol_a"]}]}`, custody.Invalid},
		{"unknown signer", `{"chain_type":"ethereum","additional_signers":[{"signer_id":"nosuchquorum000000000000"}]}`, custody.Invalid},
		{"signer twice", `{"chain_type":"ethereum","additional_signers":[{"signer_id":"` + signer.ID + `"},{"signer_id":"` + signer.ID + `"}]}`, custody.Invalid},
		{"signer without id", `{"chain_type":"ethereum","additional_signers":[{}]}`, custody.Invalid},
		{"signer with an unknown field", `{"chain_type":"ethereum","additional_signers":[{"signer_id":"` + signer.ID + `","role":"x"}]}`, custody.Invalid},
		{"display_name of 101 characters", `{"chain_type":"ethereum","display_name":"` + strings.Repeat("a", 101) + `"}`, custody.Invalid},
		{"display_name of the wrong type", `{"chain_type":"ethereum","display_name":5}`, custody.Invalid},
		{"external_id with a space", `{"chain_type":"ethereum","external_id":"a b"}`, custody.Invalid},
		{"external_id of 65 characters", `{"chain_type":"ethereum","external_id":"` + strings.Repeat("x", 65) + `"}`, custody.Invalid},
		{"empty external_id", `{"chain_type":"ethereum","external_id":""}`, custody.Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.refused(t, tc.want, func() error {
				_, err := e.createWalletReq(request{body: []byte(tc.body)})
				return err
			})
		})
	}
}

func TestUpdateWalletFields(t *testing.T) {
	e := newEnv(t, envConfig{})
	k := newAuthKey(t)
	ks := newAuthKey(t)
	s1 := e.quorumOf(appA, 1, keysOf(ks))
	w := e.createWallet(appA, `{"chain_type":"ethereum","display_name":"before","external_id":"ext1","owner":{"public_key":"`+k.pub+`"}}`)
	upd := func(body string) (custody.Wallet, error) {
		return e.updateWallet(request{body: []byte(body), signers: keysOf(k)}, w.ID)
	}
	t.Run("absent fields are left alone", func(t *testing.T) {
		got, err := upd(`{"additional_signers":[{"signer_id":"` + s1.ID + `"}]}`)
		if err != nil {
			t.Fatal(err)
		}
		if *got.DisplayName != "before" || *got.OwnerID != *w.OwnerID || len(got.AdditionalSigners) != 1 || *got.ExternalID != "ext1" {
			t.Errorf("wallet = %+v", got)
		}
	})
	t.Run("null clears display_name", func(t *testing.T) {
		got, err := upd(`{"display_name":null}`)
		if err != nil {
			t.Fatal(err)
		}
		if got.DisplayName != nil || len(got.AdditionalSigners) != 1 {
			t.Errorf("wallet = %+v", got)
		}
	})
	t.Run("the signer list is replaced", func(t *testing.T) {
		got, err := upd(`{"additional_signers":[]}`)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.AdditionalSigners) != 0 {
			t.Errorf("wallet = %+v", got)
		}
	})
	t.Run("null clears the signer list", func(t *testing.T) {
		if _, err := upd(`{"display_name":"again","additional_signers":[{"signer_id":"` + s1.ID + `"}]}`); err != nil {
			t.Fatal(err)
		}
		e.refused(t, custody.Conflict, func() error { return e.deleteQuorum(request{signers: keysOf(ks)}, s1.ID) })
		got, err := upd(`{"additional_signers":null}`)
		if err != nil {
			t.Fatal(err)
		}
		if got.AdditionalSigners == nil || len(got.AdditionalSigners) != 0 {
			t.Errorf("additional_signers = %#v, want []", got.AdditionalSigners)
		}
		// The quorum is free again.
		if err := e.deleteQuorum(request{signers: keysOf(ks)}, s1.ID); err != nil {
			t.Fatalf("DeleteQuorum of the removed signer: %v", err)
		}
	})
	for _, tc := range []struct{ name, body string }{
		{"external_id is write-once", `{"external_id":"ext2"}`},
		{"chain_type", `{"chain_type":"ethereum"}`},
		{"policy_ids naming a policy", `{"policy_ids":["pol_a"]}`},
		{"unknown signer", `{"additional_signers":[{"signer_id":"nosuchquorum000000000000"}]}`},
		{"owner and owner_id", `{"owner":null,"owner_id":"` + s1.ID + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.refused(t, custody.Invalid, func() error { _, err := upd(tc.body); return err })
		})
	}
}

func TestListWallets(t *testing.T) {
	e := newEnv(t, envConfig{})
	var ids []string
	for range 7 {
		ids = append(ids, e.ownedWallet("").ID)
		e.createWallet(appB, `{"chain_type":"ethereum"}`)
		e.clock.Advance(time.Millisecond)
	}
	for _, i := range []int{1, 4} {
		if _, err := e.archiveWallet(request{}, ids[i]); err != nil {
			t.Fatal(err)
		}
	}
	live := []string{ids[0], ids[2], ids[3], ids[5], ids[6]}

	t.Run("pages of 2", func(t *testing.T) {
		var got []string
		var sizes []int
		cursor := ""
		for page := 0; ; page++ {
			if page > 5 {
				t.Fatal("pagination does not end")
			}
			p, err := e.svc.ListWallets(e.ctx, appA, cursor, 2, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range p.Data {
				if w.ArchivedAt != nil {
					t.Errorf("archived wallet %s listed", w.ID)
				}
			}
			got = append(got, walletIDs(p.Data)...)
			sizes = append(sizes, len(p.Data))
			if p.NextCursor == nil {
				break
			}
			cursor = *p.NextCursor
		}
		if strings.Join(got, ",") != strings.Join(live, ",") {
			t.Errorf("listed %v, want %v once each in created order", got, live)
		}
		if len(sizes) != 3 || sizes[0] != 2 || sizes[1] != 2 || sizes[2] != 1 {
			t.Errorf("page sizes %v, want [2 2 1]", sizes)
		}
	})
	t.Run("one page", func(t *testing.T) {
		p, err := e.svc.ListWallets(e.ctx, appA, "", 0, "ethereum")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(walletIDs(p.Data), ",") != strings.Join(live, ",") || p.NextCursor != nil {
			t.Errorf("listed %v (next %v), want %v", walletIDs(p.Data), p.NextCursor, live)
		}
	})
	t.Run("an exact last page has no cursor", func(t *testing.T) {
		p, err := e.svc.ListWallets(e.ctx, appA, live[2], 2, "")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(walletIDs(p.Data), ",") != strings.Join(live[3:], ",") || p.NextCursor != nil {
			t.Errorf("listed %v (next %v), want %v and no cursor", walletIDs(p.Data), p.NextCursor, live[3:])
		}
	})
	t.Run("an archived cursor still pages on", func(t *testing.T) {
		p, err := e.svc.ListWallets(e.ctx, appA, ids[1], 2, "")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(walletIDs(p.Data), ",") != ids[2]+","+ids[3] {
			t.Errorf("listed %v after archived %s, want %v", walletIDs(p.Data), ids[1], ids[2:4])
		}
	})
	t.Run("another chain", func(t *testing.T) {
		p, err := e.svc.ListWallets(e.ctx, appA, "", 0, "solana")
		if err != nil || len(p.Data) != 0 || p.Data == nil {
			t.Errorf("solana wallets = %+v, %v; want an empty list", p, err)
		}
	})
	t.Run("unknown cursor", func(t *testing.T) {
		_, err := e.svc.ListWallets(e.ctx, appA, "nosuchwallet000000000000", 2, "")
		wantKind(t, err, custody.Invalid)
	})
}

func TestArchiveWallet(t *testing.T) {
	e := newEnv(t, envConfig{})
	k := newAuthKey(t)
	w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"public_key":"`+k.pub+`"}}`)
	e.clock.Advance(time.Second)
	archived, err := e.archiveWallet(request{signers: keysOf(k)}, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := e.clock.Now().UnixMilli()
	got, err := e.svc.GetWallet(e.ctx, appA, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ArchivedAt == nil || *got.ArchivedAt != want || archived.ArchivedAt == nil || *archived.ArchivedAt != want {
		t.Fatalf("archived_at = %v (response %v), want %d", got.ArchivedAt, archived.ArchivedAt, want)
	}
	for _, tc := range []struct {
		name string
		run  func() error
		want custody.Kind
	}{
		{"rpc", func() error { _, err := e.rpc(request{body: signTxBody(), signers: keysOf(k)}, w.ID); return err }, custody.Invalid},
		{"unsigned rpc", func() error { _, err := e.rpc(request{body: signTxBody()}, w.ID); return err }, custody.Invalid},
		{"second archive", func() error {
			_, err := e.archiveWallet(request{signers: keysOf(k), expiry: e.clock.Now().Add(time.Minute)}, w.ID)
			return err
		}, custody.NotFound},
		{"update", func() error {
			_, err := e.updateWallet(request{body: []byte(`{"display_name":"x"}`), signers: keysOf(k)}, w.ID)
			return err
		}, custody.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) { e.refused(t, tc.want, tc.run) })
	}
}

// TestAppIsolation: an app sees and uses only its own wallets and quorums.
func TestAppIsolation(t *testing.T) {
	e := newEnv(t, envConfig{})
	k := newAuthKey(t)
	q := e.quorumOf(appA, 1, keysOf(k))
	w := e.ownedWallet(q.ID)
	open := e.ownedWallet("")
	mine := e.createWallet(appB, `{"chain_type":"ethereum"}`)

	t.Run("reads", func(t *testing.T) {
		_, err := e.svc.GetWallet(e.ctx, appB, w.ID)
		wantKind(t, err, custody.NotFound)
		_, err = e.svc.GetQuorum(e.ctx, appB, q.ID)
		wantKind(t, err, custody.NotFound)
		for app, want := range map[string][]string{appA: {w.ID, open.ID}, appB: {mine.ID}} {
			p, err := e.svc.ListWallets(e.ctx, app, "", 0, "")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(sorted(walletIDs(p.Data)), ",") != strings.Join(sorted(want), ",") {
				t.Errorf("ListWallets(%s) = %v, want %v", app, walletIDs(p.Data), want)
			}
		}
		_, err = e.svc.ListWallets(e.ctx, appB, w.ID, 1, "")
		wantKind(t, err, custody.Invalid)
	})
	for _, tc := range []struct {
		name string
		run  func() error
		want custody.Kind
	}{
		{"rpc on the other app's wallet", func() error {
			_, err := e.rpc(request{app: appB, body: signTxBody(), signers: keysOf(k)}, w.ID)
			return err
		}, custody.NotFound},
		{"rpc on the other app's wallet without owner", func() error {
			_, err := e.rpc(request{app: appB, body: signTxBody()}, open.ID)
			return err
		}, custody.NotFound},
		{"update the other app's wallet", func() error {
			_, err := e.updateWallet(request{app: appB, body: []byte(`{"display_name":"x"}`), signers: keysOf(k)}, w.ID)
			return err
		}, custody.NotFound},
		{"archive the other app's wallet", func() error {
			_, err := e.archiveWallet(request{app: appB}, open.ID)
			return err
		}, custody.NotFound},
		{"update the other app's quorum", func() error {
			_, err := e.updateQuorum(request{app: appB, body: []byte(`{"display_name":"x"}`), signers: keysOf(k)}, q.ID)
			return err
		}, custody.NotFound},
		{"delete the other app's quorum", func() error {
			return e.deleteQuorum(request{app: appB, signers: keysOf(k)}, q.ID)
		}, custody.NotFound},
		{"the other app's quorum as owner_id", func() error {
			_, err := e.createWalletReq(request{app: appB, body: []byte(`{"chain_type":"ethereum","owner_id":"` + q.ID + `"}`)})
			return err
		}, custody.Invalid},
		{"the other app's quorum as signer_id", func() error {
			_, err := e.createWalletReq(request{app: appB, body: []byte(`{"chain_type":"ethereum","additional_signers":[{"signer_id":"` + q.ID + `"}]}`)})
			return err
		}, custody.Invalid},
		{"the other app's quorum as owner_id of an own wallet", func() error {
			_, err := e.updateWallet(request{app: appB, body: []byte(`{"owner_id":"` + q.ID + `"}`)}, mine.ID)
			return err
		}, custody.Invalid},
		{"the other app's quorum as signer of an own wallet", func() error {
			_, err := e.updateWallet(request{app: appB, body: []byte(`{"additional_signers":[{"signer_id":"` + q.ID + `"}]}`)}, mine.ID)
			return err
		}, custody.Invalid},
		{"the other app's quorum as a child", func() error {
			_, err := e.createQuorumErr(appB, `{"key_quorum_ids":["`+q.ID+`"]}`)
			return err
		}, custody.Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) { e.refused(t, tc.want, tc.run) })
	}
}

func mustParseCreate(t testing.TB, body string) custody.WalletInput {
	t.Helper()
	in, err := custody.ParseWalletInput([]byte(body), true)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// A wallet has at most MaxAdditionalSigners additional signers, on
// creation and on update.
func TestAdditionalSignersLimit(t *testing.T) {
	e := newEnv(t, envConfig{})
	owner := newAuthKey(t)
	var signers []map[string]any
	for range custody.MaxAdditionalSigners + 1 {
		q := e.quorumOf(appA, 1, keysOf(newAuthKey(t)))
		signers = append(signers, map[string]any{"signer_id": q.ID})
	}
	body := func(n int) string {
		return string(mustJSON(t, map[string]any{"chain_type": "ethereum", "owner": map[string]string{"public_key": owner.pub}, "additional_signers": signers[:n]}))
	}
	e.refused(t, custody.Invalid, func() error {
		_, err := e.createWalletReq(request{body: []byte(body(custody.MaxAdditionalSigners + 1))})
		return err
	})
	w := e.createWallet(appA, body(custody.MaxAdditionalSigners))
	e.refused(t, custody.Invalid, func() error {
		_, err := e.updateWallet(request{body: mustJSON(t, map[string]any{"additional_signers": signers}), signers: keysOf(owner)}, w.ID)
		return err
	})
}
