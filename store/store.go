// Package store owns Cachet's database: opening it with the settings
// durability needs (for SQLite: WAL, synchronous=FULL, foreign keys), the
// versioned schema migrations, and the single writer that groups concurrent
// writes into one transaction.
//
// The database is an embedded SQLite file (Open), or a PostgreSQL database
// that several appliances share (OpenPostgres; see postgres.go for how their
// writes are serialized). Callers see one API either way and write their SQL
// once, in SQLite's dialect; on PostgreSQL it is rewritten (dialect.go).
//
// # Writes
//
// All writes go through Write. One goroutine owns the only read-write
// connection; it takes every write request waiting at that moment (up to
// MaxBatch), runs each inside its own SAVEPOINT in one transaction, commits
// once, and only then answers each request. A request whose function fails is
// rolled back to its savepoint alone; the others still commit. With
// synchronous=FULL the commit is durable (the WAL is fsynced) before Write
// returns nil, so a caller that releases a result only after Write returned
// nil never releases something the database could lose.
//
// Batching needs no timer: while one batch's fsync runs, new requests queue,
// and the next batch takes them all. An idle store commits each write alone.
//
// # Reads
//
// Reads use DB, a pool of query-only connections; under WAL they never wait
// for the writer and see only committed data.
//
// This package knows the schema but not what the rows mean; the audit log and
// the API's packages own their tables' semantics.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mattn/go-sqlite3"
)

// Options tunes a Store. Zero values mean the defaults.
type Options struct {
	// MaxBatch is the most write requests grouped into one transaction
	// (default 128).
	MaxBatch int
	// Readers is the number of read-only connections (default 4).
	Readers int
	// WriteTimeout bounds every Write that has no earlier deadline
	// (default 5s): a store whose disk stopped answering fails the write,
	// and the store's health, instead of hanging the request.
	WriteTimeout time.Duration
	// MinFreeBytes is the free space below which the store's health check
	// fails (default 8 MiB), so that a filling disk stops releases before
	// a commit fails half-way through a request.
	MinFreeBytes uint64
	// MustExist refuses to open a database file that does not exist
	// instead of creating an empty one (`cachet audit verify`, `cachet
	// status`).
	MustExist bool
	// BeforeCommit, when set, runs on the writer goroutine before each
	// batch is committed. It is a test hook: a hook that blocks stands for
	// a frozen disk.
	BeforeCommit func()
	Logger       *slog.Logger
}

// Store is an open database.
type Store struct {
	kind      string // KindSQLite or KindPostgres
	appliance string // this appliance's name in a PostgreSQL cluster
	path      string // the SQLite file, or where the PostgreSQL database is (no credentials)
	w         *sql.DB
	r         *sql.DB
	reqs      chan *request
	maxBatch  int
	log       *slog.Logger
	obs       commitObserver // observe.go; used by the writer goroutine only

	// Prepared statements by query text, on the writer's connection and on
	// the reader pool: database/sql otherwise compiles every statement
	// again on each call, which was a fifth of a signing request's CPU.
	// The writer's only connection is busy inside a transaction, so a
	// statement first seen there runs unprepared and is noted in wpending;
	// the writer prepares it between batches.
	wstmts, rstmts, wpending sync.Map

	commits atomic.Uint64 // transactions committed by the writer
	writes  atomic.Uint64 // write requests those transactions carried

	writeTimeout time.Duration
	minFree      uint64
	beforeCommit func()
	files        []fileID // identities of the files SQLite holds open (health.go)
	health       atomic.Pointer[healthState]
	// integrity is what the last QuickCheck found (see Integrity).
	integrity atomic.Pointer[string]
	probeN    atomic.Uint64

	mu      sync.RWMutex // guards closed against sends on reqs
	closed  bool
	stopped chan struct{}
}

type request struct {
	ctx   context.Context
	fn    func(*Tx) error
	done  chan error
	probe bool // a health probe: runs while the store is failing
}

// closeWait is how long Close waits for the writer to finish the queue.
const closeWait = time.Second

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("store is closed")

// Open opens (creating if needed) the database at path, applies pending
// migrations and starts the writer. The file and its directory are created
// readable by the owner only.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if opts.MustExist {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// Create the file ourselves so that its mode is 0600 from the start;
	// SQLite gives the -wal and -shm files the mode of the database file.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	f.Close()

	w, err := sql.Open("sqlite3", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := checkPragmas(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, Classify(err))
	}
	if err := migrate(ctx, w, KindSQLite); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, Classify(err))
	}
	r, err := sql.Open("sqlite3", dsn(path, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r.SetMaxOpenConns(opts.Readers)
	r.SetMaxIdleConns(opts.Readers)
	s := newStore(KindSQLite, path, w, r, opts)
	if s.files, err = openFiles(path); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	go s.writer()
	return s, nil
}

func (opts Options) withDefaults() Options {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 128
	}
	if opts.Readers <= 0 {
		opts.Readers = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = DefaultMinFreeBytes
	}
	return opts
}

func newStore(kind, path string, w, r *sql.DB, opts Options) *Store {
	s := &Store{
		kind:     kind,
		path:     path,
		w:        w,
		r:        r,
		reqs:     make(chan *request, opts.MaxBatch),
		maxBatch: opts.MaxBatch,
		log:      opts.Logger,
		stopped:  make(chan struct{}),

		writeTimeout: opts.WriteTimeout,
		minFree:      opts.MinFreeBytes,
		beforeCommit: opts.BeforeCommit,
	}
	s.health.Store(&healthState{})
	return s
}

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_busy_timeout", "5000")
	q.Set("_foreign_keys", "on")
	// The file exists (Open created it): a connection opened later must
	// never create a fresh, empty database where the file went missing.
	q.Set("mode", "rw")
	if readOnly {
		q.Set("_query_only", "true")
	} else {
		q.Set("_txlock", "immediate")
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// checkPragmas makes sure the settings durability depends on took effect; a
// driver that silently ignored a DSN parameter would otherwise weaken the
// store without a word.
func checkPragmas(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	var sync, fk int
	if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		return err
	}
	if mode != "wal" || sync != 2 || fk != 1 {
		return fmt.Errorf("pragmas not applied: journal_mode=%s synchronous=%d foreign_keys=%d", mode, sync, fk)
	}
	return nil
}

// Path is the database file, or for PostgreSQL where the database is
// (postgres://host:port/name, without credentials).
func (s *Store) Path() string { return s.path }

// DB returns the read-only connection pool. Writing through it fails.
func (s *Store) DB() *sql.DB { return s.r }

// Write runs fn inside the writer's current transaction and returns after
// that transaction committed durably (nil), or with fn's error (its changes
// rolled back, other requests unaffected), or with the commit's error (no
// change of the batch was kept). fn must not keep tx, and must not block on
// anything but the database: every write in the process waits for it.
//
// If ctx ends before fn starts, fn is not run. If it ends while the batch is
// committing, Write returns ctx.Err() but the change may have committed:
// callers that must know (for example before releasing a signature) treat
// any error as "not released".
func (s *Store) Write(ctx context.Context, fn func(tx *Tx) error) error {
	if err := s.Health(); err != nil {
		return err
	}
	return s.write(ctx, &request{ctx: ctx, fn: fn, done: make(chan error, 1)})
}

// write queues req and waits for its answer, at most WriteTimeout (or the
// context's earlier deadline). A write that times out fails the store's
// health: a disk that does not answer stops every release.
func (s *Store) write(ctx context.Context, req *request) error {
	ctx, cancel := context.WithTimeout(ctx, s.writeTimeout)
	defer cancel()
	err := s.enqueue(ctx, req)
	if errors.Is(err, context.DeadlineExceeded) && req.ctx.Err() == nil {
		err = fmt.Errorf("%w: a write did not complete within %s (the disk is not answering)", ErrUnavailable, s.writeTimeout)
		s.fail(err, false)
	}
	return err
}

func (s *Store) enqueue(ctx context.Context, req *request) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.reqs <- req:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) writer() {
	defer close(s.stopped)
	batch := make([]*request, 0, s.maxBatch)
	for {
		req, ok := <-s.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], req)
	drain:
		for len(batch) < s.maxBatch {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		if s.beforeCommit != nil {
			s.beforeCommit()
		}
		s.commit(batch)
		s.preparePending()
	}
}

// preparePending prepares, on the idle writer connection, the statements
// transactions used unprepared.
func (s *Store) preparePending() {
	s.wpending.Range(func(k, _ any) bool {
		s.wpending.Delete(k)
		if _, ok := s.wstmts.Load(k); ok {
			return true
		}
		if st, err := s.w.Prepare(k.(string)); err == nil {
			s.wstmts.Store(k, st)
		}
		return true
	})
}

// commit runs one batch in one transaction.
func (s *Store) commit(batch []*request) {
	results := make([]error, len(batch))
	fail := func(err error) {
		for i, r := range batch {
			if results[i] == nil {
				r.done <- err
			} else {
				r.done <- results[i]
			}
		}
	}
	// After the files changed under the handle nothing more is written:
	// a frame appended now could land in a WAL that a rescued copy of the
	// database would later replay.
	if h := s.health.Load(); h.sticky {
		fail(h.err)
		return
	}
	ctx := context.Background()
	tx, err := s.begin(ctx)
	if err != nil {
		fail(s.commitFailed(fmt.Errorf("begin: %w", err)))
		return
	}
	ran := 0
	if len(batch) == 1 {
		// One request: its rollback is the transaction's, no savepoint.
		r := batch[0]
		if err := r.ctx.Err(); err != nil {
			tx.Rollback()
			r.done <- err
			return
		}
		if err := run(r.fn, &Tx{s: s, tx: tx, ctx: context.WithoutCancel(r.ctx)}); err != nil {
			tx.Rollback()
			r.done <- err
			return
		}
		if err := s.commitTx(tx, 1); err != nil {
			s.log.Error("store commit failed", "error", err, "batch", 1)
			r.done <- s.commitFailed(err)
			return
		}
		s.commits.Add(1)
		s.writes.Add(1)
		r.done <- s.afterCommit()
		return
	}
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if _, err := tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("store: savepoint: %w", err))
			return
		}
		// Statements run without the request's cancellation: SQLite rolls
		// back the whole transaction when a write statement is interrupted,
		// which would take the other requests of the batch with it.
		if err := run(r.fn, &Tx{s: s, tx: tx, ctx: context.WithoutCancel(r.ctx)}); err != nil {
			results[i] = err
			if _, rerr := tx.ExecContext(ctx, "ROLLBACK TO w"); rerr != nil {
				tx.Rollback()
				fail(fmt.Errorf("store: rollback to savepoint: %w", rerr))
				return
			}
		} else {
			ran++
		}
		if _, err := tx.ExecContext(ctx, "RELEASE w"); err != nil {
			tx.Rollback()
			fail(fmt.Errorf("store: release savepoint: %w", err))
			return
		}
	}
	if ran == 0 {
		err = tx.Rollback()
	} else {
		err = s.commitTx(tx, ran)
	}
	if err != nil {
		s.log.Error("store commit failed", "error", err, "batch", len(batch))
		fail(s.commitFailed(err))
		return
	}
	if ran > 0 {
		s.commits.Add(1)
		s.writes.Add(uint64(ran))
	}
	// Nothing is acknowledged from a database whose files are no longer
	// the ones at its path: the commit may have gone into a deleted file.
	if err := s.afterCommit(); err != nil {
		for i := range batch {
			if results[i] == nil {
				results[i] = err
			}
		}
	}
	for i, r := range batch {
		r.done <- results[i]
	}
}

// WriterStats reports how many transactions the writer committed and how many
// successful write requests they carried; writes/commits is the grouping
// factor.
func (s *Store) WriterStats() (commits, writes uint64) {
	return s.commits.Load(), s.writes.Load()
}

// run calls fn, turning a panic into an error so one bad request cannot take
// the writer (and every later write) down with it.
func run(fn func(*Tx) error, tx *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: write function panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return fn(tx)
}

// Close stops accepting writes, lets the writer finish what is queued and
// closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.reqs)
	s.mu.Unlock()
	// A writer stuck on a frozen disk must not hold the process: after
	// closeWait the database is left open and the caller told. Nothing
	// waiting was acknowledged; what committed is durable.
	select {
	case <-s.stopped:
	case <-time.After(closeWait):
		return fmt.Errorf("%w: close: the writer did not finish within %s (the disk is not answering); unacknowledged writes may be lost", ErrUnavailable, closeWait)
	}
	var errs []error
	for _, m := range []*sync.Map{&s.wstmts, &s.rstmts} {
		m.Range(func(_, v any) bool { errs = append(errs, v.(*sql.Stmt).Close()); return true })
	}
	return errors.Join(append(errs, s.r.Close(), s.w.Close())...)
}

// Ping checks that both the writer's and a reader's connection answer.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store read: %w", err)
	}
	return s.Write(ctx, func(tx *Tx) error {
		return tx.QueryRow("SELECT 1").Scan(&one)
	})
}

// Tx is the view of the writer's transaction that a Write function gets.
type Tx struct {
	s   *Store
	tx  *sql.Tx
	ctx context.Context
}

// Context is the context of the request this function serves.
func (t *Tx) Context() context.Context { return t.ctx }

// stmt returns query's statement prepared on the writer's connection,
// bound to the transaction, or nil the first time a query is seen (it is
// prepared after this batch; see Store.preparePending).
func (t *Tx) stmt(query string) *sql.Stmt {
	st, ok := t.s.wstmts.Load(query)
	if !ok {
		t.s.wpending.Store(query, struct{}{})
		return nil
	}
	return t.tx.StmtContext(t.ctx, st.(*sql.Stmt))
}

// Exec executes a statement in the transaction.
func (t *Tx) Exec(query string, args ...any) (sql.Result, error) {
	if st := t.stmt(query); st != nil {
		return st.ExecContext(t.ctx, args...)
	}
	return t.tx.ExecContext(t.ctx, query, args...)
}

// Query runs a query in the transaction (seeing its uncommitted changes).
func (t *Tx) Query(query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(query); st != nil {
		return st.QueryContext(t.ctx, args...)
	}
	return t.tx.QueryContext(t.ctx, query, args...)
}

// QueryRow runs a query expected to return at most one row.
func (t *Tx) QueryRow(query string, args ...any) *sql.Row {
	if st := t.stmt(query); st != nil {
		return st.QueryRowContext(t.ctx, args...)
	}
	return t.tx.QueryRowContext(t.ctx, query, args...)
}

// prepared returns the cached statement for query on the reader pool,
// preparing it the first time. Queries are constants of the code, so the
// cache is bounded.
func (s *Store) prepared(query string) *sql.Stmt {
	if st, ok := s.rstmts.Load(query); ok {
		return st.(*sql.Stmt)
	}
	st, err := s.r.Prepare(query)
	if err != nil {
		return nil
	}
	if prev, loaded := s.rstmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt)
	}
	return st
}

// QueryRowContext runs a read-only query on the reader pool with a cached
// statement.
func (s *Store) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := s.prepared(query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return s.r.QueryRowContext(ctx, query, args...)
}

// QueryContext runs a read-only query on the reader pool with a cached
// statement.
func (s *Store) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := s.prepared(query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return s.r.QueryContext(ctx, query, args...)
}

// IsConstraint reports whether err is a constraint violation (a duplicate
// key, a failed foreign key) of either database, which callers map to a
// conflict.
func IsConstraint(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.Code == sqlite3.ErrConstraint || isPGConstraint(err)
}
