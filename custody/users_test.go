package custody_test

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/jwtauth"
	"github.com/cachet-custody/cachet/keys"
)

const (
	testIssuer   = "https://idp.example.test/"
	testAudience = "cachet-tests"
)

// idp is a test identity provider: an ES256 key whose public half the
// service's jwtauth verifier reads from a PEM file.
type idp struct {
	t    testing.TB
	key  *ecdsa.PrivateKey
	now  func() time.Time
	path string
}

func newIDP(t testing.TB, now func() time.Time) *idp {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "idp.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &idp{t: t, key: k, now: now, path: path}
}

// token signs a JWT for subject that expires after ttl, with claims
// overriding the defaults.
func (p *idp) token(subject string, ttl time.Duration, extra map[string]any) string {
	p.t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: p.key}, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	now := p.now()
	claims := map[string]any{"iss": testIssuer, "aud": testAudience, "sub": subject, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	tok, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		p.t.Fatal(err)
	}
	return tok
}

// newUserEnv is an env whose appA verifies JWTs of a test IdP.
func newUserEnv(t testing.TB, opts custody.Options) (*env, *idp) {
	t.Helper()
	var p *idp
	var v *jwtauth.Verifier
	opts.JWT = func(app string) (custody.JWTVerifier, bool) {
		if app != appA {
			return nil, false
		}
		return v, true
	}
	e := newEnv(t, envConfig{opts: opts})
	p = newIDP(t, e.clock.Now)
	var err error
	v, err = jwtauth.New(jwtauth.Config{PublicKeyFile: p.path, Issuer: testIssuer, Audience: testAudience}, jwtauth.Options{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e, p
}

func (e *env) createUserErr(app, customID string) (custody.User, error) {
	e.t.Helper()
	body := mustJSON(e.t, map[string]any{"linked_accounts": []map[string]string{{"type": "custom_auth", "custom_user_id": customID}}})
	out, err := e.svc.CreateUser(e.ctx, e.call(request{app: app, method: "POST", path: "/v1/users", body: body}), body)
	if err != nil {
		return custody.User{}, err
	}
	var u custody.User
	if err := json.Unmarshal(out, &u); err != nil {
		e.t.Fatalf("user response %s: %v", out, err)
	}
	return u, nil
}

func (e *env) createUser(customID string) custody.User {
	e.t.Helper()
	u, err := e.createUserErr(appA, customID)
	if err != nil {
		e.t.Fatalf("CreateUser(%s): %v", customID, err)
	}
	return u
}

// authenticateErr exchanges a JWT for a user key as the SDK does: a fresh
// HPKE recipient key, then the decrypted base64 PKCS#8 key.
func (e *env) authenticateErr(jwtText string) (authKey, custody.AuthenticateResponse, error) {
	e.t.Helper()
	recipient, err := hpkebox.GenerateKey()
	if err != nil {
		e.t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(recipient.PublicKey())
	if err != nil {
		e.t.Fatal(err)
	}
	body := mustJSON(e.t, map[string]string{"user_jwt": jwtText, "encryption_type": "HPKE", "recipient_public_key": base64.StdEncoding.EncodeToString(spki)})
	out, err := e.svc.Authenticate(e.ctx, e.call(request{method: "POST", path: "/v1/wallets/authenticate", body: body}), body)
	if err != nil {
		return authKey{}, custody.AuthenticateResponse{}, err
	}
	var resp custody.AuthenticateResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		e.t.Fatalf("authenticate response %s: %v", out, err)
	}
	return e.openUserKey(recipient, resp), resp, nil
}

func (e *env) openUserKey(recipient *ecdh.PrivateKey, resp custody.AuthenticateResponse) authKey {
	e.t.Helper()
	box := resp.EncryptedAuthorizationKey
	if box.EncryptionType != "HPKE" {
		e.t.Fatalf("encryption_type %q", box.EncryptionType)
	}
	text, err := hpkebox.OpenBox(recipient, box.EncapsulatedKey, box.Ciphertext)
	if err != nil {
		e.t.Fatalf("open user key: %v", err)
	}
	der, err := base64.StdEncoding.DecodeString(string(text))
	if err != nil {
		e.t.Fatalf("user key is not base64: %v", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		e.t.Fatalf("user key is not PKCS#8: %v", err)
	}
	priv := k.(*ecdsa.PrivateKey)
	pub, err := keys.PublicKeySPKI(&priv.PublicKey)
	if err != nil {
		e.t.Fatal(err)
	}
	return authKey{priv: priv, pub: pub}
}

func (e *env) authenticate(jwtText string) (authKey, custody.AuthenticateResponse) {
	e.t.Helper()
	k, resp, err := e.authenticateErr(jwtText)
	if err != nil {
		e.t.Fatalf("Authenticate: %v", err)
	}
	return k, resp
}

func TestUsers(t *testing.T) {
	e := newEnv(t, envConfig{})
	u := e.createUser("alice@idp")
	if !strings.HasPrefix(u.ID, "did:privy:") || len(u.LinkedAccounts) != 1 || u.LinkedAccounts[0].Type != "custom_auth" ||
		u.LinkedAccounts[0].CustomUserID != "alice@idp" || u.LinkedAccounts[0].FirstVerifiedAt != nil || u.MFAMethods == nil {
		t.Fatalf("user = %+v", u)
	}
	if got, err := e.svc.GetUser(e.ctx, appA, u.ID); err != nil || got.ID != u.ID {
		t.Fatalf("GetUser = %+v, %v", got, err)
	}
	wantKind(t, func() error { _, err := e.svc.GetUser(e.ctx, appB, u.ID); return err }(), custody.NotFound)
	got, err := e.svc.UserByCustomID(e.ctx, appA, []byte(`{"custom_user_id":"alice@idp"}`))
	if err != nil || got.ID != u.ID {
		t.Fatalf("UserByCustomID = %+v, %v", got, err)
	}
	wantKind(t, func() error {
		_, err := e.svc.UserByCustomID(e.ctx, appB, []byte(`{"custom_user_id":"alice@idp"}`))
		return err
	}(), custody.NotFound)
	e.refused(t, custody.Conflict, func() error { _, err := e.createUserErr(appA, "alice@idp"); return err })
	if _, err := e.createUserErr(appB, "alice@idp"); err != nil {
		t.Fatalf("the same custom id in another app: %v", err)
	}

	for _, tc := range []struct{ name, body, want string }{
		{"no accounts", `{"linked_accounts":[]}`, "linked_accounts"},
		{"two accounts", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"a"},{"type":"custom_auth","custom_user_id":"b"}]}`, "linked_accounts"},
		{"email account", `{"linked_accounts":[{"type":"email","address":"a@b.c"}]}`, "linked_accounts[0]"},
		{"empty custom id", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":""}]}`, "custom_user_id"},
		{"long custom id", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"` + strings.Repeat("x", 257) + `"}]}`, "custom_user_id"},
		{"numeric custom id", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":7}]}`, "custom_user_id"},
		{"wallets", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"w"}],"wallets":[{"chain_type":"ethereum"}]}`, "wallets"},
		{"unknown field", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"u"}],"mfa":true}`, "mfa"},
		{"nested metadata", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"m"}],"custom_metadata":{"a":{"b":1}}}`, "custom_metadata.a"},
		{"duplicate key", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"d","custom_user_id":"e"}]}`, "custom_user_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ce := e.refused(t, custody.Invalid, func() error {
				_, err := e.svc.CreateUser(e.ctx, e.call(request{method: "POST", path: "/v1/users", body: []byte(tc.body)}), []byte(tc.body))
				return err
			})
			if !strings.Contains(ce.Message, tc.want) {
				t.Errorf("message %q does not name %q", ce.Message, tc.want)
			}
		})
	}

	meta := `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"meta"}],"custom_metadata":{"plan":"pro","seats":3,"beta":true}}`
	out, err := e.svc.CreateUser(e.ctx, e.call(request{method: "POST", path: "/v1/users", body: []byte(meta)}), []byte(meta))
	if err != nil || !strings.Contains(string(out), `"custom_metadata":{"beta":true,"plan":"pro","seats":3}`) {
		t.Fatalf("custom metadata: %s, %v", out, err)
	}

	// Pagination in creation order.
	for i := range 3 {
		e.createUser("page-" + string(rune('a'+i)))
	}
	var all []string
	cursor := ""
	for {
		page, err := e.svc.ListUsers(e.ctx, appA, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range page.Data {
			all = append(all, u.LinkedAccounts[0].CustomUserID)
		}
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	if strings.Join(all, ",") != "alice@idp,meta,page-a,page-b,page-c" {
		t.Fatalf("listed %v", all)
	}
}

// A wallet owned by a user: a user key from the user's JWT signs for it, a
// key past its expiry or of another user does not, and a JWT the verifier
// refuses gets no key.
func TestUserKeys(t *testing.T) {
	e, p := newUserEnv(t, custody.Options{UserKeyLifetime: 10 * time.Minute, MaxUserKeys: 2})
	alice := e.createUser("alice")
	bob := e.createUser("bob")
	w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"user_id":"`+alice.ID+`"}}`)

	ak, resp := e.authenticate(p.token("alice", time.Hour, nil))
	if want := e.clock.Now().Add(10 * time.Minute).UnixMilli(); resp.ExpiresAt != want {
		t.Fatalf("expires_at = %d, want now + lifetime = %d", resp.ExpiresAt, want)
	}
	if len(resp.Wallets) != 1 || resp.Wallets[0].ID != w.ID {
		t.Fatalf("wallets = %v, want [%s]", walletIDs(resp.Wallets), w.ID)
	}
	out, err := e.rpc(request{body: signTxBody(), signers: keysOf(ak)}, w.ID)
	if err != nil {
		t.Fatalf("rpc signed by the user key: %v", err)
	}
	signedTx(t, out)
	if u, _ := e.svc.GetUser(e.ctx, appA, alice.ID); u.LinkedAccounts[0].LatestVerifiedAt == nil {
		t.Fatal("latest_verified_at not set")
	}

	bk, resp := e.authenticate(p.token("bob", time.Hour, nil))
	if len(resp.Wallets) != 0 {
		t.Fatalf("bob's wallets = %v", walletIDs(resp.Wallets))
	}
	e.refused(t, custody.Unauthorized, func() error { _, err := e.rpc(request{body: signTxBody(), signers: keysOf(bk)}, w.ID); return err })

	// A JWT that expires before the lifetime caps the key's life.
	short, resp := e.authenticate(p.token("alice", 2*time.Minute, nil))
	if want := e.clock.Now().Add(2 * time.Minute).Truncate(time.Second).UnixMilli(); resp.ExpiresAt != want {
		t.Fatalf("expires_at = %d, want the JWT's exp %d", resp.ExpiresAt, want)
	}
	e.clock.Advance(3 * time.Minute)
	ce := e.refused(t, custody.Unauthorized, func() error { _, err := e.rpc(request{body: signTxBody(), signers: keysOf(short)}, w.ID); return err })
	t.Logf("expired user key: %s", ce.Message)
	if _, err := e.rpc(request{body: signTxBody(), signers: keysOf(ak)}, w.ID); err != nil {
		t.Fatalf("the longer-lived key still signs: %v", err)
	}
	e.clock.Advance(8 * time.Minute) // 11 minutes after ak was issued
	e.refused(t, custody.Unauthorized, func() error { _, err := e.rpc(request{body: signTxBody(), signers: keysOf(ak)}, w.ID); return err })

	// MaxUserKeys = 2: a third key revokes the oldest.
	k1, _ := e.authenticate(p.token("alice", time.Hour, nil))
	k2, _ := e.authenticate(p.token("alice", time.Hour, nil))
	k3, _ := e.authenticate(p.token("alice", time.Hour, nil))
	e.refused(t, custody.Unauthorized, func() error { _, err := e.rpc(request{body: signTxBody(), signers: keysOf(k1)}, w.ID); return err })
	for _, k := range keysOf(k2, k3) {
		if _, err := e.rpc(request{body: signTxBody(), signers: keysOf(k)}, w.ID); err != nil {
			t.Fatalf("a recent key: %v", err)
		}
	}
	if n := e.audits("user_key.issue", "allow"); n != 6 {
		t.Fatalf("%d user_key.issue records, want 6", n)
	}

	// Refusals: each says which check failed, never echoes the token, and
	// issues nothing.
	other := newIDP(t, e.clock.Now)
	for _, tc := range []struct {
		name, token, want string
		kind              custody.Kind
	}{
		{"expired", p.token("alice", -time.Hour, nil), "(expiry)", custody.Unauthorized},
		{"other issuer", p.token("alice", time.Hour, map[string]any{"iss": "https://evil.example/"}), "(issuer)", custody.Unauthorized},
		{"other audience", p.token("alice", time.Hour, map[string]any{"aud": "another-app"}), "(audience)", custody.Unauthorized},
		{"unknown key", other.token("alice", time.Hour, nil), "(signature)", custody.Unauthorized},
		{"garbage", "not.a.jwt", "(format)", custody.Unauthorized},
		{"unknown user", p.token("mallory", time.Hour, nil), "mallory", custody.NotFound},
		{"expires within the minimum life", p.token("alice", 2*time.Second, nil), "(expiry)", custody.Unauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ce := e.refused(t, tc.kind, func() error { _, _, err := e.authenticateErr(tc.token); return err })
			if !strings.Contains(ce.Message, tc.want) || strings.Contains(ce.Message, tc.token) {
				t.Errorf("message %q: want %q and no token", ce.Message, tc.want)
			}
		})
	}
	// An app without JWT settings exchanges nothing.
	body := mustJSON(t, map[string]string{"user_jwt": p.token("alice", time.Hour, nil), "encryption_type": "HPKE", "recipient_public_key": ak.pub})
	e.refused(t, custody.Forbidden, func() error {
		_, err := e.svc.Authenticate(e.ctx, e.call(request{app: appB, method: "POST", path: "/v1/wallets/authenticate", body: body}), body)
		return err
	})
	for _, bad := range []string{
		`{"user_jwt":"x","encryption_type":"NONE","recipient_public_key":"` + ak.pub + `"}`,
		`{"user_jwt":"x","encryption_type":"HPKE","recipient_public_key":"AAAA"}`,
		`{"user_jwt":"x","encryption_type":"HPKE"}`,
		`{"encryption_type":"HPKE","recipient_public_key":"` + ak.pub + `"}`,
	} {
		e.refused(t, custody.Invalid, func() error {
			_, err := e.svc.Authenticate(e.ctx, e.call(request{method: "POST", path: "/v1/wallets/authenticate", body: []byte(bad)}), []byte(bad))
			return err
		})
	}

	// A user who owns a live wallet is not deleted; once the wallet is
	// archived the user is, and the user's keys stop approving.
	del := func(id string) error {
		_, err := e.svc.DeleteUser(e.ctx, e.call(request{method: "DELETE", path: "/v1/users/" + id}), id)
		return err
	}
	ce = e.refused(t, custody.Conflict, func() error { return del(alice.ID) })
	if !strings.Contains(ce.Message, w.ID) {
		t.Fatalf("conflict %q does not name the wallet", ce.Message)
	}
	if _, err := e.archiveWallet(request{signers: keysOf(k3)}, w.ID); err != nil {
		t.Fatalf("archive with the user key: %v", err)
	}
	if err := del(alice.ID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if n := e.count(`SELECT COUNT(*) FROM user_keys WHERE user_id = ? AND revoked_at IS NULL`, alice.ID); n != 0 {
		t.Fatalf("%d keys of a deleted user still live", n)
	}
	e.refused(t, custody.NotFound, func() error { _, _, err := e.authenticateErr(p.token("alice", time.Hour, nil)); return err })
	if err := del(bob.ID); err != nil {
		t.Fatalf("delete bob: %v", err)
	}
	// Purge drops the expired and revoked keys.
	if err := e.svc.Purge(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.count(`SELECT COUNT(*) FROM user_keys`); n != 0 {
		t.Fatalf("%d user keys left after purge", n)
	}
}

// The seed's recipes with a user and a server key: 1-of-2 lets the server
// alone update the wallet; 2-of-2 needs both, the user's through a user
// key.
func TestUserQuorums(t *testing.T) {
	e, p := newUserEnv(t, custody.Options{})
	alice := e.createUser("alice")
	server := newAuthKey(t)
	one := e.createQuorum(appA, `{"public_keys":["`+server.pub+`"],"user_ids":["`+alice.ID+`"],"authorization_threshold":1}`)
	two := e.createQuorum(appA, `{"public_keys":["`+server.pub+`"],"user_ids":["`+alice.ID+`"],"authorization_threshold":2}`)
	if len(two.UserIDs) != 1 || two.UserIDs[0] != alice.ID {
		t.Fatalf("quorum users = %v", two.UserIDs)
	}
	w1 := e.ownedWallet(one.ID)
	w2 := e.ownedWallet(two.ID)
	uk, resp := e.authenticate(p.token("alice", time.Hour, nil))
	if got := sorted(walletIDs(resp.Wallets)); strings.Join(got, ",") != strings.Join(sorted([]string{w1.ID, w2.ID}), ",") {
		t.Fatalf("wallets = %v", got)
	}
	signer := e.quorumOf(appA, 1, keysOf(newAuthKey(t)))
	if _, err := e.updateWallet(request{body: []byte(`{"additional_signers":[{"signer_id":"` + signer.ID + `"}]}`), signers: keysOf(server)}, w1.ID); err != nil {
		t.Fatalf("1-of-2: the server alone: %v", err)
	}
	if _, err := e.rpc(request{body: signTxBody(), signers: keysOf(uk)}, w1.ID); err != nil {
		t.Fatalf("1-of-2: the user alone: %v", err)
	}
	e.check(t, opRPC, w2.ID, "2-of-2 user alone", keysOf(uk), custody.Unauthorized)
	e.check(t, opRPC, w2.ID, "2-of-2 server alone", keysOf(server), custody.Unauthorized)
	e.check(t, opRPC, w2.ID, "2-of-2 both", keysOf(uk, server), 0)

	for _, tc := range []struct{ name, body string }{
		{"unknown user", `{"user_ids":["did:privy:nobody"]}`},
		{"user of another app", `{"user_ids":["` + func() string { u, _ := e.createUserErr(appB, "b"); return u.ID }() + `"]}`},
		{"user twice", `{"user_ids":["` + alice.ID + `","` + alice.ID + `"]}`},
	} {
		e.refused(t, custody.Invalid, func() error { _, err := e.createQuorumErr(appA, tc.body); return err })
	}
	e.refused(t, custody.Invalid, func() error {
		_, err := e.createWalletReq(request{body: []byte(`{"chain_type":"ethereum","owner":{"user_id":"did:privy:nobody"}}`)})
		return err
	})
	// Alice is a member of explicit quorums: not deleted.
	e.refused(t, custody.Conflict, func() error {
		_, err := e.svc.DeleteUser(e.ctx, e.call(request{method: "DELETE", path: "/v1/users/" + alice.ID}), alice.ID)
		return err
	})
}
