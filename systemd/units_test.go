// Package systemd holds Cachet's systemd units, sysusers and tmpfiles
// snippets; its test lints the units with systemd-analyze.
package systemd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// systemd-analyze verify exits 0 even on unknown keys, so any output at all
// fails the test. ExecStart must name an existing file, so the units are
// checked with /usr/bin/cachet replaced by a binary that exists.
func TestUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatalf("systemd-analyze not found (install systemd): %v", err)
	}
	dir := t.TempDir()
	units := []string{"cachet.service", "cachet.socket", "cachet-backup.service", "cachet-backup.timer"}
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/bin/cachet"), []byte("/bin/true"))
		if err := os.WriteFile(filepath.Join(dir, u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"verify", "--man=no"}
	for _, u := range units {
		args = append(args, filepath.Join(dir, u))
	}
	cmd := exec.Command("systemd-analyze", args...)
	out, err := cmd.CombinedOutput()
	var problems []string
	for _, l := range strings.Split(string(out), "\n") {
		// Without a running manager, systemd-analyze cannot look the
		// units' user and group up; that is the only tolerated noise.
		if l == "" || strings.Contains(l, "Failed to resolve") || strings.Contains(l, "System has not been booted with systemd") {
			continue
		}
		problems = append(problems, l)
	}
	if err != nil || len(problems) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, strings.Join(problems, "\n"))
	}
}

// The unit must keep the properties the issue asks for.
func TestServiceHardening(t *testing.T) {
	b, err := os.ReadFile("cachet.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "ProtectSystem=strict", "NoNewPrivileges=yes",
		"PrivateTmp=yes", "MemoryDenyWriteExecute=yes", "LimitCORE=0", "DeviceAllow=/dev/tpmrm0"} {
		if !bytes.Contains(b, []byte("\n"+want)) {
			t.Errorf("cachet.service lacks %s", want)
		}
	}
	if bytes.Contains(b, []byte("\nPrivateDevices=yes")) {
		t.Error("PrivateDevices=yes would hide /dev/tpmrm0")
	}
	s, _ := os.ReadFile("cachet.socket")
	if !bytes.Contains(s, []byte("FileDescriptorName=api")) {
		t.Error("cachet.socket must name its descriptor \"api\"")
	}
}
