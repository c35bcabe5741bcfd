package hsm_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/keys"
)

// tokenDir finds the SoftHSM directory of the token that holds label.
func tokenDir(t *testing.T) string {
	t.Helper()
	conf := os.Getenv("SOFTHSM2_CONF")
	dirs, _ := filepath.Glob(filepath.Join(filepath.Dir(conf), "tokens", "*"))
	var newest string
	var at time.Time
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.ModTime().After(at) {
			newest, at = d, fi.ModTime()
		}
	}
	if newest == "" {
		t.Fatal("no token directory")
	}
	return newest
}

// Probe tells a token that went away from one that answers without the
// root, and a token that comes back is used again without reopening.
func TestProbeTokenLostAndBack(t *testing.T) {
	checkReleased(t)
	label := newToken(t)
	dir := tokenDir(t)
	away := filepath.Join(filepath.Dir(filepath.Dir(dir)), "away-"+filepath.Base(dir))
	b := open(t, label, 2)
	root := make([]byte, keys.RootSize)
	root[0] = 1
	if err := b.(keys.Provisioner).Provision(context.Background(), root, keys.ProvisionOptions{Generation: 1}); err != nil {
		t.Fatal(err)
	}
	p := b.(keys.Prober)
	blob, err := b.Seal(context.Background(), keys.PurposeWallet, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name string
		do   func()
		want error
	}{
		{"present", func() {}, nil},
		{"token directory gone", func() {
			if err := os.Rename(dir, away); err != nil {
				t.Fatal(err)
			}
		}, keys.ErrUnavailable},
		{"token directory back", func() {
			time.Sleep(time.Second) // the library restarts at most once a second
			if err := os.Rename(away, dir); err != nil {
				t.Fatal(err)
			}
		}, nil},
	} {
		step.do()
		err := p.Probe(context.Background())
		t.Logf("%s: %v", step.name, err)
		if (step.want == nil) != (err == nil) || (step.want != nil && !errors.Is(err, step.want)) || errors.Is(err, keys.ErrNotProvisioned) {
			t.Fatalf("%s: Probe = %v, want %v", step.name, err, step.want)
		}
		_, uerr := b.Unseal(context.Background(), keys.PurposeWallet, blob, nil)
		t.Logf("%s: Unseal: %v", step.name, uerr)
		// A token that is away must never read as one without the root.
		if (step.want == nil) != (uerr == nil) || errors.Is(uerr, keys.ErrUnknownGeneration) || errors.Is(uerr, keys.ErrNotProvisioned) {
			t.Fatalf("%s: Unseal = %v", step.name, uerr)
		}
	}
}
