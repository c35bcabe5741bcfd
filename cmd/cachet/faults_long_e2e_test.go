//go:build faults

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
)

// The long fault runs (make faults): repeated cycles of what the short
// tests do once, with a crash (SIGKILL) instead of a clean stop.

// Five kill/restart cycles of swtpm under a 32-client signing load.
func TestFaultLongTPMCycles(t *testing.T) {
	a := newAppliance(t, config.KindTPM)
	a.init()
	d := a.serve(a.cfg)
	id := a.wallet(t)
	for cycle := range 5 {
		stop := make(chan struct{})
		l := startLoad(t, a.client(), 32, stop, signRequest(id))
		time.Sleep(500 * time.Millisecond)
		l.waitOK(t, 20)
		kill := time.Now()
		a.sw.Kill()
		time.Sleep(2 * time.Second)
		if err := a.sw.Start(); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		waitHealth(t, a.socket, 200, 5*time.Second)
		close(stop)
		var late, before int
		for _, o := range l.wait() {
			if o.status != 200 {
				continue
			}
			if o.sent.Before(kill) {
				before++
			}
			if o.sent.After(kill.Add(time.Second)) && o.answered.Before(restarted) {
				late++
			}
		}
		t.Logf("cycle %d: %d signed before the kill, %d signed for requests sent >1 s after it", cycle, before, late)
		if late != 0 || before == 0 {
			t.Fatalf("cycle %d: %d late signatures, %d before", cycle, late, before)
		}
	}
	if rc := d.stop(); rc != 0 {
		t.Fatalf("exit %d", rc)
	}
	a.e.ok("audit", "verify", "--config", a.cfg)
}

// Unlink the WAL or the database under load, then crash the daemon
// (SIGKILL) right after the store noticed: every acknowledged creation is
// there after the restart. Three rounds each.
func TestFaultLongUnlinkThenCrash(t *testing.T) {
	for round := range 3 {
		for _, victim := range []string{"-wal", "", "-shm"} {
			t.Run(fmt.Sprintf("round%d%s", round, victim), func(t *testing.T) {
				a := newAppliance(t, config.KindPKCS11)
				a.init()
				d := a.serve(a.cfg)
				db := filepath.Join(a.dir, "data", "cachet.db")
				stop := make(chan struct{})
				l := startLoad(t, a.client(), 16, stop, createRequest)
				time.Sleep(500 * time.Millisecond)
				l.waitOK(t, 20)
				if err := os.Remove(db + victim); err != nil {
					t.Fatal(err)
				}
				detected := waitHealth(t, a.socket, 503, 2*time.Second)
				d.cmd.Process.Kill()
				<-d.done
				close(stop)
				var acked []string
				for _, o := range l.wait() {
					if o.status == 200 && o.id != "" {
						acked = append(acked, o.id)
						if o.answered.After(detected) {
							t.Fatalf("creation %s acknowledged after the store failed", o.id)
						}
					}
				}
				d = a.serve(a.cfg)
				lost := 0
				for _, id := range acked {
					if _, err := a.client().Do(context.Background(), client.Request{Method: "GET", Path: "/v1/wallets/" + id}); err != nil {
						lost++
					}
				}
				t.Logf("%d acknowledged, %d lost after the crash and restart", len(acked), lost)
				if lost != 0 || len(acked) == 0 {
					t.Fatalf("%d of %d acknowledged creations lost", lost, len(acked))
				}
				d.stop()
				a.e.ok("audit", "verify", "--config", a.cfg)
			})
		}
	}
}
