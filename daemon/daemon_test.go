package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
)

// memBackend is an in-memory stand-in for the hardware, enough for the HTTP
// logic above the backend. The real backends are exercised by the hsm and
// tpm tests and, through the daemon, by cmd/cachet's end-to-end tests.
type memBackend struct {
	k    *ecdsa.PrivateKey
	down error
}

func (m *memBackend) Seal(context.Context, keys.Purpose, []byte, []byte) ([]byte, error) {
	return nil, errors.New("unused")
}
func (m *memBackend) Unseal(context.Context, keys.Purpose, []byte, []byte) ([]byte, error) {
	return nil, errors.New("unused")
}
func (m *memBackend) AuthKey(context.Context, string) (*ecdsa.PublicKey, error) {
	return &m.k.PublicKey, nil
}
func (m *memBackend) SignAuth(_ context.Context, _ string, d []byte) ([]byte, error) {
	return ecdsa.SignASN1(rand.Reader, m.k, d)
}
func (m *memBackend) Info(context.Context) (keys.BackendInfo, error) {
	return keys.BackendInfo{Kind: "mem", Provisioned: true, Generation: 1}, m.down
}
func (m *memBackend) Close() error { return nil }

const testSecret = "cachet_secret_test"

func newTestServer(t *testing.T) (*Server, *memBackend) {
	t.Helper()
	cfg := config.Default()
	cfg.Apps = []config.App{{ID: "app_1", SecretHash: config.HashAppSecret(testSecret)}}
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	mb := &memBackend{k: k}
	alog := audit.New(st, mb, audit.Options{})
	return New(Deps{Config: &cfg, Backend: audit.Backend(mb, alog), Store: st, Audit: alog}), mb
}

type errResp struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func do(t *testing.T, s *Server, method, path string, hdr map[string]string) (int, []byte) {
	t.Helper()
	r := httptest.NewRequest(method, "http://localhost"+path, strings.NewReader(""))
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, b
}

func TestRequests(t *testing.T) {
	good := map[string]string{"Authorization": basicAuthHeader("app_1", testSecret), "privy-app-id": "app_1"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		for k, v := range extra {
			if v == "" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	tests := []struct {
		name     string
		method   string
		path     string
		hdr      map[string]string
		wantCode int
		wantErr  string // API error code; "" for success
	}{
		{"healthz needs no app", "GET", "/healthz", nil, 200, ""},
		{"status with app credentials", "GET", "/v1/status", good, 200, ""},
		{"status without credentials", "GET", "/v1/status", nil, 401, CodeUnauthorized},
		{"wrong secret", "GET", "/v1/status", with(map[string]string{"Authorization": basicAuthHeader("app_1", "nope")}), 401, CodeUnauthorized},
		{"unknown app", "GET", "/v1/status", with(map[string]string{"Authorization": basicAuthHeader("app_2", testSecret), "privy-app-id": "app_2"}), 401, CodeUnauthorized},
		{"missing privy-app-id", "GET", "/v1/status", with(map[string]string{"privy-app-id": ""}), 400, CodeInvalidData},
		{"privy-app-id of another app", "GET", "/v1/status", with(map[string]string{"privy-app-id": "app_2"}), 400, CodeInvalidData},
		{"browser origin refused", "GET", "/healthz", map[string]string{"Origin": "https://evil.example"}, 403, CodeForbidden},
		{"browser referer refused", "GET", "/v1/status", with(map[string]string{"Referer": "https://evil.example/"}), 403, CodeForbidden},
		{"unknown path", "GET", "/v1/nope", good, 404, CodeNotFound},
		{"wrong method", "POST", "/healthz", nil, 405, CodeMethod},
	}
	s, _ := newTestServer(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, s, tc.method, tc.path, tc.hdr)
			if code != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", code, tc.wantCode, body)
			}
			if tc.wantErr == "" {
				return
			}
			var e errResp
			if err := json.Unmarshal(body, &e); err != nil || e.Code != tc.wantErr || e.Error == "" {
				t.Fatalf("body %s, want code %s", body, tc.wantErr)
			}
			if strings.Contains(string(body), testSecret) {
				t.Fatal("the response echoes the app secret")
			}
		})
	}
}

func TestUnexpectedHostRefused(t *testing.T) {
	s, _ := newTestServer(t)
	r := httptest.NewRequest("GET", "http://attacker.example/healthz", nil)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", w.Code)
	}
}

func TestHealthReportsFailingBackend(t *testing.T) {
	s, mb := newTestServer(t)
	mb.down = keys.ErrUnavailable
	code, body := do(t, s, "GET", "/healthz", nil)
	var h healthReport
	if err := json.Unmarshal(body, &h); err != nil {
		t.Fatal(err)
	}
	if code != http.StatusServiceUnavailable || h.Status != "failing" || h.Backend.Status != "failing" || h.Store.Status != "ok" {
		t.Fatalf("%d %s", code, body)
	}
}

func TestHandlerErrorsAreMappedOnce(t *testing.T) {
	s, _ := newTestServer(t)
	s.Handle("GET /v1/boom", AccessPeer, func(http.ResponseWriter, *http.Request) error {
		return errors.New("database password is hunter2")
	})
	s.Handle("GET /v1/panic", AccessPeer, func(http.ResponseWriter, *http.Request) error { panic("boom") })
	for _, p := range []string{"/v1/boom", "/v1/panic"} {
		code, body := do(t, s, "GET", p, nil)
		var e errResp
		json.Unmarshal(body, &e)
		if code != 500 || e.Code != CodeInternal || strings.Contains(string(body), "hunter2") {
			t.Fatalf("%s: %d %s", p, code, body)
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a duplicate route did not panic")
		}
	}()
	s.Handle("GET /v1/boom", AccessPeer, nil)
}

func TestBodyLimit(t *testing.T) {
	s, _ := newTestServer(t)
	s.Handle("POST /v1/echo", AccessPeer, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := io.ReadAll(r.Body); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return &APIError{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: "body too large"}
			}
			return err
		}
		return nil
	})
	r := httptest.NewRequest("POST", "http://localhost/v1/echo", strings.NewReader(strings.Repeat("x", 2<<20)))
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", w.Code)
	}
}

func TestPeerPolicy(t *testing.T) {
	p := PeerPolicy{SelfUID: 990, UIDs: []uint32{1000}, GIDs: []uint32{500}}
	tests := []struct {
		name string
		peer Peer
		want bool
	}{
		{"daemon's own uid", Peer{UID: 990, GID: 990}, true},
		{"allowed uid", Peer{UID: 1000, GID: 1000}, true},
		{"allowed primary group", Peer{UID: 1001, GID: 500}, true},
		{"allowed supplementary group", Peer{UID: 1002, GID: 1002, Groups: []uint32{20, 500}}, true},
		{"root is not special", Peer{UID: 0, GID: 0}, false},
		{"stranger", Peer{UID: 65534, GID: 65534, Groups: []uint32{65534}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Allows(tc.peer); got != tc.want {
				t.Fatalf("Allows(%+v) = %v", tc.peer, got)
			}
		})
	}
	if _, err := PeerFrom(context.Background()); err == nil {
		t.Fatal("PeerFrom on a bare context succeeded")
	}
}
