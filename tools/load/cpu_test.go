package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The CPU columns read the right process and the right fields: the process
// serving a socket is found from the connection's peer credentials, and
// its CPU time grows by what it burns.
func TestCPUOfTheProcessServingASocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	pids, err := appliancePIDs([]string{sock})
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) != 1 || pids[0] != os.Getpid() {
		t.Fatalf("pids %v, want [%d] (this test serves the socket)", pids, os.Getpid())
	}
	a := sampleCPU(pids)
	if !a.ok || a.machine.total == 0 {
		t.Fatalf("sample %+v: counters not read", a)
	}
	// Burn 300 ms of CPU, as getrusage counts it: however busy the
	// machine, this process has then used that much (30 ticks of
	// /proc/PID/stat).
	x := 0
	for deadline := time.Now().Add(time.Minute); sampleCPU(nil).self-a.self < 300*time.Millisecond; x++ {
		if time.Now().After(deadline) {
			t.Fatal("could not burn 300 ms of CPU in a minute")
		}
		for i := 0; i < 100_000; i++ {
			x ^= i
		}
	}
	b := sampleCPU(pids)
	u := cpuBetween(a, b, 1)
	// /proc counts in ticks of 10 ms, and the test's other goroutines add
	// a little: 250 ms is a safe floor, 300 ms the amount.
	if u.ApplianceUSPerReq < 250_000 {
		t.Errorf("the serving process burned 300 ms, /proc/PID/stat says %.0f µs", u.ApplianceUSPerReq)
	}
	if u.ClientUSPerReq < 300_000 {
		t.Errorf("this process burned 300 ms, getrusage says %.0f µs", u.ClientUSPerReq)
	}
	if u.IdlePct < 0 || u.IdlePct > 100 || u.StealPct < 0 || u.StealPct > 100 {
		t.Errorf("idle %.1f %%, steal %.1f %%", u.IdlePct, u.StealPct)
	}
}
