// Package audit owns Cachet's tamper-evident record: a hash chain of records
// in the store (sequence, time, actor, action, target, decision, digests of
// request and result, previous hash, hash), checkpoints signed by the audit
// key inside the HSM or TPM, and the verification of both.
//
// # Contract
//
// A record is appended in the same store transaction as the change it
// records (Append inside store.Write), or in a transaction of its own
// (Record) for an action that changes nothing else, such as a use of a key.
// Either way the caller releases its result only after the write returned
// nil: if the record cannot be written, the operation fails.
//
// # Chain
//
// hash(n) = SHA-256("cachet-audit-v1" 0x00 || seq || time || actor || action
// || target || decision || request digest || result digest || detail ||
// hash(n-1)), with integers as fixed-width big-endian and strings and byte
// strings length-prefixed (uint32), and hash(0) = 32 zero bytes. Sequence
// numbers are contiguous from 1, so a deleted record leaves a gap, an edited
// one breaks its hash, and a reordered one breaks both.
//
// # Checkpoints
//
// A checkpoint is itself a record (action "audit.checkpoint") whose detail
// carries an ECDSA P-256 signature by the audit key over the sequence number
// and hash of the record before it. Because it is in the chain, deleting a
// checkpoint breaks the chain; because its signature comes from the hardware,
// rewriting the records it covers, even with recomputed hashes, is detected.
// Records after the last checkpoint are protected by the chain alone: someone
// who can write the database file can rewrite that tail undetected until the
// next checkpoint, which is why checkpoints are frequent (config).
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cachet-custody/cachet/store"
)

// Decisions recorded for actions.
const (
	DecisionAllow = "allow" // the action was authorized and done
	DecisionDeny  = "deny"  // the action was refused
)

// Actions recorded by the foundation. Other packages define their own, as
// "<noun>.<verb>".
const (
	ActionCheckpoint = "audit.checkpoint"
	ActionKeySeal    = "key.seal"
	ActionKeyUnseal  = "key.unseal"
	ActionKeySign    = "key.sign"
)

// Entry is what a caller records.
type Entry struct {
	Actor    string // who: "uid=1000 app=app_x", "operator uid=0"
	Action   string // what: "wallet.create", "key.sign"
	Target   string // on what: a wallet id, a key label
	Decision string // DecisionAllow or DecisionDeny
	// RequestDigest and ResultDigest are digests (Digest) of the request
	// and of what was released. Never put a secret, or the digest of a
	// low-entropy secret, here.
	RequestDigest []byte
	ResultDigest  []byte
	// Detail is free text, usually JSON: a policy trace, ceremony
	// parameters. Never a secret.
	Detail string
}

// Record is an appended entry.
type Record struct {
	Entry
	Seq      uint64
	Time     time.Time
	PrevHash []byte
	Hash     []byte
}

// Digest is the digest recorded for a request or result.
func Digest(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}

var zeroHash = make([]byte, sha256.Size)

// chainHash computes a record's hash from its fields and the previous hash.
func chainHash(seq uint64, ts int64, e *Entry, prev []byte) []byte {
	h := sha256.New()
	h.Write([]byte("cachet-audit-v1\x00"))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], seq)
	h.Write(n[:])
	binary.BigEndian.PutUint64(n[:], uint64(ts))
	h.Write(n[:])
	for _, f := range [][]byte{[]byte(e.Actor), []byte(e.Action), []byte(e.Target), []byte(e.Decision), e.RequestDigest, e.ResultDigest, []byte(e.Detail)} {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(f)))
		h.Write(l[:])
		h.Write(f)
	}
	h.Write(prev)
	return h.Sum(nil)
}

// validate refuses entries that would make the record useless.
func (e *Entry) validate() error {
	if e.Actor == "" || e.Action == "" {
		return fmt.Errorf("audit entry needs an actor and an action")
	}
	if e.Decision != DecisionAllow && e.Decision != DecisionDeny {
		return fmt.Errorf("audit entry decision %q is not %q or %q", e.Decision, DecisionAllow, DecisionDeny)
	}
	return nil
}

// Append adds a record inside the caller's write transaction. It is
// committed, or rolled back, with the caller's change.
func Append(tx *store.Tx, e Entry) (Record, error) {
	if err := e.validate(); err != nil {
		return Record{}, err
	}
	var seq uint64
	prev := zeroHash
	err := tx.QueryRow(`SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1`).Scan(&seq, &prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Record{}, fmt.Errorf("audit: read head: %w", err)
	}
	r := Record{Entry: e, Seq: seq + 1, Time: time.Now().UTC(), PrevHash: prev}
	ts := r.Time.UnixNano()
	r.Hash = chainHash(r.Seq, ts, &r.Entry, prev)
	_, err = tx.Exec(`INSERT INTO audit_records(seq, ts, actor, action, target, decision, request_digest, result_digest, detail, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Seq, ts, e.Actor, e.Action, e.Target, e.Decision, nilIfEmpty(e.RequestDigest), nilIfEmpty(e.ResultDigest), e.Detail, prev, r.Hash)
	if err != nil {
		return Record{}, fmt.Errorf("audit: append record %d: %w", r.Seq, err)
	}
	return r, nil
}

func nilIfEmpty(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// Head is the last record and the last checkpoint.
type Head struct {
	Seq             uint64    `json:"seq"`
	Hash            string    `json:"hash,omitempty"`
	Time            time.Time `json:"time,omitzero"`
	CheckpointSeq   uint64    `json:"checkpoint_seq"`
	CheckpointTime  time.Time `json:"checkpoint_time,omitzero"`
	UncheckpointedN uint64    `json:"records_since_checkpoint"`
}

// ReadHead reads the head of the log from committed data.
func ReadHead(ctx context.Context, db *sql.DB) (Head, error) {
	var h Head
	var hash []byte
	var ts int64
	err := db.QueryRowContext(ctx, `SELECT seq, hash, ts FROM audit_records ORDER BY seq DESC LIMIT 1`).Scan(&h.Seq, &hash, &ts)
	if errors.Is(err, sql.ErrNoRows) {
		return h, nil
	}
	if err != nil {
		return h, fmt.Errorf("audit: read head: %w", err)
	}
	h.Hash = fmt.Sprintf("%x", hash)
	h.Time = time.Unix(0, ts).UTC()
	err = db.QueryRowContext(ctx, `SELECT seq, ts FROM audit_records WHERE action = ? ORDER BY seq DESC LIMIT 1`, ActionCheckpoint).Scan(&h.CheckpointSeq, &ts)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return h, fmt.Errorf("audit: read last checkpoint: %w", err)
	}
	if err == nil {
		h.CheckpointTime = time.Unix(0, ts).UTC()
	}
	h.UncheckpointedN = h.Seq - h.CheckpointSeq
	return h, nil
}

// equalHash compares hashes; used where timing does not matter (verifying
// public data).
func equalHash(a, b []byte) bool { return bytes.Equal(a, b) }
