package daemon

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listenRig serves the rig's handler with the daemon's http.Server on a Unix
// socket of its own until the test ends, and returns the socket's path and
// the server.
func listenRig(t *testing.T, r *rig) (string, *http.Server) {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := r.srv.HTTPServer()
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return sock, hs
}

// serveRig serves the rig's handler on a Unix socket of its own, with the
// daemon's http.Server, and returns a function that writes one raw request
// on a new connection and reads the response: what Go's server itself
// answers (before the handler) is part of the edge too.
func serveRig(t *testing.T, r *rig) func(raw string) *http.Response {
	t.Helper()
	sock, _ := listenRig(t, r)
	return func(raw string) *http.Response {
		t.Helper()
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		// A deadline only so that a hang fails the test instead of the
		// suite; every answer here comes at once.
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		return resp
	}
}

// A path that is not in canonical form (an empty, "." or ".." segment) is
// refused in Privy's error shape, with or without app credentials. Go's
// ServeMux would otherwise answer 307 with an HTML body and a Location,
// before any credential is checked or the refusal recorded, and a client
// that follows it re-sends its POST, body and headers to another path than
// the one it signed. "OPTIONS *" reaches the handler too, instead of Go's
// own empty 200.
func TestNonCanonicalPathsRefused(t *testing.T) {
	r := newRig(t)
	w := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum"}`)
	id := w["id"].(string)
	send := serveRig(t, r)
	auth := "Authorization: " + basicAuthHeader("app_1", testSecret) + "\r\nPrivy-App-Id: app_1\r\n"
	for _, tc := range []struct{ method, target string }{
		{"GET", "//v1/wallets"},
		{"GET", "/v1//wallets"},
		{"GET", "/v1/./wallets"},
		{"GET", "/v1/x/../wallets"},
		{"GET", "/v1/wallets/" + id + "/."},
		{"GET", "/v1/wallets/./" + id},
		{"GET", "/v1/wallets/x/../" + id},
		{"POST", "/v1/wallets/" + id + "/./rpc"},
		{"POST", "/v1/wallets/" + id + "//rpc"},
		{"POST", "//v1/wallets"},
		{"OPTIONS", "*"},
	} {
		for _, creds := range []string{"", auth} {
			name := tc.method + " " + tc.target
			if creds != "" {
				name += " with credentials"
			}
			t.Run(name, func(t *testing.T) {
				before := r.fingerprint()
				body := `{"method":"personal_sign","params":{"message":"hi","encoding":"utf-8"}}`
				resp := send(tc.method + " " + tc.target + " HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
					"Content-Length: " + itoa(len(body)) + "\r\n" + creds + "\r\n" + body)
				b, _ := io.ReadAll(resp.Body)
				var e errResp
				if err := json.Unmarshal(b, &e); err != nil || e.Code == "" || e.Error == "" {
					t.Fatalf("%d %q, want Privy's {error, code}", resp.StatusCode, b)
				}
				if resp.StatusCode != http.StatusBadRequest || e.Code != CodeInvalidData {
					t.Fatalf("%d %s, want 400 invalid_data", resp.StatusCode, b)
				}
				if loc := resp.Header.Get("Location"); loc != "" {
					t.Fatalf("redirected to %s", loc)
				}
				if r.fingerprint() != before {
					t.Fatal("the refused request changed the store")
				}
			})
		}
	}
	// The canonical forms still work.
	for _, p := range []string{"/v1/wallets", "/v1/wallets/" + id} {
		if code, m := r.send("GET", p, nil); code != http.StatusOK {
			t.Fatalf("GET %s: %d %v", p, code, m)
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return strings.TrimSpace(string(b))
}

// The app of a request is named once: a second Authorization or
// privy-app-id line is refused on every route, reads included, rather than
// the first one counting (which one a proxy or a log in front takes is its
// own choice).
func TestRepeatedAppHeadersRefused(t *testing.T) {
	r := newRig(t)
	w := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum"}`)
	id := w["id"].(string)
	send := serveRig(t, r)
	creds1 := "Authorization: " + basicAuthHeader("app_1", testSecret) + "\r\n"
	creds2 := "Authorization: " + basicAuthHeader("app_2", testSecret2) + "\r\n"
	for _, tc := range []struct{ name, headers string }{
		{"two privy-app-id lines", creds1 + "Privy-App-Id: app_1\r\nPrivy-App-Id: app_2\r\n"},
		{"the same privy-app-id twice", creds1 + "Privy-App-Id: app_1\r\nprivy-app-id: app_1\r\n"},
		{"two Authorization lines", creds1 + creds2 + "Privy-App-Id: app_1\r\n"},
		{"two Authorization lines, the other app's first", creds2 + creds1 + "Privy-App-Id: app_2\r\n"},
	} {
		for _, req := range []struct{ method, path, body string }{
			{"GET", "/v1/wallets", ""},
			{"GET", "/v1/wallets/" + id, ""},
			{"GET", "/v1/status", ""},
			{"PATCH", "/v1/wallets/" + id, `{"display_name":"x"}`},
		} {
			t.Run(tc.name+" "+req.method+" "+req.path, func(t *testing.T) {
				before := r.fingerprint()
				resp := send(req.method + " " + req.path + " HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + itoa(len(req.body)) + "\r\n" + tc.headers + "\r\n" + req.body)
				b, _ := io.ReadAll(resp.Body)
				var e errResp
				json.Unmarshal(b, &e)
				if resp.StatusCode != http.StatusBadRequest || e.Code != CodeInvalidData {
					t.Fatalf("%d %s, want 400 invalid_data", resp.StatusCode, b)
				}
				if r.fingerprint() != before {
					t.Fatal("the refused request changed the store")
				}
			})
		}
	}
}

// A request framed by Transfer-Encoding: chunked that also carries a
// Content-Length is how a request is smuggled past a proxy that frames by
// Content-Length: Go frames it by the chunks (dropping Content-Length) and
// then reads what the proxy took for the rest of the body as the next
// request on the connection. RFC 9112 §6.1: the server MUST close the
// connection after answering such a request. Here the bytes after the
// chunks are a second request with the app's credentials; it must never be
// answered. A chunked request without Content-Length closes the connection
// too: Go drops the header, so the handler cannot tell the two apart.
func TestChunkedRequestClosesTheConnection(t *testing.T) {
	r := newRig(t)
	sock, _ := listenRig(t, r)
	auth := "Authorization: " + basicAuthHeader("app_1", testSecret) + "\r\nPrivy-App-Id: app_1\r\n"
	smuggled := "POST /v1/wallets HTTP/1.1\r\nHost: localhost\r\nContent-Length: 25\r\n" + auth + "\r\n" + `{"chain_type":"ethereum"}`
	chunks := "19\r\n" + `{"chain_type":"ethereum"}` + "\r\n0\r\n\r\n"
	for _, tc := range []struct{ name, head string }{
		{"chunked and Content-Length", "POST /v1/wallets HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: " + itoa(len(chunks)+len(smuggled)) + "\r\n" + auth + "\r\n"},
		{"chunked and Content-Length, refused before the body is read", "POST /v1/wallets HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: " + itoa(len(chunks)+len(smuggled)) + "\r\n\r\n"},
		{"chunked alone", "POST /v1/wallets HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n" + auth + "\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tc.head+chunks+smuggled); err != nil {
				t.Fatal(err)
			}
			// A deadline only so that a hang fails the test; the server
			// closes the connection after its first answer.
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			first, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(first.Body)
			if !first.Close {
				t.Errorf("the answer to a chunked request keeps the connection open (%d)", first.StatusCode)
			}
			if second, err := http.ReadResponse(br, nil); err == nil {
				b, _ := io.ReadAll(second.Body)
				t.Fatalf("the bytes after the chunks were served as a request: %d %s", second.StatusCode, b)
			}
		})
	}
}
