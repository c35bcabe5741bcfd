package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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
