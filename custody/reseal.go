package custody

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
)

// Re-sealing after `cachet rotate`: every sealed blob of the store is opened
// under the generation it names and sealed again under the hardware's
// current generation, with the same purpose and AAD, in batches of one store
// transaction each. A blob is chosen by the generation in its own header, so
// the work needs no cursor to survive a crash: after kill -9 the next run
// picks up exactly the blobs still of an old generation. Each row is updated
// only if its blob is still the one that was read (compare and swap), so a
// concurrent change of the row is never overwritten.

// MetaResealProgress is the store meta key holding the latest
// ResealProgress as JSON, for `cachet status`.
const MetaResealProgress = "reseal_progress"

// sealedColumn is one column of sealed blobs and how its blobs were sealed.
type sealedColumn struct {
	table, column string
	purpose       keys.Purpose
	aad           func(id string) []byte
}

// sealedColumns lists every column of the store that holds keys.Backend
// blobs. Wrapped P-256 keys are not here: `cachet rotate` re-wraps them
// during the ceremony.
var sealedColumns = []sealedColumn{
	{"wallets", "sealed_key", keys.PurposeWallet, func(id string) []byte { return aadFor(id, "key") }},
	{"wallets", "sealed_entropy", keys.PurposeWallet, func(id string) []byte { return aadFor(id, "entropy") }},
	{"embedded_wallets", "sealed_auth_share", keys.PurposeWallet, func(id string) []byte { return embeddedAAD(id, "auth") }},
	{"embedded_wallets", "sealed_recovery_share", keys.PurposeRecovery, func(id string) []byte { return embeddedAAD(id, "recovery") }},
}

// ResealProgress is the state of a re-seal, as logged and shown in status.
type ResealProgress struct {
	Generation uint32    `json:"generation"` // the generation blobs move to
	Done       int64     `json:"done"`       // blobs re-sealed by this run
	Remaining  int64     `json:"remaining"`  // blobs of older generations left
	Failed     int64     `json:"failed"`     // blobs that did not unseal; left as they are
	PerSecond  float64   `json:"per_second"`
	ETASeconds float64   `json:"eta_seconds"`
	UpdatedAt  time.Time `json:"updated_at"`
	Finished   bool      `json:"finished"`
}

// ResealOptions tunes Reseal.
type ResealOptions struct {
	// Batch is the number of blobs per store transaction; 0 means 256.
	Batch int
	// Pause is slept between batches, to leave the hardware to requests.
	Pause time.Duration
	// Logger receives progress about every LogEvery; nil discards it.
	Logger   *slog.Logger
	LogEvery time.Duration
}

func genBytes(gen uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, gen)
	return b
}

// CountOlderBlobs counts the sealed blobs of the store that are not of
// generation gen.
func CountOlderBlobs(ctx context.Context, db *sql.DB, gen uint32) (int64, error) {
	var total int64
	for _, c := range sealedColumns {
		var n int64
		q := fmt.Sprintf(`SELECT COUNT(*) FROM %s WHERE %s IS NOT NULL AND length(%s) >= 7 AND substr(%s, 4, 4) != ?`, c.table, c.column, c.column, c.column)
		if err := db.QueryRowContext(ctx, q, genBytes(gen)).Scan(&n); err != nil {
			return 0, fmt.Errorf("count %s.%s: %w", c.table, c.column, err)
		}
		total += n
	}
	return total, nil
}

// Reseal moves every sealed blob of the store to the backend's current
// generation. It returns when none is left (or only ones that fail to
// unseal, counted in Failed and logged), or when ctx ends. b must be the raw
// backend: one audit record per blob would flood the log, so the caller
// records the re-seal as a whole.
func Reseal(ctx context.Context, b keys.Backend, st *store.Store, opts ResealOptions) (ResealProgress, error) {
	batch := opts.Batch
	if batch <= 0 {
		batch = 256
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	every := opts.LogEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	info, err := b.Info(ctx)
	if err != nil {
		return ResealProgress{}, fmt.Errorf("reseal: %w", err)
	}
	p := ResealProgress{Generation: info.Generation}
	if p.Remaining, err = CountOlderBlobs(ctx, st.DB(), p.Generation); err != nil {
		return p, err
	}
	start, lastLog := time.Now(), time.Now()
	log.Info("re-seal started", "generation", p.Generation, "remaining", p.Remaining)
	for _, c := range sealedColumns {
		after := ""
		for {
			n, last, failed, err := resealBatch(ctx, b, st, c, p.Generation, after, batch, &p)
			if err != nil {
				return p, err
			}
			p.Failed += failed
			if n == 0 {
				break
			}
			after = last
			elapsed := time.Since(start).Seconds()
			p.PerSecond = float64(p.Done) / elapsed
			if p.PerSecond > 0 {
				p.ETASeconds = float64(p.Remaining) / p.PerSecond
			}
			if time.Since(lastLog) >= every {
				lastLog = time.Now()
				log.Info("re-seal progress", "generation", p.Generation, "done", p.Done, "remaining", p.Remaining,
					"per_second", int(p.PerSecond), "eta", time.Duration(p.ETASeconds*float64(time.Second)).Round(time.Second).String())
			}
			if opts.Pause > 0 {
				select {
				case <-ctx.Done():
					return p, ctx.Err()
				case <-time.After(opts.Pause):
				}
			}
		}
	}
	if p.Remaining, err = CountOlderBlobs(ctx, st.DB(), p.Generation); err != nil {
		return p, err
	}
	p.Finished = p.Remaining == 0
	p.UpdatedAt = time.Now().UTC()
	if err := st.Write(ctx, func(tx *store.Tx) error { return setProgress(tx, p) }); err != nil {
		return p, err
	}
	log.Info("re-seal finished", "generation", p.Generation, "done", p.Done, "remaining", p.Remaining, "failed", p.Failed)
	return p, nil
}

func setProgress(tx *store.Tx, p ResealProgress) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return tx.SetMeta(MetaResealProgress, string(b))
}

// resealBatch re-seals up to n blobs of column c with ids after after. It
// returns how many rows it looked at and the last id.
func resealBatch(ctx context.Context, b keys.Backend, st *store.Store, c sealedColumn, gen uint32, after string, n int, p *ResealProgress) (int, string, int64, error) {
	q := fmt.Sprintf(`SELECT id, %s FROM %s WHERE id > ? AND %s IS NOT NULL AND length(%s) >= 7 AND substr(%s, 4, 4) != ? ORDER BY id LIMIT ?`,
		c.column, c.table, c.column, c.column, c.column)
	rows, err := st.DB().QueryContext(ctx, q, after, genBytes(gen), n)
	if err != nil {
		return 0, "", 0, fmt.Errorf("reseal %s.%s: %w", c.table, c.column, err)
	}
	type update struct {
		id       string
		old, new []byte
	}
	var ups []update
	var last string
	var seen int
	for rows.Next() {
		var u update
		if err := rows.Scan(&u.id, &u.old); err != nil {
			rows.Close()
			return 0, "", 0, err
		}
		ups = append(ups, u)
		last = u.id
		seen++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, "", 0, err
	}
	var failed int64
	kept := ups[:0]
	for _, u := range ups {
		pt, err := b.Unseal(ctx, c.purpose, u.old, c.aad(u.id))
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, keys.ErrUnavailable) {
				return 0, "", 0, fmt.Errorf("reseal %s %s: %w", c.table, u.id, err)
			}
			// A blob that does not open is left for an operator; it
			// does not stop the others.
			failed++
			continue
		}
		u.new, err = b.Seal(ctx, c.purpose, pt, c.aad(u.id))
		keys.Zero(pt)
		if err != nil {
			return 0, "", 0, fmt.Errorf("reseal %s %s: %w", c.table, u.id, err)
		}
		kept = append(kept, u)
	}
	if len(kept) > 0 {
		err = st.Write(ctx, func(tx *store.Tx) error {
			done := int64(0)
			for _, u := range kept {
				res, err := tx.Exec(fmt.Sprintf(`UPDATE %s SET %s = ?, key_generation = ? WHERE id = ? AND %s = ?`, c.table, c.column, c.column), u.new, gen, u.id, u.old)
				if err != nil {
					return err
				}
				if k, _ := res.RowsAffected(); k == 1 {
					done++
				}
			}
			q := *p
			q.Done += done
			q.Remaining -= done
			q.UpdatedAt = time.Now().UTC()
			if err := setProgress(tx, q); err != nil {
				return err
			}
			*p = q
			return nil
		})
		if err != nil {
			return 0, "", 0, fmt.Errorf("reseal %s.%s: store: %w", c.table, c.column, err)
		}
	}
	return seen, last, failed, nil
}
