package backup_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/backup"
	"github.com/cachet-custody/cachet/store"
)

// newStore is an initialized store (a root fingerprint and a few audit
// records), as `cachet init` leaves it.
func newStore(t *testing.T) (*store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cachet.db")
	st, err := store.Open(context.Background(), path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	err = st.Write(context.Background(), func(tx *store.Tx) error {
		if err := tx.SetMeta(store.MetaRootFingerprint, "00112233445566778899aabbccddeeff"); err != nil {
			return err
		}
		if err := tx.SetMeta(store.MetaGeneration, "1"); err != nil {
			return err
		}
		for range 3 {
			if _, err := audit.Append(tx, audit.Entry{Actor: "test", Action: "test", Target: "x", Decision: audit.DecisionAllow}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return st, path
}

func TestTakeAndExtract(t *testing.T) {
	ctx := context.Background()
	st, path := newStore(t)
	out := filepath.Join(t.TempDir(), "x.backup")
	// Writes keep going while the snapshot is taken.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			st.Write(ctx, func(tx *store.Tx) error {
				_, err := audit.Append(tx, audit.Entry{Actor: "test", Action: "load", Target: "x", Decision: audit.DecisionAllow})
				return err
			})
		}
	}()
	m, err := backup.Take(ctx, path, out)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if m.RootFingerprint != "00112233445566778899aabbccddeeff" || m.AuditHeadSeq < 3 || m.SchemaVersion != store.LatestVersion() || len(m.DBSHA256) != 64 {
		t.Fatalf("manifest %+v", m)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	good, _ := os.ReadFile(out)
	nl := bytes.IndexByte(good, '\n')
	nl2 := nl + 1 + bytes.IndexByte(good[nl+1:], '\n')

	for _, tc := range []struct {
		name   string
		mutate func([]byte) []byte
	}{
		{"magic", func(b []byte) []byte { b[0] ^= 1; return b }},
		{"manifest digest", func(b []byte) []byte { i := bytes.Index(b, []byte(`"db_sha256":"`)) + 13; b[i] ^= 1; return b }},
		{"database byte", func(b []byte) []byte { b[nl2+5000] ^= 1; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-10] }},
		{"appended", func(b []byte) []byte { return append(b, 'x') }},
		{"no manifest", func(b []byte) []byte { return b[:nl+1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.backup")
			os.WriteFile(bad, tc.mutate(bytes.Clone(good)), 0o600)
			dst := filepath.Join(t.TempDir(), "restored.db")
			if _, err := backup.Extract(ctx, bad, dst); !errors.Is(err, backup.ErrCorrupt) {
				t.Fatalf("Extract = %v; want ErrCorrupt", err)
			}
			if _, err := os.Stat(dst); err == nil {
				t.Fatal("a corrupt backup left a store behind")
			}
		})
	}

	dst := filepath.Join(t.TempDir(), "data", "cachet.db")
	got, err := backup.Extract(ctx, out, dst)
	if err != nil || got != m {
		t.Fatalf("Extract = %+v, %v; want %+v", got, err, m)
	}
	if _, err := backup.Extract(ctx, out, dst); err == nil {
		t.Fatal("Extract over an existing store")
	}
	st2, err := store.Open(ctx, dst, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if fp, _, _ := st2.Meta(ctx, store.MetaRootFingerprint); fp != m.RootFingerprint {
		t.Fatalf("restored store has root %q", fp)
	}
	var n uint64
	st2.DB().QueryRow(`SELECT MAX(seq) FROM audit_records`).Scan(&n)
	if n != m.AuditHeadSeq {
		t.Fatalf("restored audit head %d, manifest %d", n, m.AuditHeadSeq)
	}
}

func TestTakeRefusesUninitialized(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cachet.db")
	st, err := store.Open(context.Background(), path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := backup.Take(context.Background(), path, filepath.Join(t.TempDir(), "x")); err == nil {
		t.Fatal("backup of an uninitialized store")
	}
	if _, err := backup.Take(context.Background(), filepath.Join(t.TempDir(), "none.db"), filepath.Join(t.TempDir(), "x")); err == nil {
		t.Fatal("backup of a missing store")
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		os.WriteFile(filepath.Join(dir, backup.Name(base.Add(time.Duration(i)*time.Hour))), nil, 0o600)
	}
	os.WriteFile(filepath.Join(dir, "unrelated.txt"), nil, 0o600)
	removed, err := backup.Prune(dir, 2)
	if err != nil || len(removed) != 3 {
		t.Fatalf("Prune = %v, %v", removed, err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	want := []string{backup.Name(base.Add(3 * time.Hour)), backup.Name(base.Add(4 * time.Hour)), "unrelated.txt"}
	if len(left) != 3 || filepath.Base(left[0]) != want[0] || filepath.Base(left[1]) != want[1] {
		t.Fatalf("left %v, want %v", left, want)
	}
}
