package store

// The store's own health: a durable write probe, the free space of its file
// system, the identity of the files SQLite holds open, and a check of the
// database's pages. Write refuses while the store is failing, and nothing is
// acknowledged from a database whose files are no longer the ones at its
// path.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-sqlite3"
)

// Defaults of Options.
const (
	DefaultWriteTimeout        = 5 * time.Second
	DefaultMinFreeBytes uint64 = 8 << 20
)

var (
	// ErrUnavailable means the store cannot do its part now: a write
	// failed or timed out, the disk is full, or its files were replaced.
	// Callers fail closed.
	ErrUnavailable = errors.New("store unavailable")
	// ErrCorrupt means SQLite found damaged pages or structures: the file
	// was altered or the disk returned wrong data. It is not an I/O error.
	ErrCorrupt = errors.New("store database is corrupt")
	// ErrIO means the disk or file system failed an operation (SQLite
	// SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN). It is not corruption.
	ErrIO = errors.New("store I/O error")
)

// healthState is the store's current verdict. A sticky failure (the files
// under the open handle were replaced) clears only with a restart; the
// others clear at the next successful probe.
type healthState struct {
	err    error
	sticky bool
}

// Health returns nil while the store is healthy, or the error wrapping
// ErrUnavailable that made it fail.
func (s *Store) Health() error { return s.health.Load().err }

// fail records a failure. The first sticky failure wins and is never
// replaced.
func (s *Store) fail(err error, sticky bool) {
	for {
		old := s.health.Load()
		if old.sticky {
			return
		}
		if s.health.CompareAndSwap(old, &healthState{err: err, sticky: sticky}) {
			if old.err == nil || sticky {
				s.log.Error("store failing: nothing is acknowledged until it recovers", "error", err, "needs_restart", sticky)
			}
			return
		}
	}
}

// recovered clears a failure that is not sticky.
func (s *Store) recovered() {
	for {
		old := s.health.Load()
		if old.sticky || old.err == nil {
			return
		}
		if s.health.CompareAndSwap(old, &healthState{}) {
			s.log.Info("store healthy again", "was", old.err)
			return
		}
	}
}

// Classify names the real cause of an SQLite error: ErrCorrupt for damaged
// pages, ErrIO for a failing disk or file system, otherwise err unchanged.
// "database disk image is malformed" must never stand for a dead disk.
func Classify(err error) error {
	var se sqlite3.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code {
	case sqlite3.ErrCorrupt, sqlite3.ErrNotADB:
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	case sqlite3.ErrIoErr, sqlite3.ErrFull, sqlite3.ErrCantOpen, sqlite3.ErrReadonly, sqlite3.ErrNoLFS:
		return fmt.Errorf("%w (%s): %w", ErrIO, ioHint(se), err)
	}
	return err
}

func ioHint(se sqlite3.Error) string {
	switch se.Code {
	case sqlite3.ErrFull:
		return "the disk is full"
	case sqlite3.ErrReadonly:
		return "the file system is read-only"
	case sqlite3.ErrCantOpen:
		return "a database file cannot be opened"
	}
	return "the disk or file system failed"
}

// commitFailed fails the store's health at once and returns the error a
// request of the failed batch gets.
func (s *Store) commitFailed(err error) error {
	err = fmt.Errorf("%w: commit: %w", ErrUnavailable, Classify(err))
	s.fail(err, false)
	return err
}

// fileID is the identity (device and inode) of one file SQLite holds open.
type fileID struct {
	path     string
	dev, ino uint64
}

// openFiles records the identity of the database, its WAL and its
// shared-memory index while the writer's connection holds them open (it
// keeps them open for the store's life, so these are the open files).
func openFiles(path string) ([]fileID, error) {
	var ids []fileID
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("identify %s: %w", p, err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		ids = append(ids, fileID{path: p, dev: uint64(st.Dev), ino: st.Ino})
	}
	return ids, nil
}

// errFiles is a sticky failure of the files under the open handle.
type errFiles struct {
	path, what string
}

func (e *errFiles) Error() string {
	return fmt.Sprintf("%v: %s %s under the open database (restart the daemon; see the log for what was rescued)", ErrUnavailable, e.path, e.what)
}

func (e *errFiles) Is(target error) bool { return target == ErrUnavailable }

// checkFiles compares each open file with what its path names now.
func (s *Store) checkFiles() error {
	for _, f := range s.files {
		fi, err := os.Stat(f.path)
		if errors.Is(err, os.ErrNotExist) {
			return &errFiles{f.path, "was deleted"}
		}
		if err != nil {
			return fmt.Errorf("%w: stat %s: %w", ErrUnavailable, f.path, err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if uint64(st.Dev) != f.dev || st.Ino != f.ino {
			return &errFiles{f.path, "was replaced by another file"}
		}
	}
	return nil
}

// afterCommit runs on the writer goroutine after each commit, before any
// request of the batch is answered. If the files were deleted or replaced,
// the store fails for good and what the open handle holds is rescued.
func (s *Store) afterCommit() error {
	err := s.checkFiles()
	if err == nil {
		return nil
	}
	var fe *errFiles
	if !errors.As(err, &fe) {
		s.fail(err, false)
		return err
	}
	// Rescue first, then fail: once the failure is visible (/healthz, the
	// release gate) the rescue is done, so a crash after it loses nothing
	// that was acknowledged. This runs on the writer goroutine, so no
	// write is acknowledged in between.
	if old := s.health.Load(); !old.sticky {
		s.rescue()
		s.fail(err, true)
	}
	return s.Health()
}

// rescue saves what the open handle holds when its files were deleted or
// replaced under it. The WAL's frames are checkpointed into the database
// file the handle has open (so a deleted WAL loses nothing that was
// acknowledged); if the database file itself is gone from its path, a copy
// of the open database is written there, and if another file took its
// place, the copy is written beside it and the log says where.
func (s *Store) rescue() {
	ctx, cancel := context.WithTimeout(context.Background(), s.writeTimeout)
	defer cancel()
	for i := 0; i < 20; i++ {
		var busy, logN, done int
		err := s.w.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logN, &done)
		if err != nil {
			s.log.Error("store rescue: checkpoint of the WAL into the database failed", "error", err)
			break
		}
		if busy == 0 {
			s.log.Warn("store rescue: WAL checkpointed into the open database file", "frames", done)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	db := s.files[0]
	fi, err := os.Stat(db.path)
	if err == nil {
		if st := fi.Sys().(*syscall.Stat_t); uint64(st.Dev) == db.dev && st.Ino == db.ino {
			return // the database file is still ours: the checkpoint saved everything
		}
	}
	dest := db.path
	if err == nil {
		dest = db.path + ".rescued-" + strconv.FormatInt(time.Now().Unix(), 10)
	}
	tmp := dest + ".tmp"
	os.Remove(tmp)
	if _, err := s.w.ExecContext(ctx, "VACUUM INTO ?", tmp); err != nil {
		s.log.Error("store rescue: copy of the open database failed", "error", err, "to", tmp)
		return
	}
	if err := syncFile(tmp); err == nil {
		err = os.Rename(tmp, dest)
		if err == nil {
			err = syncFile(filepath.Dir(dest))
		}
		if err != nil {
			s.log.Error("store rescue: placing the copy failed", "error", err, "to", dest)
			return
		}
	}
	s.log.Warn("store rescue: the open database was copied out", "to", dest, "replaced_original", dest != db.path)
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Probe is the store's health check. It fails when the files under the
// open handle changed, when the file system has less than MinFreeBytes
// free, or when a durable write (one committed transaction, fsynced)
// fails or does not finish within WriteTimeout. A success clears an earlier
// failure that was not sticky.
func (s *Store) Probe(ctx context.Context) error {
	if err := s.checkFiles(); err != nil {
		var fe *errFiles
		if errors.As(err, &fe) {
			// Let the writer rescue: it is the only user of s.w.
			s.write(ctx, &request{ctx: ctx, probe: true, done: make(chan error, 1), fn: func(*Tx) error { return nil }})
		}
		s.fail(err, errors.As(err, &fe))
		return s.Health()
	}
	if s.kind == KindPostgres {
		// The server owns its disk; a full one fails the write probe.
		return s.probeWrite(ctx, s.heartbeat)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(s.path), &fs); err != nil {
		err = fmt.Errorf("%w: statfs %s: %w", ErrUnavailable, filepath.Dir(s.path), err)
		s.fail(err, false)
		return err
	}
	if free := fs.Bavail * uint64(fs.Bsize); free < s.minFree {
		err := fmt.Errorf("%w: %w (the disk is full): %d bytes free on %s, below the %d the store keeps in reserve", ErrUnavailable, ErrIO, free, filepath.Dir(s.path), s.minFree)
		s.fail(err, false)
		return err
	}
	n := strconv.FormatUint(s.probeN.Add(1), 10)
	return s.probeWrite(ctx, func(tx *Tx) error { return tx.SetMeta("health_probe", n) })
}

// probeWrite commits fn as a probe: its failure fails the store's health,
// its success clears a failure that is not sticky.
func (s *Store) probeWrite(ctx context.Context, fn func(*Tx) error) error {
	err := s.write(ctx, &request{ctx: ctx, probe: true, done: make(chan error, 1), fn: fn})
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			err = fmt.Errorf("%w: write probe: %w", ErrUnavailable, Classify(err))
		}
		s.fail(err, false)
		return s.Health()
	}
	s.recovered()
	return s.Health()
}

// QuickCheck runs PRAGMA quick_check: every page and b-tree structure is
// read and checked (not the indexes' contents, which integrity_check adds).
// It returns an error wrapping ErrCorrupt naming the first problems, or
// ErrIO when the disk failed while reading.
//
// Corruption found is also a sticky failure of the store (see Health): a
// daemon that checks while it serves stops releasing the moment it is found.
//
// On PostgreSQL it only checks that the server answers a query: the server
// checks its own pages (data checksums, if the cluster was created with
// them).
func (s *Store) QuickCheck(ctx context.Context) (err error) {
	s.setIntegrity(IntegrityChecking)
	defer func() {
		switch {
		case err == nil:
			s.setIntegrity(IntegrityOK)
		case errors.Is(err, ErrCorrupt):
			s.setIntegrity(err.Error())
			s.fail(err, true)
		default: // not finished: an I/O error (the probes judge those) or shutdown
			s.setIntegrity(IntegrityNotChecked + " (" + err.Error() + ")")
		}
	}()
	return s.quickCheck(ctx)
}

// States of Integrity besides a failure's message.
const (
	IntegrityNotChecked = "not checked"
	IntegrityChecking   = "checking"
	IntegrityOK         = "ok"
)

// Integrity reports what the last QuickCheck found: IntegrityNotChecked,
// IntegrityChecking while one runs, IntegrityOK, or the corruption found.
func (s *Store) Integrity() string {
	if p := s.integrity.Load(); p != nil {
		return *p
	}
	return IntegrityNotChecked
}

func (s *Store) setIntegrity(v string) { s.integrity.Store(&v) }

func (s *Store) quickCheck(ctx context.Context) error {
	if s.kind == KindPostgres {
		var one int
		if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nil
	}
	rows, err := s.r.QueryContext(ctx, "PRAGMA quick_check(20)")
	if err != nil {
		return fmt.Errorf("quick_check: %w", Classify(err))
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return fmt.Errorf("quick_check: %w", Classify(err))
		}
		if m != "ok" {
			msgs = append(msgs, m)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("quick_check: %w", Classify(err))
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%w: PRAGMA quick_check of %s: %s", ErrCorrupt, s.path, strings.Join(msgs, "; "))
	}
	return nil
}
