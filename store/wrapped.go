package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/cachet-custody/cachet/keys"
)

// MetaKeyFormat records the key format (keys.Format) of the generation in
// MetaGeneration; absent means format 1.
const MetaKeyFormat = "key_format"

var _ keys.WrappedKeys = (*Store)(nil)

// WrappedKey returns the wrapped backup of label in generation gen.
func (s *Store) WrappedKey(ctx context.Context, gen uint32, label string) (keys.WrappedKey, bool, error) {
	k := keys.WrappedKey{Generation: gen, Label: label}
	err := s.QueryRowContext(ctx, `SELECT wrapped, public_key FROM wrapped_keys WHERE generation = ? AND label = ?`, gen, label).Scan(&k.Wrapped, &k.Public)
	if errors.Is(err, sql.ErrNoRows) {
		return keys.WrappedKey{}, false, nil
	}
	if err != nil {
		return keys.WrappedKey{}, false, fmt.Errorf("read wrapped key %q of generation %d: %w", label, gen, err)
	}
	return k, true, nil
}

// PutWrappedKey records k unless a backup of its generation and label
// exists, and returns the one recorded.
func (s *Store) PutWrappedKey(ctx context.Context, k keys.WrappedKey) (keys.WrappedKey, error) {
	got := keys.WrappedKey{Generation: k.Generation, Label: k.Label}
	err := s.Write(ctx, func(tx *Tx) error {
		if _, err := tx.Exec(`INSERT INTO wrapped_keys (generation, label, wrapped, public_key, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			k.Generation, k.Label, k.Wrapped, k.Public, time.Now().Unix()); err != nil {
			return err
		}
		return tx.QueryRow(`SELECT wrapped, public_key FROM wrapped_keys WHERE generation = ? AND label = ?`, k.Generation, k.Label).Scan(&got.Wrapped, &got.Public)
	})
	if err != nil {
		return keys.WrappedKey{}, fmt.Errorf("record wrapped key %q of generation %d: %w", k.Label, k.Generation, err)
	}
	return got, nil
}
