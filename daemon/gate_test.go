package daemon

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/health"
)

// The release gate: while a part fails, a request that may release
// something gets 503 unavailable naming the part, and a result that was
// ready when a part failed is withheld; both are in the audit log.
func TestReleaseGate(t *testing.T) {
	s, _ := newTestServer(t)
	mon := health.New(nil)
	for _, p := range health.Parts {
		mon.Set(p, nil)
	}
	s.deps.Health = mon
	var failDuring health.Part
	s.Handle("POST /v1/release", AccessPeer, func(w http.ResponseWriter, r *http.Request) error {
		if failDuring != "" {
			mon.Set(failDuring, errors.New("gone while signing"))
		}
		return writeRaw(w, []byte(`{"signature":"0xsecret"}`))
	})
	s.Handle("GET /v1/read", AccessPeer, func(w http.ResponseWriter, r *http.Request) error {
		return writeRaw(w, []byte(`{}`))
	})
	for _, tc := range []struct {
		name         string
		before       health.Part
		during       health.Part
		wantCode     int
		wantPart     string
		wantRecorded string
	}{
		{name: "all healthy", wantCode: 200},
		{name: "backend failing", before: health.Backend, wantCode: 503, wantPart: "backend", wantRecorded: "api.refused"},
		{name: "record failing", before: health.Record, wantCode: 503, wantPart: "record", wantRecorded: "api.refused"},
		{name: "backend fails while signing", during: health.Backend, wantCode: 503, wantPart: "backend", wantRecorded: "api.withheld"},
		{name: "store fails while signing", during: health.Store, wantCode: 503, wantPart: "store", wantRecorded: "api.withheld"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range health.Parts {
				mon.Set(p, nil)
			}
			if tc.before != "" {
				mon.Set(tc.before, errors.New("probe failed"))
			}
			failDuring = tc.during
			before := countAction(t, s, tc.wantRecorded)
			code, body := do(t, s, "POST", "/v1/release", nil)
			if code != tc.wantCode {
				t.Fatalf("status %d %s, want %d", code, body, tc.wantCode)
			}
			if code == 200 {
				return
			}
			var e errResp
			json.Unmarshal(body, &e)
			if e.Code != CodeUnavailable || !strings.Contains(e.Error, tc.wantPart) || strings.Contains(string(body), "0xsecret") {
				t.Fatalf("body %s: want code unavailable naming %q and no result", body, tc.wantPart)
			}
			if tc.wantRecorded != "" && countAction(t, s, tc.wantRecorded) != before+1 {
				t.Fatalf("no %s record", tc.wantRecorded)
			}
		})
	}
	// Reads are not releases: served while a part fails.
	mon.Set(health.Backend, errors.New("probe failed"))
	if code, body := do(t, s, "GET", "/v1/read", nil); code != 200 {
		t.Fatalf("GET while the backend fails: %d %s", code, body)
	}
}

func countAction(t *testing.T, s *Server, action string) int {
	t.Helper()
	var n int
	if err := s.deps.Store.DB().QueryRow(`SELECT COUNT(*) FROM audit_records WHERE action = ?`, action).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
