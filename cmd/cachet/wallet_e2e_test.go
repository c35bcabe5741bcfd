package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/quorum"
)

// Privy's own Node SDK, unchanged, drives the daemon over its socket
// (tests/node/privy.test.mjs): a 2-of-3 quorum owns a wallet, two keys sign
// an EIP-1559 transaction and one is refused, the owner hands over; ethers
// v6 recovers every signature to the wallet's address.
func TestPrivyNodeSDK(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	d := a.serve(a.cfg)
	runNode(t, "privy.test.mjs", 3, d, "CACHET_SOCKET="+a.socket, "CACHET_BASE_URL=http://localhost",
		"CACHET_APP_ID="+a.appID, "CACHET_APP_SECRET="+a.appSecret)
	d.stop()
	a.e.ok("audit", "verify", "--config", a.cfg)
}

// rawRequest sends a request with exactly the headers given.
func rawRequest(t *testing.T, socket, method, path string, body []byte, hdr http.Header) (int, map[string]any) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	req, _ := http.NewRequest(method, "http://localhost"+path, strings.NewReader(string(body)))
	req.Header = hdr.Clone()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func countRecords(t *testing.T, dbPath, action string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+dbPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM audit_records WHERE action = ?`, action).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A replayed signed request, an expired one, one signed over another URL or
// body, and one signed by a non-member are each refused with the right
// code, and none is signed.
func TestSignedRequestRefusals(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	a.serve(a.cfg)
	ctx := context.Background()
	cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)
	owner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ownerPub, _ := keys.PublicKeySPKI(&owner.PublicKey)
	resp, err := cl.Do(ctx, client.Request{Method: "POST", Path: "/v1/wallets",
		Body: map[string]any{"chain_type": "ethereum", "owner": map[string]string{"public_key": ownerPub}}})
	if err != nil {
		t.Fatal(err)
	}
	var w struct{ ID, Address string }
	json.Unmarshal(resp.Body, &w)
	path := "/v1/wallets/" + w.ID + "/rpc"
	body := []byte(`{"method":"personal_sign","params":{"message":"pay 1 ETH","encoding":"utf-8"},"chain_type":"ethereum"}`)

	// headers builds a request's headers signed over (method, url, body)
	// with key, expiring at expiry.
	headers := func(signURL string, signBody []byte, key *ecdsa.PrivateKey, expiry time.Time) http.Header {
		h := http.Header{}
		h.Set("Authorization", basicAuth(a.appID, a.appSecret))
		h.Set("privy-app-id", a.appID)
		h.Set("Content-Type", "application/json")
		h.Set("privy-request-expiry", strconv.FormatInt(expiry.UnixMilli(), 10))
		sig, err := client.Sign(quorum.Request{Method: "POST", URL: signURL, Body: signBody, Headers: h}, []*ecdsa.PrivateKey{key})
		if err != nil {
			t.Fatal(err)
		}
		h.Set("privy-authorization-signature", sig)
		return h
	}
	soon := time.Now().Add(10 * time.Minute)
	good := headers("http://localhost"+path, body, owner, soon)
	if code, m := rawRequest(t, a.socket, "POST", path, body, good); code != 200 {
		t.Fatalf("a correctly signed request: %d %v", code, m)
	}
	db := filepath.Join(a.dir, "data", "cachet.db")
	signedBefore := countRecords(t, db, "wallet.rpc")

	otherBody := []byte(strings.Replace(string(body), "1 ETH", "100 ETH", 1))
	for _, tc := range []struct {
		name string
		body []byte
		hdr  http.Header
	}{
		{"replayed", body, good},
		{"expired", body, headers("http://localhost"+path, body, owner, time.Now().Add(-time.Second))},
		{"signed over another URL", body, headers("http://localhost/v1/wallets/"+w.ID+"/raw_sign", body, owner, soon)},
		{"signed over another body", otherBody, headers("http://localhost"+path, body, owner, soon)},
		{"signed by a non-member", body, headers("http://localhost"+path, body, stranger, soon)},
		{"unsigned", body, func() http.Header { h := good.Clone(); h.Del("privy-authorization-signature"); return h }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, m := rawRequest(t, a.socket, "POST", path, tc.body, tc.hdr)
			if code != http.StatusUnauthorized || m["code"] != "unauthorized" {
				t.Fatalf("got %d %v, want 401 unauthorized", code, m)
			}
			t.Logf("%d %s: %s", code, m["code"], m["error"])
		})
	}
	if n := countRecords(t, db, "wallet.rpc"); n != signedBefore {
		t.Fatalf("%d signatures were released for refused requests", n-signedBefore)
	}
	if n := countRecords(t, db, "api.refused"); n < 6 {
		t.Fatalf("only %d refusals were audited", n)
	}
	// Without the app's secret nothing is served.
	code, m := rawRequest(t, a.socket, "GET", "/v1/wallets/"+w.ID, nil, http.Header{
		"Authorization": {basicAuth(a.appID, "wrong")}, "Privy-App-Id": {a.appID}})
	if code != http.StatusUnauthorized {
		t.Fatalf("wrong app secret: %d %v", code, m)
	}
}

// The client commands: app create prints credentials once, keys generate
// makes a P-256 pair, and quorum/wallet commands call the socket, signing
// with --auth-key files.
func TestWalletCommands(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	a.serve(a.cfg)
	r := a.e.ok("app", "create", "--name", "payments")
	if !strings.Contains(r.stdout, "app secret: cachet_secret_") || !strings.Contains(r.stdout, `secret_hash = "sha256:`) {
		t.Fatalf("app create:\n%s", r)
	}
	appFile := writeFile(t, filepath.Join(a.dir, "app.json"), string(mustMarshal(t, client.AppFile{
		AppID: a.appID, AppSecret: a.appSecret, Socket: a.socket, PublicURL: "http://localhost"})), 0o600)

	var pubs []string
	var keyFiles []string
	for i := 1; i <= 3; i++ {
		f := filepath.Join(a.dir, fmt.Sprintf("ops%d.key", i))
		r := a.e.ok("keys", "generate", "--out", f)
		pub := strings.TrimSpace(strings.TrimPrefix(lines(r.stdout, "public key")[0], "public key (base64 DER SPKI):"))
		if _, err := quorum.ParsePublicKey(pub); err != nil {
			t.Fatalf("keys generate printed %q: %v", pub, err)
		}
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode %04o", fi.Mode().Perm())
		}
		pubs = append(pubs, pub)
		keyFiles = append(keyFiles, f)
	}
	run := func(args ...string) map[string]any {
		t.Helper()
		r := a.e.ok(append(args, "--app-file", appFile)...)
		var m map[string]any
		mustJSON(t, []byte(r.stdout), &m)
		return m
	}
	q := run("quorum", "create", "--body", string(mustMarshal(t, map[string]any{"public_keys": pubs, "authorization_threshold": 2})))
	w := run("wallet", "create", "--body", `{"chain_type":"ethereum","owner_id":"`+q["id"].(string)+`"}`)
	body := `{"method":"personal_sign","params":{"message":"from the command line","encoding":"utf-8"}}`
	out := run("wallet", "rpc", w["id"].(string), "--body", body, "--auth-key", keyFiles[0], "--auth-key", keyFiles[2])
	if out["method"] != "personal_sign" {
		t.Fatalf("rpc: %v", out)
	}
	// One key is not enough: the command fails with the API's error.
	r = a.e.run("wallet", "rpc", w["id"].(string), "--body", body, "--auth-key", keyFiles[1], "--app-file", appFile)
	if r.code != 1 || !strings.Contains(r.stderr, "HTTP 401 unauthorized") {
		t.Fatalf("rpc with one key: %s", r)
	}
	got := run("wallet", "get", w["id"].(string))
	if got["address"] != w["address"] {
		t.Fatalf("get: %v", got)
	}
	page := run("wallet", "list", "--body", `{"limit":1}`)
	if len(page["data"].([]any)) != 1 {
		t.Fatalf("list: %v", page)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Requests signed with Privy's own payload builder (tests/node/integrity.
// test.mjs): bodies with case- or fold-variant members are refused naming
// the member, and what is accepted is executed exactly as approved.
func TestRequestIntegrityNode(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	d := a.serve(a.cfg)
	runNode(t, "integrity.test.mjs", 3, d, "CACHET_SOCKET="+a.socket, "CACHET_BASE_URL=http://localhost",
		"CACHET_APP_ID="+a.appID, "CACHET_APP_SECRET="+a.appSecret)
	d.stop()
	a.e.ok("audit", "verify", "--config", a.cfg)
}
