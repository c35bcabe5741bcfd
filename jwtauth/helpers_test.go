package jwtauth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	testIssuer   = "https://idp.example.com"
	testAudience = "cachet-app-1"
)

// t0 is the fixed "now" of most tests.
var t0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

// testKeys are generated once per test binary: RSA generation is slow.
type testKeys struct {
	rsa     *rsa.PrivateKey
	rsaWeak *rsa.PrivateKey // 1024 bits
	ec      *ecdsa.PrivateKey
	ec2     *ecdsa.PrivateKey // rotation target, and "a key not in the set"
	ecP384  *ecdsa.PrivateKey
	ed      ed25519.PrivateKey
}

var keys = sync.OnceValue(func() *testKeys {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	var k testKeys
	var err error
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsaWeak, err = rsa.GenerateKey(rand.Reader, 1024)
	must(err)
	k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ecP384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return &k
})

// Key ids of the standard test key set. "ec-1" and "ec-2" have the same
// length on purpose: rotating between them leaves the JWKS file size
// unchanged, so only the modification time reveals the change.
const (
	kidRSA  = "rsa-1"
	kidEC   = "ec-1"
	kidEC2  = "ec-2"
	kidEd   = "ed-1"
	kidEnc  = "enc-1"
	kidWeak = "weak-1"
)

func pub(k crypto.Signer) crypto.PublicKey { return k.Public() }

func jwk(key crypto.PublicKey, kid, alg, use string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg, Use: use}
}

// standardJWKS is the key set of most tests: one usable key per algorithm,
// plus an encryption key and a weak RSA key that must never be used.
func standardJWKS() []jose.JSONWebKey {
	k := keys()
	return []jose.JSONWebKey{
		jwk(pub(k.rsa), kidRSA, "", ""),
		jwk(pub(k.ec), kidEC, "ES256", "sig"),
		jwk(pub(k.ed), kidEd, "", "sig"),
		jwk(pub(k.ec2), kidEnc, "", "enc"),
		jwk(pub(k.rsaWeak), kidWeak, "RS256", "sig"),
	}
}

func jwksJSON(t testing.TB, ks ...jose.JSONWebKey) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeJWKSFile(t testing.TB, ks ...jose.JSONWebKey) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeFile(t, path, jwksJSON(t, ks...))
	return path
}

func pemBytes(t testing.TB, typ string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func spki(t testing.TB, key crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBytes(t, "PUBLIC KEY", der)
}

func writePEMFile(t testing.TB, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	writeFile(t, path, data)
	return path
}

// claims returns a valid claim set at t0; tests change it to break one rule.
func claims() map[string]any {
	return map[string]any{
		"iss": testIssuer,
		"aud": testAudience,
		"sub": "user-1",
		"exp": t0.Add(time.Hour).Unix(),
		"iat": t0.Add(-time.Minute).Unix(),
		"nbf": t0.Add(-time.Minute).Unix(),
	}
}

func with(c map[string]any, kv ...any) map[string]any {
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(c, k)
		} else {
			c[k] = kv[i+1]
		}
	}
	return c
}

// sign makes a compact JWT with go-jose's signer and jwt builder.
func sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, cl map[string]any, extra map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	for k, v := range extra {
		opts = opts.WithHeader(jose.HeaderKey(k), v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(cl).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signAs signs the standard claims with the standard key for alg.
func signAs(t testing.TB, alg jose.SignatureAlgorithm, cl map[string]any) string {
	t.Helper()
	k := keys()
	switch alg {
	case jose.RS256:
		return sign(t, alg, k.rsa, kidRSA, cl, nil)
	case jose.ES256:
		return sign(t, alg, k.ec, kidEC, cl, nil)
	case jose.EdDSA:
		return sign(t, alg, k.ed, kidEd, cl, nil)
	}
	t.Fatalf("no key for %s", alg)
	return ""
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// unsignedToken is an "alg": "none" token.
func unsignedToken(t testing.TB) string {
	t.Helper()
	body, err := json.Marshal(claims())
	if err != nil {
		t.Fatal(err)
	}
	return b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(string(body)) + "."
}

func baseConfig() Config {
	return Config{Issuer: testIssuer, Audience: testAudience}
}

// fakeClock is an injectable, concurrency-safe clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuf captures log output from concurrent goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger() (*slog.Logger, *logBuf) {
	var lb logBuf
	return slog.New(slog.NewTextHandler(&lb, &slog.HandlerOptions{Level: slog.LevelDebug})), &lb
}

func mustNew(t testing.TB, cfg Config, opts Options) *Verifier {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger, _ = newLogger()
	}
	v, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

// jwksServer is a JWKS endpoint on loopback whose keys, status and
// blocking the test controls, and which counts its requests.
type jwksServer struct {
	*httptest.Server
	hits atomic.Int32

	mu      sync.Mutex
	body    []byte
	status  int
	gate    chan struct{} // if non-nil, requests wait for it to close
	entered chan struct{} // receives once per request that reaches the gate
}

func newJWKSServer(t testing.TB, ks ...jose.JSONWebKey) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK, body: jwksJSON(t, ks...)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, status, gate, entered := s.body, s.status, s.gate, s.entered
		s.mu.Unlock()
		if gate != nil {
			entered <- struct{}{}
			<-gate
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) setKeys(t testing.TB, ks ...jose.JSONWebKey) {
	b := jwksJSON(t, ks...)
	s.mu.Lock()
	s.body, s.status = b, http.StatusOK
	s.mu.Unlock()
}

func (s *jwksServer) setResponse(status int, body []byte) {
	s.mu.Lock()
	s.body, s.status = body, status
	s.mu.Unlock()
}

// block makes requests wait until the returned release function is called.
func (s *jwksServer) block() (entered <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate = make(chan struct{})
	s.entered = make(chan struct{}, 100)
	gate := s.gate
	return s.entered, sync.OnceFunc(func() {
		s.mu.Lock()
		s.gate = nil
		s.mu.Unlock()
		close(gate)
	})
}

// assertNoTokenLeak fails if msg contains the token or any sizeable part of
// it (each of its three segments, when longer than a claim value could be).
func assertNoTokenLeak(t testing.TB, msg, token string) {
	t.Helper()
	if token == "" {
		return
	}
	if strings.Contains(msg, token) {
		t.Errorf("message contains the token: %s", msg)
	}
	for i, part := range strings.Split(token, ".") {
		if len(part) >= 16 && strings.Contains(msg, part) {
			t.Errorf("message contains segment %d of the token: %s", i, msg)
		}
	}
}

// rejection asserts that err is an *Error with the given check and a reason
// containing want.
func rejection(t testing.TB, err error, check Check, want string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *Error with check %q", err, err, check)
	}
	if e.Check != check {
		t.Errorf("check = %q, want %q (reason: %s)", e.Check, check, e.Reason)
	}
	if !strings.Contains(e.Reason, want) {
		t.Errorf("reason = %q, want it to contain %q", e.Reason, want)
	}
	if errors.Is(err, ErrKeysUnavailable) {
		t.Errorf("a token rejection must not wrap ErrKeysUnavailable: %v", err)
	}
}
