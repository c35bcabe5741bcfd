// Package testhw starts the real hardware providers that Cachet's tests run
// against: a throwaway SoftHSM2 token directory and a throwaway swtpm, each in
// its own temporary directory, cleaned up when the test ends.
//
// A missing SoftHSM module or swtpm binary fails the test: `.ci/run` installs
// them, so their absence is a broken setup, never a reason to skip.
//
// SoftHSM reads SOFTHSM2_CONF once per process, at C_Initialize, and a process
// does not see tokens that another process creates after that. So a test
// package that uses PKCS#11 in-process calls SoftHSMMain from TestMain (one
// token directory per test process, which also keeps test packages from
// racing on one directory) and creates its tokens in-process with
// hsm.InitToken; tests that run cachet as a child process use NewSoftHSM and
// Token, which create the token with softhsm2-util before the child starts.
//
// This package imports nothing from Cachet but internal/simhw, so any
// package's tests can use it.
package testhw

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/cachet-custody/cachet/internal/simhw"
)

// Module returns the SoftHSM2 module path: $PKCS11_MODULE, or Debian's.
func Module() string { return simhw.SoftHSMModule() }

func writeSoftHSMConf(dir string) (string, error) { return simhw.WriteSoftHSMConf(dir) }

// SoftHSMMain gives this test process its own SoftHSM2 token directory, points
// SOFTHSM2_CONF at it, runs the tests and removes it. Call it from TestMain
// before anything initializes PKCS#11. It exits with status 1, and runs
// nothing, when the module is missing.
func SoftHSMMain(m *testing.M) {
	if _, err := os.Stat(Module()); err != nil {
		fmt.Fprintf(os.Stderr, "testhw: SoftHSM2 module not found at %s (install softhsm2, or set PKCS11_MODULE): %v\n", Module(), err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "cachet-softhsm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testhw:", err)
		os.Exit(1)
	}
	conf, err := writeSoftHSMConf(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testhw:", err)
		os.Exit(1)
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// UniqueLabel returns a token label that no other test in this process uses.
func UniqueLabel(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// SoftHSM is a SoftHSM2 token directory with its own config file, for tests
// that run cachet (or any PKCS#11 user) as a child process.
type SoftHSM struct {
	Dir    string // holds softhsm2.conf and tokens/
	Conf   string // the SOFTHSM2_CONF value for child processes
	Module string
}

// NewSoftHSM makes an empty token directory under a temporary directory.
func NewSoftHSM(t testing.TB) *SoftHSM {
	t.Helper()
	if _, err := os.Stat(Module()); err != nil {
		t.Fatalf("SoftHSM2 module not found at %s (install softhsm2): %v", Module(), err)
	}
	dir := t.TempDir()
	conf, err := writeSoftHSMConf(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &SoftHSM{Dir: dir, Conf: conf, Module: Module()}
}

// Env returns the environment entry that points a child process at this
// token directory.
func (s *SoftHSM) Env() string { return "SOFTHSM2_CONF=" + s.Conf }

// Token initializes a new token with softhsm2-util and returns its label; the
// user PIN is pin. Call it before the process that uses the token starts.
func (s *SoftHSM) Token(t testing.TB, label, pin string) string {
	t.Helper()
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "so-"+pin, "--pin", pin)
	cmd.Env = append(os.Environ(), s.Env())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return label
}

// Swtpm is a running swtpm TPM 2.0 simulator, a child of the test process.
type Swtpm struct {
	*simhw.Swtpm
}

// StartSwtpm starts swtpm on a Unix socket in a fresh state directory and
// stops it when the test ends.
func StartSwtpm(t testing.TB) *Swtpm { return startSwtpm(t, false) }

// StartSwtpmTCP starts swtpm listening on a free loopback TCP port.
func StartSwtpmTCP(t testing.TB) *Swtpm { return startSwtpm(t, true) }

func startSwtpm(t testing.TB, tcp bool) *Swtpm {
	t.Helper()
	// Unix socket paths are limited to 108 bytes, and t.TempDir() paths grow
	// with the test name, so use a short directory of our own.
	dir, err := os.MkdirTemp("", "swtpm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// A free TCP port can be taken by another process before swtpm binds
	// it; a few attempts with new ports make that race harmless.
	var s *Swtpm
	for attempt := 0; attempt < 3; attempt++ {
		port := 0
		if tcp {
			port = freePort(t)
		}
		s = &Swtpm{simhw.NewSwtpm(dir, port)}
		if err = s.Swtpm.Start(); err == nil || !tcp {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Swtpm.Stop() })
	return s
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Stop shuts swtpm down cleanly (its state is flushed) and waits for it.
func (s *Swtpm) Stop(t testing.TB) {
	if err := s.Swtpm.Stop(); err != nil {
		t.Logf("swtpm stop: %v", err)
	}
}

// Restart stops swtpm and starts it again on the same state, as a reboot of
// the machine would: persistent objects survive and PCRs are reset.
func (s *Swtpm) Restart(t testing.TB) {
	t.Helper()
	s.Swtpm.Stop()
	if err := s.Swtpm.Start(); err != nil {
		t.Fatal(err)
	}
}
