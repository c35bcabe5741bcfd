package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Migrations are numbered files migrations/NNNN_name.sql, applied in order,
// each in its own transaction together with its row in schema_migrations.
// A migration, once released, is never edited: a change is a new file.
//
// On PostgreSQL the same migrations run, translated by translateDDL
// (dialect.go); a migration whose translation would not do has its
// PostgreSQL text in migrations/postgres/ under the same name.
//
//go:embed migrations/*.sql migrations/postgres/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) { return loadMigrationsFor(KindSQLite) }

// loadMigrationsFor returns the migrations in kind's dialect.
func loadMigrationsFor(kind string) ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "migrations/"), ".sql")
		num, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration file %s: name must start with a positive number", n)
		}
		body, err := migrationFS.ReadFile(n)
		if err != nil {
			return nil, err
		}
		text := string(body)
		if kind == KindPostgres {
			if own, err := migrationFS.ReadFile("migrations/postgres/" + base + ".sql"); err == nil {
				text = string(own)
			} else {
				text = translateDDL(text)
			}
		}
		ms = append(ms, migration{version: v, name: base, sql: text})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migrations are not numbered 1..n: %s is number %d", m.name, i+1)
		}
	}
	return ms, nil
}

// LatestVersion is the schema version this build migrates to.
func LatestVersion() int {
	ms, _ := loadMigrations()
	return len(ms)
}

// migrationDB is what migrate needs: a *sql.DB or one *sql.Conn.
type migrationDB interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// migratePostgres migrates under a session advisory lock held on one
// connection: appliances that start at once wait for the first, then find
// the schema current.
func migratePostgres(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(?)", migrateLockKey); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(?)", migrateLockKey)
	if _, err := conn.ExecContext(ctx, pgFunctions); err != nil {
		return fmt.Errorf("create the SQLite JSON functions: %w", err)
	}
	return migrate(ctx, conn, KindPostgres)
}

// pgFunctions gives PostgreSQL the SQLite JSON functions the code's queries
// use, with SQLite's results for the documents Cachet stores (JSON arrays of
// strings or objects; paths of the form $.name). They are defined, not
// rewritten, because their results feed other expressions (json_each's value
// is a string for a string element and JSON text for an object, as in
// SQLite). CREATE OR REPLACE keeps this idempotent.
const pgFunctions = `
CREATE OR REPLACE FUNCTION json_each(doc text) RETURNS TABLE(value text)
LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN json_typeof(e) = 'string' THEN e #>> '{}' ELSE e::text END
	FROM json_array_elements(doc::json) AS e
$$;
CREATE OR REPLACE FUNCTION json_each(doc text, path text) RETURNS TABLE(value text)
LANGUAGE sql IMMUTABLE AS $$
	SELECT json_each(json_extract_path(doc::json, VARIADIC string_to_array(substr(path, 3), '.'))::text)
$$;
CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
	SELECT json_extract_path_text(doc::json, VARIADIC string_to_array(substr(path, 3), '.'))
$$;
`

func migrate(ctx context.Context, db migrationDB, kind string) error {
	ms, err := loadMigrationsFor(kind)
	if err != nil {
		return err
	}
	create := `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT`
	if kind == KindPostgres {
		create = translateDDL(create)
	}
	if _, err := db.ExecContext(ctx, create); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	cur, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	if cur > len(ms) {
		return fmt.Errorf("database schema version %d is newer than this cachet knows (%d): run the newer cachet", cur, len(ms))
	}
	for _, m := range ms[cur:] {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)`,
			m.version, m.name, time.Now().UTC().Format(time.RFC3339)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %s: commit: %w", m.name, err)
		}
	}
	return nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return int(v.Int64), nil
}

// SchemaVersion is the version the database is at.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) { return schemaVersion(ctx, s.r) }
