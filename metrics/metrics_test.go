package metrics

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cachet-custody/cachet/keys"
)

// Label values a caller chooses are bounded: anything outside a family's
// known set is counted as "other", so no wallet id or free text becomes a
// series.
func TestLabelsAreBounded(t *testing.T) {
	m := New()
	tests := []struct {
		name  string
		do    func()
		count func() float64
	}{
		{"known method", func() { m.Signature("personal_sign") }, func() float64 { return testutil.ToFloat64(m.signatures.WithLabelValues("personal_sign")) }},
		{"unknown method", func() { m.Signature("wallet_0xabc") }, func() float64 { return testutil.ToFloat64(m.signatures.WithLabelValues(Other)) }},
		{"known reason", func() { m.Refusal("policy_violation") }, func() float64 { return testutil.ToFloat64(m.refusals.WithLabelValues("policy_violation")) }},
		{"unknown reason", func() { m.Refusal("Request denied by policy: rule x") }, func() float64 { return testutil.ToFloat64(m.refusals.WithLabelValues(Other)) }},
		{"allow", func() { m.PolicyDecision(true) }, func() float64 { return testutil.ToFloat64(m.decisions.WithLabelValues("allow")) }},
		{"deny", func() { m.PolicyDecision(false) }, func() float64 { return testutil.ToFloat64(m.decisions.WithLabelValues("deny")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.count()
			tt.do()
			if got := tt.count(); got != before+1 {
				t.Fatalf("count %v -> %v, want +1", before, got)
			}
		})
	}
	if n := testutil.CollectAndCount(m.signatures); n != len(signMethods)+1 {
		t.Fatalf("%d signature series, want the %d known methods and %q", n, len(signMethods), Other)
	}
}

// A nil *Metrics ignores everything, so hooks need no checks.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Signature("personal_sign")
	m.PolicyDecision(true)
	m.Refusal("forbidden")
	m.Commit(3, time.Millisecond, time.Millisecond)
	m.SetSources(Sources{})
	h := http.NotFoundHandler()
	if got := m.Route("GET /x", h); got == nil {
		t.Fatal("Route returned nil")
	}
}

// Scrape-time sources: a part missing from the health map, or failing, is
// 0; a failing audit source is reported by cachet_metrics_source_up.
func TestScrapeSources(t *testing.T) {
	m := New()
	m.now = func() time.Time { return time.Unix(1000, 0) }
	m.SetSources(Sources{
		Health: func(context.Context) map[string]error {
			return map[string]error{"backend": errors.New("gone"), "store": nil}
		},
		Audit: func(context.Context) (uint64, time.Time, error) { return 42, time.Unix(990, 0), nil },
	})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`cachet_health{part="backend"} 0`,
		`cachet_health{part="store"} 1`,
		`cachet_health{part="audit"} 0`,
		`cachet_audit_head_seq 42`,
		`cachet_audit_seconds_since_checkpoint 10`,
		`cachet_metrics_source_up{source="audit"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
	m.SetSources(Sources{Audit: func(context.Context) (uint64, time.Time, error) { return 0, time.Time{}, errors.New("db") }})
	rec = httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if body := rec.Body.String(); !strings.Contains(body, `cachet_metrics_source_up{source="audit"} 0`) || strings.Contains(body, "cachet_audit_head_seq ") {
		t.Errorf("failing audit source:\n%s", body)
	}
}

// Route counts by pattern and status code.
func TestRoute(t *testing.T) {
	m := New()
	h := m.Route("GET /v1/wallets/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(404) }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/wallets/w1", nil))
	if got := testutil.ToFloat64(m.requests.WithLabelValues("GET /v1/wallets/{id}", "404")); got != 1 {
		t.Fatalf("requests{route, 404} = %v, want 1", got)
	}
}

// stubBackend answers every operation with err; it stands above the
// hardware boundary, where the wrapper sits.
type stubBackend struct{ err error }

func (s stubBackend) Seal(context.Context, keys.Purpose, []byte, []byte) ([]byte, error) {
	return []byte("sealed"), s.err
}
func (s stubBackend) Unseal(context.Context, keys.Purpose, []byte, []byte) ([]byte, error) {
	return nil, s.err
}
func (s stubBackend) AuthKey(context.Context, string) (*ecdsa.PublicKey, error) { return nil, s.err }
func (s stubBackend) SignAuth(context.Context, string, []byte) ([]byte, error)  { return nil, s.err }
func (s stubBackend) Info(context.Context) (keys.BackendInfo, error) {
	return keys.BackendInfo{}, s.err
}
func (s stubBackend) Close() error { return s.err }

// The backend wrapper times every operation under its name, counts the
// failed ones, and passes results and errors through unchanged.
func TestBackendOps(t *testing.T) {
	m := New()
	fail := errors.New("token removed")
	ctx := context.Background()
	ops := []struct {
		op  string
		run func(b keys.Backend) error
	}{
		{"seal", func(b keys.Backend) error { _, err := b.Seal(ctx, keys.PurposeWallet, nil, nil); return err }},
		{"unseal", func(b keys.Backend) error { _, err := b.Unseal(ctx, keys.PurposeWallet, nil, nil); return err }},
		{"auth_key", func(b keys.Backend) error { _, err := b.AuthKey(ctx, "l"); return err }},
		{"sign_auth", func(b keys.Backend) error { _, err := b.SignAuth(ctx, "l", nil); return err }},
		{"info", func(b keys.Backend) error { _, err := b.Info(ctx); return err }},
		{"close", func(b keys.Backend) error { return b.Close() }},
	}
	for _, o := range ops {
		t.Run(o.op, func(t *testing.T) {
			if err := o.run(m.Backend(stubBackend{})); err != nil {
				t.Fatal(err)
			}
			if err := o.run(m.Backend(stubBackend{fail})); !errors.Is(err, fail) {
				t.Fatalf("error %v, want the backend's", err)
			}
			if got := testutil.ToFloat64(m.backendErrors.WithLabelValues(o.op)); got != 1 {
				t.Errorf("errors{op=%q} = %v, want 1", o.op, got)
			}
			if n := testutil.CollectAndCount(m.backendDuration); n < 1 {
				t.Errorf("no duration series")
			}
		})
	}
	var nilM *Metrics
	if b := (stubBackend{}); nilM.Backend(b) != keys.Backend(b) {
		t.Error("a nil *Metrics wraps the backend")
	}
}
