package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func openTest(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "data", "cachet.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// opener opens a fresh, empty store of one kind for a test.
type opener func(t *testing.T, opts Options) *Store

// forKinds runs f once with SQLite and once with PostgreSQL stores.
func forKinds(t *testing.T, f func(t *testing.T, open opener)) {
	t.Run(KindSQLite, func(t *testing.T) { f(t, openTest) })
	t.Run(KindPostgres, func(t *testing.T) { f(t, openPG) })
}

func count(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.DB().QueryRow(`SELECT COUNT(*) FROM meta`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOpenSettings(t *testing.T) {
	s := openTest(t, Options{})
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("database mode %04o, want 0600", fi.Mode().Perm())
	}
	di, _ := os.Stat(filepath.Dir(s.Path()))
	if di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %04o, want 0700", di.Mode().Perm())
	}
	v, err := s.SchemaVersion(context.Background())
	if err != nil || v != LatestVersion() || v < 1 {
		t.Fatalf("schema version %d, %v; want %d", v, err, LatestVersion())
	}
	// Readers are query-only.
	if _, err := s.DB().Exec(`INSERT INTO meta(key, value) VALUES ('x', 'y')`); err == nil {
		t.Fatal("a write through the reader pool succeeded")
	}
	// Writes through Write are visible to readers once Write returns.
	if err := s.Write(context.Background(), func(tx *Tx) error { return tx.SetMeta("k", "v") }); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.Meta(context.Background(), "k"); err != nil || !ok || v != "v" {
		t.Fatalf("Meta = %q %v %v", v, ok, err)
	}
	if _, err := os.Stat(s.Path() + "-wal"); err != nil {
		t.Errorf("no WAL file: %v", err)
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cachet.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), func(tx *Tx) error { return tx.SetMeta("a", "1") }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), func(tx *Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close = %v, want ErrClosed", err)
	}
	s, err = Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, ok, _ := s.Meta(context.Background(), "a"); !ok || v != "1" {
		t.Fatalf("after reopen Meta(a) = %q %v", v, ok)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cachet.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, _ := sql.Open("sqlite3", dsn(path, false))
	if _, err := db.Exec(`INSERT INTO schema_migrations VALUES (999, 'future', 'x')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(context.Background(), path, Options{}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a newer schema = %v", err)
	}
}

// A failing request is rolled back alone; the rest of its batch commits.
func TestFailureIsolatedWithinBatch(t *testing.T) {
	forKinds(t, func(t *testing.T, open opener) {
		s := open(t, Options{MaxBatch: 64})
		boom := errors.New("boom")
		var wg sync.WaitGroup
		errs := make([]error, 40)
		for i := range errs {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				errs[i] = s.Write(context.Background(), func(tx *Tx) error {
					if err := tx.SetMeta(fmt.Sprintf("k%02d", i), "v"); err != nil {
						return err
					}
					switch i % 4 {
					case 1:
						return boom
					case 2:
						panic("bad write function")
					}
					return nil
				})
			}(i)
		}
		wg.Wait()
		for i, err := range errs {
			switch i % 4 {
			case 1:
				if !errors.Is(err, boom) {
					t.Errorf("write %d: %v, want boom", i, err)
				}
			case 2:
				if err == nil || !strings.Contains(err.Error(), "panicked") {
					t.Errorf("write %d: %v, want panic error", i, err)
				}
			default:
				if err != nil {
					t.Errorf("write %d: %v", i, err)
				}
			}
			_, ok, _ := s.Meta(context.Background(), fmt.Sprintf("k%02d", i))
			if want := i%4 == 0 || i%4 == 3; ok != want {
				t.Errorf("write %d: row present = %v, want %v", i, ok, want)
			}
		}
	})
}

// Concurrent writers share transactions: fewer commits than writes.
func TestGroupCommit(t *testing.T) {
	forKinds(t, func(t *testing.T, open opener) {
		s := open(t, Options{MaxBatch: 128})
		const writers, each = 32, 20
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < each; i++ {
					if err := s.Write(context.Background(), func(tx *Tx) error {
						return tx.SetMeta(fmt.Sprintf("w%d-%d", w, i), "v")
					}); err != nil {
						t.Error(err)
					}
				}
			}(w)
		}
		wg.Wait()
		commits, writes := s.WriterStats()
		if writes != writers*each || count(t, s) != writers*each {
			t.Fatalf("writes %d, rows %d, want %d", writes, count(t, s), writers*each)
		}
		if commits >= writes {
			t.Fatalf("%d commits for %d writes: no grouping", commits, writes)
		}
		t.Logf("%d writes in %d commits", writes, commits)
	})
}

// A request whose context has ended before the writer reaches it is not run.
func TestCanceledRequestNotRun(t *testing.T) {
	forKinds(t, func(t *testing.T, open opener) {
		s := open(t, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		ran := false
		err := s.Write(ctx, func(tx *Tx) error { ran = true; return tx.SetMeta("c", "v") })
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		// Let the writer drain, then check nothing was written.
		if err := s.Write(context.Background(), func(tx *Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Meta(context.Background(), "c"); ok || ran {
			t.Fatalf("canceled write ran (ran=%v, row=%v)", ran, ok)
		}
	})
}

func TestIsConstraint(t *testing.T) {
	forKinds(t, func(t *testing.T, open opener) {
		s := open(t, Options{})
		err := s.Write(context.Background(), func(tx *Tx) error {
			if _, err := tx.Exec(`INSERT INTO meta(key, value) VALUES ('dup', 'a')`); err != nil {
				return err
			}
			_, err := tx.Exec(`INSERT INTO meta(key, value) VALUES ('dup', 'b')`)
			return err
		})
		if !IsConstraint(err) {
			t.Fatalf("duplicate insert: %v, want a constraint error", err)
		}
		if _, ok, _ := s.Meta(context.Background(), "dup"); ok {
			t.Fatal("the failed write left a row")
		}
	})
}

// Statements are prepared once: on the reader pool at first use, and for
// the writer between batches, after a transaction first used them.
func TestStatementCache(t *testing.T) {
	forKinds(t, func(t *testing.T, open opener) {
		s := open(t, Options{})
		ctx := context.Background()
		q := `INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`
		for i := 0; i < 3; i++ {
			if err := s.Write(ctx, func(tx *Tx) error { _, err := tx.Exec(q, "k", fmt.Sprint(i)); return err }); err != nil {
				t.Fatal(err)
			}
		}
		if _, ok := s.wstmts.Load(q); !ok {
			t.Fatal("the writer did not cache a statement used by three transactions")
		}
		var v string
		if err := s.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, "k").Scan(&v); err != nil || v != "2" {
			t.Fatalf("cached read = %q, %v", v, err)
		}
		if _, ok := s.rstmts.Load(`SELECT value FROM meta WHERE key = ?`); !ok {
			t.Fatal("the reader did not cache its statement")
		}
		// A bad statement still reports its error, cached or not.
		if err := s.Write(ctx, func(tx *Tx) error { _, err := tx.Exec(`INSERT INTO nope VALUES (1)`); return err }); err == nil {
			t.Fatal("a statement on a missing table succeeded")
		}
		if err := s.QueryRowContext(ctx, `SELECT nope FROM meta`).Scan(&v); err == nil {
			t.Fatal("a bad read succeeded")
		}
	})
}
