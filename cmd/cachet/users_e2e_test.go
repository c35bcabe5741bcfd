package main

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/hpkebox"
)

// runNode runs one of tests/node's files with node --test against running
// appliances, and checks that want tests ran and none failed. d is the
// daemon whose log is shown on failure.
func runNode(t *testing.T, file string, want int, d *proc, env ...string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: run `make deps` (scripts/install-deps installs Node.js and the SDK)")
	}
	dir, _ := filepath.Abs("../../tests/node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@privy-io", "node")); err != nil {
		t.Fatal("tests/node/node_modules is missing: run `make deps` (npm ci in tests/node)")
	}
	cmd := exec.Command(node, "--test", "--test-reporter=spec", file)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test %s:\n%s", file, out)
	if err != nil {
		t.Fatalf("the Node SDK tests failed: %v\ndaemon log:\n%s", err, d.stderr.String())
	}
	if !strings.Contains(string(out), "pass "+strconv.Itoa(want)) || !strings.Contains(string(out), "fail 0") {
		t.Fatalf("the Node SDK tests did not all run (want %d)", want)
	}
}

// testIdP is the identity provider of the app's users: an RSA key in the
// JWKS file the appliance's config names, and the tokens it issues.
type testIdP struct {
	t        testing.TB
	key      *rsa.PrivateKey
	jwksFile string
}

const (
	idpIssuer   = "https://login.customer.test/"
	idpAudience = "cachet-e2e"
	idpKid      = "customer-2026-11"
)

func newTestIdP(t testing.TB, dir string) *testIdP {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// A second, EC key shares the set, as IdPs rotating keys publish both.
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &k.PublicKey, KeyID: idpKid, Algorithm: "RS256", Use: "sig"},
		{Key: &ec.PublicKey, KeyID: "customer-next", Algorithm: "ES256", Use: "sig"},
	}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return &testIdP{t: t, key: k, jwksFile: writeFile(t, filepath.Join(dir, "idp", "jwks.json"), string(b), 0o644)}
}

// token is a JWT for subject, expiring after ttl, signed by key (the IdP's
// own when nil) under the IdP's kid, with claims overridden by extra.
func (p *testIdP) token(subject string, ttl time.Duration, key *rsa.PrivateKey, extra map[string]any) string {
	p.t.Helper()
	if key == nil {
		key = p.key
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", idpKid).WithType("JWT"))
	if err != nil {
		p.t.Fatal(err)
	}
	now := time.Now()
	claims := map[string]any{"iss": idpIssuer, "aud": []string{idpAudience, "other-api"}, "sub": subject, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	s, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		p.t.Fatal(err)
	}
	return s
}

// jwtSection is the [apps.jwt] table of the appliance's one app.
func (p *testIdP) jwtSection() string {
	return "[apps.jwt]\njwks_file = " + jsonString(p.jwksFile) + "\nissuer = " + jsonString(idpIssuer) +
		"\naudience = " + jsonString(idpAudience) + "\nalgorithms = [\"RS256\", \"ES256\"]\n"
}

func jsonString(s string) string { b, _ := json.Marshal(s); return string(b) }

// Issue 5's must-show, with Privy's own Node SDK over the socket
// (tests/node/users.test.mjs): a wallet owned by a user signs through the
// SDK's user_jwts context; expired, foreign-issuer, foreign-audience and
// unknown-key JWTs are refused; 1-of-2 and 2-of-2 user+server quorums;
// export through a 1-of-2 quorum decrypted by the SDK's own HPKE code; the
// key imported into a second appliance (on swtpm) signs for the same
// address.
func TestUsersNodeSDK(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	idp := newTestIdP(t, a.dir)
	appendFile(t, a.cfg, idp.jwtSection())
	a.init()
	da := a.serve(a.cfg)
	b := newAppliance(t, config.KindTPM)
	b.init()
	db := b.serve(b.cfg)

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	runNode(t, "users.test.mjs", 6, da,
		"CACHET_BASE_URL=http://localhost",
		"CACHET_SOCKET="+a.socket, "CACHET_APP_ID="+a.appID, "CACHET_APP_SECRET="+a.appSecret,
		"CACHET_SOCKET_B="+b.socket, "CACHET_APP_ID_B="+b.appID, "CACHET_APP_SECRET_B="+b.appSecret,
		"CACHET_USER=alice@customer",
		"CACHET_JWT="+idp.token("alice@customer", time.Hour, nil, nil),
		"CACHET_JWT_EXPIRED="+idp.token("alice@customer", -5*time.Minute, nil, nil),
		"CACHET_JWT_OTHER_ISSUER="+idp.token("alice@customer", time.Hour, nil, map[string]any{"iss": "https://login.attacker.test/"}),
		"CACHET_JWT_OTHER_AUDIENCE="+idp.token("alice@customer", time.Hour, nil, map[string]any{"aud": "another-service"}),
		"CACHET_JWT_UNKNOWN_KEY="+idp.token("alice@customer", time.Hour, other, nil),
	)
	da.stop()
	db.stop()
	dbA := filepath.Join(a.dir, "data", "cachet.db")
	for action, min := range map[string]int{"user.create": 1, "user_key.issue": 1, "wallet.export": 3, "api.refused": 4} {
		if n := countRecords(t, dbA, action); n < min {
			t.Errorf("%d %s records on appliance A, want at least %d", n, action, min)
		}
	}
	if n := countRecords(t, filepath.Join(b.dir, "data", "cachet.db"), "wallet.import"); n != 2 {
		t.Errorf("%d wallet.import records on appliance B, want 2", n)
	}
	a.e.ok("audit", "verify", "--config", a.cfg)
	b.e.ok("audit", "verify", "--config", b.cfg)
}

func appendFile(t testing.TB, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// A user key used after its expiry is refused, and the refusal says so.
// The key's life is its JWT's (a few seconds here), shorter than the
// configured lifetime; the SDK would exchange the JWT again, so the test
// holds the key itself.
func TestUserKeyExpires(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	idp := newTestIdP(t, a.dir)
	appendFile(t, a.cfg, idp.jwtSection())
	a.init()
	d := a.serve(a.cfg)
	defer d.stop()
	ctx := context.Background()
	cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)
	do := func(req client.Request, out any) error {
		resp, err := cl.Do(ctx, req)
		if err == nil && out != nil {
			err = json.Unmarshal(resp.Body, out)
		}
		return err
	}
	var user struct{ ID string }
	if err := do(client.Request{Method: "POST", Path: "/v1/users", Body: map[string]any{
		"linked_accounts": []map[string]string{{"type": "custom_auth", "custom_user_id": "bob"}}}}, &user); err != nil {
		t.Fatal(err)
	}
	var w struct{ ID, Address string }
	if err := do(client.Request{Method: "POST", Path: "/v1/wallets", Body: map[string]any{
		"chain_type": "ethereum", "owner": map[string]string{"user_id": user.ID}}}, &w); err != nil {
		t.Fatal(err)
	}

	recipient, _ := hpkebox.GenerateKey()
	spki, _ := x509.MarshalPKIXPublicKey(recipient.PublicKey())
	const life = 7 * time.Second
	var auth struct {
		Key       hpkebox.Box `json:"encrypted_authorization_key"`
		ExpiresAt int64       `json:"expires_at"`
	}
	if err := do(client.Request{Method: "POST", Path: "/v1/wallets/authenticate", Body: map[string]string{
		"user_jwt": idp.token("bob", life, nil, nil), "encryption_type": "HPKE", "recipient_public_key": base64.StdEncoding.EncodeToString(spki),
	}}, &auth); err != nil {
		t.Fatal(err)
	}
	key := openUserKey(t, recipient, auth.Key)
	if left := time.Until(time.UnixMilli(auth.ExpiresAt)); left > life || left < life-3*time.Second {
		t.Fatalf("the user key lives %s, want about the JWT's %s", left, life)
	}
	msg := func(m string) client.Request {
		return client.Request{Method: "POST", Path: "/v1/wallets/" + w.ID + "/rpc", Keys: []*ecdsa.PrivateKey{key},
			Body: map[string]any{"method": "personal_sign", "params": map[string]string{"message": m, "encoding": "utf-8"}}}
	}
	if err := do(msg("before expiry"), nil); err != nil {
		t.Fatalf("the fresh user key: %v", err)
	}
	time.Sleep(time.Until(time.UnixMilli(auth.ExpiresAt)) + 200*time.Millisecond)
	err := do(msg("after expiry"), nil)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 401 || !strings.Contains(ce.Message, "expired at") {
		t.Fatalf("the expired user key: %v, want 401 naming the expiry", err)
	}
}

func openUserKey(t testing.TB, recipient *ecdh.PrivateKey, box hpkebox.Box) *ecdsa.PrivateKey {
	t.Helper()
	k, err := client.OpenUserKey(recipient, box)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
