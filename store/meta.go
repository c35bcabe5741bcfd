package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
)

// Well-known meta keys.
const (
	MetaRootFingerprint = "root_fingerprint"
	MetaGeneration      = "generation"
	MetaThreshold       = "share_threshold"
	MetaShares          = "share_count"
	MetaBackendKind     = "backend_kind"
	MetaBackendIdentity = "backend_identity"
	MetaInitializedAt   = "initialized_at"
	MetaRestoredAt      = "restored_at"
	MetaOperators       = "operators"
)

// Meta reads one meta value; ok is false when the key is absent.
func (s *Store) Meta(ctx context.Context, key string) (value string, ok bool, err error) {
	err = s.r.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read meta %s: %w", key, err)
	}
	return value, true, nil
}

// AllMeta reads every meta value but the appliances' heartbeats (see
// Appliances).
func (s *Store) AllMeta(ctx context.Context) (map[string]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT key, value FROM meta WHERE key NOT LIKE 'appliance/%' ORDER BY key`)
	if err != nil {
		return nil, fmt.Errorf("read meta: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, rows.Err()
}

// SetMeta writes one meta value inside a write transaction.
func (t *Tx) SetMeta(key, value string) error {
	_, err := t.Exec(`INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("write meta %s: %w", key, err)
	}
	return nil
}

// Meta reads one meta value inside a write transaction.
func (t *Tx) Meta(key string) (value string, ok bool, err error) {
	err = t.QueryRow(`SELECT value FROM meta WHERE key = ?`, key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read meta %s: %w", key, err)
	}
	return value, true, nil
}

// Stats describes the database files for status reports.
type Stats struct {
	Kind          string `json:"kind"`
	Path          string `json:"path"`
	SchemaVersion int    `json:"schema_version"`
	SizeBytes     int64  `json:"size_bytes"`
	WALBytes      int64  `json:"wal_bytes"`
	// PostgreSQL only: whether the store's last write or probe committed,
	// and the appliances that share the database, by their heartbeats.
	Connected  bool        `json:"connected,omitempty"`
	Appliances []Appliance `json:"appliances,omitempty"`
}

// Stats reports the schema version and file sizes.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	v, err := s.SchemaVersion(ctx)
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Kind: s.kind, Path: s.path, SchemaVersion: v}
	if s.kind == KindPostgres {
		if err := s.r.QueryRowContext(ctx, `SELECT pg_database_size(current_database())`).Scan(&st.SizeBytes); err != nil {
			return Stats{}, fmt.Errorf("database size: %w", err)
		}
		st.Connected = s.Health() == nil
		if st.Appliances, err = s.Appliances(ctx); err != nil {
			return Stats{}, err
		}
		return st, nil
	}
	if fi, err := os.Stat(s.path); err == nil {
		st.SizeBytes = fi.Size()
	}
	if fi, err := os.Stat(s.path + "-wal"); err == nil {
		st.WALBytes = fi.Size()
	}
	return st, nil
}
