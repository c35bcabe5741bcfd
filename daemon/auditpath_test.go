package daemon

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/internal/audittest"
)

// The record of a refused request names its path, and a path can decode to
// any bytes (%ff, %00, a newline). The record is hashed over the bytes it
// stores, while `cachet audit export` writes it as JSON, which can carry
// only UTF-8: a path that is not valid UTF-8 would let any allowed local
// peer, without app credentials, write a record that no receiver of the
// export can verify. Every exported record's hash is recomputed here from
// its exported fields, as a receiver does (the algorithm documented on
// audit.ExportRecord).
func TestRefusalRecordsOfOddPathsVerifyFromTheExport(t *testing.T) {
	r := newRig(t)
	send := serveRig(t, r)
	auth := "Authorization: " + basicAuthHeader("app_1", testSecret) + "\r\nPrivy-App-Id: app_1\r\n"
	for _, tc := range []struct{ target, creds string }{
		{"/v1/wallets/%ff%fe", auth},
		{"/v1/wallets/%ff%fe", ""},
		{"/v1/%c0%af", ""},
		{"/v1/users/%00%0a%22", auth},
		{"/v1/wallets/%e2%82/rpc", auth},
	} {
		resp := send("GET " + tc.target + " HTTP/1.1\r\nHost: localhost\r\n" + tc.creds + "\r\n")
		io.ReadAll(resp.Body)
		if resp.StatusCode < 400 {
			t.Fatalf("GET %s: %d", tc.target, resp.StatusCode)
		}
	}
	var out bytes.Buffer
	n, err := audit.ExportJSONL(t.Context(), r.db, 0, &out)
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("%d records exported, want the 5 refusals at least", n)
	}
	dec := json.NewDecoder(&out)
	for dec.More() {
		var l audittest.Line
		if err := dec.Decode(&l); err != nil {
			t.Fatal(err)
		}
		if got := audittest.ReceiverHash(l); got != l.Hash {
			t.Errorf("record %d (%s %q): the exported fields hash to %s, the record says %s", l.Seq, l.Action, l.Target, got, l.Hash)
		}
	}
}

// What a refusal record keeps of the request is bounded: a long path, echoed
// in the error message too, costs the store about 2 KiB a refusal, not the
// path's length twice over. Any allowed local peer can have refusals
// recorded without app credentials.
func TestRefusalRecordsAreBounded(t *testing.T) {
	r := newRig(t)
	send := serveRig(t, r)
	long := "/v1/wallets/" + strings.Repeat("%e2%82%ac", 6_000) // 54 KB as sent (under the 64 KiB header limit), 18 KB decoded
	resp := send("GET " + long + " HTTP/1.1\r\nHost: localhost\r\n\r\n")
	io.ReadAll(resp.Body)
	if resp.StatusCode < 400 {
		t.Fatalf("GET of a long path: %d", resp.StatusCode)
	}
	var target, detail string
	if err := r.db.QueryRow(`SELECT target, detail FROM audit_records WHERE action = 'api.refused' ORDER BY seq DESC LIMIT 1`).Scan(&target, &detail); err != nil {
		t.Fatal(err)
	}
	if len(target) > 2048 || len(detail) > 2048 {
		t.Errorf("the refusal record keeps %d bytes of target and %d of detail; at most 2 KiB each", len(target), len(detail))
	}
	if !strings.HasPrefix(target, "GET /v1/wallets/%e2%82%ac") || !utf8.ValidString(target) || !utf8.ValidString(detail) {
		t.Errorf("target %.80q…, detail %.80q…: want the start of the path, valid UTF-8", target, detail)
	}
}
