package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/internal/testpg"
	"github.com/cachet-custody/cachet/keys"
)

// pg is this package's PostgreSQL server, one for all its tests.
var pg *testpg.Server

func TestMain(m *testing.M) { testpg.Main(m, &pg) }

// openPG opens a store on a fresh PostgreSQL database.
func openPG(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := OpenPostgres(context.Background(), PostgresConfig{DSN: pg.NewDatabase(t), Appliance: "a1"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRewrite(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`SELECT a FROM t WHERE b = ? AND c = ?`, `SELECT a FROM t WHERE b = $1 AND c = $2`},
		{`SELECT '?', "?", ? -- ?` + "\n" + `, ? /* ? */`, `SELECT '?', "?", $1 -- ?` + "\n" + `, $2 /* ? */`},
		{`SELECT 'it''s ?', ?`, `SELECT 'it''s ?', $1`},
		{`INSERT INTO k VALUES (?, x'', X'0aFF', ?)`, `INSERT INTO k VALUES ($1, '\x'::bytea, '\x0aFF'::bytea, $2)`},
		{`SELECT COUNT(*) FROM p WHERE instr(rules, ?) > 0`, `SELECT COUNT(*) FROM p WHERE strpos(rules, $1) > 0`},
		{`SELECT instr FROM t`, `SELECT instr FROM t`},
		{`SELECT x FROM t ORDER BY a LIMIT -1 OFFSET ?`, `SELECT x FROM t ORDER BY a LIMIT ALL OFFSET $1`},
		{`SELECT x FROM t LIMIT ?`, `SELECT x FROM t LIMIT $1`},
		{`SELECT max_x, x FROM t`, `SELECT max_x, x FROM t`},
		{`SELECT a FROM t WHERE b = ?1 OR c = ?1 AND d = ?`, `SELECT a FROM t WHERE b = $1 OR c = $1 AND d = $2`},
	} {
		if got := rewrite(c.in); got != c.want {
			t.Errorf("rewrite(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

func TestTranslateDDL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"CREATE TABLE a (\n  id INTEGER PRIMARY KEY,\n  b BLOB\n) STRICT;",
			"CREATE TABLE a (" + rowidColumn + "\n  id BIGINT PRIMARY KEY,\n  b BYTEA\n) ;"},
		{"CREATE TABLE d (\n  k BLOB PRIMARY KEY -- it's (a key)\n) STRICT, WITHOUT ROWID;\nCREATE INDEX di ON d(k);",
			"CREATE TABLE d (\n  k BYTEA PRIMARY KEY -- it's (a key)\n)  ;\nCREATE INDEX di ON d(k);"},
		{"CREATE TABLE e (a TEXT, b INTEGER);\nCREATE INDEX ei ON e(a, b) WHERE a IS NOT NULL;\nCREATE UNIQUE INDEX eu ON e(a);\nCREATE INDEX oi ON other(a);",
			"CREATE TABLE e (" + rowidColumn + "a TEXT, b BIGINT);\nCREATE INDEX ei ON e(a, b, rowid) WHERE a IS NOT NULL;\nCREATE UNIQUE INDEX eu ON e(a);\nCREATE INDEX oi ON other(a);"},
		{"CREATE TABLE IF NOT EXISTS m (v INTEGER) STRICT", "CREATE TABLE IF NOT EXISTS m (" + rowidColumn + "v BIGINT) "},
		{"INSERT OR IGNORE INTO t(a)\n  SELECT a FROM u WHERE a IS NOT NULL;\nINSERT OR IGNORE INTO t(a) SELECT 1",
			"INSERT INTO t(a)\n  SELECT a FROM u WHERE a IS NOT NULL ON CONFLICT DO NOTHING;\nINSERT INTO t(a) SELECT 1 ON CONFLICT DO NOTHING"},
		{"ALTER TABLE w ADD COLUMN v INTEGER NOT NULL DEFAULT 0 CHECK (v IN ('INTEGER'));",
			"ALTER TABLE w ADD COLUMN v BIGINT NOT NULL DEFAULT 0 CHECK (v IN ('INTEGER'));"},
	} {
		if got := translateDDL(c.in); got != c.want {
			t.Errorf("translateDDL(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

func TestPostgresOpen(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewDatabase(t)
	if _, err := OpenPostgres(ctx, PostgresConfig{DSN: dsn}, Options{MustExist: true}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("MustExist on an empty database: %v", err)
	}
	// Appliances starting at once migrate once.
	const n = 4
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			stores[i], errs[i] = OpenPostgres(ctx, PostgresConfig{DSN: dsn, Appliance: fmt.Sprint("a", i)}, Options{})
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	s := stores[0]
	if s.Kind() != KindPostgres || strings.Contains(s.Path(), "user") {
		t.Fatalf("kind %q path %q", s.Kind(), s.Path())
	}
	var applied int
	if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&applied); err != nil || applied != LatestVersion() {
		t.Fatalf("%d migrations recorded (%v), want %d", applied, err, LatestVersion())
	}
	if v, err := s.SchemaVersion(ctx); err != nil || v != LatestVersion() {
		t.Fatalf("schema version %d, %v", v, err)
	}
	if _, err := s.DB().ExecContext(ctx, `INSERT INTO meta(key, value) VALUES ('x', 'y')`); err == nil {
		t.Fatal("a write through the reader pool succeeded")
	}
	if err := stores[1].Write(ctx, func(tx *Tx) error { return tx.SetMeta("k", "v") }); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.Meta(ctx, "k"); err != nil || !ok || v != "v" {
		t.Fatalf("another appliance's write: Meta = %q %v %v", v, ok, err)
	}
	// Each appliance's probe is its heartbeat.
	for _, st := range stores[:2] {
		if err := st.Probe(ctx); err != nil {
			t.Fatal(err)
		}
	}
	as, err := s.Appliances(ctx)
	if err != nil || len(as) != 2 {
		t.Fatalf("appliances %+v, %v", as, err)
	}
	if m, _ := s.AllMeta(ctx); m["appliance/a0"] != "" {
		t.Fatal("AllMeta shows heartbeats")
	}
	if st, err := s.Stats(ctx); err != nil || st.SizeBytes <= 0 {
		t.Fatalf("stats %+v %v", st, err)
	}
	if err := s.QuickCheck(ctx); err != nil {
		t.Fatal(err)
	}
	// The schema accepts what SQLite accepts: 64-bit integers, blobs.
	big := time.Now().UnixNano()
	if err := s.Write(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`INSERT INTO audit_records(seq, ts, actor, action, target, decision, prev_hash, hash) VALUES (?, ?, 'a', 'b', 'c', 'allow', ?, ?)`,
			1, big, make([]byte, 32), []byte{1, 2})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// SQLite's JSON functions, as the code uses them.
	for _, c := range []struct{ q string }{
		{`SELECT COUNT(*) FROM json_each('["a","b"]') WHERE value = ?`},
		{`SELECT COUNT(*) FROM json_each('[{"signer_id":"q1","override_policy_ids":["p1"]},{"signer_id":"b"}]') j WHERE json_extract(j.value, '$.signer_id') = ?1`},
		{`SELECT COUNT(*) FROM json_each('[{"signer_id":"q1","override_policy_ids":["p1"]},{"signer_id":"b"}]') s, json_each(s.value, '$.override_policy_ids') o WHERE o.value = ?`},
	} {
		for _, arg := range []string{"a", "q1", "p1", "[]"} {
			var n int
			if err := s.QueryRowContext(ctx, c.q, arg).Scan(&n); err != nil {
				t.Fatalf("%s with %q: %v", c.q, arg, err)
			}
			want := 0
			switch {
			case strings.Contains(c.q, `'["a","b"]'`) && arg == "a",
				strings.Contains(c.q, "signer_id') =") && arg == "q1",
				strings.Contains(c.q, "o.value") && arg == "p1":
				want = 1
			}
			if n != want {
				t.Errorf("%s with %q: %d rows, want %d", c.q, arg, n, want)
			}
		}
	}
	k, err := s.PutWrappedKey(ctx, keys.WrappedKey{Generation: 1, Label: "l", Wrapped: []byte{1}, Public: []byte{2}})
	if err != nil || k.Wrapped[0] != 1 {
		t.Fatalf("PutWrappedKey = %+v, %v", k, err)
	}
	if k, err = s.PutWrappedKey(ctx, keys.WrappedKey{Generation: 1, Label: "l", Wrapped: []byte{9}, Public: []byte{9}}); err != nil || k.Wrapped[0] != 1 {
		t.Fatalf("second PutWrappedKey = %+v, %v", k, err)
	}
}

// Writes of several appliances are serialized: read-modify-write counters
// updated concurrently through two stores on one database lose nothing.
func TestPostgresWritesSerializedAcrossStores(t *testing.T) {
	ctx := context.Background()
	dsn := pg.NewDatabase(t)
	var stores [2]*Store
	for i := range stores {
		s, err := OpenPostgres(ctx, PostgresConfig{DSN: dsn, Appliance: fmt.Sprint("a", i)}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	const workers, each = 16, 15
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			s := stores[w%2]
			for i := 0; i < each; i++ {
				err := s.Write(ctx, func(tx *Tx) error {
					v, _, err := tx.Meta("counter")
					if err != nil {
						return err
					}
					n, _ := strconv.Atoi(v)
					return tx.SetMeta("counter", strconv.Itoa(n+1))
				})
				if err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	wg.Wait()
	if v, _, err := stores[0].Meta(ctx, "counter"); err != nil || v != strconv.Itoa(workers*each) {
		t.Fatalf("counter = %q (%v), want %d", v, err, workers*each)
	}
}

// A lost connection fails the write and the store's health; nothing is
// acknowledged until a probe commits again.
func TestPostgresConnectionLost(t *testing.T) {
	ctx := context.Background()
	s := openPG(t, Options{WriteTimeout: 2 * time.Second})
	if err := put(s, "before"); err != nil {
		t.Fatal(err)
	}
	admin, err := sql.Open("pgx", pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	// Kill every connection of the store's database, the writer's too.
	var db string
	s.DB().QueryRowContext(ctx, `SELECT current_database()`).Scan(&db)
	if _, err := admin.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, db); err != nil {
		t.Fatal(err)
	}
	err = put(s, "during")
	if err == nil {
		// database/sql retries a connection that was bad before use; the
		// write may then commit on a new one. That is a durable commit too.
		if _, ok, _ := s.Meta(ctx, "during"); !ok {
			t.Fatal("a write acknowledged without its row")
		}
	} else {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("write on a killed connection: %v, want ErrUnavailable", err)
		}
		if !errors.Is(s.Health(), ErrUnavailable) {
			t.Fatalf("health after a failed commit: %v", s.Health())
		}
		if err := put(s, "refused"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("write while failing: %v", err)
		}
	}
	if err := s.Probe(ctx); err != nil {
		t.Fatalf("probe after the connection came back: %v", err)
	}
	if err := put(s, "after"); err != nil {
		t.Fatal(err)
	}
}

// The DSN's password, and the one given apart, never appear in an error.
func TestPostgresErrorsHideThePassword(t *testing.T) {
	for _, c := range []PostgresConfig{
		{DSN: "host=/nonexistent-cachet-dir user=u password=s3cr3t dbname=x connect_timeout=2"},
		{DSN: "postgres://u:s3cr3t@localhost/x?host=/nonexistent-cachet-dir&connect_timeout=2"},
		{DSN: "host=/nonexistent-cachet-dir user=u dbname=x connect_timeout=2", Password: "s3cr3t"},
		{DSN: "postgres://u:s3cr3t@local host:badport/x"},
	} {
		_, err := OpenPostgres(context.Background(), c, Options{})
		if err == nil || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("OpenPostgres(%q): %v", c.DSN, err)
		}
	}
}
