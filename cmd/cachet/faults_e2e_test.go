package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
)

// The fault tests of issue 11: a part goes away under load, and nothing is
// released once the daemon could know. They run the real binary on SoftHSM
// or swtpm; the long ones are in faults_long_e2e_test.go (make faults).

// outcome is one request of a load: when it was sent and what came back.
type outcome struct {
	sent, answered time.Time
	status         int
	code           string
	id             string // the created wallet's id, for creations
}

// load sends requests from workers goroutines until stop is closed.
type load struct {
	mu  sync.Mutex
	out []outcome
	wg  sync.WaitGroup
	n   atomic.Int64
}

func startLoad(t *testing.T, cl *client.Client, workers int, stop <-chan struct{}, req func(i int64) client.Request) *load {
	t.Helper()
	l := &load{}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := l.n.Add(1)
				o := outcome{sent: time.Now()}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				resp, err := cl.Do(ctx, req(i))
				cancel()
				o.answered = time.Now()
				var ce *client.Error
				switch {
				case err == nil:
					o.status = resp.Status
					var w struct{ ID string }
					json.Unmarshal(resp.Body, &w)
					o.id = w.ID
				case errors.As(err, &ce):
					o.status, o.code = ce.Status, ce.Code
				default:
					o.status = -1 // connection refused or reset: nothing released
					time.Sleep(10 * time.Millisecond)
				}
				l.mu.Lock()
				l.out = append(l.out, o)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// waitOK waits until n requests of the load succeeded, so that a fault is
// injected into a load that really runs, however slow the machine.
func (l *load) waitOK(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l.mu.Lock()
		ok := 0
		for _, o := range l.out {
			if o.status == 200 {
				ok++
			}
		}
		l.mu.Unlock()
		if ok >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests of the load succeeded within 30s", ok, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *load) wait() []outcome {
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out
}

// signRequest is a personal_sign on an app-owned wallet: app credentials
// alone authorize it.
func signRequest(walletID string) func(int64) client.Request {
	return func(i int64) client.Request {
		return client.Request{Method: "POST", Path: "/v1/wallets/" + walletID + "/rpc", Body: map[string]any{
			"method": "personal_sign", "chain_type": "ethereum",
			"params": map[string]any{"message": fmt.Sprintf("request %d", i), "encoding": "utf-8"},
		}}
	}
}

func createRequest(int64) client.Request {
	return client.Request{Method: "POST", Path: "/v1/wallets", Body: map[string]any{"chain_type": "ethereum"}}
}

func (a *testAppliance) client() *client.Client {
	return client.New(a.socket, "http://localhost", a.appID, a.appSecret)
}

func (a *testAppliance) wallet(t *testing.T) string {
	t.Helper()
	resp, err := a.client().Do(context.Background(), createRequest(0))
	if err != nil {
		t.Fatal(err)
	}
	var w struct{ ID string }
	json.Unmarshal(resp.Body, &w)
	return w.ID
}

// waitHealth polls /healthz until it answers want, and returns when.
func waitHealth(t *testing.T, socket string, want int, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body, _ := get(socket, "/healthz", nil)
		if code == want {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz did not answer %d within %s (last: %d %s)", want, within, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill swtpm under signing load: no signature is released for a request sent
// more than a second after the kill (the probe sees a dead TPM within 200 ms),
// every refusal is 503 unavailable naming the backend, and when the same TPM
// comes back the daemon serves again without a restart.
func TestFaultTPMKilledUnderLoad(t *testing.T) {
	a := newAppliance(t, config.KindTPM)
	a.init()
	d := a.serve(a.cfg)
	id := a.wallet(t)
	stop := make(chan struct{})
	l := startLoad(t, a.client(), 8, stop, signRequest(id))
	time.Sleep(time.Second)
	kill := time.Now()
	a.sw.Kill()
	time.Sleep(3 * time.Second)
	close(stop)
	out := l.wait()

	var before, lateOK, lateRefused, wrongCode int
	first503 := time.Duration(-1)
	for _, o := range out {
		switch {
		case o.sent.Before(kill) && o.status == 200:
			before++
		case o.sent.After(kill.Add(time.Second)) && o.status == 200:
			lateOK++
		case o.sent.After(kill.Add(time.Second)):
			lateRefused++
			if o.status != 503 || o.code != "unavailable" {
				wrongCode++
			}
		}
		if o.status == 503 && o.sent.After(kill) && (first503 < 0 || o.answered.Sub(kill) < first503) {
			first503 = o.answered.Sub(kill)
		}
	}
	t.Logf("signatures before the kill: %d; requests sent >1 s after it: %d refused, %d signed; first 503 %s after the kill", before, lateRefused, lateOK, first503)
	if before == 0 || lateRefused == 0 {
		t.Fatalf("load did not run: %d signed before, %d refused after", before, lateRefused)
	}
	if lateOK != 0 {
		t.Fatalf("%d signatures released for requests sent more than 1 s after the TPM was killed", lateOK)
	}
	if wrongCode != 0 {
		t.Fatalf("%d refusals were not 503 unavailable", wrongCode)
	}
	code, body, _ := get(a.socket, "/healthz", nil)
	if code != 503 || !json.Valid(body) {
		t.Fatalf("/healthz with the TPM gone: %d %s", code, body)
	}
	// The same TPM comes back (its state survives): serving resumes.
	if err := a.sw.Start(); err != nil {
		t.Fatal(err)
	}
	back := waitHealth(t, a.socket, 200, 5*time.Second)
	t.Logf("serving again %s after swtpm restarted, without restarting cachet", time.Since(back))
	if _, err := a.client().Do(context.Background(), signRequest(id)(0)); err != nil {
		t.Fatalf("signature after the TPM came back: %v", err)
	}
	if rc := d.stop(); rc != 0 {
		t.Fatalf("stop: exit %d\n%s", rc, d.output())
	}
	if n := countRecords(t, filepath.Join(a.dir, "data", "cachet.db"), "api.refused"); n == 0 {
		t.Fatal("no refusal was recorded")
	}
	a.e.ok("audit", "verify", "--config", a.cfg)
}

// Unlink the WAL, or the database file, under a load of wallet creations:
// no creation is acknowledged after the store notices (it checks its files
// after every commit, before answering), and every creation that was
// acknowledged is there after a restart.
func TestFaultStoreFilesUnlinkedUnderLoad(t *testing.T) {
	for _, victim := range []string{"-wal", ""} {
		name := "database"
		if victim != "" {
			name = "wal"
		}
		t.Run(name, func(t *testing.T) {
			a := newAppliance(t, config.KindPKCS11)
			a.init()
			d := a.serve(a.cfg)
			db := filepath.Join(a.dir, "data", "cachet.db")
			stop := make(chan struct{})
			l := startLoad(t, a.client(), 8, stop, createRequest)
			time.Sleep(time.Second)
			l.waitOK(t, 20)
			if err := os.Remove(db + victim); err != nil {
				t.Fatal(err)
			}
			unlinked := time.Now()
			detected := waitHealth(t, a.socket, 503, 2*time.Second)
			time.Sleep(time.Second)
			close(stop)
			out := l.wait()
			var acked []string
			var ackedAfter int
			for _, o := range out {
				if o.status == 200 && o.id != "" {
					acked = append(acked, o.id)
					if o.answered.After(detected) {
						ackedAfter++
					}
				}
			}
			t.Logf("%d creations acknowledged; /healthz 503 %s after the unlink; %d acknowledged after that", len(acked), detected.Sub(unlinked), ackedAfter)
			if len(acked) == 0 {
				t.Fatal("load did not run")
			}
			if ackedAfter != 0 {
				t.Fatalf("%d creations acknowledged after the store failed", ackedAfter)
			}
			d.stop()
			if _, err := os.Stat(db); err != nil {
				t.Fatalf("the database was not rescued to its path: %v\n%s", err, d.output())
			}
			d = a.serve(a.cfg)
			cl := a.client()
			var lost int
			for _, id := range acked {
				if _, err := cl.Do(context.Background(), client.Request{Method: "GET", Path: "/v1/wallets/" + id}); err != nil {
					lost++
				}
			}
			if lost != 0 {
				t.Fatalf("%d of %d acknowledged creations lost after the restart", lost, len(acked))
			}
			d.stop()
			a.e.ok("audit", "verify", "--config", a.cfg)
		})
	}
}

// withServer returns a copy of the appliance's config with extra lines in
// its [server] section.
func (a *testAppliance) withServer(t *testing.T, name, lines string) string {
	t.Helper()
	b, err := os.ReadFile(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "[server]\n", "[server]\n"+lines+"\n", 1)
	return writeFile(t, filepath.Join(a.dir, name), s, 0o600)
}

// A store whose disk stops answering (a hook blocks the writer before each
// commit, as a frozen file system would): /healthz and new requests answer
// 503 within the write deadline, requests already waiting get 503 when it
// passes, and SIGTERM exits within the drain timeout, non-zero because the
// stop record and the final checkpoint could not be written.
func TestFaultStoreFrozen(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	freeze := filepath.Join(a.dir, "freeze")
	a.e.vars = append(a.e.vars, "CACHET_TEST_STORE_FREEZE_FILE="+freeze)
	cfg := a.withServer(t, "drain.toml", `drain_timeout = "3s"`)
	d := a.serve(cfg)
	id := a.wallet(t)
	if err := os.WriteFile(freeze, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	// A request caught by the freeze waits for the write deadline.
	res := make(chan outcome, 1)
	go func() {
		o := outcome{sent: time.Now()}
		_, err := a.client().Do(context.Background(), signRequest(id)(1))
		var ce *client.Error
		if errors.As(err, &ce) {
			o.status, o.code = ce.Status, ce.Code
		} else if err == nil {
			o.status = 200
		}
		o.answered = time.Now()
		res <- o
	}()
	failing := waitHealth(t, a.socket, 503, 5*time.Second)
	t.Logf("/healthz 503 %s after the freeze", failing.Sub(frozen))
	_, err := a.client().Do(context.Background(), signRequest(id)(2))
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 503 || ce.Code != "unavailable" || !strings.Contains(ce.Message, "store") {
		t.Fatalf("a request while the store is frozen: %v, want 503 unavailable naming the store", err)
	}
	o := <-res
	t.Logf("the request caught by the freeze: %d %s after %s", o.status, o.code, o.answered.Sub(o.sent))
	if o.status != 503 || o.answered.Sub(o.sent) > 8*time.Second {
		t.Fatalf("the request caught by the freeze: %d after %s, want 503 within the write deadline", o.status, o.answered.Sub(o.sent))
	}
	start := time.Now()
	rc := d.stop()
	t.Logf("SIGTERM with the store frozen: exit %d after %s", rc, time.Since(start))
	if rc == 0 {
		t.Fatalf("exit 0 although the stop record could not be written\n%s", d.output())
	}
	if time.Since(start) > 3*time.Second+2*time.Second {
		t.Fatalf("stop took %s with a 3s drain timeout", time.Since(start))
	}
	os.Remove(freeze)
	a.e.ok("audit", "verify", "--config", a.cfg)
}

// One damaged data page. By default the whole-file check runs while the
// daemon serves: it finds the page, /healthz says so, and nothing is
// released from then on. With check_before_serving, serve refuses. audit
// verify fails. All name corruption, not an I/O error.
func TestFaultCorruptPage(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	d := a.serve(a.cfg)
	var wallets []string
	for range 50 {
		wallets = append(wallets, a.wallet(t))
	}
	d.stop()
	db := filepath.Join(a.dir, "data", "cachet.db")
	// A table nothing reads at start or to sign for an app-owned wallet,
	// so only the whole-file check can find it.
	corruptTablePage(t, db, "key_quorums")

	t.Run("found while serving", func(t *testing.T) {
		cmd := a.e.command("serve", "--config", a.cfg)
		var out syncBuf
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM)
			<-done
		}()
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body, err := get(a.socket, "/healthz", nil)
			if err == nil && code == http.StatusServiceUnavailable {
				var h struct {
					Store struct{ Status, Integrity string }
				}
				json.Unmarshal(body, &h)
				if h.Store.Status != "failing" || !strings.Contains(h.Store.Integrity, "corrupt") {
					t.Fatalf("/healthz: %s", body)
				}
				break
			}
			select {
			case err := <-done:
				t.Fatalf("serve exited: %v\n%s", err, out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("/healthz never reported the damaged page (last %d %s)\n%s", code, body, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		_, err := a.client().Do(context.Background(), signRequest(wallets[0])(1))
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusServiceUnavailable {
			t.Fatalf("signing after the damaged page was found: %v", err)
		}
	})
	t.Run("check before serving", func(t *testing.T) {
		b, err := os.ReadFile(a.cfg)
		if err != nil {
			t.Fatal(err)
		}
		cfg := writeFile(t, filepath.Join(a.dir, "before.toml"), string(b)+"\n[store]\ncheck_before_serving = true\n", 0o600)
		r := a.e.run("serve", "--config", cfg)
		if r.code == 0 || !strings.Contains(r.stderr, "corrupt") {
			t.Fatalf("serve on a corrupt page: exit %d\n%s", r.code, r)
		}
	})
	r := a.e.run("audit", "verify", "--config", a.cfg)
	if r.code == 0 || !strings.Contains(r.stderr+r.stdout, "corrupt") {
		t.Fatalf("audit verify on a corrupt page: exit %d\n%s", r.code, r)
	}
	t.Logf("audit verify: %s", strings.TrimSpace(r.stderr))
}

// corruptTablePage overwrites the b-tree header of table's root page.
func corruptTablePage(t *testing.T, db, table string) {
	t.Helper()
	conn, err := sql.Open("sqlite3", "file:"+db+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	var root, pageSize int64
	if err := conn.QueryRow(`SELECT rootpage FROM sqlite_schema WHERE name = ?`, table).Scan(&root); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(`PRAGMA page_size`).Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	f, err := os.OpenFile(db, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{0x42, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01}, (root-1)*pageSize); err != nil {
		t.Fatal(err)
	}
}

// audit verify, status and serve refuse a missing database instead of
// creating an empty one that "verifies" or serves.
func TestAuditVerifyRefusesMissingDatabase(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	db := filepath.Join(a.dir, "data", "cachet.db")
	for _, f := range []string{db, db + "-wal", db + "-shm"} {
		os.Remove(f)
	}
	for _, args := range [][]string{{"audit", "verify"}, {"status"}, {"serve"}} {
		r := a.e.run(append(args, "--config", a.cfg)...)
		if r.code == 0 || !strings.Contains(r.stderr, "no such file") {
			t.Fatalf("%v on a missing database: exit %d\n%s", args, r.code, r)
		}
		if _, err := os.Stat(db); err == nil {
			t.Fatalf("%v created an empty database", args)
		}
	}
}

// mountTmpfs mounts a tmpfs of size bytes on dir for the test (CI runs as
// root).
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs (the fault tests need root): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
}

// fill writes a file until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	for _, n := range []int{64 << 10, 4 << 10, 512} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
}

// Fill the store's file system under signing load: /healthz says 503 within
// a second, no signature is released while the disk is full, service
// comes back when space returns, and the record verifies.
func TestFaultDiskFull(t *testing.T) {
	a := newAppliance(t, config.KindPKCS11)
	mountTmpfs(t, filepath.Join(a.dir, "data"), 48<<20)
	a.init()
	d := a.serve(a.cfg)
	id := a.wallet(t)
	stop := make(chan struct{})
	l := startLoad(t, a.client(), 8, stop, signRequest(id))
	time.Sleep(time.Second)
	filler := filepath.Join(a.dir, "data", "filler")
	fill(t, filler)
	full := time.Now()
	failing := waitHealth(t, a.socket, 503, 2*time.Second)
	time.Sleep(2 * time.Second)
	freed := time.Now()
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	back := waitHealth(t, a.socket, 200, 5*time.Second)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	out := l.wait()
	var before, between, whileFull, after int
	for _, o := range out {
		if o.status != 200 {
			continue
		}
		switch {
		case o.sent.Before(full):
			before++
		case o.sent.Before(failing):
			between++
		case o.answered.Before(freed):
			whileFull++
		case o.sent.After(back):
			after++
		}
	}
	t.Logf("disk full: /healthz 503 after %s; signatures: %d before, %d sent before the store noticed, %d while full, %d after space returned (%s to recover)",
		failing.Sub(full), before, between, whileFull, after, back.Sub(freed))
	if failing.Sub(full) > time.Second {
		t.Errorf("/healthz took %s to notice the full disk", failing.Sub(full))
	}
	if whileFull != 0 {
		t.Fatalf("%d signatures released while the disk was full", whileFull)
	}
	if before == 0 || after == 0 {
		t.Fatalf("no signatures before the fill (%d) or after space returned (%d)", before, after)
	}
	if rc := d.stop(); rc != 0 {
		t.Fatalf("stop: exit %d\n%s", rc, d.output())
	}
	a.e.ok("audit", "verify", "--config", a.cfg)
}

// Roll the database back to a copy taken before the last checkpoint: serve
// refuses and audit verify fails, both naming the rollback, because the
// hardware (a TPM NV index, an HSM token object) anchors the last checkpoint.
// `cachet restore` re-anchors deliberately, after which the old copy serves.
func TestFaultRollbackRefused(t *testing.T) {
	for _, kind := range []string{config.KindPKCS11, config.KindTPM} {
		t.Run(kind, func(t *testing.T) {
			a := newAppliance(t, kind)
			a.init()
			db := filepath.Join(a.dir, "data", "cachet.db")
			d := a.serve(a.cfg)
			a.wallet(t)
			d.stop()
			old := filepath.Join(a.dir, "cachet.db.old")
			copyFile(t, db, old)
			d = a.serve(a.cfg)
			a.wallet(t)
			d.stop()
			if r := a.e.ok("audit", "verify", "--config", a.cfg); !strings.Contains(r.stdout, "the hardware anchors checkpoint") {
				t.Fatalf("audit verify does not report the anchor: %s\n%s", r, d.output())
			}
			for _, f := range []string{db + "-wal", db + "-shm"} {
				os.Remove(f)
			}
			copyFile(t, old, db)
			r := a.e.run("serve", "--config", a.cfg)
			if r.code == 0 || !strings.Contains(r.stderr, "rolled back") {
				t.Fatalf("serve on a rolled-back database: exit %d\n%s", r.code, r)
			}
			r = a.e.run("audit", "verify", "--config", a.cfg)
			if r.code != 1 || !strings.Contains(r.stderr, "rolled back") {
				t.Fatalf("audit verify on a rolled-back database: exit %d\n%s", r.code, r)
			}
			t.Logf("audit verify: %s", lastLine(r.stderr))
			// Deliberately: restore onto the hardware re-anchors.
			cfg := a.cfg
			args := []string{"--share", a.share(1), "--share", a.share(2), "--identity", a.ops[0].keyFile, "--identity", a.ops[1].keyFile}
			if kind == config.KindTPM {
				args = append(args, "--replace")
			} else {
				cfg = a.writeConfig("new-token.toml", a.backendSection(""), "")
			}
			a.e.ok(append([]string{"restore", "--config", cfg}, args...)...)
			d = a.serve(cfg)
			a.wallet(t)
			d.stop()
			a.e.ok("audit", "verify", "--config", cfg)
		})
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}
