package hsm_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"testing"

	"github.com/cachet-custody/cachet/hsm"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
)

const (
	soPIN   = "so-pin-8431"
	userPIN = "user-pin-2718"
)

func TestMain(m *testing.M) { testhw.SoftHSMMain(m) }

// checkReleased fails the test if it leaves the module initialized. Register
// it before opening anything: cleanups run last-in first-out, so it runs
// after every Close.
func checkReleased(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		if n := hsm.ModuleRefs(testhw.Module()); n != 0 {
			t.Errorf("the PKCS#11 module is still held by %d users after the test", n)
		}
	})
}

// newToken initializes a fresh token in this process and returns its label.
func newToken(t testing.TB) string {
	t.Helper()
	label := testhw.UniqueLabel("t")
	if err := hsm.InitToken(testhw.Module(), label, soPIN, userPIN); err != nil {
		t.Fatalf("InitToken(%q): %v", label, err)
	}
	return label
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func openOpts(t testing.TB, label string, sessions int) hsm.Options {
	return hsm.Options{Module: testhw.Module(), TokenLabel: label, PIN: userPIN, Sessions: sessions, Logger: testLogger(t)}
}

// open opens the token and closes it when the test ends.
func open(t testing.TB, label string, sessions int) keys.Backend {
	t.Helper()
	b, err := hsm.Open(context.Background(), openOpts(t, label, sessions))
	if err != nil {
		t.Fatalf("Open(%q): %v", label, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func newRoot(t testing.TB) []byte {
	root := make([]byte, keys.RootSize)
	if _, err := rand.Read(root); err != nil {
		t.Fatal(err)
	}
	return root
}

func provision(t testing.TB, b keys.Backend, root []byte, opts keys.ProvisionOptions) {
	t.Helper()
	if err := b.(keys.Provisioner).Provision(context.Background(), root, opts); err != nil {
		t.Fatalf("Provision(generation %d): %v", opts.Generation, err)
	}
}

// provisioned returns a backend on a fresh token provisioned with a random
// root as generation 1, and the root.
func provisioned(t testing.TB, sessions int) (keys.Backend, []byte) {
	t.Helper()
	checkReleased(t)
	b := open(t, newToken(t), sessions)
	root := newRoot(t)
	provision(t, b, root, keys.ProvisionOptions{Generation: 1})
	return b, root
}

func sealT(t testing.TB, b keys.Backend, p keys.Purpose, pt, aad []byte) []byte {
	t.Helper()
	blob, err := b.Seal(context.Background(), p, pt, aad)
	if err != nil {
		t.Fatalf("Seal(%s, %d bytes): %v", p, len(pt), err)
	}
	return blob
}

// digest is the SHA-256 of a message that depends on i.
func digest(i int) []byte {
	d := sha256.Sum256(fmt.Appendf(nil, "message %d", i))
	return d[:]
}
