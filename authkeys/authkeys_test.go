package authkeys_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/authkeys"
	"github.com/cachet-custody/cachet/hsm"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/store"
)

func TestMain(m *testing.M) { testhw.SoftHSMMain(m) }

const app = "app_1"

// token is fresh SoftHSM hardware provisioned with root.
func token(t *testing.T, root []byte) keys.Backend {
	t.Helper()
	label := testhw.UniqueLabel("ak")
	if err := hsm.InitToken(testhw.Module(), label, "so-1234", "1234"); err != nil {
		t.Fatal(err)
	}
	b, err := hsm.Open(context.Background(), hsm.Options{Module: testhw.Module(), TokenLabel: label, PIN: "1234"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.(keys.Provisioner).Provision(context.Background(), root, keys.ProvisionOptions{Generation: 1}); err != nil {
		t.Fatal(err)
	}
	return b
}

type env struct {
	t   *testing.T
	ctx context.Context
	st  *store.Store
	hw  keys.Backend
	svc *authkeys.Service
	now time.Time
}

func newEnv(t *testing.T, opts authkeys.Options) *env {
	t.Helper()
	root := make([]byte, keys.RootSize)
	rand.Read(root)
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if opts.PublicBase == "" {
		opts.PublicBase = "http://localhost"
	}
	e := &env{t: t, ctx: context.Background(), st: st, hw: token(t, root), now: time.Unix(1_800_000_000, 0)}
	e.svc = authkeys.New(st, e.hw, opts)
	authkeys.SetNow(e.svc, func() time.Time { return e.now })
	t.Cleanup(func() {
		pub, err := e.hw.AuthKey(e.ctx, keys.AuditKeyLabel)
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := audit.Verify(e.ctx, st.DB(), pub); err != nil {
			t.Errorf("audit chain: %v", err)
		}
	})
	return e
}

var (
	admin  = authkeys.Caller{UID: 0, GID: 0, Actor: "uid=0 app=app_1"}
	server = authkeys.Caller{UID: 1000, GID: 1000, Actor: "uid=1000 app=app_1"}
)

func (e *env) create(in authkeys.CreateInput) *authkeys.Key {
	e.t.Helper()
	k, err := e.svc.Create(e.ctx, app, admin, in)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

func rpcRequest(wallet string) authkeys.SignInput {
	return authkeys.SignInput{
		Method:  "POST",
		URL:     "http://localhost/v1/wallets/" + wallet + "/rpc",
		Body:    json.RawMessage(`{"method":"personal_sign","params":{"message":"hi","encoding":"utf-8"}}`),
		Headers: map[string]string{"privy-app-id": app, "privy-request-expiry": "1800000900000"},
	}
}

func (e *env) signs(action string) int {
	e.t.Helper()
	var n int
	if err := e.st.DB().QueryRow(`SELECT COUNT(*) FROM audit_records WHERE action = ?`, action).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// The signature is over exactly the payload the daemon's verifier builds for
// that request, and verifies with the key's public key.
func TestSignVerifies(t *testing.T) {
	e := newEnv(t, authkeys.Options{})
	k := e.create(authkeys.CreateInput{AllowedCallers: &authkeys.Callers{UIDs: []uint32{1000}},
		AllowedRequests: []string{"POST /v1/wallets/*/rpc", "PATCH /v1/wallets/*"}})
	for _, in := range []authkeys.SignInput{
		rpcRequest("w1"),
		{Method: "patch", URL: "http://localhost/v1/wallets/w1", Body: json.RawMessage(`{"policy_ids":[]}`), Headers: map[string]string{"Privy-App-Id": app, "privy-request-expiry": "1800000900000"}},
		{Method: "PATCH", URL: "http://localhost/v1/wallets/w1", Body: json.RawMessage(`""`), Headers: map[string]string{"privy-app-id": app, "Privy-Request-Expiry": "1800000900000"}},
	} {
		sig, err := e.svc.Sign(e.ctx, app, server, k.ID, in)
		if err != nil {
			t.Fatal(err)
		}
		der, err := base64.StdEncoding.DecodeString(sig)
		if err != nil || !keys.IsLowS(der) {
			t.Fatalf("signature %q is not base64 low-S DER", sig)
		}
		hdr := http.Header{}
		for n, v := range in.Headers {
			hdr.Set(n, v)
		}
		body := []byte(in.Body)
		if string(in.Body) == `""` {
			body = nil
		}
		payload, err := quorum.Payload(quorum.Request{Method: http.MethodPatch, URL: in.URL, Body: body, Headers: hdr})
		if in.Method == "POST" {
			payload, err = quorum.Payload(quorum.Request{Method: "POST", URL: in.URL, Body: body, Headers: hdr})
		}
		if err != nil {
			t.Fatal(err)
		}
		a, err := quorum.Verify(payload, [][]byte{der}, []string{k.PublicKey}, nil)
		if err != nil || !a.Keys[k.PublicKey] {
			t.Fatalf("the signature does not verify for %s %s: %v", in.Method, in.URL, err)
		}
	}
	got, err := e.svc.Get(e.ctx, app, k.ID)
	if err != nil || got.LastUsedAt == nil || *got.LastUsedAt != e.now.UnixMilli() {
		t.Fatalf("last_used_at = %v, %v", got.LastUsedAt, err)
	}
	if e.signs("authorization_key.sign") != 3 {
		t.Fatal("each signature is not in the audit log")
	}
}

func TestSignRefusals(t *testing.T) {
	e := newEnv(t, authkeys.Options{})
	k := e.create(authkeys.CreateInput{AllowedCallers: &authkeys.Callers{UIDs: []uint32{1000}, GIDs: []uint32{500}},
		AllowedRequests: []string{"POST /v1/wallets/*/rpc"}})
	deleted := e.create(authkeys.CreateInput{AllowedCallers: &authkeys.Callers{UIDs: []uint32{1000}}})
	if _, err := e.svc.Delete(e.ctx, app, admin, deleted.ID); err != nil {
		t.Fatal(err)
	}
	with := func(f func(*authkeys.SignInput)) authkeys.SignInput { in := rpcRequest("w1"); f(&in); return in }
	for _, tc := range []struct {
		name string
		who  authkeys.Caller
		app  string
		key  string
		in   authkeys.SignInput
		want authkeys.Kind // 0: signs
	}{
		{"allowed uid", server, app, k.ID, rpcRequest("w1"), 0},
		{"allowed through a supplementary group", authkeys.Caller{UID: 2000, GID: 2000, Groups: []uint32{500}, Actor: "uid=2000"}, app, k.ID, rpcRequest("w1"), 0},
		{"another uid", authkeys.Caller{UID: 65534, GID: 65534, Actor: "uid=65534"}, app, k.ID, rpcRequest("w1"), authkeys.Forbidden},
		{"root is not special", authkeys.Caller{UID: 0, GID: 0, Actor: "uid=0"}, app, k.ID, rpcRequest("w1"), authkeys.Forbidden},
		{"request outside allowed_requests", server, app, k.ID, with(func(in *authkeys.SignInput) { in.URL = "http://localhost/v1/wallets/w1"; in.Method = "PATCH" }), authkeys.Forbidden},
		{"deeper path than the pattern", server, app, k.ID, with(func(in *authkeys.SignInput) { in.URL = "http://localhost/v1/wallets/w1/x/rpc" }), authkeys.Forbidden},
		{"another public URL", server, app, k.ID, with(func(in *authkeys.SignInput) { in.URL = "https://api.privy.io/v1/wallets/w1/rpc" }), authkeys.Forbidden},
		{"another app's request", server, app, k.ID, with(func(in *authkeys.SignInput) { in.Headers["privy-app-id"] = "app_2" }), authkeys.Forbidden},
		{"the key of another app", server, "app_2", k.ID, rpcRequest("w1"), authkeys.NotFound},
		{"GET is never signed", server, app, k.ID, with(func(in *authkeys.SignInput) { in.Method = "GET" }), authkeys.Invalid},
		{"body that is not a request body", server, app, k.ID, with(func(in *authkeys.SignInput) { in.Body = json.RawMessage(`"text"`) }), authkeys.Invalid},
		{"unknown key", server, app, "nosuchkey", rpcRequest("w1"), authkeys.NotFound},
		// A request without an expiry could be replayed for ever (against a
		// store restored from an older backup, say): never signed.
		{"no request expiry", server, app, k.ID, with(func(in *authkeys.SignInput) { delete(in.Headers, "privy-request-expiry") }), authkeys.Invalid},
		{"expired request", server, app, k.ID, with(func(in *authkeys.SignInput) { in.Headers["privy-request-expiry"] = "1799999999999" }), authkeys.Invalid},
		{"expiry past the horizon", server, app, k.ID, with(func(in *authkeys.SignInput) { in.Headers["privy-request-expiry"] = "1800086400001" }), authkeys.Invalid},
		{"malformed expiry", server, app, k.ID, with(func(in *authkeys.SignInput) { in.Headers["privy-request-expiry"] = "soon" }), authkeys.Invalid},
		{"a header twice in two cases", server, app, k.ID, with(func(in *authkeys.SignInput) { in.Headers["PRIVY-REQUEST-EXPIRY"] = "1800000100000" }), authkeys.Invalid},
		{"a header outside the payload", server, app, k.ID, with(func(in *authkeys.SignInput) { in.Headers["privy-authorization-signature"] = "x" }), authkeys.Invalid},
		{"deleted key", server, app, deleted.ID, rpcRequest("w1"), authkeys.Forbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.signs("authorization_key.sign")
			_, err := e.svc.Sign(e.ctx, tc.app, tc.who, tc.key, tc.in)
			after := e.signs("authorization_key.sign")
			if tc.want == 0 {
				if err != nil || after != before+1 {
					t.Fatalf("err %v, signatures recorded %d", err, after-before)
				}
				return
			}
			var ae *authkeys.Error
			if !errors.As(err, &ae) || ae.Kind != tc.want {
				t.Fatalf("err = %v, want kind %d", err, tc.want)
			}
			if after != before {
				t.Fatal("a refused request was signed")
			}
		})
	}
}

func TestPatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern, method, path string
		want                  bool
	}{
		{"POST /v1/wallets/*/rpc", "POST", "/v1/wallets/abc/rpc", true},
		{"POST /v1/wallets/*/rpc", "PATCH", "/v1/wallets/abc/rpc", false},
		{"POST /v1/wallets/*/rpc", "POST", "/v1/wallets//rpc", false},
		{"POST /v1/wallets/*/rpc", "POST", "/v1/wallets/a/b/rpc", false},
		{"* /v1/wallets/*", "PATCH", "/v1/wallets/abc", true},
		{"* /v1/wallets/*", "DELETE", "/v1/wallets/abc/archive", false},
		{"PATCH /v1/wallets/abc", "PATCH", "/v1/wallets/abd", false},
	} {
		if got := authkeys.Matches(tc.pattern, tc.method, tc.path); got != tc.want {
			t.Errorf("%q matches %s %s = %v", tc.pattern, tc.method, tc.path, got)
		}
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, authkeys.Options{RatePerSecond: 1, Burst: 2})
	k := e.create(authkeys.CreateInput{AllowedCallers: &authkeys.Callers{UIDs: []uint32{1000}}})
	sign := func() error { _, err := e.svc.Sign(e.ctx, app, server, k.ID, rpcRequest("w1")); return err }
	if err := errors.Join(sign(), sign()); err != nil {
		t.Fatal(err)
	}
	var ae *authkeys.Error
	if err := sign(); !errors.As(err, &ae) || ae.Kind != authkeys.RateLimited {
		t.Fatalf("third signature within the burst: %v", err)
	}
	e.now = e.now.Add(time.Second)
	if err := sign(); err != nil {
		t.Fatalf("after a second's refill: %v", err)
	}
}

func TestCreateValidation(t *testing.T) {
	e := newEnv(t, authkeys.Options{})
	long := string(make([]byte, 101))
	for name, in := range map[string]authkeys.CreateInput{
		"no callers":    {},
		"empty callers": {AllowedCallers: &authkeys.Callers{}},
		"bad pattern":   {AllowedCallers: &authkeys.Callers{UIDs: []uint32{1}}, AllowedRequests: []string{"/v1/wallets"}},
		"GET pattern":   {AllowedCallers: &authkeys.Callers{UIDs: []uint32{1}}, AllowedRequests: []string{"GET /v1/wallets"}},
		"long name":     {AllowedCallers: &authkeys.Callers{UIDs: []uint32{1}}, DisplayName: &long},
	} {
		t.Run(name, func(t *testing.T) {
			var ae *authkeys.Error
			if _, err := e.svc.Create(e.ctx, app, admin, in); !errors.As(err, &ae) || ae.Kind != authkeys.Invalid {
				t.Fatalf("err = %v, want Invalid", err)
			}
		})
	}
	ks, err := e.svc.List(e.ctx, app)
	if err != nil || len(ks) != 0 {
		t.Fatalf("refused keys were stored: %v %v", ks, err)
	}
}

// The key material comes from the root: the same root on new hardware and
// the same store sign with the same key id and public key; a deleted key
// stays deleted.
func TestKeysComeBackWithTheRoot(t *testing.T) {
	root := make([]byte, keys.RootSize)
	rand.Read(root)
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	first := authkeys.New(st, token(t, root), authkeys.Options{PublicBase: "http://localhost"})
	ctx := context.Background()
	live, err := first.Create(ctx, app, admin, authkeys.CreateInput{AllowedCallers: &authkeys.Callers{UIDs: []uint32{1000}}})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := first.Create(ctx, app, admin, authkeys.CreateInput{AllowedCallers: &authkeys.Callers{UIDs: []uint32{1000}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Delete(ctx, app, admin, gone.ID); err != nil {
		t.Fatal(err)
	}
	second := authkeys.New(st, token(t, root), authkeys.Options{PublicBase: "http://localhost"})
	authkeys.SetNow(second, func() time.Time { return time.Unix(1_800_000_000, 0) })
	sig, err := second.Sign(ctx, app, server, live.ID, rpcRequest("w1"))
	if err != nil {
		t.Fatal(err)
	}
	der, _ := base64.StdEncoding.DecodeString(sig)
	hdr := http.Header{"Privy-App-Id": {app}, "Privy-Request-Expiry": {"1800000900000"}}
	payload, _ := quorum.Payload(quorum.Request{Method: "POST", URL: "http://localhost/v1/wallets/w1/rpc", Body: []byte(rpcRequest("w1").Body), Headers: hdr})
	if _, err := quorum.Verify(payload, [][]byte{der}, []string{live.PublicKey}, nil); err != nil {
		t.Fatalf("after restore the key signs with another public key: %v", err)
	}
	var ae *authkeys.Error
	if _, err := second.Sign(ctx, app, server, gone.ID, rpcRequest("w1")); !errors.As(err, &ae) || ae.Kind != authkeys.Forbidden {
		t.Fatalf("a deleted key signed after restore: %v", err)
	}
}
