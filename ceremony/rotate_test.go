package ceremony_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/cachet-custody/cachet/ceremony"
	"github.com/cachet-custody/cachet/internal/shamir"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
)

// An appliance of key format 1 (before format 2 existed) moves to format 2
// with rotate: the new generation is format 2, the audit key and the
// authorization keys keep their public keys, old blobs still open until
// --finish, which refuses while blobs of the old generation remain and then
// removes it from the hardware.
func TestRotateFormat1ToFormat2(t *testing.T) {
	for _, hw := range []struct {
		name  string
		fresh freshHardware
	}{{"softhsm", softHSM}, {"swtpm", swtpm}} {
		t.Run(hw.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			st, err := store.Open(ctx, filepath.Join(dir, "cachet.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			b := hw.fresh(t)
			b.(keys.WrappedKeysUser).UseWrappedKeys(st)
			root := make([]byte, keys.RootSize)
			rand.Read(root)
			fp1, _ := keys.FingerprintOf(keys.FormatHMAC, root)
			if err := b.(keys.Provisioner).Provision(ctx, append([]byte(nil), root...), keys.ProvisionOptions{Generation: 1}); err != nil {
				t.Fatal(err)
			}
			parts, err := shamir.Split(root, 3, 2)
			if err != nil {
				t.Fatal(err)
			}
			var shares []ceremony.NamedShare
			for i, p := range parts[:2] {
				shares = append(shares, ceremony.NamedShare{Name: "old share", Share: ceremony.Share{Fingerprint: fp1, Generation: 1, Threshold: 2, Count: 3, Index: i + 1, Data: p}})
			}
			err = st.Write(ctx, func(tx *store.Tx) error {
				for k, v := range map[string]string{store.MetaRootFingerprint: fp1, store.MetaGeneration: "1", store.MetaThreshold: "2", store.MetaShares: "3"} {
					if err := tx.SetMeta(k, v); err != nil {
						return err
					}
				}
				_, err := tx.Exec(`INSERT INTO authorization_keys (id, app_id, public_key, allowed_uids, allowed_gids, allowed_requests, created_at) VALUES ('k1', 'app', '', '[]', '[]', '[]', 0)`)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			pubs := map[string]*ecdsa.PublicKey{}
			for _, l := range []string{keys.AuditKeyLabel, "auth/k1"} {
				if pubs[l], err = b.AuthKey(ctx, l); err != nil {
					t.Fatal(err)
				}
			}
			oldBlob, err := b.Seal(ctx, keys.PurposeWallet, []byte("old"), []byte("aad"))
			if err != nil {
				t.Fatal(err)
			}

			var recipients []string
			for range 3 {
				id, _ := age.GenerateX25519Identity()
				recipients = append(recipients, id.Recipient().String())
			}
			res, err := ceremony.Rotate(ctx, b, st, ceremony.RotateOptions{Shares: shares, Operators: recipients, Threshold: 2, OutDir: filepath.Join(dir, "g2"), Actor: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Generation != 2 || res.FromGeneration != 1 || res.RewrappedKeys != 2 || len(res.ShareFiles) != 3 {
				t.Fatalf("rotate result %+v", res)
			}
			info, err := b.Info(ctx)
			if err != nil || info.Generation != 2 || info.Format != keys.FormatDerive || info.RootFingerprint != res.Fingerprint {
				t.Fatalf("Info after rotate: %+v, %v", info, err)
			}
			for l, pub := range pubs {
				got, err := b.AuthKey(ctx, l)
				if err != nil || !got.Equal(pub) {
					t.Fatalf("%q changed its public key across the rotation (%v)", l, err)
				}
				d := sha256.Sum256([]byte(l))
				sig, err := b.SignAuth(ctx, l, d[:])
				if err != nil || !ecdsa.VerifyASN1(pub, d[:], sig) {
					t.Fatalf("%q signs with another key after the rotation (%v)", l, err)
				}
			}
			if pt, err := b.Unseal(ctx, keys.PurposeWallet, oldBlob, []byte("aad")); err != nil || string(pt) != "old" {
				t.Fatalf("a generation-1 blob after the rotation: %q, %v", pt, err)
			}
			newBlob, _ := b.Seal(ctx, keys.PurposeWallet, []byte("new"), nil)
			if g, _ := keys.BlobGeneration(newBlob); g != 2 {
				t.Fatalf("new blobs are sealed under generation %d", g)
			}
			if _, err := ceremony.Rotate(ctx, b, st, ceremony.RotateOptions{Shares: shares, Operators: recipients, Threshold: 2, OutDir: filepath.Join(dir, "g3")}); err == nil || !strings.Contains(err.Error(), "not finished") {
				t.Fatalf("a second rotation before --finish: %v", err)
			}

			left := int64(1)
			finish := ceremony.FinishOptions{OlderBlobs: func(context.Context, uint32) (int64, error) { return left, nil }, Actor: "test"}
			if _, err := ceremony.FinishRotation(ctx, b, st, finish); !errors.Is(err, ceremony.ErrRotationUnfinished) {
				t.Fatalf("--finish with a blob left: %v", err)
			}
			left = 0
			if g, err := ceremony.FinishRotation(ctx, b, st, finish); err != nil || g != 1 {
				t.Fatalf("--finish: %d, %v", g, err)
			}
			if info, _ := b.Info(ctx); len(info.Generations) != 1 || info.Generations[0] != 2 {
				t.Fatalf("generations after --finish: %v", info.Generations)
			}
			if _, err := b.Unseal(ctx, keys.PurposeWallet, oldBlob, []byte("aad")); !errors.Is(err, keys.ErrUnknownGeneration) {
				t.Fatalf("a generation-1 blob after --finish: %v", err)
			}
			for l, pub := range pubs {
				if got, err := b.AuthKey(ctx, l); err != nil || !got.Equal(pub) {
					t.Fatalf("%q after --finish (%v)", l, err)
				}
			}
		})
	}
}
