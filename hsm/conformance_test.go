package hsm_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/cachet-custody/cachet/hsm"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/keys/keystest"
	"github.com/miekg/pkcs11"
)

// softHSM is keystest.Hardware over SoftHSM2: each New is a new token,
// initialized in this process, opened with a pool of sessions sessions.
type softHSM struct{ sessions int }

func (h softHSM) New(t testing.TB) (keys.Backend, func(testing.TB) keys.Backend) {
	t.Helper()
	// Like checkReleased, but a test may hold other tokens open (Restore
	// makes two): this token's backends give back what they took.
	held := hsm.ModuleRefs(testhw.Module())
	t.Cleanup(func() {
		if n := hsm.ModuleRefs(testhw.Module()); n != held {
			t.Errorf("the PKCS#11 module is held by %d users after the test, %d before it opened this token", n, held)
		}
	})
	label := newToken(t)
	// Registered before any open, so it runs after every Close.
	t.Cleanup(func() { checkTokenObjects(t, label) })
	reopen := func(t testing.TB) keys.Backend { return open(t, label, h.sessions) }
	return reopen(t), reopen
}

// TestConformance runs the keys.Backend conformance suite on SoftHSM, with a
// pool of one session, the default pool, and a pool of four: every pool is
// smaller than the 16 goroutines of the concurrency test, and SoftHSM crashes
// the process if two of them ever share a session.
func TestConformance(t *testing.T) {
	for _, sessions := range []int{1, 0, 4} {
		name := fmt.Sprintf("sessions=%d", sessions)
		if sessions == 0 {
			name = fmt.Sprintf("sessions=default(%d)", hsm.DefaultSessions)
		}
		t.Run(name, func(t *testing.T) { keystest.Run(t, softHSM{sessions}) })
	}
}

// checkTokenObjects opens the token once more and checks what it holds: no
// class and label twice (as a race between first uses, a reopen that missed a
// key, or a Replace that added instead of replacing would leave), every
// generation's KEKs and audit key next to its root, and every P-256 key as a
// private and public pair.
func checkTokenObjects(t testing.TB, label string) {
	t.Helper()
	ctx := context.Background()
	b, err := hsm.Open(ctx, openOpts(t, label, 1))
	if err != nil {
		t.Errorf("open token %q to check its objects: %v", label, err)
		return
	}
	defer func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	counts, err := hsm.ObjectCounts(ctx, b)
	if err != nil {
		t.Errorf("list the objects of token %q: %v", label, err)
		return
	}
	has := func(class uint, label string) bool { return counts[hsm.Object{Class: class, Label: label}] > 0 }
	for o, n := range counts {
		if n != 1 {
			t.Errorf("token holds %d objects %q of class %d, want 1", n, o.Label, o.Class)
		}
		switch o.Class {
		case pkcs11.CKO_PRIVATE_KEY:
			if !has(pkcs11.CKO_PUBLIC_KEY, o.Label) {
				t.Errorf("private key %q has no public key object", o.Label)
			}
		case pkcs11.CKO_PUBLIC_KEY:
			if !has(pkcs11.CKO_PRIVATE_KEY, o.Label) {
				t.Errorf("public key %q has no private key object", o.Label)
			}
		case pkcs11.CKO_SECRET_KEY:
			gen, ok := hsm.ParseRootLabel(o.Label)
			if !ok {
				continue
			}
			for _, p := range keys.Purposes {
				if !has(pkcs11.CKO_SECRET_KEY, hsm.KEKLabel(gen, p)) {
					t.Errorf("generation %d has a root but no %s KEK", gen, p)
				}
			}
			if !has(pkcs11.CKO_PRIVATE_KEY, hsm.P256Label(gen, keys.AuditKeyLabel)) {
				t.Errorf("generation %d has a root but no audit key", gen)
			}
		}
	}
}
