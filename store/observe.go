package store

import (
	"context"
	"database/sql"
	"sync/atomic"
	"time"
)

// CommitObserver is told of every committed write transaction: how many
// write requests it carried (the group-commit batch), how long it took from
// BEGIN to a durable COMMIT, and how long the COMMIT itself took (SQLite's
// WAL write and fsync under synchronous=FULL). It runs on the writer
// goroutine, so it must be quick and must not write to the store.
type CommitObserver func(requests int, transaction, commit time.Duration)

// commitObserver is the observer and the writer's current transaction's
// start; the observer is set once, the start only by the writer goroutine.
type commitObserver struct {
	fn      atomic.Pointer[CommitObserver]
	txStart time.Time
}

// ObserveCommits sets the function told of each committed transaction (the
// metrics package's), replacing any earlier one; nil stops observing.
func (s *Store) ObserveCommits(fn CommitObserver) {
	if fn == nil {
		s.obs.fn.Store(nil)
		return
	}
	s.obs.fn.Store(&fn)
}

// begin starts the writer's transaction and notes when.
func (s *Store) begin(ctx context.Context) (*sql.Tx, error) {
	s.obs.txStart = time.Now()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil || s.kind != KindPostgres {
		return tx, err
	}
	if err := lockWrites(ctx, tx); err != nil {
		tx.Rollback()
		return nil, err
	}
	return tx, nil
}

// commitTx commits the writer's transaction of n write requests and tells
// the observer.
func (s *Store) commitTx(tx *sql.Tx, n int) error {
	start := time.Now()
	if err := tx.Commit(); err != nil {
		return err
	}
	if fn := s.obs.fn.Load(); fn != nil {
		end := time.Now()
		(*fn)(n, end.Sub(s.obs.txStart), end.Sub(start))
	}
	return nil
}
