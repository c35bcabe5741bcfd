package custody_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/tpm"
)

// seedWallets inserts n wallets whose entropy and key are sealed by b under
// its current generation, as CreateWallet seals them (purpose wallet, AAD
// cachet/wallet/<id>/<part>), in transactions of 1000.
func seedWallets(tb testing.TB, b keys.Backend, st *store.Store, n int) {
	tb.Helper()
	ctx := context.Background()
	secret := make([]byte, 32)
	for start := 0; start < n; start += 1000 {
		type row struct {
			id        string
			ent, priv []byte
		}
		var rows []row
		for i := start; i < min(n, start+1000); i++ {
			id := fmt.Sprintf("wlt_%08d", i)
			rand.Read(secret)
			ent, err := b.Seal(ctx, keys.PurposeWallet, secret[:16], []byte("cachet/wallet/"+id+"/entropy"))
			if err != nil {
				tb.Fatal(err)
			}
			priv, err := b.Seal(ctx, keys.PurposeWallet, secret, []byte("cachet/wallet/"+id+"/key"))
			if err != nil {
				tb.Fatal(err)
			}
			rows = append(rows, row{id, ent, priv})
		}
		err := st.Write(ctx, func(tx *store.Tx) error {
			for _, r := range rows {
				if _, err := tx.Exec(`INSERT INTO wallets (id, app_id, chain_type, address, public_key, sealed_entropy, sealed_key, key_generation, created_at)
					VALUES (?, 'app', 'ethereum', '0x', '0x', ?, ?, 1, 0)`, r.id, r.ent, r.priv); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// TestReseal moves every blob to the new generation, keeps them opening to
// the same secrets, leaves a blob that does not open untouched and counted,
// and a second run finds nothing to do.
func TestReseal(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{})
	seedWallets(t, e.keys, e.st, 50)
	// One blob that no key opens (altered tag).
	var bad []byte
	if err := e.st.DB().QueryRow(`SELECT sealed_key FROM wallets WHERE id = 'wlt_00000007'`).Scan(&bad); err != nil {
		t.Fatal(err)
	}
	bad[len(bad)-1] ^= 1
	err := e.st.Write(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`UPDATE wallets SET sealed_key = ? WHERE id = 'wlt_00000007'`, bad)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := custody.CountOlderBlobs(ctx, e.st.DB(), 2)
	if before != 100 {
		t.Fatalf("%d blobs of generation 1, want 100", before)
	}
	// Generation 2 from the same root, so that the audit key (format 1,
	// derived) stays the one the test's audit check expects.
	root := make([]byte, keys.RootSize)
	rand.Read(root)
	if err := e.keys.(keys.Provisioner).Provision(ctx, root, keys.ProvisionOptions{Generation: 2}); err != nil {
		t.Fatal(err)
	}
	p, err := custody.Reseal(ctx, e.keys, e.st, custody.ResealOptions{Batch: 7})
	if err != nil {
		t.Fatal(err)
	}
	if p.Generation != 2 || p.Done != 99 || p.Failed != 1 || p.Remaining != 1 || p.Finished {
		t.Fatalf("progress %+v; want 99 done, 1 failed and remaining", p)
	}
	var sealed []byte
	e.st.DB().QueryRow(`SELECT sealed_key FROM wallets WHERE id = 'wlt_00000003'`).Scan(&sealed)
	if g, _ := keys.BlobGeneration(sealed); g != 2 {
		t.Fatalf("re-sealed blob names generation %d", g)
	}
	if pt, err := e.keys.Unseal(ctx, keys.PurposeWallet, sealed, []byte("cachet/wallet/wlt_00000003/key")); err != nil || len(pt) != 32 {
		t.Fatalf("re-sealed blob: %v", err)
	}
	again, err := custody.Reseal(ctx, e.keys, e.st, custody.ResealOptions{})
	if err != nil || again.Done != 0 || again.Failed != 1 {
		t.Fatalf("second run: %+v, %v", again, err)
	}
	keys.Zero(root)
}

// BenchmarkReseal measures re-seal throughput (blobs per second: one unseal
// under the old generation, one seal under the new, and the row's update in
// a group-committed transaction) over 100,000 wallets (200,000 blobs). It
// runs the re-seal once per backend, whatever b.N: make bench-reseal.
func BenchmarkReseal(b *testing.B) {
	const wallets = 100_000
	for _, kind := range []string{"softhsm", "swtpm"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			var kb keys.Backend
			if kind == "softhsm" {
				kb = newBackend(b, nil)
			} else {
				sw := testhw.StartSwtpm(b)
				var err error
				if kb, err = tpm.Open(ctx, tpm.Options{Device: sw.Device}); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { kb.Close() })
				root := make([]byte, keys.RootSize)
				rand.Read(root)
				if err := kb.(keys.Provisioner).Provision(ctx, root, keys.ProvisionOptions{Generation: 1, Format: keys.FormatDerive}); err != nil {
					b.Fatal(err)
				}
			}
			st, err := store.Open(ctx, filepath.Join(b.TempDir(), "cachet.db"), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			seedWallets(b, kb, st, wallets)
			root := make([]byte, keys.RootSize)
			rand.Read(root)
			if err := kb.(keys.Provisioner).Provision(ctx, root, keys.ProvisionOptions{Generation: 2, Format: keys.FormatDerive}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			p, err := custody.Reseal(ctx, kb, st, custody.ResealOptions{})
			elapsed := time.Since(start)
			b.StopTimer()
			if err != nil || !p.Finished || p.Done != 2*wallets {
				b.Fatalf("reseal: %+v, %v", p, err)
			}
			b.ReportMetric(float64(p.Done)/elapsed.Seconds(), "blobs/s")
			b.ReportMetric(elapsed.Seconds(), "s/100k-wallets")
		})
	}
}
