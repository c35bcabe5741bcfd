package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func put(s *Store, k string) error {
	return s.Write(context.Background(), func(tx *Tx) error { return tx.SetMeta(k, "v") })
}

func metaCount(t *testing.T, path, prefix string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM meta WHERE key LIKE ?`, prefix+"%").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Deleting the WAL or the database under the open handle fails the store
// for good at the next commit, which is not acknowledged; what was
// acknowledged before is rescued into the file at the path.
func TestFilesDeletedUnderTheHandle(t *testing.T) {
	for _, suffix := range []string{"-wal", "-shm", ""} {
		t.Run("delete"+suffix, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.db")
			s, err := Open(context.Background(), path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				if err := put(s, fmt.Sprintf("acked/%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Remove(path + suffix); err != nil {
				t.Fatal(err)
			}
			err = put(s, "after")
			if !errors.Is(err, ErrUnavailable) || s.Health() == nil {
				t.Fatalf("write after deleting %s: %v (health %v), want ErrUnavailable", path+suffix, err, s.Health())
			}
			if err := s.Probe(context.Background()); err == nil {
				t.Fatal("the probe passes with the files deleted")
			}
			if err := put(s, "later"); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("a later write: %v", err)
			}
			s.Close()
			if n := metaCount(t, path, "acked/"); n != 20 {
				t.Fatalf("%d of 20 acknowledged writes after reopening", n)
			}
		})
	}
}

// A replaced database is not overwritten: the rescue goes beside it.
func TestDatabaseReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := put(s, "acked/1"); err != nil {
		t.Fatal(err)
	}
	os.Rename(path, path+".moved")
	os.WriteFile(path, []byte("someone else's file"), 0o600)
	if err := put(s, "after"); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("write after the database was replaced: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "someone else's file" {
		t.Fatal("the replacing file was overwritten")
	}
	m, _ := filepath.Glob(path + ".rescued-*")
	if len(m) != 1 || metaCount(t, m[0], "acked/") != 1 {
		t.Fatalf("rescued copies %v", m)
	}
}

// A store whose writer does not answer (a blocked commit stands for a
// frozen disk) fails the write after WriteTimeout and fails its health; it
// recovers when the disk answers again.
func TestWriteTimeout(t *testing.T) {
	var frozen atomic.Bool
	unfreeze := make(chan struct{}, 1)
	s := openTest(t, Options{WriteTimeout: 200 * time.Millisecond, BeforeCommit: func() {
		if frozen.Load() {
			<-unfreeze
		}
	}})
	frozen.Store(true)
	start := time.Now()
	err := put(s, "k")
	if !errors.Is(err, ErrUnavailable) || s.Health() == nil {
		t.Fatalf("write on a frozen store: %v, health %v", err, s.Health())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("write returned after %s", d)
	}
	if err := put(s, "k2"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a write while failing: %v", err)
	}
	frozen.Store(false)
	unfreeze <- struct{}{}
	if err := s.Probe(context.Background()); err != nil {
		t.Fatalf("probe after the disk answers again: %v", err)
	}
	if err := put(s, "k3"); err != nil {
		t.Fatal(err)
	}
}

// The probe writes, and fails when free space is below the reserve.
func TestProbe(t *testing.T) {
	s := openTest(t, Options{})
	if err := s.Probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := s.Meta(context.Background(), "health_probe"); !ok || v == "" {
		t.Fatal("the probe wrote nothing")
	}
	full := openTest(t, Options{MinFreeBytes: 1 << 62})
	err := full.Probe(context.Background())
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("probe with no free space: %v", err)
	}
	if err := put(full, "k"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("write while the disk is full: %v", err)
	}
}

func TestQuickCheckAndMustExist(t *testing.T) {
	s := openTest(t, Options{})
	if err := s.QuickCheck(context.Background()); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "none.db")
	if _, err := Open(context.Background(), missing, Options{MustExist: true}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("MustExist on a missing file: %v", err)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("MustExist created the file")
	}
}
