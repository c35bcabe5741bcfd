package custody_test

import (
	"crypto/ecdh"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/wallet"
)

// recipient is an export recipient's HPKE key and its SPKI text.
func newRecipient(t testing.TB) (*ecdh.PrivateKey, string) {
	t.Helper()
	k, err := hpkebox.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return k, base64.StdEncoding.EncodeToString(der)
}

// export runs POST /v1/wallets/{id}/export and decrypts the answer.
func (e *env) export(id string, seed bool, signers ...authKey) (string, error) {
	e.t.Helper()
	priv, spki := newRecipient(e.t)
	body := mustJSON(e.t, map[string]any{"encryption_type": "HPKE", "recipient_public_key": spki, "export_seed_phrase": seed})
	out, err := e.svc.Export(e.ctx, e.call(request{method: "POST", path: "/v1/wallets/" + id + "/export", body: body, signers: signers}), id, body)
	if err != nil {
		return "", err
	}
	var box hpkebox.Box
	if err := json.Unmarshal(out, &box); err != nil {
		e.t.Fatalf("export response %s: %v", out, err)
	}
	plain, err := hpkebox.OpenBox(priv, box.EncapsulatedKey, box.Ciphertext)
	if err != nil {
		e.t.Fatalf("open export: %v", err)
	}
	return string(plain), nil
}

func addressOfHex(t testing.TB, key string) common.Address {
	t.Helper()
	if !strings.HasPrefix(key, "0x") || len(key) != 66 {
		t.Fatalf("exported key %d chars, want 0x + 64 hex", len(key))
	}
	k, err := crypto.HexToECDSA(key[2:])
	if err != nil {
		t.Fatal(err)
	}
	return crypto.PubkeyToAddress(k.PublicKey)
}

func TestExport(t *testing.T) {
	e := newEnv(t, envConfig{})
	owner, other := newAuthKey(t), newAuthKey(t)
	q := e.quorumOf(appA, 1, keysOf(owner))
	signer := e.quorumOf(appA, 1, keysOf(other))
	w := e.ownedWallet(q.ID, signer.ID)

	key, err := e.export(w.ID, false, owner)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if got := addressOfHex(t, key); got.Hex() != w.Address {
		t.Fatalf("exported key is %s's, want %s", got.Hex(), w.Address)
	}
	phrase, err := e.export(w.ID, true, owner)
	if err != nil {
		t.Fatalf("export seed phrase: %v", err)
	}
	if _, addr, err := wallet.DeriveFromMnemonic(phrase, 0); err != nil || addr.Hex() != w.Address || len(strings.Fields(phrase)) != 12 {
		t.Fatalf("seed phrase gives %s, %v", addr.Hex(), err)
	}
	got, _ := e.svc.GetWallet(e.ctx, appA, w.ID)
	if got.ExportedAt == nil {
		t.Fatal("exported_at not set")
	}
	if d := e.lastDetail("wallet.export"); d["what"] != "seed phrase" || d["recipient"] == nil {
		t.Fatalf("audit detail %v", d)
	}

	e.refused(t, custody.Forbidden, func() error { _, err := e.export(w.ID, false, other); return err })
	e.refused(t, custody.Unauthorized, func() error { _, err := e.export(w.ID, false); return err })
	e.refused(t, custody.Unauthorized, func() error { _, err := e.export(w.ID, false, newAuthKey(t)); return err })
	free := e.createWallet(appA, `{"chain_type":"ethereum"}`)
	e.refused(t, custody.Forbidden, func() error { _, err := e.export(free.ID, false); return err })
	e.refused(t, custody.NotFound, func() error { _, err := e.export("nope", false, owner); return err })

	for _, bad := range []string{
		`{"encryption_type":"NONE","recipient_public_key":"` + owner.pub + `"}`,
		`{"encryption_type":"HPKE"}`,
		`{"encryption_type":"HPKE","recipient_public_key":"` + owner.pub + `","export_seed_phrase":"yes"}`,
		`{"encryption_type":"HPKE","recipient_public_key":"` + owner.pub + `","extra":1}`,
	} {
		e.refused(t, custody.Invalid, func() error {
			_, err := e.svc.Export(e.ctx, e.call(request{method: "POST", path: "/v1/wallets/" + w.ID + "/export", body: []byte(bad), signers: keysOf(owner)}), w.ID, []byte(bad))
			return err
		})
	}

	// A policy that allows exportPrivateKey only: seed phrases are denied
	// (and the denial audited), keys still export.
	pol := e.createPolicy(`{"version":"1.0","name":"keys only","chain_type":"ethereum","rules":[` +
		`{"name":"allow key export","method":"exportPrivateKey","conditions":[],"action":"ALLOW"}]}`)
	if _, err := e.updateWallet(request{body: []byte(`{"policy_ids":["` + pol + `"]}`), signers: keysOf(owner)}, w.ID); err != nil {
		t.Fatal(err)
	}
	denials := e.audits("wallet.export", "deny")
	ce := wantKind(t, func() error { _, err := e.export(w.ID, true, owner); return err }(), custody.PolicyViolation)
	if e.audits("wallet.export", "deny") != denials+1 {
		t.Fatalf("policy denial of export not audited (%s)", ce.Message)
	}
	if _, err := e.export(w.ID, false, owner); err != nil {
		t.Fatalf("export allowed by policy: %v", err)
	}
}

// createPolicy creates an unowned policy of appA and returns its id.
func (e *env) createPolicy(body string) string {
	e.t.Helper()
	out, err := e.svc.CreatePolicy(e.ctx, e.call(request{method: "POST", path: "/v1/policies", body: []byte(body)}), []byte(body))
	if err != nil {
		e.t.Fatalf("CreatePolicy: %v", err)
	}
	var p struct{ ID string }
	if err := json.Unmarshal(out, &p); err != nil {
		e.t.Fatal(err)
	}
	return p.ID
}

// importInit runs import/init and returns the one-time key.
func (e *env) importInit(body string) (*ecdh.PublicKey, error) {
	e.t.Helper()
	out, err := e.svc.ImportInit(e.ctx, e.call(request{method: "POST", path: "/v1/wallets/import/init", body: []byte(body)}), []byte(body))
	if err != nil {
		return nil, err
	}
	var resp custody.ImportInitResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		e.t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(resp.EncryptionPublicKey)
	if err != nil || resp.EncryptionType != "HPKE" {
		e.t.Fatalf("init response %s", out)
	}
	pub, err := hpkebox.ParseRawPublicKey(raw)
	if err != nil {
		e.t.Fatalf("encryption_public_key: %v", err)
	}
	return pub, nil
}

// importSubmit seals plaintext to pub and submits it with the wallet
// fields (addr, entropy type, index) and the outer fields.
func (e *env) importSubmit(pub *ecdh.PublicKey, plaintext []byte, walletFields map[string]any, outer map[string]any) (custody.Wallet, error) {
	e.t.Helper()
	enc, ct, err := hpkebox.Seal(pub, plaintext)
	if err != nil {
		e.t.Fatal(err)
	}
	wf := map[string]any{"chain_type": "ethereum", "encryption_type": "HPKE",
		"encapsulated_key": base64.StdEncoding.EncodeToString(enc), "ciphertext": base64.StdEncoding.EncodeToString(ct)}
	for k, v := range walletFields {
		wf[k] = v
	}
	body := map[string]any{"wallet": wf}
	for k, v := range outer {
		body[k] = v
	}
	b := mustJSON(e.t, body)
	out, err := e.svc.ImportSubmit(e.ctx, e.call(request{method: "POST", path: "/v1/wallets/import/submit", body: b}), b)
	if err != nil {
		return custody.Wallet{}, err
	}
	return decodeWallet(e.t, out), nil
}

func TestImport(t *testing.T) {
	e := newEnv(t, envConfig{})
	owner := newAuthKey(t)

	// A private key, as the SDK sends it: the 32 raw bytes.
	k, _ := crypto.GenerateKey()
	raw := crypto.FromECDSA(k)
	addr := crypto.PubkeyToAddress(k.PublicKey)
	initKey := func(t *testing.T, addr string, extra string) *ecdh.PublicKey {
		t.Helper()
		pub, err := e.importInit(`{"address":"` + addr + `","chain_type":"ethereum","entropy_type":"private-key","encryption_type":"HPKE"` + extra + `}`)
		if err != nil {
			t.Fatalf("init: %v", err)
		}
		return pub
	}
	pub := initKey(t, addr.Hex(), "")
	w, err := e.importSubmit(pub, raw, map[string]any{"address": addr.Hex(), "entropy_type": "private-key"},
		map[string]any{"owner": map[string]string{"public_key": owner.pub}, "display_name": "imported"})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if w.Address != addr.Hex() || w.ImportedAt == nil || w.OwnerID == nil || w.DisplayName == nil {
		t.Fatalf("imported wallet %+v", w)
	}
	out, err := e.rpc(request{body: signTxBody(), signers: keysOf(owner)}, w.ID)
	if err != nil {
		t.Fatalf("imported wallet signs: %v", err)
	}
	signedTx(t, out)
	key, err := e.export(w.ID, false, owner)
	if err != nil || key != "0x"+hex.EncodeToString(raw) {
		t.Fatalf("export of the imported key: %v", err)
	}
	e.refused(t, custody.Invalid, func() error { _, err := e.export(w.ID, true, owner); return err })

	// The same address again: refused at init while the wallet lives.
	e.refused(t, custody.Conflict, func() error {
		_, err := e.importInit(`{"address":"` + addr.Hex() + `","chain_type":"ethereum","entropy_type":"private-key","encryption_type":"HPKE"}`)
		return err
	})

	// An HD wallet at index 3 from its mnemonic.
	entropy, _ := wallet.NewEntropy()
	phrase, _ := wallet.Mnemonic(entropy)
	_, hdAddr, _ := wallet.DeriveKeyAt(entropy, 3)
	hdPub, err := e.importInit(`{"address":"` + strings.ToLower(hdAddr.Hex()) + `","chain_type":"ethereum","entropy_type":"hd","encryption_type":"HPKE","index":3}`)
	if err != nil {
		t.Fatal(err)
	}
	hw, err := e.importSubmit(hdPub, []byte(phrase), map[string]any{"address": hdAddr.Hex(), "entropy_type": "hd", "index": 3},
		map[string]any{"owner": map[string]string{"public_key": owner.pub}})
	if err != nil {
		t.Fatalf("hd submit: %v", err)
	}
	if hw.Address != hdAddr.Hex() {
		t.Fatalf("hd wallet %s, want %s", hw.Address, hdAddr.Hex())
	}
	if got, err := e.export(hw.ID, true, owner); err != nil || got != phrase {
		t.Fatalf("seed phrase export of the hd import: %v", err)
	}
	if key, err := e.export(hw.ID, false, owner); err != nil || addressOfHex(t, key) != hdAddr {
		t.Fatalf("key export of the hd import: %v", err)
	}

	// Refusals: nothing is stored, and the one-time key is spent.
	k2, _ := crypto.GenerateKey()
	addr2 := crypto.PubkeyToAddress(k2.PublicKey)
	k3, _ := crypto.GenerateKey()
	wf := map[string]any{"address": addr2.Hex(), "entropy_type": "private-key"}
	t.Run("key of another address", func(t *testing.T) {
		pub := initKey(t, addr2.Hex(), "")
		e.refused(t, custody.Invalid, func() error { _, err := e.importSubmit(pub, crypto.FromECDSA(k3), wf, nil); return err })
		e.refused(t, custody.Invalid, func() error { _, err := e.importSubmit(pub, crypto.FromECDSA(k2), wf, nil); return err })
	})
	t.Run("no init", func(t *testing.T) {
		pub, _ := hpkebox.GenerateKey()
		e.refused(t, custody.Invalid, func() error { _, err := e.importSubmit(pub.PublicKey(), crypto.FromECDSA(k2), wf, nil); return err })
	})
	t.Run("sealed to another key", func(t *testing.T) {
		initKey(t, addr2.Hex(), "")
		pub, _ := hpkebox.GenerateKey()
		e.refused(t, custody.Invalid, func() error { _, err := e.importSubmit(pub.PublicKey(), crypto.FromECDSA(k2), wf, nil); return err })
	})
	t.Run("expired", func(t *testing.T) {
		pub := initKey(t, addr2.Hex(), "")
		e.clock.Advance(11 * time.Minute)
		e.refused(t, custody.Invalid, func() error { _, err := e.importSubmit(pub, crypto.FromECDSA(k2), wf, nil); return err })
	})
	t.Run("entropy type differs from init", func(t *testing.T) {
		pub := initKey(t, addr2.Hex(), "")
		e.refused(t, custody.Invalid, func() error {
			_, err := e.importSubmit(pub, []byte(phrase), map[string]any{"address": addr2.Hex(), "entropy_type": "hd", "index": 0}, nil)
			return err
		})
	})
	t.Run("not a key", func(t *testing.T) {
		pub := initKey(t, addr2.Hex(), "")
		e.refused(t, custody.Invalid, func() error { _, err := e.importSubmit(pub, []byte("short"), wf, nil); return err })
	})
	t.Run("bad owner", func(t *testing.T) {
		pub := initKey(t, addr2.Hex(), "")
		e.refused(t, custody.Invalid, func() error {
			_, err := e.importSubmit(pub, crypto.FromECDSA(k2), wf, map[string]any{"owner_id": "nope"})
			return err
		})
	})
	for _, tc := range []struct{ name, body string }{
		{"solana", `{"address":"` + addr2.Hex() + `","chain_type":"solana","entropy_type":"private-key","encryption_type":"HPKE"}`},
		{"no 0x", `{"address":"` + addr2.Hex()[2:] + `","chain_type":"ethereum","entropy_type":"private-key","encryption_type":"HPKE"}`},
		{"bad checksum", `{"address":"` + badChecksum(addr2.Hex()) + `","chain_type":"ethereum","entropy_type":"private-key","encryption_type":"HPKE"}`},
		{"hd without index", `{"address":"` + addr2.Hex() + `","chain_type":"ethereum","entropy_type":"hd","encryption_type":"HPKE"}`},
		{"hd negative index", `{"address":"` + addr2.Hex() + `","chain_type":"ethereum","entropy_type":"hd","encryption_type":"HPKE","index":-1}`},
		{"private key with index", `{"address":"` + addr2.Hex() + `","chain_type":"ethereum","entropy_type":"private-key","encryption_type":"HPKE","index":0}`},
		{"entropy type", `{"address":"` + addr2.Hex() + `","chain_type":"ethereum","entropy_type":"seed","encryption_type":"HPKE"}`},
		{"encryption type", `{"address":"` + addr2.Hex() + `","chain_type":"ethereum","entropy_type":"private-key","encryption_type":"NONE"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.refused(t, custody.Invalid, func() error { _, err := e.importInit(tc.body); return err })
		})
	}
	t.Run("hpke config", func(t *testing.T) {
		pub := initKey(t, addr2.Hex(), "")
		bad := map[string]any{"address": addr2.Hex(), "entropy_type": "private-key", "hpke_config": map[string]string{"aead_algorithm": "AES_GCM256"}}
		e.refused(t, custody.Invalid, func() error { _, err := e.importSubmit(pub, crypto.FromECDSA(k2), bad, nil); return err })
	})
	if n := e.count(`SELECT COUNT(*) FROM wallets WHERE address = ?`, addr2.Hex()); n != 0 {
		t.Fatalf("%d wallets stored for refused imports", n)
	}
}

// badChecksum flips the case of the first letter of a checksummed address.
func badChecksum(a string) string {
	b := []byte(a)
	for i := 2; i < len(b); i++ {
		switch {
		case b[i] >= 'a' && b[i] <= 'f':
			b[i] -= 32
			return string(b)
		case b[i] >= 'A' && b[i] <= 'F':
			b[i] += 32
			return string(b)
		}
	}
	return a
}
