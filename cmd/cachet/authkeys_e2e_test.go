package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/quorum"
)

// authKey creates an appliance-held key as the daemon's own uid (an
// administrator) and returns its id and public key.
func authKey(t testing.TB, cl *client.Client, callers map[string][]int, requests []string) (string, string) {
	t.Helper()
	resp, err := cl.Do(context.Background(), client.Request{Method: "POST", Path: "/v1/authorization_keys",
		Body: map[string]any{"display_name": "server", "allowed_callers": callers, "allowed_requests": requests}})
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		ID        string `json:"id"`
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(resp.Body, &k); err != nil || k.ID == "" {
		t.Fatalf("create authorization key: %s %v", resp.Body, err)
	}
	return k.ID, k.PublicKey
}

// signWith asks the appliance to sign a request with key id and checks the
// signature against pub with the daemon's own verifier.
func signWith(t testing.TB, cl *client.Client, appID, id, pub string) error {
	t.Helper()
	body := json.RawMessage(`{"method":"personal_sign","params":{"message":"hi","encoding":"utf-8"}}`)
	url := "http://localhost/v1/wallets/w1/rpc"
	expiry := strconv.FormatInt(time.Now().Add(5*time.Minute).UnixMilli(), 10)
	resp, err := cl.Do(context.Background(), client.Request{Method: "POST", Path: "/v1/authorization_keys/" + id + "/sign",
		Body: map[string]any{"method": "POST", "url": url, "body": body, "headers": map[string]string{"privy-app-id": appID, "privy-request-expiry": expiry}}})
	if err != nil {
		return err
	}
	var out struct{ Signature string }
	json.Unmarshal(resp.Body, &out)
	der, err := base64.StdEncoding.DecodeString(out.Signature)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := quorum.Payload(quorum.Request{Method: "POST", URL: url, Body: body, Headers: http.Header{"Privy-App-Id": {appID}, "Privy-Request-Expiry": {expiry}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := quorum.Verify(payload, [][]byte{der}, []string{pub}, nil); err != nil {
		t.Fatalf("the appliance's signature does not verify with the key's public key: %v", err)
	}
	return nil
}

// Privy's own Node SDK uses an appliance-held key through sign_fns: in a
// 1-of-2 quorum the server alone updates the wallet's policy and signers;
// in a 2-of-2 it needs the user too.
func TestAuthorizationKeysNodeSDK(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	d := a.serve(a.cfg)
	cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)
	id, pub := authKey(t, cl, map[string][]int{"uids": {os.Getuid()}}, []string{"PATCH /v1/wallets/*", "POST /v1/wallets/*/rpc"})
	runNode(t, "authkeys.test.mjs", 2, d, "CACHET_SOCKET="+a.socket, "CACHET_BASE_URL=http://localhost",
		"CACHET_APP_ID="+a.appID, "CACHET_APP_SECRET="+a.appSecret, "CACHET_AUTH_KEY_ID="+id, "CACHET_AUTH_KEY_PUBLIC="+pub)
	d.stop()
	if n := countRecords(t, filepath.Join(a.dir, "data", "cachet.db"), "authorization_key.sign"); n < 4 {
		t.Fatalf("only %d uses of the key were audited", n)
	}
}

// A caller whose uid is not allowed, and a request outside
// allowed_requests, are refused, and nothing is signed. The refused client
// runs as another uid, one the socket lets in.
func TestAuthorizationKeyRefusals(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs a client under another uid and needs root (CI runs as root)")
	}
	const nobody = 65534
	a := newAppliance(t, config.KindPKCS11)
	if err := os.Chmod(a.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a.init()
	b, _ := os.ReadFile(a.cfg)
	backend := string(b)[strings.Index(string(b), "[backend]"):strings.Index(string(b), "[[apps]]")]
	cfg := a.writeConfig("others.toml", backend, fmt.Sprintf("socket_group = \"%d\"\nallowed_uids = [%d]", nobody, nobody))
	a.serve(cfg)
	cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)
	id, pub := authKey(t, cl, map[string][]int{"uids": {os.Getuid()}}, []string{"POST /v1/wallets/*/rpc"})
	db := filepath.Join(a.dir, "data", "cachet.db")

	// Another uid, allowed on the socket, not an allowed caller of the key.
	clientBin := filepath.Join(a.dir, "client")
	self, _ := os.ReadFile(os.Args[0])
	writeFile(t, clientBin, string(self), 0o755)
	body, _ := json.Marshal(map[string]any{"method": "POST", "url": "http://localhost/v1/wallets/w1/rpc", "body": "",
		"headers": map[string]string{"privy-app-id": a.appID}})
	cmd := exec.Command(clientBin)
	cmd.Env = []string{"CACHET_TEST_CLIENT_SOCKET=" + a.socket, "CACHET_TEST_CLIENT_METHOD=POST",
		"CACHET_TEST_CLIENT_PATH=/v1/authorization_keys/" + id + "/sign", "CACHET_TEST_CLIENT_BODY=" + string(body),
		"CACHET_TEST_CLIENT_APP=" + a.appID + ":" + a.appSecret}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "status=403") || !strings.Contains(string(out), "is not an allowed caller") {
		t.Fatalf("client as uid %d: %v\n%s", nobody, err, out)
	}
	// The same uid cannot create keys either: it is no administrator.
	cmd = exec.Command(clientBin)
	cmd.Env = []string{"CACHET_TEST_CLIENT_SOCKET=" + a.socket, "CACHET_TEST_CLIENT_METHOD=POST",
		"CACHET_TEST_CLIENT_PATH=/v1/authorization_keys", `CACHET_TEST_CLIENT_BODY={"allowed_callers":{"uids":[65534]}}`,
		"CACHET_TEST_CLIENT_APP=" + a.appID + ":" + a.appSecret}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "status=403") {
		t.Fatalf("key creation as uid %d: %v\n%s", nobody, err, out)
	}
	// A request outside allowed_requests, from an allowed caller.
	_, err = cl.Do(context.Background(), client2Sign(a.appID, id, "PATCH", "http://localhost/v1/wallets/w1"))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 403 || !strings.Contains(ce.Message, "allowed_requests") {
		t.Fatalf("request outside allowed_requests: %v", err)
	}
	if n := countRecords(t, db, "authorization_key.sign"); n != 0 {
		t.Fatalf("%d refused requests were signed", n)
	}
	// The allowed caller and request are signed.
	if err := signWith(t, cl, a.appID, id, pub); err != nil {
		t.Fatal(err)
	}
}

func client2Sign(appID, id, method, url string) client.Request {
	return client.Request{Method: "POST", Path: "/v1/authorization_keys/" + id + "/sign",
		Body: map[string]any{"method": method, "url": url, "body": "", "headers": map[string]string{"privy-app-id": appID,
			"privy-request-expiry": strconv.FormatInt(time.Now().Add(5*time.Minute).UnixMilli(), 10)}}}
}

// After `cachet restore` onto new, empty hardware the same key id signs with
// the same public key; a deleted key never signs again.
func TestAuthorizationKeyAfterRestore(t *testing.T) {
	for _, kind := range []string{config.KindPKCS11, config.KindTPM} {
		t.Run(kind, func(t *testing.T) {
			a := newAppliance(t, kind)
			a.init()
			d := a.serve(a.cfg)
			cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)
			id, pub := authKey(t, cl, map[string][]int{"uids": {os.Getuid()}}, nil)
			gone, _ := authKey(t, cl, map[string][]int{"uids": {os.Getuid()}}, nil)
			if err := signWith(t, cl, a.appID, id, pub); err != nil {
				t.Fatal(err)
			}
			if _, err := cl.Do(context.Background(), client.Request{Method: "DELETE", Path: "/v1/authorization_keys/" + gone}); err != nil {
				t.Fatal(err)
			}
			d.stop()

			device := ""
			if kind == config.KindTPM {
				device = testhw.StartSwtpm(t).Device
			}
			cfg2 := a.writeConfig("new-hardware.toml", a.backendSection(device), "")
			a.e.ok("restore", "--config", cfg2, "--share", a.share(1), "--share", a.share(3), "--identity", a.ops[0].keyFile, "--identity", a.ops[2].keyFile)
			a.serve(cfg2)
			resp, err := cl.Do(context.Background(), client.Request{Method: "GET", Path: "/v1/authorization_keys/" + id})
			if err != nil {
				t.Fatal(err)
			}
			var k map[string]any
			json.Unmarshal(resp.Body, &k)
			if k["public_key"] != pub {
				t.Fatalf("public key after restore %v, before %s", k["public_key"], pub)
			}
			der, _ := base64.StdEncoding.DecodeString(pub)
			if p, err := x509.ParsePKIXPublicKey(der); err != nil {
				t.Fatal(err)
			} else if _, ok := p.(*ecdsa.PublicKey); !ok {
				t.Fatal("not a P-256 key")
			}
			if err := signWith(t, cl, a.appID, id, pub); err != nil {
				t.Fatalf("after restore: %v", err)
			}
			var ce *client.Error
			if err := signWith(t, cl, a.appID, gone, pub); !errors.As(err, &ce) || ce.Status != 403 {
				t.Fatalf("a deleted key after restore: %v", err)
			}
		})
	}
}

// BenchmarkAuthKeySign measures signatures per second through
// /v1/authorization_keys/{id}/sign over the socket: app authentication,
// caller and request checks, the canonical payload, the hardware signature
// and the durable audit commit, on SoftHSM and on swtpm.
func BenchmarkAuthKeySign(b *testing.B) {
	for _, kind := range []string{config.KindPKCS11, config.KindTPM} {
		b.Run(kind, func(b *testing.B) {
			a := newAppliance(b, kind)
			a.init()
			b2, _ := os.ReadFile(a.cfg)
			backend := string(b2)[strings.Index(string(b2), "[backend]"):strings.Index(string(b2), "[[apps]]")]
			cfg := a.writeConfigWith("bench.toml", backend, "", "[authorization_keys]\nrate_per_second = 1000000.0\nburst = 1000000")
			a.serve(cfg)
			cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)
			id, _ := authKey(b, cl, map[string][]int{"uids": {os.Getuid()}}, nil)
			req := client2Sign(a.appID, id, "POST", "http://localhost/v1/wallets/w1/rpc")
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := cl.Do(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signatures/s")
		})
	}
}
