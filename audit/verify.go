package audit

import (
	"context"
	"crypto/ecdsa"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// ChainError names the first record at which verification failed.
type ChainError struct {
	Seq    uint64 // the first bad sequence number
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit log broken at record %d: %s", e.Seq, e.Reason)
}

// Report is the result of a verification.
type Report struct {
	Records      uint64 `json:"records"`
	Checkpoints  uint64 `json:"checkpoints"`
	HeadSeq      uint64 `json:"head_seq"`
	HeadHash     string `json:"head_hash,omitempty"`
	LastCheckSeq uint64 `json:"last_checkpoint_seq"`
	// Unsigned counts the records after the last checkpoint, which only the
	// chain protects.
	Unsigned uint64 `json:"records_after_last_checkpoint"`
}

// Verify walks the whole log in sequence order and checks contiguity, every
// hash, and every checkpoint's signature against pub, the audit key the
// hardware derives. It returns a *ChainError naming the first bad record, or
// another error when the database cannot be read.
func Verify(ctx context.Context, db *sql.DB, pub *ecdsa.PublicKey) (Report, error) {
	return walk(ctx, db, pub, 1)
}

// VerifyTail checks the log from its last checkpoint on: that checkpoint's
// hash and signature, then every record after it. It is what the daemon
// runs at start, in time independent of the log's length; `cachet audit
// verify` checks everything.
func VerifyTail(ctx context.Context, db *sql.DB, pub *ecdsa.PublicKey) (Report, error) {
	var cp uint64
	err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_records WHERE action = ?`, ActionCheckpoint).Scan(&cp)
	if err != nil {
		return Report{}, fmt.Errorf("audit verify: %w", err)
	}
	return walk(ctx, db, pub, max(cp, 1))
}

// walk verifies the records from sequence number from to the head. From
// record 1 the chain starts at the zero hash; from a checkpoint, the
// checkpoint's own signature vouches for the hash it chains from.
func walk(ctx context.Context, db *sql.DB, pub *ecdsa.PublicKey, from uint64) (Report, error) {
	var rep Report
	rows, err := db.QueryContext(ctx, `SELECT seq, ts, actor, action, target, decision, request_digest, result_digest, detail, prev_hash, hash
		FROM audit_records WHERE seq >= ? ORDER BY seq`, from)
	if err != nil {
		return rep, fmt.Errorf("audit verify: %w", err)
	}
	defer rows.Close()
	var prev []byte
	if from == 1 {
		prev = zeroHash
	}
	next := from
	for rows.Next() {
		var seq uint64
		var ts int64
		var e Entry
		var prevHash, hash []byte
		if err := rows.Scan(&seq, &ts, &e.Actor, &e.Action, &e.Target, &e.Decision, &e.RequestDigest, &e.ResultDigest, &e.Detail, &prevHash, &hash); err != nil {
			return rep, fmt.Errorf("audit verify: read record after %d: %w", next-1, err)
		}
		if seq != next {
			return rep, &ChainError{Seq: next, Reason: fmt.Sprintf("record is missing (the next record present is %d)", seq)}
		}
		if prev == nil {
			if e.Action != ActionCheckpoint {
				return rep, &ChainError{Seq: seq, Reason: "expected a checkpoint here"}
			}
			prev = prevHash // checked by the checkpoint's signature below
		}
		if !equalHash(prevHash, prev) {
			return rep, &ChainError{Seq: seq, Reason: "its previous-hash does not match the record before it (deleted, inserted or reordered)"}
		}
		if !equalHash(chainHash(seq, ts, &e, prev), hash) {
			return rep, &ChainError{Seq: seq, Reason: "its hash does not match its contents (edited)"}
		}
		if e.Action == ActionCheckpoint {
			if reason := checkCheckpoint(&e, seq, prev, pub); reason != "" {
				return rep, &ChainError{Seq: seq, Reason: reason}
			}
			rep.Checkpoints++
			rep.LastCheckSeq = seq
		}
		prev = hash
		next++
		rep.Records++
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("audit verify: %w", err)
	}
	rep.HeadSeq = next - 1
	if rep.Records > 0 {
		rep.HeadHash = hex.EncodeToString(prev)
	}
	rep.Unsigned = rep.HeadSeq - rep.LastCheckSeq
	return rep, nil
}

func checkCheckpoint(e *Entry, seq uint64, prev []byte, pub *ecdsa.PublicKey) string {
	var d checkpointDetail
	if err := json.Unmarshal([]byte(e.Detail), &d); err != nil {
		return "checkpoint detail is not valid JSON"
	}
	if d.CoversSeq != seq-1 || d.CoversHash != hex.EncodeToString(prev) {
		return fmt.Sprintf("checkpoint claims to cover record %d with another hash than the chain's", d.CoversSeq)
	}
	sig, err := base64.StdEncoding.DecodeString(d.Signature)
	if err != nil {
		return "checkpoint signature is not base64"
	}
	if !ecdsa.VerifyASN1(pub, checkpointDigest(d.CoversSeq, prev), sig) {
		return "checkpoint signature does not verify with this appliance's audit key"
	}
	return ""
}
