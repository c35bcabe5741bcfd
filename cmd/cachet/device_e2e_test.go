package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"database/sql"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/device"
	"github.com/cachet-custody/cachet/wallet"
)

// deviceRig runs `cachet device` commands against one appliance, as the
// app's server relaying for its users' devices.
type deviceRig struct {
	t       *testing.T
	a       *testAppliance
	idp     *testIdP
	appFile string
	db      string
	n       int
	// secrets are every password, cloud secret and device share the
	// commands made or used, for the final scan.
	secrets map[string][]byte
}

// file returns a fresh path under the rig's directory.
func (r *deviceRig) file(name string) string {
	r.n++
	return filepath.Join(r.a.dir, "devices", fmt.Sprintf("%02d-%s", r.n, name))
}

// write writes a new file of mode 0600 and returns its path.
func (r *deviceRig) write(name, body string) string {
	return writeFile(r.t, r.file(name), body, 0o600)
}

// jwt writes a token of the IdP (or of key, when not nil) to a file.
func (r *deviceRig) jwt(subject string, ttl time.Duration, key *rsa.PrivateKey) string {
	return r.write("jwt", r.idp.token(subject, ttl, key, nil)+"\n")
}

func (r *deviceRig) password(text string) string {
	r.secrets["password "+text] = []byte(text)
	return r.write("password", text+"\n")
}

func (r *deviceRig) run(args ...string) result {
	r.t.Helper()
	return r.a.e.run(append(args, "--app-file", r.appFile)...)
}

// ok runs a device command that must succeed and returns its JSON.
func (r *deviceRig) ok(args ...string) map[string]string {
	r.t.Helper()
	res := r.run(args...)
	if res.code != 0 {
		r.t.Fatalf("cachet %s: %s", strings.Join(args, " "), res)
	}
	var m map[string]string
	mustJSON(r.t, []byte(res.stdout), &m)
	return m
}

// refused runs a device command that must fail with status code and say
// want.
func (r *deviceRig) refused(code int, want string, args ...string) {
	r.t.Helper()
	res := r.run(args...)
	if res.code != code || !strings.Contains(res.stderr, want) {
		r.t.Fatalf("cachet %s: want exit %d saying %q, got %s", strings.Join(args, " "), code, want, res)
	}
}

// state reads a device file, checks its mode, and keeps its share for the
// scan.
func (r *deviceRig) state(path string) device.State {
	r.t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		r.t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		r.t.Fatalf("%s has mode %04o", path, fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	var st device.State
	mustJSON(r.t, b, &st)
	share, err := base64.StdEncoding.DecodeString(st.DeviceShare)
	if err != nil || len(share) != 17 {
		r.t.Fatalf("%s: device share of %d bytes, %v", path, len(share), err)
	}
	r.secrets["device share of "+st.WalletID] = share
	return st
}

// sign signs msg on a device and checks the signature recovers to address.
func (r *deviceRig) sign(dev, jwt, msg, address string) {
	r.t.Helper()
	out := r.ok("device", "sign-message", "--device", dev, "--jwt-file", jwt, "--message", msg)
	sig, err := hexutil.Decode(out["signature"])
	if err != nil {
		r.t.Fatalf("signature %q: %v", out["signature"], err)
	}
	if addr, err := wallet.PersonalSigner([]byte(msg), sig); err != nil || addr != common.HexToAddress(address) || out["address"] != address {
		r.t.Fatalf("the signature of %s recovers %s (%v); want %s", dev, addr.Hex(), err, address)
	}
}

func noFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("%s was written: %v", path, err)
	}
}

// auditHead returns the last audit sequence number; auditSince the actions
// recorded after seq, checkpoints aside. The daemon is running: the store
// is in WAL mode, so a read-only reader sees every committed record.
func (r *deviceRig) auditHead() int64 {
	r.t.Helper()
	var seq int64
	r.query(func(db *sql.DB) error {
		return db.QueryRow(`SELECT COALESCE(MAX(seq), 0) FROM audit_records`).Scan(&seq)
	})
	return seq
}

func (r *deviceRig) auditSince(seq int64) []string {
	r.t.Helper()
	var out []string
	r.query(func(db *sql.DB) error {
		rows, err := db.Query(`SELECT action FROM audit_records WHERE seq > ? AND action != 'audit.checkpoint' ORDER BY seq`, seq)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				return err
			}
			out = append(out, a)
		}
		return rows.Err()
	})
	return out
}

func (r *deviceRig) query(fn func(*sql.DB) error) {
	r.t.Helper()
	db, err := sql.Open("sqlite3", "file:"+r.db+"?mode=ro")
	if err != nil {
		r.t.Fatal(err)
	}
	defer db.Close()
	if err := fn(db); err != nil {
		r.t.Fatal(err)
	}
}

// The device reference client's commands against a real daemon on SoftHSM:
// every recovery method from creation to a second device's signature, the
// refusals (wrong password on the device, another user's JWT, expired and
// forged JWTs), the per-wallet recovery limit and its window, and changes
// of recovery method.
func TestDeviceCommands(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	idp := newTestIdP(t, a.dir)
	a.cfg = a.writeConfigWith("cachet.toml", a.backendSection(""), "",
		"[embedded_wallets]\nrecover_limit_per_wallet = 2\nrate_window = \"6s\"\n")
	appendFile(t, a.cfg, idp.jwtSection())
	a.init()
	d := a.serve(a.cfg)
	r := &deviceRig{t: t, a: a, idp: idp, db: filepath.Join(a.dir, "data", "cachet.db"), secrets: map[string][]byte{}}
	r.appFile = writeFile(t, filepath.Join(a.dir, "app.json"), string(mustMarshal(t, client.AppFile{
		AppID: a.appID, AppSecret: a.appSecret, Socket: a.socket, PublicURL: "http://localhost"})), 0o600)
	cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)
	for _, u := range []string{"alice", "bob", "carol", "dave", "erin"} {
		if _, err := cl.Do(context.Background(), client.Request{Method: "POST", Path: "/v1/users", Body: map[string]any{
			"linked_accounts": []map[string]string{{"type": "custom_auth", "custom_user_id": u}}}}); err != nil {
			t.Fatalf("create user %s: %v", u, err)
		}
	}

	t.Run("methods", func(t *testing.T) {
		r.t = t
		jwt := r.jwt("alice", time.Hour, nil)
		for _, method := range []string{"automatic", "password", "cloud"} {
			t.Run(method, func(t *testing.T) {
				r.t = t
				var secret []string
				switch method {
				case "password":
					secret = []string{"--password-file", r.password("alice's " + method + " password")}
				case "cloud":
					secret = []string{"--cloud-file", r.file("cloud-account")}
				}
				devA, devB := r.file("device-a.json"), r.file("device-b.json")
				created := r.ok(append([]string{"device", "create", "--jwt-file", jwt, "--recovery", method, "--device", devA}, secret...)...)
				if created["status"] != "active" || created["recovery_method"] != method || !common.IsHexAddress(created["address"]) {
					t.Fatalf("create: %v", created)
				}
				if method == "cloud" {
					// The secret went to the "cloud account", never to
					// the server.
					b, _ := os.ReadFile(secret[1])
					s, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
					if fi, _ := os.Stat(secret[1]); err != nil || len(s) != 32 || fi.Mode().Perm() != 0o600 {
						t.Fatalf("cloud file: %d bytes, %v", len(s), err)
					}
					r.secrets["cloud secret"] = s
				}
				recovered := r.ok(append([]string{"device", "recover", "--wallet", created["wallet_id"], "--jwt-file", jwt, "--device", devB}, secret...)...)
				if recovered["address"] != created["address"] || recovered["wallet_id"] != created["wallet_id"] {
					t.Fatalf("recover: %v, created %v", recovered, created)
				}
				// Device B derived the very device share device A holds.
				if sa, sb := r.state(devA), r.state(devB); sa.DeviceShare != sb.DeviceShare || sa.Address != created["address"] {
					t.Fatal("device B's derived device share differs from device A's")
				}
				r.sign(devA, jwt, "one message for both devices", created["address"])
				r.sign(devB, jwt, "one message for both devices", created["address"])
			})
		}
	})

	t.Run("refusals", func(t *testing.T) {
		r.t = t
		jwt := r.jwt("bob", time.Hour, nil)
		pw := r.password("bob's recovery password")
		devA := r.file("device-a.json")
		created := r.ok("device", "create", "--jwt-file", jwt, "--recovery", "password", "--device", devA, "--password-file", pw)
		id := created["wallet_id"]
		devB := r.file("device-b.json")
		recoverArgs := func(jwtFile string, extra ...string) []string {
			return append([]string{"device", "recover", "--wallet", id, "--jwt-file", jwtFile, "--device", devB}, extra...)
		}

		// A wrong password fails on the device: the server released the
		// sealed share (one audited release) and hears nothing after.
		seq := r.auditHead()
		r.refused(1, "wrong password", recoverArgs(jwt, "--password-file", r.password("not bob's password"))...)
		noFile(t, devB)
		if got := r.auditSince(seq); !slices.Equal(got, []string{"embedded_wallet.recover"}) {
			t.Fatalf("audit records of the wrong-password recovery: %v, want only the release", got)
		}
		// No password and no terminal: a usage error, before any release.
		seq = r.auditHead()
		r.refused(2, "--password-file", recoverArgs(jwt)...)
		if got := r.auditSince(seq); len(got) != 0 {
			t.Fatalf("a recovery without a password left %v", got)
		}

		// Another user's JWT: the wallet does not exist for them; expired
		// and forged JWTs are refused. Nothing is released.
		other, _ := rsa.GenerateKey(rand.Reader, 2048)
		seq = r.auditHead()
		r.refused(1, "HTTP 404 not_found", recoverArgs(r.jwt("carol", time.Hour, nil), "--password-file", pw)...)
		r.refused(1, "HTTP 404 not_found", "device", "sign-message", "--device", devA, "--jwt-file", r.jwt("carol", time.Hour, nil), "--message", "hi")
		r.refused(1, "HTTP 401 unauthorized", recoverArgs(r.jwt("bob", -time.Hour, nil), "--password-file", pw)...)
		r.refused(1, "HTTP 401 unauthorized", recoverArgs(r.jwt("bob", time.Hour, other), "--password-file", pw)...)
		r.refused(1, "HTTP 401 unauthorized", "device", "sign-message", "--device", devA, "--jwt-file", r.jwt("bob", -time.Hour, nil), "--message", "hi")
		noFile(t, devB)
		for _, action := range r.auditSince(seq) {
			if action != "api.refused" {
				t.Fatalf("a refused request was recorded as %s", action)
			}
		}

		// The right password still recovers, and device B signs.
		r.ok(recoverArgs(jwt, "--password-file", pw)...)
		r.sign(devB, jwt, "after the refusals", created["address"])
		// A device file is never overwritten.
		r.refused(1, "already exists", recoverArgs(jwt, "--password-file", pw)...)
	})

	t.Run("rate limit", func(t *testing.T) {
		r.t = t
		jwt := r.jwt("dave", time.Hour, nil)
		created := r.ok("device", "create", "--jwt-file", jwt, "--recovery", "automatic", "--device", r.file("device-a.json"))
		recoverTo := func(dev string) []string {
			return []string{"device", "recover", "--wallet", created["wallet_id"], "--jwt-file", jwt, "--device", dev}
		}
		r.ok(recoverTo(r.file("device-b.json"))...)
		// The first release is at most now: the window ends 6s after it (wide
		// enough for the next two commands on a loaded machine).
		windowEnd := time.Now().Add(6 * time.Second)
		r.ok(recoverTo(r.file("device-c.json"))...)
		devD := r.file("device-d.json")
		r.refused(1, "HTTP 429 too_many_requests", recoverTo(devD)...)
		noFile(t, devD)
		time.Sleep(time.Until(windowEnd) + 300*time.Millisecond)
		r.ok(recoverTo(devD)...)
		r.sign(devD, jwt, "after the window", created["address"])
	})

	t.Run("set-recovery", func(t *testing.T) {
		r.t = t
		jwt := r.jwt("erin", time.Hour, nil)
		devA := r.file("device-a.json")
		created := r.ok("device", "create", "--jwt-file", jwt, "--recovery", "automatic", "--device", devA)
		id := created["wallet_id"]
		r.refused(2, "--password-file", "device", "set-recovery", "--device", devA, "--jwt-file", jwt, "--recovery", "password")

		pw := r.password("erin's new password")
		out := r.ok("device", "set-recovery", "--device", devA, "--jwt-file", jwt, "--recovery", "password", "--password-file", pw)
		if out["recovery_method"] != "password" || out["status"] != "active" || r.state(devA).RecoveryMethod != "password" {
			t.Fatalf("to password: %v", out)
		}
		devB := r.file("device-b.json")
		r.ok("device", "recover", "--wallet", id, "--jwt-file", jwt, "--device", devB, "--password-file", pw)
		r.sign(devB, jwt, "recovered with the password", created["address"])

		out = r.ok("device", "set-recovery", "--device", devA, "--jwt-file", jwt, "--recovery", "automatic")
		if out["recovery_method"] != "automatic" || r.state(devA).RecoveryMethod != "automatic" {
			t.Fatalf("back to automatic: %v", out)
		}
		devC := r.file("device-c.json")
		r.ok("device", "recover", "--wallet", id, "--jwt-file", jwt, "--device", devC)
		r.sign(devC, jwt, "recovered automatically", created["address"])
		r.sign(devA, jwt, "the first device still signs", created["address"])
	})

	r.t = t
	d.stop()
	a.e.ok("audit", "verify", "--config", a.cfg)
	// No password, cloud secret or device share reached the daemon's
	// store or anyone's output.
	if len(r.secrets) < 8 {
		t.Fatalf("only %d secrets to scan for", len(r.secrets))
	}
	scanForSecrets(t, r.secrets, a.e.all.bytes(), filepath.Join(a.dir, "data"))
}
