package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/cachet-custody/cachet/keys"
)

// RollbackError means the database's record is behind the head the hardware
// anchored, or differs from it: the database was rolled back to an older
// copy, or replaced.
type RollbackError struct {
	AnchorSeq uint64 // the checkpoint the hardware anchored
	HeadSeq   uint64 // the database's last record
	Replaced  bool   // the anchored record exists with another hash
}

func (e *RollbackError) Error() string {
	if e.Replaced {
		return fmt.Sprintf("audit record rolled back or replaced: the hardware anchors checkpoint %d, and the database's record %d has another hash (the database is not the one this hardware signed for; if that is deliberate, `cachet restore` re-anchors)", e.AnchorSeq, e.AnchorSeq)
	}
	return fmt.Sprintf("audit record rolled back: the hardware anchors checkpoint %d but the database ends at record %d (an older copy of the database; if that is deliberate, `cachet restore` re-anchors)", e.AnchorSeq, e.HeadSeq)
}

// CheckAnchor compares the database with the hardware's anchor. It returns
// a *RollbackError when the anchored checkpoint is missing from the
// database or has another hash, and the anchor read (ok false when the
// hardware holds none yet, which is not an error: fresh hardware).
func CheckAnchor(ctx context.Context, db *sql.DB, a keys.Anchor) (st keys.AnchorState, ok bool, err error) {
	st, ok, err = a.ReadAnchor(ctx)
	if err != nil {
		return st, false, fmt.Errorf("read the hardware's anchor of the audit record: %w", err)
	}
	if !ok || st.Seq == 0 { // never anchored, or cleared by a restore before any checkpoint
		return st, false, nil
	}
	var hash []byte
	err = db.QueryRowContext(ctx, `SELECT hash FROM audit_records WHERE seq = ?`, st.Seq).Scan(&hash)
	if errors.Is(err, sql.ErrNoRows) {
		var head uint64
		if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_records`).Scan(&head); err != nil {
			return st, true, fmt.Errorf("audit: read head: %w", err)
		}
		return st, true, &RollbackError{AnchorSeq: st.Seq, HeadSeq: head}
	}
	if err != nil {
		return st, true, fmt.Errorf("audit: read anchored record %d: %w", st.Seq, err)
	}
	if !equalHash(hash, st.Hash) {
		return st, true, &RollbackError{AnchorSeq: st.Seq, Replaced: true}
	}
	return st, true, nil
}

// HeadCheckpoint is the last checkpoint record of the database, the state a
// re-anchor sets (zero when there is none).
func HeadCheckpoint(ctx context.Context, db *sql.DB) (keys.AnchorState, error) {
	var st keys.AnchorState
	err := db.QueryRowContext(ctx, `SELECT seq, hash FROM audit_records WHERE action = ? ORDER BY seq DESC LIMIT 1`, ActionCheckpoint).Scan(&st.Seq, &st.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return keys.AnchorState{}, nil
	}
	if err != nil {
		return st, fmt.Errorf("audit: read last checkpoint: %w", err)
	}
	return st, nil
}
