//go:build cleftest

// Clef v1.17.3 (the last release with it) beside Cachet's signer endpoint,
// for BENCHMARKS.md: `make bench-clef`. Building Clef takes minutes, so it
// has its own build tag.

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

const clefVersion = "v1.17.3"

// clefRun runs one Clef command with its prompts answered from stdin.
func clefRun(b *testing.B, bin, stdin string, args ...string) string {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("clef %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// BenchmarkClef is account_signTransaction through Clef as geth sends it:
// a lightkdf keystore account whose password is in Clef's credential store,
// and an attested rules file that approves every transaction, so no human
// is asked. Same request, connections and measure as
// BenchmarkSignerEndpoint.
func BenchmarkClef(b *testing.B) {
	dir := shortDir(b)
	cmd := exec.Command("go", "install", "github.com/ethereum/go-ethereum/cmd/clef@"+clefVersion)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go install clef@%s: %v\n%s", clefVersion, err, out)
	}
	bin := filepath.Join(dir, "clef")
	ks, conf := filepath.Join(dir, "ks"), filepath.Join(dir, "c")
	const master, accountPW = "master-password-1", "account-password-1"
	flags := []string{"--configdir", conf, "--keystore", ks, "--lightkdf", "--nousb", "--suppress-bootwarn"}
	out := clefRun(b, bin, accountPW+"\n"+accountPW+"\n", append(flags, "newaccount")...)
	m := regexp.MustCompile(`0x[0-9a-fA-F]{40}`).FindString(out)
	if m == "" {
		b.Fatalf("clef newaccount printed no address:\n%s", out)
	}
	addr := common.HexToAddress(m)
	clefRun(b, bin, master+"\n"+master+"\n", append(flags, "init")...)
	clefRun(b, bin, accountPW+"\n"+accountPW+"\n"+master+"\n", append(flags, "setpw", addr.Hex())...)
	rules := "function ApproveTx(r) { return \"Approve\" }\nfunction ApproveListing() { return \"Approve\" }\nfunction ApproveSignData() { return \"Approve\" }\n"
	rulesFile := writeFile(b, filepath.Join(dir, "rules.js"), rules, 0o644)
	sum := sha256.Sum256([]byte(rules))
	clefRun(b, bin, master+"\n", append(flags, "attest", hex.EncodeToString(sum[:]))...)

	// Clef's own audit log (its default, audit.log in the working
	// directory) is kept, in the run's directory.
	srv := exec.Command(bin, append(flags, "--chainid", "1337", "--rules", rulesFile, "--auditlog", filepath.Join(dir, "audit.log"))...)
	srv.Stdin = strings.NewReader(master + "\n")
	var log logs
	srv.Stdout, srv.Stderr = &logWriter{&log}, &logWriter{&log}
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	sock := filepath.Join(conf, "clef.ipc")
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitSocket(b, sock)
	benchSignTransaction(b, sock, addr)
	if !strings.Contains(string(log.bytes()), "Rule engine configured") {
		b.Fatalf("clef ran without its rules:\n%s", string(log.bytes()))
	}
}

type logWriter struct{ l *logs }

func (w *logWriter) Write(p []byte) (int, error) { w.l.add(p); return len(p), nil }
