package custody_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/recovery"
	"github.com/cachet-custody/cachet/wallet"
)

// testDevice plays a user's device: a fresh HPKE key per request, and the
// shares it has opened.
type testDevice struct {
	e      *env
	wallet custody.EmbeddedWallet
	shares map[string]recovery.Share // "device", "auth", "recovery"
	seen   *[][]byte                 // every plaintext share any device saw, for the database scan
}

func (e *env) device(seen *[][]byte) *testDevice {
	return &testDevice{e: e, shares: map[string]recovery.Share{}, seen: seen}
}

// post sends a device request with a fresh device key and returns the
// response and the key to open it.
func (d *testDevice) post(do func(body []byte) (json.RawMessage, error), fields map[string]any) (custody.EmbeddedRelease, *ecdh.PrivateKey, error) {
	d.e.t.Helper()
	priv, spki := newRecipient(d.e.t)
	fields["device_public_key"] = spki
	out, err := do(mustJSON(d.e.t, fields))
	if err != nil {
		return custody.EmbeddedRelease{}, nil, err
	}
	var r custody.EmbeddedRelease
	if err := json.Unmarshal(out, &r); err != nil {
		d.e.t.Fatalf("embedded response %s: %v", out, err)
	}
	d.wallet = r.EmbeddedWallet
	return r, priv, nil
}

func (d *testDevice) open(priv *ecdh.PrivateKey, box *hpkebox.Box, role string) []byte {
	d.e.t.Helper()
	if box == nil {
		d.e.t.Fatalf("no %s in the response", role)
	}
	b, err := hpkebox.OpenBox(priv, box.EncapsulatedKey, box.Ciphertext)
	if err != nil {
		d.e.t.Fatalf("open %s: %v", role, err)
	}
	if role != "encrypted recovery share" {
		d.shares[role] = recovery.Share(b)
		*d.seen = append(*d.seen, b)
	}
	return b
}

// entropy combines two shares the device holds.
func (d *testDevice) entropy(a, b string) []byte {
	d.e.t.Helper()
	ent, err := recovery.Combine(d.shares[a], d.shares[b])
	if err != nil {
		d.e.t.Fatalf("combine %s and %s: %v", a, b, err)
	}
	return ent
}

// sign personal_signs msg with the key from two shares and checks that it
// is the wallet's.
func (d *testDevice) sign(msg string, a, b string) []byte {
	d.e.t.Helper()
	priv, addr, err := wallet.DeriveKey(d.entropy(a, b))
	if err != nil {
		d.e.t.Fatal(err)
	}
	if addr.Hex() != d.wallet.Address {
		d.e.t.Fatalf("the shares give %s, not the wallet's %s", addr.Hex(), d.wallet.Address)
	}
	resp, err := (&wallet.Request{Method: wallet.MethodPersonalSign, Message: []byte(msg), MessageEncoding: "utf-8"}).Sign(priv)
	if err != nil {
		d.e.t.Fatal(err)
	}
	sig, _ := hexutil.Decode(resp.Data.(*wallet.SignatureData).Signature)
	return sig
}

// signTyped signs EIP-712 typed data with the key from two shares.
func (d *testDevice) signTyped(td apitypes.TypedData, a, b string) []byte {
	d.e.t.Helper()
	priv, _, err := wallet.DeriveKey(d.entropy(a, b))
	if err != nil {
		d.e.t.Fatal(err)
	}
	resp, err := (&wallet.Request{Method: wallet.MethodSignTypedData, TypedData: &td}).Sign(priv)
	if err != nil {
		d.e.t.Fatal(err)
	}
	sig, _ := hexutil.Decode(resp.Data.(*wallet.SignatureData).Signature)
	return sig
}

func (e *env) embeddedCall(path string, body []byte) custody.Call {
	return e.call(request{method: "POST", path: path, body: body})
}

func (e *env) createEmbedded(d *testDevice, jwt, method string) (custody.EmbeddedRelease, error) {
	e.t.Helper()
	r, priv, err := d.post(func(b []byte) (json.RawMessage, error) {
		return e.svc.CreateEmbeddedWallet(e.ctx, e.embeddedCall("/v1/embedded_wallets", b), b)
	}, map[string]any{"user_jwt": jwt, "recovery": map[string]string{"method": method}})
	if err != nil {
		return r, err
	}
	d.open(priv, r.DeviceShare, "device")
	if method != "automatic" {
		d.open(priv, r.RecoveryShare, "recovery")
	} else if r.RecoveryShare != nil {
		e.t.Fatal("automatic creation released the recovery share")
	}
	return r, nil
}

// recover runs POST .../recover and opens what comes back; for password or
// cloud it returns the device's sealed recovery share and KDF unopened.
func (e *env) recoverEmbedded(d *testDevice, id, jwt string) (custody.EmbeddedRelease, []byte, error) {
	e.t.Helper()
	r, priv, err := d.post(func(b []byte) (json.RawMessage, error) {
		return e.svc.RecoverEmbeddedWallet(e.ctx, e.embeddedCall("/v1/embedded_wallets/"+id+"/recover", b), id, b)
	}, map[string]any{"user_jwt": jwt})
	if err != nil {
		return r, nil, err
	}
	d.open(priv, r.AuthShare, "auth")
	if r.RecoveryShare != nil {
		d.open(priv, r.RecoveryShare, "recovery")
		return r, nil, nil
	}
	return r, d.open(priv, r.EncryptedRecoveryShare, "encrypted recovery share"), nil
}

// setRecovery runs challenge + PUT .../recovery with payload p, signed by
// the key from the two shares named (or by signer when not nil).
func (e *env) setRecovery(d *testDevice, id, jwt string, p recovery.Payload, a, b string, tamper func(*map[string]any)) (custody.EmbeddedWallet, error) {
	e.t.Helper()
	return e.answer(d, id, jwt, e.challenge(id, jwt), p, a, b, tamper)
}

// challenge asks for a challenge for a change of recovery method.
func (e *env) challenge(id, jwt string) custody.ChallengeResponse {
	e.t.Helper()
	cb := mustJSON(e.t, map[string]string{"user_jwt": jwt})
	out, err := e.svc.EmbeddedChallenge(e.ctx, e.embeddedCall("/v1/embedded_wallets/"+id+"/challenge", cb), id, cb)
	if err != nil {
		e.t.Fatalf("challenge: %v", err)
	}
	var ch custody.ChallengeResponse
	if err := json.Unmarshal(out, &ch); err != nil {
		e.t.Fatal(err)
	}
	return ch
}

// answer runs PUT .../recovery for a challenge.
func (e *env) answer(d *testDevice, id, jwt string, ch custody.ChallengeResponse, p recovery.Payload, a, b string, tamper func(*map[string]any)) (custody.EmbeddedWallet, error) {
	e.t.Helper()
	raw, _ := base64.StdEncoding.DecodeString(ch.EncryptionPublicKey)
	pub, err := hpkebox.ParseRawPublicKey(raw)
	if err != nil {
		e.t.Fatalf("challenge key: %v", err)
	}
	box, err := hpkebox.SealBox(pub, mustJSON(e.t, p))
	if err != nil {
		e.t.Fatal(err)
	}
	ct, _ := base64.StdEncoding.DecodeString(box.Ciphertext)
	sig := d.signTyped(recovery.ChallengeTypedData(id, ch.Challenge, sha256.Sum256(ct)), a, b)
	body := map[string]any{"user_jwt": jwt, "challenge": ch.Challenge, "signature": hexutil.Encode(sig), "payload": box}
	if tamper != nil {
		tamper(&body)
	}
	bb := mustJSON(e.t, body)
	out, err := e.svc.SetEmbeddedRecovery(e.ctx, e.call(request{method: "PUT", path: "/v1/embedded_wallets/" + id + "/recovery", body: bb}), id, bb)
	if err != nil {
		return custody.EmbeddedWallet{}, err
	}
	var w custody.EmbeddedWallet
	if err := json.Unmarshal(out, &w); err != nil {
		e.t.Fatal(err)
	}
	return w, nil
}

// authShare fetches the auth share alone, as a device that signs does.
func (e *env) authShare(d *testDevice, id, jwt string) {
	e.t.Helper()
	r, priv, err := d.post(func(b []byte) (json.RawMessage, error) {
		return e.svc.EmbeddedAuthShare(e.ctx, e.embeddedCall("/v1/embedded_wallets/"+id+"/auth_share", b), id, b)
	}, map[string]any{"user_jwt": jwt})
	if err != nil {
		e.t.Fatalf("auth_share: %v", err)
	}
	if r.RecoveryShare != nil || r.EncryptedRecoveryShare != nil || r.DeviceShare != nil {
		e.t.Fatal("auth_share released more than the auth share")
	}
	d.open(priv, r.AuthShare, "auth")
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// fastKDF keeps the tests quick: the smallest parameters Validate accepts.
func fastKDF(t testing.TB) recovery.KDF {
	k, err := recovery.NewKDF()
	if err != nil {
		t.Fatal(err)
	}
	k.Time, k.MemoryKiB, k.Threads = 1, 19456, 1
	return k
}

// Each recovery method end to end: create on device A, recover on device B,
// both sign the same message, and the signatures recover to the wallet's
// address.
func TestEmbeddedRecoveryMethods(t *testing.T) {
	e, p := newUserEnv(t, custody.Options{})
	e.createUser("alice")
	jwt := p.token("alice", time.Hour, nil)
	var seen [][]byte
	password := []byte("correct horse battery staple")
	cloud, err := recovery.NewCloudSecret()
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"automatic", "password", "cloud"} {
		t.Run(method, func(t *testing.T) {
			a := e.device(&seen)
			created, err := e.createEmbedded(a, jwt, method)
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			id := created.ID
			if method != "automatic" {
				if created.Status != "recovery_pending" {
					t.Fatalf("status %q", created.Status)
				}
				e.refused(t, custody.Conflict, func() error { _, _, err := e.recoverEmbedded(e.device(&seen), id, jwt); return err })
				pl := recovery.Payload{Method: method}
				if method == "password" {
					kdf := fastKDF(t)
					sealed, err := recovery.SealWithPassword(a.shares["recovery"], password, kdf, id)
					if err != nil {
						t.Fatal(err)
					}
					pl.EncryptedRecoveryShare, pl.KDF = b64(sealed), &kdf
				} else {
					sealed, err := recovery.SealWithSecret(a.shares["recovery"], cloud, id)
					if err != nil {
						t.Fatal(err)
					}
					pl.EncryptedRecoveryShare = b64(sealed)
				}
				w, err := e.setRecovery(a, id, jwt, pl, "device", "recovery", nil)
				if err != nil {
					t.Fatalf("set recovery: %v", err)
				}
				if w.Status != "active" || w.RecoveryMethod != method {
					t.Fatalf("after upload: %+v", w)
				}
			} else if created.Status != "active" {
				t.Fatalf("status %q", created.Status)
			}

			b := e.device(&seen)
			r, sealed, err := e.recoverEmbedded(b, id, jwt)
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			switch method {
			case "password":
				if r.RecoveryKDF == nil {
					t.Fatal("no recovery_kdf")
				}
				// A wrong password fails on the device; the server sees
				// nothing of it.
				before := e.snapshot()
				if _, err := recovery.OpenWithPassword(sealed, []byte("wrong"), *r.RecoveryKDF, id); !errors.Is(err, recovery.ErrWrongSecret) {
					t.Fatalf("wrong password: %v", err)
				}
				e.unchanged(t, before)
				share, err := recovery.OpenWithPassword(sealed, password, *r.RecoveryKDF, id)
				if err != nil {
					t.Fatal(err)
				}
				b.shares["recovery"] = share
			case "cloud":
				share, err := recovery.OpenWithSecret(sealed, cloud, id)
				if err != nil {
					t.Fatal(err)
				}
				b.shares["recovery"] = share
			}
			// Device B derives its own device share and both devices sign.
			own, err := recovery.ShareAt(b.shares["auth"], b.shares["recovery"], byte(r.ShareIndexes.Device))
			if err != nil || !bytes.Equal(own, a.shares["device"]) {
				t.Fatalf("device B's derived device share differs from A's: %v", err)
			}
			b.shares["device"] = own
			e.authShare(a, id, jwt)
			sigA := a.sign("one message", "device", "auth")
			sigB := b.sign("one message", "device", "auth")
			for _, sig := range [][]byte{sigA, sigB} {
				if addr, err := wallet.PersonalSigner([]byte("one message"), sig); err != nil || addr != common.HexToAddress(created.Address) {
					t.Fatalf("signature recovers %s, %v; want %s", addr.Hex(), err, created.Address)
				}
			}
			if n := e.audits("embedded_wallet.recover", "allow"); n < 1 {
				t.Fatal("recovery not audited")
			}
		})
	}
	e.scanForShares(t, seen)
}

// scanForShares fails if any plaintext share appears in the database files.
func (e *env) scanForShares(t *testing.T, seen [][]byte) {
	t.Helper()
	if len(seen) < 6 {
		t.Fatalf("only %d shares seen; the scan would prove little", len(seen))
	}
	var files [][]byte
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(e.path + suffix)
		if err == nil {
			files = append(files, b)
		}
	}
	for _, s := range seen {
		for _, part := range [][]byte{s, s[:len(s)-1]} { // the share with and without its index byte
			for _, f := range files {
				if bytes.Contains(f, part) {
					t.Fatalf("a plaintext share is in the database")
				}
			}
		}
	}
}

func TestEmbeddedRefusals(t *testing.T) {
	e, p := newUserEnv(t, custody.Options{Embedded: custody.EmbeddedOptions{RecoverPerWallet: 2, Window: time.Minute}})
	e.createUser("alice")
	e.createUser("bob")
	jwt := p.token("alice", time.Hour, nil)
	var seen [][]byte
	a := e.device(&seen)
	created, err := e.createEmbedded(a, jwt, "automatic")
	if err != nil {
		t.Fatal(err)
	}
	id := created.ID

	// Another user's JWT: the wallet does not exist for them.
	e.refused(t, custody.NotFound, func() error {
		_, _, err := e.recoverEmbedded(e.device(&seen), id, p.token("bob", time.Hour, nil))
		return err
	})
	// Expired and forged JWTs.
	e.refused(t, custody.Unauthorized, func() error {
		_, _, err := e.recoverEmbedded(e.device(&seen), id, p.token("alice", -time.Hour, nil))
		return err
	})
	forged := newIDP(t, e.clock.Now).token("alice", time.Hour, nil)
	e.refused(t, custody.Unauthorized, func() error { _, _, err := e.recoverEmbedded(e.device(&seen), id, forged); return err })
	e.refused(t, custody.NotFound, func() error { _, _, err := e.recoverEmbedded(e.device(&seen), "nope", jwt); return err })

	// The per-wallet limit trips, says when to retry, and recovers.
	for range 2 {
		if _, _, err := e.recoverEmbedded(e.device(&seen), id, jwt); err != nil {
			t.Fatal(err)
		}
	}
	ce := e.refused(t, custody.TooManyRequests, func() error { _, _, err := e.recoverEmbedded(e.device(&seen), id, jwt); return err })
	if !strings.Contains(ce.Message, "try again in") {
		t.Fatalf("message %q", ce.Message)
	}
	e.clock.Advance(61 * time.Second)
	if _, _, err := e.recoverEmbedded(e.device(&seen), id, jwt); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	if n := e.audits("embedded_wallet.recover", "allow"); n != 3 {
		t.Fatalf("%d recovery records, want one per release (3)", n)
	}

	// Changing the recovery method: only with the wallet's own key, over
	// this challenge and this payload.
	kdf := fastKDF(t)
	sealed, _ := recovery.SealWithPassword(a.shares["device"], []byte("pw"), kdf, id) // any valid-looking share
	pl := recovery.Payload{Method: "password", EncryptedRecoveryShare: b64(sealed), KDF: &kdf}
	b := e.device(&seen)
	if _, _, err := e.recoverEmbedded(b, id, jwt); err != nil {
		t.Fatal(err)
	}
	other := e.device(&seen)
	if _, err := e.createEmbedded(other, jwt, "automatic"); err != nil {
		t.Fatal(err)
	}
	e.authShare(other, other.wallet.ID, jwt)
	for _, tc := range []struct {
		name   string
		a, b   string
		dev    *testDevice
		tamper func(*map[string]any)
		want   custody.Kind
	}{
		{"another wallet's key", "device", "auth", other, nil, custody.Unauthorized},
		{"payload swapped after signing", "auth", "recovery", b, func(m *map[string]any) {
			box := (*m)["payload"].(hpkebox.Box)
			box.Ciphertext = b64(append([]byte{1}, make([]byte, 40)...))
			(*m)["payload"] = box
		}, custody.Unauthorized},
		{"challenge of another wallet", "auth", "recovery", b, func(m *map[string]any) { (*m)["challenge"] = "00" }, custody.Invalid},
		// A device tricked into personal_signing the EIP-712 hash itself
		// signs another digest (EIP-191 prefixes it): refused.
		{"personal_sign of the challenge digest", "auth", "recovery", b, func(m *map[string]any) {
			box := (*m)["payload"].(hpkebox.Box)
			ct, _ := base64.StdEncoding.DecodeString(box.Ciphertext)
			cd, err := recovery.ChallengeDigest(id, (*m)["challenge"].(string), sha256.Sum256(ct))
			if err != nil {
				t.Fatal(err)
			}
			(*m)["signature"] = hexutil.Encode(b.sign(string(cd), "auth", "recovery"))
		}, custody.Unauthorized},
		{"bob's JWT", "auth", "recovery", b, func(m *map[string]any) { (*m)["user_jwt"] = p.token("bob", time.Hour, nil) }, custody.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := e.challenge(id, jwt)
			e.refused(t, tc.want, func() error { _, err := e.answer(tc.dev, id, jwt, ch, pl, tc.a, tc.b, tc.tamper); return err })
		})
	}
	// An automatic payload whose share is not this wallet's recovery share.
	bad := recovery.Payload{Method: "automatic", RecoveryShare: b64(other.shares["device"])}
	ch := e.challenge(id, jwt)
	e.refused(t, custody.Invalid, func() error { _, err := e.answer(b, id, jwt, ch, bad, "auth", "recovery", nil); return err })

	// Switch to password and back to automatic: the device derives the
	// recovery share from the two it holds.
	if w, err := e.setRecovery(b, id, jwt, pl, "auth", "recovery", nil); err != nil || w.RecoveryMethod != "password" {
		t.Fatalf("to password: %+v, %v", w, err)
	}
	if n := e.count(`SELECT COUNT(*) FROM embedded_wallets WHERE id = ? AND sealed_recovery_share IS NULL AND device_recovery_share IS NOT NULL`, id); n != 1 {
		t.Fatal("the sealed automatic share was kept after the switch to password")
	}
	rec, err := recovery.ShareAt(a.shares["device"], b.shares["auth"], byte(created.ShareIndexes.Recovery))
	if err != nil {
		t.Fatal(err)
	}
	back := recovery.Payload{Method: "automatic", RecoveryShare: b64(rec)}
	if w, err := e.setRecovery(b, id, jwt, back, "auth", "recovery", nil); err != nil || w.RecoveryMethod != "automatic" {
		t.Fatalf("back to automatic: %+v, %v", w, err)
	}
	// A challenge answers once, even when its answer was refused.
	ch = e.challenge(id, jwt)
	e.refused(t, custody.Unauthorized, func() error { _, err := e.answer(other, id, jwt, ch, back, "device", "auth", nil); return err })
	e.refused(t, custody.Invalid, func() error { _, err := e.answer(b, id, jwt, ch, back, "auth", "recovery", nil); return err })

	// The user owns an embedded wallet: not deleted.
	e.refused(t, custody.Conflict, func() error {
		u, _ := e.svc.UserByCustomID(e.ctx, appA, []byte(`{"custom_user_id":"alice"}`))
		_, err := e.svc.DeleteUser(e.ctx, e.call(request{method: "DELETE", path: "/v1/users/" + u.ID}), u.ID)
		return err
	})

	// The auth share alone, for a device that signs.
	c := e.device(&seen)
	c.shares["device"] = a.shares["device"]
	c.wallet = created.EmbeddedWallet
	e.authShare(c, id, jwt)
	c.sign("hello", "device", "auth")
	e.scanForShares(t, seen)
}

// A store whose shares were sealed under another root: the shares do not
// unseal, the error says so, and nothing is released.
func TestEmbeddedOtherRoot(t *testing.T) {
	e, p := newUserEnv(t, custody.Options{})
	e.createUser("alice")
	jwt := p.token("alice", time.Hour, nil)
	var seen [][]byte
	created, err := e.createEmbedded(e.device(&seen), jwt, "automatic")
	if err != nil {
		t.Fatal(err)
	}
	other := custody.New(e.st, newBackend(t, slog.Default()), nil, custody.Options{JWT: func(string) (custody.JWTVerifier, bool) {
		v, _ := custody.JWTOf(e.svc, appA)
		return v, true
	}})
	custody.SetNow(other, e.clock.Now)
	_, spki := newRecipient(t)
	body := mustJSON(t, map[string]string{"user_jwt": jwt, "device_public_key": spki})
	before := e.snapshot()
	_, err = other.RecoverEmbeddedWallet(e.ctx, e.embeddedCall("/v1/embedded_wallets/"+created.ID+"/recover", body), created.ID, body)
	ce := wantKind(t, err, custody.Unavailable)
	if !strings.Contains(ce.Message, "another root") || !strings.Contains(ce.Message, "Nothing was released") {
		t.Fatalf("message %q", ce.Message)
	}
	e.unchanged(t, before)
}

// Open challenges are capped per wallet and per user as well as per app,
// so one user who asks for challenges without answering them blocks only
// their own wallet's recovery changes, never another user's.
func TestChallengesCappedPerWalletAndUser(t *testing.T) {
	e, p := newUserEnv(t, custody.Options{Embedded: custody.EmbeddedOptions{MaxChallenges: 100, MaxChallengesPerUser: 4, MaxChallengesPerWallet: 2}})
	e.createUser("alice")
	e.createUser("bob")
	var seen [][]byte
	alice, bob := p.token("alice", time.Hour, nil), p.token("bob", time.Hour, nil)
	ask := func(id, jwt string) error {
		cb := mustJSON(t, map[string]string{"user_jwt": jwt})
		_, err := e.svc.EmbeddedChallenge(e.ctx, e.embeddedCall("/v1/embedded_wallets/"+id+"/challenge", cb), id, cb)
		return err
	}
	var aliceWallets []string
	for range 3 {
		w, err := e.createEmbedded(e.device(&seen), alice, "automatic")
		if err != nil {
			t.Fatal(err)
		}
		aliceWallets = append(aliceWallets, w.ID)
	}
	bobs, err := e.createEmbedded(e.device(&seen), bob, "automatic")
	if err != nil {
		t.Fatal(err)
	}
	// Two per wallet.
	for range 2 {
		if err := ask(aliceWallets[0], alice); err != nil {
			t.Fatal(err)
		}
	}
	ce := wantKind(t, ask(aliceWallets[0], alice), custody.TooManyRequests)
	if !strings.Contains(ce.Message, "wallet has 2 open challenges") {
		t.Fatalf("message %q", ce.Message)
	}
	// Four per user.
	for range 2 {
		if err := ask(aliceWallets[1], alice); err != nil {
			t.Fatal(err)
		}
	}
	ce = wantKind(t, ask(aliceWallets[2], alice), custody.TooManyRequests)
	if !strings.Contains(ce.Message, "user has 4 open challenges") {
		t.Fatalf("message %q", ce.Message)
	}
	// Bob is not affected.
	if err := ask(bobs.ID, bob); err != nil {
		t.Fatalf("another user's challenge: %v", err)
	}
	// Expired challenges free the slots.
	e.clock.Advance(time.Hour)
	if err := ask(aliceWallets[2], alice); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}
