package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/internal/testpg"
)

// acked returns the ids of the creations the load got 200 for.
func acked(out []outcome) []string {
	var ids []string
	for _, o := range out {
		if o.status == 200 && o.id != "" {
			ids = append(ids, o.id)
		}
	}
	return ids
}

// checkNoneLost reads every acknowledged creation back through cl.
func checkNoneLost(t *testing.T, cl *client.Client, ids []string) {
	t.Helper()
	lost := 0
	for _, id := range ids {
		if _, err := cl.Do(context.Background(), client.Request{Method: "GET", Path: "/v1/wallets/" + id}); err != nil {
			lost++
		}
	}
	if lost != 0 || len(ids) == 0 {
		t.Fatalf("%d of %d acknowledged creations lost", lost, len(ids))
	}
}

// okAfter counts the load's successes sent after since.
func (l *load) okAfter(since time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, o := range l.out {
		if o.status == 200 && o.sent.After(since) {
			n++
		}
	}
	return n
}

// waitOKAfter waits until n requests sent after since succeeded.
func (l *load) waitOKAfter(t *testing.T, n int, since time.Time, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for l.okAfter(since) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: only %d of %d requests succeeded within 30s", what, l.okAfter(since), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill -9 of one appliance under creation load spread over both: nothing
// acknowledged is lost, the other keeps serving while it is down, and the
// killed one rejoins.
func TestHAFaultKillUnderLoad(t *testing.T) {
	c := newHACluster(t)
	procs := []*proc{c.a.serve(c.a.cfg), c.b.serve(c.b.cfg)}
	apps := []*testAppliance{c.a, c.b}
	var ids []string
	for round := range haFaultRounds {
		victim, other := round%2, 1-round%2
		stop := make(chan struct{})
		loads := []*load{startLoad(t, c.a.client(), 8, stop, createRequest), startLoad(t, c.b.client(), 8, stop, createRequest)}
		loads[0].waitOK(t, 20)
		loads[1].waitOK(t, 20)
		procs[victim].cmd.Process.Kill()
		<-procs[victim].done
		killed := time.Now()
		loads[other].waitOKAfter(t, 20, killed, "the surviving appliance")
		procs[victim] = apps[victim].serve(apps[victim].cfg)
		rejoined := time.Now()
		loads[victim].waitOKAfter(t, 20, rejoined, "the restarted appliance")
		close(stop)
		var n [2]int
		for i, l := range loads {
			got := acked(l.wait())
			n[i] = len(got)
			ids = append(ids, got...)
		}
		t.Logf("round %d: appliance %s killed; %d and %d creations acknowledged", round, apps[victim].kind, n[0], n[1])
	}
	checkNoneLost(t, c.a.client(), ids)
	checkNoneLost(t, c.b.client(), ids)
	for i, d := range procs {
		d.stop()
		apps[i].e.ok("audit", "verify", "--config", apps[i].cfg)
	}
}

// PostgreSQL stopped (as by a crash: no checkpoint) under load over both
// appliances: both answer 503 while it is down, nothing sent while it is
// down is acknowledged, nothing acknowledged is lost, and both serve again
// once it is back, without a restart.
func TestHAFaultPostgresRestart(t *testing.T) {
	// A server of its own: this test stops it.
	srv, err := testpg.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c := newHAClusterOn(t, srv)
	procs := []*proc{c.a.serve(c.a.cfg), c.b.serve(c.b.cfg)}
	var ids []string
	for round := range haFaultRounds {
		stop := make(chan struct{})
		loads := []*load{startLoad(t, c.a.client(), 8, stop, createRequest), startLoad(t, c.b.client(), 8, stop, createRequest)}
		loads[0].waitOK(t, 20)
		loads[1].waitOK(t, 20)
		if err := srv.StopServer(true); err != nil {
			t.Fatal(err)
		}
		down := time.Now()
		for _, ap := range []*testAppliance{c.a, c.b} {
			waitHealth(t, ap.socket, 503, 15*time.Second)
		}
		// Requests keep coming while it is down.
		for _, l := range loads {
			n := l.n.Load()
			deadline := time.Now().Add(30 * time.Second)
			for l.n.Load() < n+16 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
		}
		if err := srv.StartServer(); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		for _, ap := range []*testAppliance{c.a, c.b} {
			waitHealth(t, ap.socket, 200, 30*time.Second)
		}
		for i, l := range loads {
			l.waitOKAfter(t, 20, restarted, fmt.Sprintf("appliance %d after PostgreSQL came back", i))
		}
		close(stop)
		var during, refused int
		for _, l := range loads {
			out := l.wait()
			for _, o := range out {
				if o.sent.After(down) && o.answered.Before(restarted) {
					if o.status == 200 {
						during++
					} else {
						refused++
					}
				}
			}
			ids = append(ids, acked(out)...)
		}
		t.Logf("round %d: %d requests refused while PostgreSQL was down, %d acknowledged", round, refused, during)
		if during != 0 || refused == 0 {
			t.Fatalf("round %d: %d requests sent while PostgreSQL was down were acknowledged (%d refused)", round, during, refused)
		}
	}
	checkNoneLost(t, c.a.client(), ids)
	checkNoneLost(t, c.b.client(), ids)
	for i, d := range procs {
		d.stop()
		ap := []*testAppliance{c.a, c.b}[i]
		ap.e.ok("audit", "verify", "--config", ap.cfg)
	}
}
