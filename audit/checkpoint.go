package audit

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
)

// Signer is what the log needs of the key backend: the audit key.
type Signer interface {
	AuthKey(ctx context.Context, label string) (*ecdsa.PublicKey, error)
	SignAuth(ctx context.Context, label string, digest []byte) ([]byte, error)
}

// checkpointDetail is the JSON detail of a checkpoint record.
type checkpointDetail struct {
	CoversSeq  uint64 `json:"covers_seq"`
	CoversHash string `json:"covers_hash"`
	KeyLabel   string `json:"key_label"`
	PublicKey  string `json:"public_key"`
	Signature  string `json:"signature"`
}

// checkpointDigest is what the audit key signs: the sequence number and hash
// of the last record a checkpoint covers.
func checkpointDigest(seq uint64, hash []byte) []byte {
	h := sha256.New()
	h.Write([]byte("cachet-audit-checkpoint-v1\x00"))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], seq)
	h.Write(n[:])
	h.Write(hash)
	return h.Sum(nil)
}

// Options tunes a Log.
type Options struct {
	// CheckpointEvery is the number of records after which a checkpoint is
	// due (default 1000).
	CheckpointEvery int
	// CheckpointInterval is the longest time a record waits for a
	// checkpoint (default 5m).
	CheckpointInterval time.Duration
	// Anchor, when set, is advanced to every checkpoint once it is
	// durable (see anchor.go); a failure to anchor fails the checkpoint.
	Anchor keys.Anchor
	Logger *slog.Logger
}

// Log appends records and checkpoints to a store.
type Log struct {
	st     *store.Store
	signer Signer
	opts   Options

	mu       sync.Mutex
	lastErr  error     // the last checkpoint failure, cleared by a success
	lastAt   time.Time // when the last checkpoint was attempted
	anchored uint64    // the sequence number last written to the anchor
}

// New returns a Log over st whose checkpoints are signed by signer's audit key.
func New(st *store.Store, signer Signer, opts Options) *Log {
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = 1000
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Log{st: st, signer: signer, opts: opts, lastAt: time.Now()}
}

// Record appends e in a transaction of its own and returns once it is
// durable.
func (l *Log) Record(ctx context.Context, e Entry) (Record, error) {
	var r Record
	err := l.st.Write(ctx, func(tx *store.Tx) error {
		var err error
		r, err = Append(tx, e)
		return err
	})
	if err != nil {
		return Record{}, err
	}
	return r, nil
}

// Checkpoint appends a signed checkpoint covering every record so far. It
// does nothing when the last record is already a checkpoint. It returns the
// checkpoint's sequence number (0 when none was needed).
func (l *Log) Checkpoint(ctx context.Context) (uint64, error) {
	pub, err := l.signer.AuthKey(ctx, keys.AuditKeyLabel)
	if err != nil {
		return 0, l.noteErr(fmt.Errorf("audit checkpoint: audit key: %w", err))
	}
	spki, err := keys.PublicKeySPKI(pub)
	if err != nil {
		return 0, l.noteErr(err)
	}
	var seq uint64
	var head keys.AnchorState // the last checkpoint, new or not
	err = l.st.Write(ctx, func(tx *store.Tx) error {
		var headSeq uint64
		var headHash []byte
		var action string
		err := tx.QueryRow(`SELECT seq, hash, action FROM audit_records ORDER BY seq DESC LIMIT 1`).Scan(&headSeq, &headHash, &action)
		if err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			return fmt.Errorf("read head: %w", err)
		}
		if action == ActionCheckpoint {
			head = keys.AnchorState{Seq: headSeq, Hash: headHash}
			return nil
		}
		// Signing inside the write keeps the covered head exact; it holds
		// the writer for one hardware signature every few minutes.
		sig, err := l.signer.SignAuth(tx.Context(), keys.AuditKeyLabel, checkpointDigest(headSeq, headHash))
		if err != nil {
			return fmt.Errorf("sign: %w", err)
		}
		d, _ := json.Marshal(checkpointDetail{
			CoversSeq: headSeq, CoversHash: hex.EncodeToString(headHash),
			KeyLabel: keys.AuditKeyLabel, PublicKey: spki,
			Signature: base64.StdEncoding.EncodeToString(sig),
		})
		r, err := Append(tx, Entry{
			Actor: "cachet", Action: ActionCheckpoint, Target: "audit", Decision: DecisionAllow,
			RequestDigest: checkpointDigest(headSeq, headHash), ResultDigest: Digest(sig), Detail: string(d),
		})
		seq = r.Seq
		head = keys.AnchorState{Seq: r.Seq, Hash: r.Hash}
		return err
	})
	if err != nil {
		return 0, l.noteErr(fmt.Errorf("audit checkpoint: %w", err))
	}
	// The anchor follows the durable checkpoint, never precedes it: a
	// crash in between leaves the database ahead of the anchor, which is
	// not a rollback.
	if err := l.anchor(ctx, head); err != nil {
		return seq, l.noteErr(fmt.Errorf("audit checkpoint %d: %w", head.Seq, err))
	}
	l.noteErr(nil)
	return seq, nil
}

// anchor advances the hardware's anchor to head when it is behind.
func (l *Log) anchor(ctx context.Context, head keys.AnchorState) error {
	if l.opts.Anchor == nil || head.Seq == 0 {
		return nil
	}
	l.mu.Lock()
	done := l.anchored >= head.Seq
	l.mu.Unlock()
	if done {
		return nil
	}
	if err := l.opts.Anchor.AdvanceAnchor(ctx, head); err != nil {
		return fmt.Errorf("anchor the record's head in the hardware: %w", err)
	}
	l.mu.Lock()
	l.anchored = max(l.anchored, head.Seq)
	l.mu.Unlock()
	return nil
}

func (l *Log) noteErr(err error) error {
	l.mu.Lock()
	l.lastErr, l.lastAt = err, time.Now()
	l.mu.Unlock()
	return err
}

// LastCheckpointError is the error of the last checkpoint attempt, or nil.
func (l *Log) LastCheckpointError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

// Run appends checkpoints until ctx ends: when CheckpointEvery records have
// accumulated, or CheckpointInterval passed since the last checkpoint and
// there are records it does not cover. A final checkpoint is attempted when
// ctx ends.
func (l *Log) Run(ctx context.Context) {
	tick := time.NewTicker(min(time.Second, l.opts.CheckpointInterval))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if _, err := l.Checkpoint(fctx); err != nil {
				l.opts.Logger.Error("final audit checkpoint failed", "error", err)
			}
			cancel()
			return
		case <-tick.C:
		}
		h, err := ReadHead(ctx, l.st.DB())
		if err != nil {
			l.opts.Logger.Error("audit head", "error", err)
			continue
		}
		if h.UncheckpointedN == 0 {
			continue
		}
		l.mu.Lock()
		since := time.Since(l.lastAt)
		l.mu.Unlock()
		if h.UncheckpointedN < uint64(l.opts.CheckpointEvery) && since < l.opts.CheckpointInterval {
			continue
		}
		if _, err := l.Checkpoint(ctx); err != nil {
			l.opts.Logger.Error("audit checkpoint failed", "error", err)
		}
	}
}
