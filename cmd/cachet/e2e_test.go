package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/cachet-custody/cachet/internal/shamir"

	"github.com/cachet-custody/cachet/ceremony"
	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/tpm"
)

// shortDir makes a temporary directory with a short path (Unix socket paths
// are limited to 107 bytes) that the test removes.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ce2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type opKey struct {
	keyFile string
	pub     string
	id      *age.X25519Identity
}

// testAppliance is a configured, not yet initialized, Cachet on real hardware.
type testAppliance struct {
	t         testing.TB
	kind      string
	dir       string
	cfg       string
	socket    string
	e         *env
	ops       []opKey
	appID     string
	appSecret string
	sw        *testhw.Swtpm
	hsm       *testhw.SoftHSM
	pin       string
}

func newAppliance(t testing.TB, kind string) *testAppliance {
	t.Helper()
	a := &testAppliance{t: t, kind: kind, dir: shortDir(t)}
	a.socket = filepath.Join(a.dir, "cachet.sock")
	switch kind {
	case config.KindPKCS11:
		a.hsm = testhw.NewSoftHSM(t)
		a.e = newEnv(t, a.hsm.Env())
	case config.KindTPM:
		a.sw = testhw.StartSwtpm(t)
		a.e = newEnv(t)
	}
	for i := 1; i <= 3; i++ {
		id, _ := age.GenerateX25519Identity()
		f := writeFile(t, filepath.Join(a.dir, "operators", fmt.Sprintf("op%d.key", i)), id.String()+"\n", 0o600)
		a.ops = append(a.ops, opKey{keyFile: f, pub: id.Recipient().String(), id: id})
	}
	app, secret, err := config.NewApp("e2e")
	if err != nil {
		t.Fatal(err)
	}
	a.appID, a.appSecret = app.ID, secret
	a.cfg = a.writeConfig("cachet.toml", a.backendSection(""), "")
	return a
}

// backendSection describes new, empty hardware: a fresh token on the same
// SoftHSM, or the given swtpm device ("" = the appliance's).
func (a *testAppliance) backendSection(device string) string {
	switch a.kind {
	case config.KindPKCS11:
		label := testhw.UniqueLabel("tok")
		a.pin = "pin-" + label
		a.hsm.Token(a.t, label, a.pin)
		pinFile := writeFile(a.t, filepath.Join(a.dir, "secrets", label+".pin"), a.pin+"\n", 0o600)
		return fmt.Sprintf("[backend]\nkind = \"pkcs11\"\n[backend.pkcs11]\nmodule = %q\ntoken_label = %q\npin_file = %q\n", a.hsm.Module, label, pinFile)
	default:
		if device == "" {
			device = a.sw.Device
		}
		return fmt.Sprintf("[backend]\nkind = \"tpm\"\n[backend.tpm]\ndevice = %q\npcrs = [16]\n", device)
	}
}

func (a *testAppliance) writeConfig(name, backend, server string) string {
	return a.writeConfigWith(name, backend, server, "")
}

// writeConfigWith writes a config with extra sections appended before the
// apps.
func (a *testAppliance) writeConfigWith(name, backend, server, extra string) string {
	return writeFile(a.t, filepath.Join(a.dir, name), fmt.Sprintf(`data_dir = "data"
[server]
socket = %q
socket_mode = "0660"
%s
[log]
format = "text"
[audit]
checkpoint_interval = "1s"
%s
%s
[[apps]]
id = %q
secret_hash = %q
`, a.socket, server, backend, extra, a.appID, config.HashAppSecret(a.appSecret)), 0o600)
}

func (a *testAppliance) init() string {
	a.t.Helper()
	args := []string{"init", "--config", a.cfg, "--threshold", "2", "--out", filepath.Join(a.dir, "shares")}
	for _, o := range a.ops {
		args = append(args, "--operator", o.pub)
	}
	r := a.e.ok(args...)
	fp := lines(r.stdout, "root fingerprint:")
	if len(fp) != 1 {
		a.t.Fatalf("init printed no fingerprint:\n%s", r)
	}
	return strings.TrimSpace(strings.TrimPrefix(fp[0], "root fingerprint:"))
}

func (a *testAppliance) share(i int) string {
	return filepath.Join(a.dir, "shares", fmt.Sprintf("share-%d-of-3.age", i))
}

func (a *testAppliance) serve(cfg string) *proc {
	a.t.Helper()
	return a.e.start(a.socket, "serve", "--config", cfg)
}

func (a *testAppliance) appHeaders() map[string]string {
	return map[string]string{"Authorization": basicAuth(a.appID, a.appSecret), "privy-app-id": a.appID}
}

func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

type statusJSON struct {
	Initialized bool `json:"initialized"`
	Backend     struct {
		Kind        string `json:"kind"`
		Provisioned bool   `json:"provisioned"`
		Generation  uint32 `json:"generation"`
	} `json:"backend"`
	Root struct {
		Fingerprint string `json:"fingerprint"`
		Match       bool   `json:"match"`
	} `json:"root"`
	Audit struct {
		Seq           uint64 `json:"seq"`
		CheckpointSeq uint64 `json:"checkpoint_seq"`
	} `json:"audit"`
}

func (a *testAppliance) status(cfg string) statusJSON {
	a.t.Helper()
	var s statusJSON
	mustJSON(a.t, []byte(a.e.ok("status", "--config", cfg, "--json").stdout), &s)
	return s
}

// The README's run command is `cachet dev`: on a fresh directory it sets up
// and serves an appliance that answers /healthz; run again, it reuses it.
func TestDevAppliance(t *testing.T) {
	for _, kind := range []string{config.KindPKCS11, config.KindTPM} {
		t.Run(kind, func(t *testing.T) {
			dir := filepath.Join(shortDir(t), "dev")
			e := newEnv(t)
			sock := filepath.Join(dir, "cachet.sock")
			d := e.start(sock, "dev", "--dir", dir, "--backend", kind)
			if !strings.Contains(d.stdout.String(), "new "+kind+" appliance") {
				t.Fatalf("first run did not set up an appliance:\n%s", d.output())
			}
			code, body, err := get(sock, "/healthz", nil)
			var h struct {
				Status  string `json:"status"`
				Backend struct{ Status, Kind string }
				Store   struct{ Status string }
				Audit   struct{ Status string }
			}
			mustJSON(t, body, &h)
			if err != nil || code != 200 || h.Status != "ok" || h.Backend.Kind != kind || h.Store.Status != "ok" || h.Audit.Status != "ok" {
				t.Fatalf("healthz %d %s %v", code, body, err)
			}
			var app struct {
				AppID     string `json:"app_id"`
				AppSecret string `json:"app_secret"`
				Socket    string `json:"socket"`
			}
			b, _ := os.ReadFile(filepath.Join(dir, "app.json"))
			mustJSON(t, b, &app)
			if app.Socket != sock {
				t.Fatalf("app.json socket %q", app.Socket)
			}
			hdr := map[string]string{"Authorization": basicAuth(app.AppID, app.AppSecret), "privy-app-id": app.AppID}
			code, body, _ = get(sock, "/v1/status", hdr)
			var st statusJSON
			mustJSON(t, body, &st)
			if code != 200 || !st.Root.Match || st.Backend.Kind != kind {
				t.Fatalf("/v1/status %d %s", code, body)
			}
			// The dev identity provider: a user, a JWT from `cachet dev
			// token`, and an embedded wallet made and used with it.
			cl := client.New(sock, "http://localhost", app.AppID, app.AppSecret)
			if _, err := cl.Do(context.Background(), client.Request{Method: "POST", Path: "/v1/users", Body: map[string]any{
				"linked_accounts": []map[string]string{{"type": "custom_auth", "custom_user_id": "alice"}}}}); err != nil {
				t.Fatal(err)
			}
			jwtFile := writeFile(t, filepath.Join(dir, "..", "alice.jwt"), e.ok("dev", "token", "--dir", dir, "--sub", "alice").stdout, 0o600)
			phone := filepath.Join(dir, "..", "phone.json")
			e.ok("device", "create", "--app-file", filepath.Join(dir, "app.json"), "--jwt-file", jwtFile, "--recovery", "automatic", "--device", phone)
			if r := e.ok("device", "sign-message", "--app-file", filepath.Join(dir, "app.json"), "--jwt-file", jwtFile, "--device", phone, "--message", "hi"); !strings.Contains(r.stdout, "signature") {
				t.Fatal(r)
			}
			if r := e.run("dev", "token", "--dir", dir); r.code != 2 {
				t.Fatalf("dev token without --sub: %s", r)
			}
			if code := d.stop(); code != 0 {
				t.Fatalf("dev exited %d after SIGTERM:\n%s", code, d.output())
			}
			if _, err := os.Stat(sock); !os.IsNotExist(err) {
				t.Fatalf("socket left behind after stop: %v", err)
			}

			d = e.start(sock, "dev", "--dir", dir)
			if strings.Contains(d.stdout.String(), "new ") {
				t.Fatalf("second run set up a new appliance:\n%s", d.output())
			}
			if code, _, _ := get(sock, "/v1/status", hdr); code != 200 {
				t.Fatalf("second run: /v1/status %d", code)
			}
			d.stop()
			if r := e.run("dev", "--dir", dir, "--backend", otherKind(kind)); r.code == 0 || !strings.Contains(r.stderr, "is a "+kind+" appliance") {
				t.Fatalf("dev with another backend on the same dir: %s", r)
			}

			// Neither the database nor anything cachet printed holds a
			// secret this appliance made.
			secrets := devSecrets(t, dir, app.AppSecret)
			scanForSecrets(t, secrets, e.all.bytes(), filepath.Join(dir, "data"))
		})
	}
}

func otherKind(k string) string {
	if k == config.KindTPM {
		return config.KindPKCS11
	}
	return config.KindTPM
}

// devSecrets gathers every secret of a dev appliance: PINs, operator
// identities, share texts, the root (recombined from two shares) and the app
// secret.
func devSecrets(t *testing.T, dir, appSecret string) map[string][]byte {
	t.Helper()
	secrets := map[string][]byte{"app secret": []byte(appSecret)}
	if b, err := os.ReadFile(filepath.Join(dir, "idp", "dev-idp.key")); err == nil {
		block, _ := pem.Decode(b)
		secrets["dev IdP key"] = block.Bytes
	} else {
		t.Fatal(err)
	}
	for _, f := range []string{"hsm-pin", "hsm-so-pin"} {
		if b, err := os.ReadFile(filepath.Join(dir, "secrets", f)); err == nil {
			secrets[f] = bytes.TrimSpace(b)
		}
	}
	var parts [][]byte
	for i := 1; i <= 3; i++ {
		ids, err := ceremony.ReadIdentityFile(filepath.Join(dir, "operators", fmt.Sprintf("operator-%d.key", i)))
		if err != nil {
			t.Fatal(err)
		}
		secrets[fmt.Sprintf("operator %d identity", i)] = []byte(ids[0].(*age.X25519Identity).String())
		f, err := os.Open(filepath.Join(dir, "shares", fmt.Sprintf("share-%d-of-3.age", i)))
		if err != nil {
			t.Fatal(err)
		}
		s, err := ceremony.DecryptShare(f, ids)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		secrets[fmt.Sprintf("share %d", i)] = []byte(s.Text())
		secrets[fmt.Sprintf("share %d data", i)] = s.Data
		parts = append(parts, s.Data)
	}
	root, err := shamir.Combine(parts[:2])
	if err != nil {
		t.Fatal(err)
	}
	secrets["root"] = root
	return secrets
}

// scanForSecrets fails the test if any secret, raw or in a common text
// encoding, appears in the logs or in any file under the directories.
func scanForSecrets(t *testing.T, secrets map[string][]byte, logs []byte, dirs ...string) {
	t.Helper()
	haystacks := map[string][]byte{"cachet's output": logs}
	for _, d := range dirs {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				b, _ := os.ReadFile(p)
				haystacks[p] = b
			}
			return nil
		})
	}
	if len(haystacks) < 2 {
		t.Fatalf("nothing to scan in %v", dirs)
	}
	for name, s := range secrets {
		if len(s) < 8 {
			t.Fatalf("secret %s too short to scan for", name)
		}
		forms := [][]byte{s, []byte(hex.EncodeToString(s)), []byte(strings.ToUpper(hex.EncodeToString(s))),
			[]byte(base64.StdEncoding.EncodeToString(s)), []byte(base64.RawURLEncoding.EncodeToString(s)),
			[]byte(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(s))}
		for where, hay := range haystacks {
			for _, f := range forms {
				if bytes.Contains(hay, f) {
					t.Errorf("secret %q found in %s", name, where)
				}
			}
		}
	}
}

// init 2-of-3, serve (records and a signed checkpoint), then restore onto
// new, empty hardware from the command line: bad share sets are refused
// with a message naming the share, nothing is written, and two good shares
// bring back the root under which the old checkpoints verify.
func TestRestoreFromTheCommandLine(t *testing.T) {
	for _, kind := range []string{config.KindPKCS11, config.KindTPM} {
		t.Run(kind, func(t *testing.T) {
			a := newAppliance(t, kind)
			fp := a.init()
			d := a.serve(a.cfg)
			if code, _, _ := get(a.socket, "/v1/status", a.appHeaders()); code != 200 {
				t.Fatalf("/v1/status %d", code)
			}
			d.stop()
			before := a.status(a.cfg)
			if before.Audit.CheckpointSeq == 0 || !before.Root.Match || before.Root.Fingerprint != fp {
				t.Fatalf("status before restore: %+v", before)
			}
			if r := a.e.ok("audit", "verify", "--config", a.cfg); !strings.HasPrefix(r.stdout, "ok:") {
				t.Fatal(r)
			}

			// New, empty hardware for the same store.
			device := ""
			if kind == config.KindTPM {
				device = testhw.StartSwtpm(t).Device
			}
			cfg2 := a.writeConfig("new-hardware.toml", a.backendSection(device), "")
			if s := a.status(cfg2); s.Backend.Provisioned || s.Root.Match {
				t.Fatalf("new hardware is not empty: %+v", s)
			}
			// Fewer shares than the threshold, a corrupted share file, a
			// duplicated share, a mistyped share: each refused.
			corrupt := filepath.Join(a.dir, "corrupt.age")
			b, _ := os.ReadFile(a.share(2))
			i := bytes.Index(b, []byte("\n")) + 10
			b[i] ^= 0x01
			writeFile(t, corrupt, string(b), 0o600)
			dup := filepath.Join(a.dir, "copy-of-share-1.age")
			b, _ = os.ReadFile(a.share(1))
			writeFile(t, dup, string(b), 0o600)
			s3 := readShare(t, a.share(3), a.ops[2])
			typo := []byte(s3.Text())
			typo[len(typo)-20] = map[bool]byte{true: 'a', false: 'b'}[typo[len(typo)-20] != 'a']

			id := func(i int) string { return a.ops[i-1].keyFile }
			for _, tc := range []struct {
				name  string
				args  []string
				stdin string
				want  string
			}{
				{"one share alone", []string{"--share", a.share(1), "--identity", id(1)}, "", "needs 2 of 3"},
				{"corrupted share file", []string{"--share", a.share(1), "--share", corrupt, "--identity", id(1), "--identity", id(2)}, "", "share " + corrupt},
				{"duplicated share", []string{"--share", a.share(1), "--share", dup, "--identity", id(1)}, "", "share " + dup + ": duplicates"},
				{"share for another operator's identity", []string{"--share", a.share(1), "--share", a.share(2), "--identity", id(1)}, "", "share " + a.share(2) + ": none of the given identities"},
				{"mistyped share", []string{"--share", a.share(1), "--identity", id(1), "--prompt", "1"}, string(typo) + "\n", "typed share 1: share is corrupted or mistyped"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					a.e.stdin = tc.stdin
					defer func() { a.e.stdin = "" }()
					r := a.e.run(append([]string{"restore", "--config", cfg2}, tc.args...)...)
					if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
						t.Fatalf("want a refusal containing %q, got %s", tc.want, r)
					}
					if s := a.status(cfg2); s.Backend.Provisioned {
						t.Fatal("a refused restore provisioned the hardware")
					}
				})
			}

			// Share 1 from its file, share 3 typed at the prompt.
			a.e.stdin = s3.Text() + "\n"
			r := a.e.ok("restore", "--config", cfg2, "--share", a.share(1), "--identity", id(1), "--prompt", "1")
			a.e.stdin = ""
			if !strings.Contains(r.stdout, "restored root "+fp) {
				t.Fatal(r)
			}
			after := a.status(cfg2)
			if !after.Root.Match || !after.Backend.Provisioned {
				t.Fatalf("status after restore: %+v", after)
			}
			if r := a.e.ok("audit", "verify", "--config", cfg2); !strings.Contains(r.stdout, "signed checkpoints verified") {
				t.Fatal(r)
			}
			a.serve(cfg2).stop()
			if r := a.e.run("restore", "--config", cfg2, "--share", a.share(1), "--share", a.share(2), "--identity", id(1), "--identity", id(2)); r.code == 0 || !strings.Contains(r.stderr, "already holds") {
				t.Fatalf("restore onto provisioned hardware: %s", r)
			}
		})
	}
}

func readShare(t *testing.T, path string, op opKey) ceremony.Share {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := ceremony.DecryptShare(f, []age.Identity{op.id})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A PCR the root is bound to changes between init and serve: serve refuses
// and names the PCR; after a reboot (PCRs reset) it serves again; after an
// expected change, `restore --replace` re-seals the root to the new value.
func TestPCRChangeRefusesServe(t *testing.T) {
	a := newAppliance(t, config.KindTPM)
	a.init()
	a.serve(a.cfg).stop()
	if err := tpm.ExtendPCR(context.Background(), a.sw.Device, 16, []byte("a new bootloader")); err != nil {
		t.Fatal(err)
	}
	r := a.e.run("serve", "--config", a.cfg)
	if r.code == 0 || !strings.Contains(r.stderr, "PCR 16") || !strings.Contains(r.stderr, "restore --replace") {
		t.Fatalf("serve after a PCR change: %s", r)
	}
	if _, err := os.Stat(a.socket); !os.IsNotExist(err) {
		t.Fatal("serve created its socket although it refused to start")
	}
	a.sw.Restart(t)
	a.serve(a.cfg).stop()

	// An expected change: the operators re-seal to the new PCR value.
	if err := tpm.ExtendPCR(context.Background(), a.sw.Device, 16, []byte("an expected update")); err != nil {
		t.Fatal(err)
	}
	a.e.ok("restore", "--config", a.cfg, "--replace", "--share", a.share(2), "--share", a.share(3), "--identity", a.ops[1].keyFile, "--identity", a.ops[2].keyFile)
	a.serve(a.cfg).stop()
	a.e.ok("audit", "verify", "--config", a.cfg)
}

// `cachet audit verify` passes on an untouched log and names the first bad
// record after a record is edited, deleted or reordered in the database file.
func TestAuditVerifyNamesTampering(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	for i := 0; i < 3; i++ {
		a.serve(a.cfg).stop() // each run appends start, stop and a checkpoint
	}
	r := a.e.ok("audit", "verify", "--config", a.cfg)
	if !strings.HasPrefix(r.stdout, "ok: 10 records, 3 signed checkpoints") {
		t.Fatalf("untouched log: %s", r)
	}
	var pub struct {
		Report struct{ Records int } `json:"report"`
	}
	mustJSON(t, []byte(a.e.ok("audit", "verify", "--config", a.cfg, "--json").stdout), &pub)
	if pub.Report.Records != 10 {
		t.Fatalf("json report: %+v", pub)
	}
	src := filepath.Join(a.dir, "data", "cachet.db")
	// Records 1-10: ceremony.init, then three runs of daemon.start,
	// daemon.stop and a checkpoint (4, 7, 10).
	for _, tc := range []struct {
		name         string
		sql          []string
		wantSeq      int
		serveRefuses bool // the tampering is in the tail serve checks at start
	}{
		{"edited", []string{`UPDATE audit_records SET actor = 'someone else' WHERE seq = 3`}, 3, false},
		{"deleted", []string{`DELETE FROM audit_records WHERE seq = 6`}, 6, false},
		{"reordered", []string{
			`UPDATE audit_records SET seq = 100 WHERE seq = 4`,
			`UPDATE audit_records SET seq = 4 WHERE seq = 5`,
			`UPDATE audit_records SET seq = 5 WHERE seq = 100`}, 4, false},
		{"last checkpoint forged", []string{
			`UPDATE audit_records SET detail = replace(detail, '"signature":"M', '"signature":"N') WHERE seq = 10`}, 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dbPath := filepath.Join(a.dir, tc.name+".db")
			copyFile(t, src, dbPath)
			db, err := sql.Open("sqlite3", "file:"+dbPath)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range tc.sql {
				if _, err := db.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
			db.Close()
			// Same hardware, tampered copy of the store.
			b, _ := os.ReadFile(a.cfg)
			cfg := writeFile(t, filepath.Join(a.dir, tc.name+".toml"), strings.Replace(string(b), `data_dir = "data"`, fmt.Sprintf("data_dir = \"data\"\n[store]\npath = %q", dbPath), 1), 0o600)
			r := a.e.run("audit", "verify", "--config", cfg)
			want := fmt.Sprintf("first bad record %d:", tc.wantSeq)
			if r.code != 1 || !strings.Contains(r.stderr, want) {
				t.Fatalf("want exit 1 and %q, got %s", want, r)
			}
			if tc.serveRefuses {
				r := a.e.run("serve", "--config", cfg)
				if r.code == 0 || !strings.Contains(r.stderr, "refusing to serve: audit log broken at record 10") {
					t.Fatalf("serve with a forged last checkpoint: %s", r)
				}
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(from + "-wal"); err == nil {
		t.Fatalf("%s has a WAL after the daemon stopped; copy it too", from)
	}
	writeFile(t, to, string(b), 0o600)
}

// A client running as a uid (and group) the config does not allow is refused
// before its request is read; the same client is served once its uid is
// allowed. The socket's file mode lets it connect either way, so it is the
// peer-credential check that decides.
func TestPeerFromOtherUIDRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs a client under another uid and needs root (CI runs as root)")
	}
	const nobody = 65534
	a := newAppliance(t, config.KindPKCS11)
	if err := os.Chmod(a.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a.init()
	// The test binary doubles as the client; put a copy where nobody can
	// run it.
	client := filepath.Join(a.dir, "client")
	self, _ := os.ReadFile(os.Args[0])
	writeFile(t, client, string(self), 0o755)
	runClient := func() string {
		cmd := exec.Command(client)
		cmd.Env = []string{"CACHET_TEST_CLIENT_SOCKET=" + a.socket}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client: %v\n%s", err, out)
		}
		return string(out)
	}
	group := fmt.Sprintf("socket_group = \"%d\"", nobody)
	backend := func() string {
		b, _ := os.ReadFile(a.cfg)
		s := string(b)
		return s[strings.Index(s, "[backend]"):strings.Index(s, "[[apps]]")]
	}()

	refuse := a.writeConfig("refuse.toml", backend, group)
	d := a.serve(refuse)
	out := runClient()
	if !strings.Contains(out, "status=403") || !strings.Contains(out, `"code":"forbidden"`) {
		t.Fatalf("client under uid %d: %s", nobody, out)
	}
	d.stop()
	if len(lines(d.stderr.String(), "refused connection")) == 0 || !strings.Contains(d.stderr.String(), fmt.Sprintf("uid=%d", nobody)) {
		t.Fatalf("refusal not logged:\n%s", d.stderr.String())
	}
	if len(lines(d.stderr.String(), "path=/healthz")) != 1 {
		// Only the test's own readiness probe reached the HTTP server.
		t.Fatalf("the refused request reached the HTTP server:\n%s", d.stderr.String())
	}
	// The refusal is in the audit log too, aggregated per uid: flushed at
	// the latest when the daemon stops.
	db := filepath.Join(a.dir, "data", "cachet.db")
	if n := countRecords(t, db, "api.peer_refused"); n != 1 {
		t.Fatalf("%d api.peer_refused records, want 1", n)
	}

	allow := a.writeConfig("allow.toml", backend, group+fmt.Sprintf("\nallowed_uids = [%d]", nobody))
	d = a.serve(allow)
	if out := runClient(); !strings.Contains(out, "status=200") {
		t.Fatalf("allowed client: %s", out)
	}
	d.stop()
}

// Under systemd: the socket comes from socket activation, READY=1 is sent
// once serving, WATCHDOG=1 while healthy, STOPPING=1 on SIGTERM.
func TestSocketActivationAndNotify(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	sockPath := filepath.Join(a.dir, "activated.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sockPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, _ := ln.File()
	notifyPath := filepath.Join(a.dir, "notify.sock")
	nl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := nl.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	cmd := a.e.command("serve", "--config", a.cfg)
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Env = append(cmd.Env, "CACHET_TEST_FIX_LISTEN_PID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=api",
		"NOTIFY_SOCKET="+notifyPath, "WATCHDOG_USEC=200000")
	d := a.e.startCmd(cmd, sockPath)
	if _, err := os.Stat(a.socket); !os.IsNotExist(err) {
		t.Fatal("with socket activation the daemon created its own socket too")
	}
	want := map[string]bool{"READY=1": false, "WATCHDOG=1": false}
	deadline := time.After(10 * time.Second)
	for !want["READY=1"] || !want["WATCHDOG=1"] {
		select {
		case m := <-msgs:
			for k := range want {
				if strings.HasPrefix(m, k) {
					want[k] = true
				}
			}
		case <-deadline:
			t.Fatalf("notifications received: %v\n%s", want, d.output())
		}
	}
	if code := d.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	stopping := false
	for len(msgs) > 0 {
		if m := <-msgs; m == "STOPPING=1" {
			stopping = true
		}
	}
	if !stopping {
		t.Fatal("no STOPPING=1")
	}
}

func TestConfigCheckCommand(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	bad := writeFile(t, filepath.Join(dir, "bad.toml"), "[server]\nsocket_mode = \"0666\"\nsokcet = \"x\"\n[backend]\nkind = \"tpm\"\n[backend.tpm]\npcrs = [99]\n", 0o600)
	r := e.run("config", "check", bad)
	for _, want := range []string{bad + ": server.sokcet: unknown setting", bad + ": server.socket_mode:", bad + ": backend.tpm.pcrs[0]:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("missing %q in:\n%s", want, r)
		}
	}
	if r.code != 1 {
		t.Fatalf("exit %d", r.code)
	}
	good := writeFile(t, filepath.Join(dir, "good.toml"), "[backend]\nkind = \"tpm\"\n[backend.tpm]\ndevice = \"unix:/x\"\npcrs = [16]\n", 0o600)
	if r := e.run("config", "check", good); r.code != 0 || !strings.Contains(r.stdout, "ok") {
		t.Fatal(r)
	}
	if r := e.run("serve"); r.code != 2 {
		t.Fatalf("serve without --config: %s", r)
	}
	if r := e.run("frobnicate"); r.code != 2 {
		t.Fatalf("unknown command: %s", r)
	}
}
