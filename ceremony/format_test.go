package ceremony_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"path/filepath"
	"testing"

	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
)

// TestOneRootBothBackends provisions one root on SoftHSM and on swtpm, in
// each key format, with one store: every P-256 key has the same public key
// on both (whichever backend made it first), signatures from either verify
// under it, and a blob sealed by either opens on the other.
func TestOneRootBothBackends(t *testing.T) {
	for _, format := range []keys.Format{keys.FormatDerive, keys.FormatHMAC} {
		t.Run("format "+format.String(), func(t *testing.T) {
			ctx := context.Background()
			st, err := store.Open(ctx, filepath.Join(t.TempDir(), "cachet.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			root := make([]byte, keys.RootSize)
			rand.Read(root)
			backends := map[string]keys.Backend{"softhsm": softHSM(t), "swtpm": swtpm(t)}
			for name, b := range backends {
				b.(keys.WrappedKeysUser).UseWrappedKeys(st)
				if err := b.(keys.Provisioner).Provision(ctx, append([]byte(nil), root...), keys.ProvisionOptions{Generation: 1, Format: format}); err != nil {
					t.Fatalf("%s: Provision: %v", name, err)
				}
			}
			hsmB, tpmB := backends["softhsm"], backends["swtpm"]
			i1, _ := hsmB.Info(ctx)
			i2, _ := tpmB.Info(ctx)
			if want, _ := keys.FingerprintOf(format, root); i1.RootFingerprint != want || i2.RootFingerprint != want || i1.Format != format || i2.Format != format {
				t.Fatalf("Info: softhsm %+v, swtpm %+v; want fingerprint %s, format %d", i1, i2, want, format)
			}
			// Each key is first used on the backend named with it.
			for _, k := range []struct{ label, first string }{
				{keys.AuditKeyLabel, "softhsm"}, {"auth/made-on-hsm", "softhsm"}, {"auth/made-on-tpm", "swtpm"},
			} {
				other := map[string]string{"softhsm": "swtpm", "swtpm": "softhsm"}[k.first]
				pub1, err := backends[k.first].AuthKey(ctx, k.label)
				if err != nil {
					t.Fatalf("%s AuthKey(%q): %v", k.first, k.label, err)
				}
				pub2, err := backends[other].AuthKey(ctx, k.label)
				if err != nil || !pub1.Equal(pub2) {
					t.Fatalf("%q: public key on %s differs from %s's (%v)", k.label, other, k.first, err)
				}
				for name, b := range backends {
					d := sha256.Sum256([]byte(name + k.label))
					sig, err := b.SignAuth(ctx, k.label, d[:])
					if err != nil || !ecdsa.VerifyASN1(pub1, d[:], sig) {
						t.Errorf("%s SignAuth(%q) does not verify under the shared public key: %v", name, k.label, err)
					}
				}
			}
			for _, p := range keys.Purposes {
				for from, to := range map[string]string{"softhsm": "swtpm", "swtpm": "softhsm"} {
					blob, err := backends[from].Seal(ctx, p, []byte("secret of "+from), []byte("aad"))
					if err != nil {
						t.Fatal(err)
					}
					pt, err := backends[to].Unseal(ctx, p, blob, []byte("aad"))
					if err != nil || string(pt) != "secret of "+from {
						t.Errorf("%s: blob sealed on %s does not open on %s: %q, %v", p, from, to, pt, err)
					}
				}
			}
		})
	}
}
