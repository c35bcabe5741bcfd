package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the cachet binary: with CACHET_TEST_MAIN=1 it
// runs main(), so these tests drive the real command line, in real child
// processes, against real SoftHSM tokens and swtpm instances.
func TestMain(m *testing.M) {
	if os.Getenv("CACHET_TEST_MAIN") == "1" {
		if os.Getenv("CACHET_TEST_FIX_LISTEN_PID") == "1" {
			// systemd sets LISTEN_PID to the pid it execs; a test cannot
			// know that pid in advance, so the child sets it itself, as
			// go-systemd's own activation tests do.
			os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		}
		main()
		os.Exit(0)
	}
	if sock := os.Getenv("CACHET_TEST_RPC_SOCKET"); sock != "" {
		out, err := rpcClientLine(sock, os.Getenv("CACHET_TEST_RPC_LINE"))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Print(out)
		os.Exit(0)
	}
	if sock := os.Getenv("CACHET_TEST_CLIENT_SOCKET"); sock != "" {
		code, body, err := clientRequest(sock)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("status=%d body=%s\n", code, body)
		os.Exit(0)
	}
	code := m.Run()
	stopPG()
	os.Exit(code)
}

// clientRequest is the test client's one request, run as another uid: GET
// /healthz, or CACHET_TEST_CLIENT_METHOD/PATH/BODY with the app credentials
// in CACHET_TEST_CLIENT_APP (id:secret).
func clientRequest(sock string) (int, []byte, error) {
	path := os.Getenv("CACHET_TEST_CLIENT_PATH")
	if path == "" {
		return get(sock, "/healthz", nil)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	req, err := http.NewRequest(os.Getenv("CACHET_TEST_CLIENT_METHOD"), "http://localhost"+path, strings.NewReader(os.Getenv("CACHET_TEST_CLIENT_BODY")))
	if err != nil {
		return 0, nil, err
	}
	id, secret, _ := strings.Cut(os.Getenv("CACHET_TEST_CLIENT_APP"), ":")
	req.SetBasicAuth(id, secret)
	req.Header.Set("privy-app-id", id)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// result is a finished cachet command.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// logs collects every byte cachet printed in a test, for the secret scan.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) add(b []byte) {
	l.mu.Lock()
	l.buf.Write(b)
	l.mu.Unlock()
}

func (l *logs) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.buf.Bytes())
}

type env struct {
	t     testing.TB
	vars  []string
	stdin string
	all   *logs
}

func newEnv(t testing.TB, vars ...string) *env { return &env{t: t, vars: vars, all: &logs{}} }

func (e *env) command(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), append([]string{"CACHET_TEST_MAIN=1"}, e.vars...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// run runs cachet to completion.
func (e *env) run(args ...string) result {
	e.t.Helper()
	cmd := e.command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if e.stdin != "" {
		cmd.Stdin = strings.NewReader(e.stdin)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run cachet %v: %v", args, err)
	}
	e.all.add(out.Bytes())
	e.all.add(errb.Bytes())
	return result{out.String(), errb.String(), code}
}

// ok runs cachet and fails the test unless it exits 0.
func (e *env) ok(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("cachet %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// proc is a running `cachet serve` or `cachet dev`.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuf
	stdout *syncBuf
	done   chan error
	e      *env
}

// syncBuf is written by os/exec's copying goroutine while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuf) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// start starts a long-running cachet and waits until socket answers /healthz.
func (e *env) start(socket string, args ...string) *proc {
	e.t.Helper()
	return e.startCmd(e.command(args...), socket)
}

func (e *env) startCmd(cmd *exec.Cmd, socket string) *proc {
	e.t.Helper()
	d := &proc{cmd: cmd, stderr: &syncBuf{}, stdout: &syncBuf{}, done: make(chan error, 1), e: e}
	cmd.Stderr = d.stderr
	cmd.Stdout = d.stdout
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { d.done <- cmd.Wait() }()
	e.t.Cleanup(func() { d.stop() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _, err := get(socket, "/healthz", nil); err == nil && code == 200 {
			return d
		}
		select {
		case err := <-d.done:
			d.done <- err
			e.t.Fatalf("cachet exited before serving: %v\n%s", err, d.output())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("cachet not serving on %s after 30s\n%s", socket, d.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *proc) output() string {
	return d.stdout.String() + d.stderr.String()
}

// stop sends SIGTERM and returns the exit code.
func (d *proc) stop() int {
	if d.cmd.ProcessState != nil {
		return d.cmd.ProcessState.ExitCode()
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		d.e.t.Errorf("cachet did not stop within 30s of SIGTERM")
	}
	d.e.all.add(d.stdout.Bytes())
	d.e.all.add(d.stderr.Bytes())
	return d.cmd.ProcessState.ExitCode()
}

// get does a GET over the Unix socket.
func get(socket, path string, hdr map[string]string) (int, []byte, error) {
	c := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}},
	}
	req, _ := http.NewRequest("GET", "http://localhost"+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func mustJSON(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
}

func writeFile(t testing.TB, path, body string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// lines returns the lines of s that contain sub.
func lines(s, sub string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	return out
}
