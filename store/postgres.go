package store

// The PostgreSQL store: several appliances share one database.
//
// # Writes across appliances
//
// Each appliance keeps its single writer goroutine. On PostgreSQL every
// write transaction first takes pg_advisory_xact_lock(writeLockKey), so the
// write transactions of all appliances run one after another, exactly as
// SQLite runs them on one machine. Everything above the store that relies on
// that (the audit chain's head read and appended in the same transaction,
// aggregation sums read and added to, replay digests and idempotency keys
// checked and inserted) stays exact across the cluster with no change.
//
// The isolation level is READ COMMITTED, on purpose: in READ COMMITTED each
// statement sees what was committed when it started, and every statement of
// the transaction starts after the lock was granted, so it sees every write
// of the appliance that held the lock before. REPEATABLE READ or SERIALIZABLE
// would take the transaction's snapshot at its first statement, the lock
// request itself, which can be older than the previous holder's commit: a
// serialized writer would then read a stale audit head. The lock is
// transaction-scoped, so it is released by COMMIT, by ROLLBACK, or by the
// server when the connection dies; it never outlives a transaction on a
// pooled connection (the trap that made OpenBao give up session-level
// advisory locks).
//
// # Failing closed
//
// A lost connection fails the write, and the failed write fails the store's
// health (health.go) until a probe commits again: nothing is acknowledged
// without a durable COMMIT. The server must commit durably: Open refuses a
// server with synchronous_commit = off.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Kinds of store.
const (
	KindSQLite   = "sqlite"
	KindPostgres = "postgres"
)

// writeLockKey is the advisory lock every write transaction of every
// appliance takes ("cachet" in ASCII).
const writeLockKey int64 = 0x636163686574

// migrateLockKey is the advisory lock held while migrating, so appliances
// starting at once migrate the schema once.
const migrateLockKey int64 = 0x636163686574 + 1

// PostgresConfig says which PostgreSQL database to use.
type PostgresConfig struct {
	// DSN is a libpq connection string or URL. It is never logged or put
	// in an error.
	DSN string
	// Password, when not empty, replaces the DSN's password (it comes from
	// a file or an environment variable, like the PIN).
	Password string
	// Appliance names this appliance in the cluster's list (default: the
	// host name).
	Appliance string
}

// OpenPostgres opens the PostgreSQL database cfg names, applies pending
// migrations (once, under an advisory lock, however many appliances start
// at once) and starts the writer. Options.MustExist refuses a database that
// was never migrated.
func OpenPostgres(ctx context.Context, cfg PostgresConfig, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	pc, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		// pgx's message can quote the DSN; never show it.
		return nil, errors.New("open store: store.dsn is not a valid PostgreSQL connection string or URL")
	}
	if cfg.Password != "" {
		pc.Password = cfg.Password
	}
	if pc.ConnectTimeout == 0 {
		pc.ConnectTimeout = opts.WriteTimeout
	}
	if pc.RuntimeParams == nil {
		pc.RuntimeParams = map[string]string{}
	}
	pc.RuntimeParams["application_name"] = "cachet"
	where := pgWhere(pc)

	wc := pc.Copy()
	// A writer that waits longer than a write may take fails that write
	// (and the store's health) instead of hanging; an appliance that
	// stopped mid-transaction (frozen, not dead) releases the write lock
	// after a while.
	wc.RuntimeParams["lock_timeout"] = strconv.FormatInt(opts.WriteTimeout.Milliseconds(), 10)
	wc.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt((2 * opts.WriteTimeout).Milliseconds(), 10)
	w := sql.OpenDB(newPGConnector(stdlib.GetConnector(*wc)))
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := checkPostgres(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", where, err)
	}
	if opts.MustExist {
		var n int
		if err := w.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'schema_migrations'`).Scan(&n); err != nil {
			w.Close()
			return nil, fmt.Errorf("open store %s: %w", where, err)
		}
		if n == 0 {
			w.Close()
			return nil, fmt.Errorf("open store %s: %w: the database holds no cachet schema", where, os.ErrNotExist)
		}
	}
	if err := migratePostgres(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", where, err)
	}
	rc := pc.Copy()
	rc.RuntimeParams["default_transaction_read_only"] = "on"
	r := sql.OpenDB(newPGConnector(stdlib.GetConnector(*rc)))
	r.SetMaxOpenConns(opts.Readers)
	r.SetMaxIdleConns(opts.Readers)
	name := cfg.Appliance
	if name == "" {
		name, _ = os.Hostname()
	}
	s := newStore(KindPostgres, where, w, r, opts)
	s.appliance = name
	go s.writer()
	return s, nil
}

// pgWhere names the database for messages, without user or password.
func pgWhere(pc *pgx.ConnConfig) string {
	host := pc.Host
	if strings.HasPrefix(host, "/") {
		host = "unix:" + host
	}
	return fmt.Sprintf("postgres://%s:%d/%s", host, pc.Port, pc.Database)
}

// checkPostgres makes sure the server commits durably.
func checkPostgres(ctx context.Context, db *sql.DB) error {
	var sc string
	if err := db.QueryRowContext(ctx, "SHOW synchronous_commit").Scan(&sc); err != nil {
		return err
	}
	if sc == "off" {
		return errors.New("the server runs with synchronous_commit = off: a commit it acknowledges can be lost; set it to on (or remote_apply with a synchronous standby)")
	}
	return nil
}

// lockWrites takes the cluster-wide write lock inside the writer's
// transaction (see the top of this file).
func lockWrites(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?)", writeLockKey); err != nil {
		return fmt.Errorf("take the cluster write lock: %w", err)
	}
	return nil
}

// isPGConstraint reports whether err is a PostgreSQL integrity constraint
// violation (SQLSTATE class 23).
func isPGConstraint(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "23")
}

// Kind is the kind of database: KindSQLite or KindPostgres.
func (s *Store) Kind() string { return s.kind }

// appliancePrefix starts the meta keys of the appliances' heartbeats.
const appliancePrefix = "appliance/"

// Appliance is one appliance of a cluster as it last reported itself.
type Appliance struct {
	Name     string    `json:"name"`
	LastSeen time.Time `json:"last_seen"`
	Self     bool      `json:"self,omitempty"`
}

// Appliances lists the appliances that have written a heartbeat (each
// PostgreSQL store's health probe writes one), newest first. A SQLite store
// has none.
func (s *Store) Appliances(ctx context.Context) ([]Appliance, error) {
	if s.kind != KindPostgres {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT key, value FROM meta WHERE key LIKE 'appliance/%'`)
	if err != nil {
		return nil, fmt.Errorf("read appliances: %w", err)
	}
	defer rows.Close()
	var out []Appliance
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		var hb struct {
			Seen int64 `json:"seen_ms"`
		}
		json.Unmarshal([]byte(v), &hb)
		name := strings.TrimPrefix(k, appliancePrefix)
		out = append(out, Appliance{Name: name, LastSeen: time.UnixMilli(hb.Seen).UTC(), Self: name == s.appliance})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastSeen.After(out[j].LastSeen) })
	return out, rows.Err()
}

// heartbeat is the probe's write on PostgreSQL: this appliance's row.
func (s *Store) heartbeat(tx *Tx) error {
	v, _ := json.Marshal(map[string]any{"seen_ms": time.Now().UnixMilli()})
	return tx.SetMeta(appliancePrefix+s.appliance, string(v))
}
