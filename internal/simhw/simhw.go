// Package simhw runs the software stand-ins for hardware that development
// and tests use: a SoftHSM2 token directory with its own config file, and a
// swtpm TPM 2.0 simulator as a child process. Production never uses it.
package simhw

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultSoftHSMModule is where Debian's softhsm2 package puts the module.
const DefaultSoftHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// SoftHSMModule returns $PKCS11_MODULE, or DefaultSoftHSMModule.
func SoftHSMModule() string {
	if m := os.Getenv("PKCS11_MODULE"); m != "" {
		return m
	}
	return DefaultSoftHSMModule
}

// WriteSoftHSMConf creates dir/tokens and dir/softhsm2.conf pointing at it,
// and returns the conf path (the SOFTHSM2_CONF value). Debian's SoftHSM has
// no "db" object store, so the file store is used.
func WriteSoftHSMConf(dir string) (string, error) {
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	return conf, os.WriteFile(conf, []byte(body), 0o600)
}

// Swtpm is a swtpm process serving a TPM 2.0 on a Unix socket or loopback
// TCP, with its control channel on a Unix socket.
type Swtpm struct {
	StateDir string
	// Device is the address as Cachet's tpm.device setting takes it:
	// "unix:PATH" or "tcp:127.0.0.1:PORT".
	Device string
	ctrl   string
	port   int
	cmd    *exec.Cmd
	done   chan error
}

// NewSwtpm describes a swtpm with its state in stateDir, serving on a Unix
// socket in that directory (port 0) or on loopback TCP port port. Socket
// paths are limited to 107 bytes, so keep stateDir short.
func NewSwtpm(stateDir string, port int) *Swtpm {
	s := &Swtpm{StateDir: stateDir, ctrl: filepath.Join(stateDir, "ctrl"), port: port}
	if port > 0 {
		s.Device = "tcp:127.0.0.1:" + strconv.Itoa(port)
	} else {
		s.Device = "unix:" + filepath.Join(stateDir, "tpm.sock")
	}
	return s
}

// Start starts swtpm and waits until it answers on its control channel.
func (s *Swtpm) Start() error {
	for _, bin := range []string{"swtpm", "swtpm_ioctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found (install the swtpm and swtpm-tools packages): %w", bin, err)
		}
	}
	if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
		return err
	}
	server := "type=unixio,path=" + strings.TrimPrefix(s.Device, "unix:")
	if s.port > 0 {
		server = fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.port)
	}
	// A child process, not --daemon: PID 1 on our machines does not reap
	// daemonized swtpm. not-need-init,startup-clear powers the TPM up, so
	// no client sends TPM2_Startup or the simulator's power-on command.
	s.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+s.StateDir,
		"--server", server,
		"--ctrl", "type=unixio,path="+s.ctrl,
		"--flags", "not-need-init,startup-clear",
		"--log", "file="+filepath.Join(s.StateDir, "swtpm.log")+",level=1")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start swtpm: %w", err)
	}
	s.done = make(chan error, 1)
	go func(c *exec.Cmd, done chan error) { done <- c.Wait() }(s.cmd, s.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := exec.Command("swtpm_ioctl", "--unix", s.ctrl, "-g").Run(); err == nil {
			return nil
		}
		select {
		case err := <-s.done:
			log, _ := os.ReadFile(filepath.Join(s.StateDir, "swtpm.log"))
			s.cmd = nil
			return fmt.Errorf("swtpm exited before it was ready: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return errors.New("swtpm not ready after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill kills swtpm with SIGKILL, as a crash or a pulled device would, and
// waits for it; its state directory stays, so Start brings the same TPM back.
func (s *Swtpm) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Stop shuts swtpm down cleanly (its state is flushed) and waits for it.
func (s *Swtpm) Stop() error {
	if s.cmd == nil {
		return nil
	}
	err := exec.Command("swtpm_ioctl", "--unix", s.ctrl, "-s").Run()
	if err != nil {
		s.cmd.Process.Kill()
	}
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
	return err
}
