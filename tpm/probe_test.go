package tpm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
)

// Probe tells the TPM being there from it being gone, and from it answering
// without Cachet's root; the keys in memory change nothing about that.
func TestProbe(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	b, _ := provisioned(t, Options{Device: sw.Device, PCRs: []int{16}})
	p := b.(keys.Prober)
	probe := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return p.Probe(ctx)
	}
	for _, step := range []struct {
		name string
		do   func()
		want error
	}{
		{"running", func() {}, nil},
		{"killed", func() { sw.Kill() }, keys.ErrUnavailable},
		{"back with its state", func() {
			if err := sw.Swtpm.Start(); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"root evicted", func() {
			tpm := rawTPM(t, sw.Device)
			defer tpm.Close()
			h := tpm2.TPMHandle(DefaultHandle)
			rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(tpm)
			if err != nil {
				t.Fatal(err)
			}
			if err := evict(tpm, h, rp.Name); err != nil {
				t.Fatal(err)
			}
		}, keys.ErrNotProvisioned},
	} {
		step.do()
		err := probe()
		if (step.want == nil) != (err == nil) || (step.want != nil && !errors.Is(err, step.want)) {
			t.Fatalf("%s: Probe = %v, want %v", step.name, err, step.want)
		}
		// Signing from memory still works: only the gate above stops it.
		if _, err := b.SignAuth(context.Background(), keys.AuditKeyLabel, make([]byte, 32)); err != nil {
			t.Fatalf("%s: SignAuth: %v", step.name, err)
		}
		t.Logf("%s: %v", step.name, err)
	}
}
