package audit

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// ExportRecord is one line of `cachet audit export --format jsonl`: every
// field the record's hash covers, so that a receiver (a SIEM) can recompute
// the hash and follow the chain without access to the appliance.
//
// The hash is SHA-256 over, in order: the 16 bytes "cachet-audit-v1\x00";
// seq and ts_ns, each as 8 bytes big-endian; actor, action, target,
// decision, request_digest, result_digest and detail, each as its length (4
// bytes big-endian) then its bytes (the digests as raw bytes, empty when
// absent; the strings as UTF-8); and prev_hash (32 raw bytes). The first
// record's prev_hash is 32 zero bytes; each later record's is the hash of the
// record before it. A checkpoint (action "audit.checkpoint") carries in
// detail a P-256 signature (ASN.1 DER, base64) by the appliance's audit key
// over SHA-256("cachet-audit-checkpoint-v1\x00" || covers_seq as 8 bytes
// big-endian || covers_hash as 32 raw bytes), covering the record before it.
type ExportRecord struct {
	Seq           uint64 `json:"seq"`
	TimeNS        int64  `json:"ts_ns"` // Unix nanoseconds, as hashed
	Time          string `json:"time"`  // the same instant, RFC 3339 UTC, for people
	Actor         string `json:"actor"`
	Action        string `json:"action"`
	Target        string `json:"target"`
	Decision      string `json:"decision"`
	RequestDigest string `json:"request_digest"` // hex, "" when absent
	ResultDigest  string `json:"result_digest"`  // hex, "" when absent
	Detail        string `json:"detail"`
	PrevHash      string `json:"prev_hash"` // hex
	Hash          string `json:"hash"`      // hex
}

// ExportJSONL writes the records with a sequence number greater than since,
// in order, one JSON object (ExportRecord) per line, and returns how many it
// wrote. A receiver that has every record up to since passes since, and the
// first line's prev_hash is the hash of the last record it has. It reads
// committed data in one read transaction, so the export is a consistent
// prefix of the log even while the daemon appends.
func ExportJSONL(ctx context.Context, db *sql.DB, since uint64, w io.Writer) (uint64, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("audit export: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT seq, ts, actor, action, target, decision, request_digest, result_digest, detail, prev_hash, hash
		FROM audit_records WHERE seq > ? ORDER BY seq`, since)
	if err != nil {
		return 0, fmt.Errorf("audit export: %w", err)
	}
	defer rows.Close()
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	var n uint64
	for rows.Next() {
		var r ExportRecord
		var reqD, resD, prev, hash []byte
		if err := rows.Scan(&r.Seq, &r.TimeNS, &r.Actor, &r.Action, &r.Target, &r.Decision, &reqD, &resD, &r.Detail, &prev, &hash); err != nil {
			return n, fmt.Errorf("audit export: read record after %d: %w", since+n, err)
		}
		r.Time = time.Unix(0, r.TimeNS).UTC().Format(time.RFC3339Nano)
		r.RequestDigest, r.ResultDigest = hex.EncodeToString(reqD), hex.EncodeToString(resD)
		r.PrevHash, r.Hash = hex.EncodeToString(prev), hex.EncodeToString(hash)
		if err := enc.Encode(&r); err != nil {
			return n, fmt.Errorf("audit export: write record %d: %w", r.Seq, err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("audit export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("audit export: %w", err)
	}
	return n, nil
}
