// Package backup takes consistent snapshots of Cachet's store while the
// daemon serves, writes them as one checksummed file with a manifest, and
// installs such a file as the store of a new machine.
//
// A backup holds no secret in clear: every wallet secret, embedded-wallet
// share and wrapped P-256 key in the store is sealed under keys that only the
// hardware (or m operator shares) can produce, and app secrets are stored as
// hashes. So "shares + a recent backup" restores an appliance: `cachet
// restore --backup FILE` installs the snapshot, then provisions new, empty
// hardware from the shares.
//
// # File format
//
//	cachet-backup-v1\n
//	<manifest: one line of JSON>\n
//	<the SQLite database: Manifest.DBSize bytes>
//
// Manifest.DBSHA256 covers the database bytes; Read refuses a file whose
// size or digest differ, and whose database disagrees with its manifest
// (root fingerprint, audit head). The checksum detects corruption, not a
// forger: the audit chain and its hardware-signed checkpoints, checked after
// restore, are what detect a tampered record.
//
// The snapshot is SQLite's VACUUM INTO from a read transaction of a separate
// connection: it sees one committed state of the WAL database and does not
// block the daemon's writer (https://sqlite.org/lang_vacuum.html#vacuuminto).
package backup

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	// The SQLite driver the store uses.
	_ "github.com/mattn/go-sqlite3"
)

// Magic is the first line of a backup file.
const Magic = "cachet-backup-v1"

// maxManifest bounds the manifest line.
const maxManifest = 64 << 10

// Manifest describes a backup. It holds no secret.
type Manifest struct {
	CreatedAt       time.Time `json:"created_at"`
	RootFingerprint string    `json:"root_fingerprint"`
	Generation      string    `json:"generation"`
	KeyFormat       string    `json:"key_format"`
	// RotationFrom is set when the backup was taken during a rotation's
	// re-seal: it then holds blobs of that older generation too.
	RotationFrom  string `json:"rotation_from,omitempty"`
	SchemaVersion int    `json:"schema_version"`
	AuditHeadSeq  uint64 `json:"audit_head_seq"`
	AuditHeadHash string `json:"audit_head_hash"`
	Wallets       int64  `json:"wallets"`
	DBSize        int64  `json:"db_size"`
	DBSHA256      string `json:"db_sha256"`
}

func roDSN(path string) string {
	q := url.Values{}
	q.Set("mode", "ro")
	q.Set("_busy_timeout", "5000")
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

// Take snapshots the store at dbPath into the backup file out, atomically
// (written beside it and renamed), with mode 0600. The store must be an
// initialized Cachet store; the daemon may be serving from it.
func Take(ctx context.Context, dbPath, out string) (Manifest, error) {
	if _, err := os.Stat(dbPath); err != nil {
		return Manifest{}, fmt.Errorf("backup: store: %w", err)
	}
	tmpDB := out + ".db.tmp"
	os.Remove(tmpDB)
	defer os.Remove(tmpDB)
	db, err := sql.Open("sqlite3", roDSN(dbPath))
	if err != nil {
		return Manifest{}, fmt.Errorf("backup: open store: %w", err)
	}
	_, err = db.ExecContext(ctx, `VACUUM INTO ?`, tmpDB)
	db.Close()
	if err != nil {
		return Manifest{}, fmt.Errorf("backup: snapshot %s: %w", dbPath, err)
	}
	m, err := describe(ctx, tmpDB)
	if err != nil {
		return Manifest{}, err
	}
	if m.RootFingerprint == "" {
		return Manifest{}, fmt.Errorf("backup: the store at %s is not initialized (no root fingerprint)", dbPath)
	}
	m.CreatedAt = time.Now().UTC().Truncate(time.Second)
	if m.DBSize, m.DBSHA256, err = digestFile(tmpDB); err != nil {
		return Manifest{}, err
	}
	if err := write(out, m, tmpDB); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// describe reads what the manifest says about a database file, and checks
// its integrity.
func describe(ctx context.Context, path string) (Manifest, error) {
	var m Manifest
	db, err := sql.Open("sqlite3", roDSN(path))
	if err != nil {
		return m, err
	}
	defer db.Close()
	var ok string
	if err := db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		return m, fmt.Errorf("backup: the snapshot fails SQLite's integrity check (%q, %v)", ok, err)
	}
	meta := map[string]*string{"root_fingerprint": &m.RootFingerprint, "generation": &m.Generation, "key_format": &m.KeyFormat, "rotation_from": &m.RotationFrom}
	for k, v := range meta {
		err := db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, k).Scan(v)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return m, fmt.Errorf("backup: read meta %s: %w", k, err)
		}
	}
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&m.SchemaVersion); err != nil {
		return m, fmt.Errorf("backup: schema version: %w", err)
	}
	var hash []byte
	err = db.QueryRowContext(ctx, `SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1`).Scan(&m.AuditHeadSeq, &hash)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("backup: audit head: %w", err)
	}
	m.AuditHeadHash = hex.EncodeToString(hash)
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM wallets`).Scan(&m.Wallets); err != nil {
		return m, fmt.Errorf("backup: count wallets: %w", err)
	}
	return m, nil
}

func digestFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("backup: read snapshot: %w", err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func write(out string, m Manifest, dbFile string) (err error) {
	line, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	src, err := os.Open(dbFile)
	if err != nil {
		return err
	}
	defer src.Close()
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "%s\n%s\n", Magic, line)
	if _, err := io.Copy(w, src); err != nil {
		return fmt.Errorf("backup: write %s: %w", out, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("backup: write %s: %w", out, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backup: sync %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// ErrCorrupt means a backup file is not intact.
var ErrCorrupt = errors.New("backup file is corrupt")

// Extract checks the backup file in and writes its database to dbPath, which
// must not exist. It returns the manifest only when the file is intact: the
// size and digest match, SQLite's integrity check passes, and the database's
// root fingerprint and audit head are the manifest's.
func Extract(ctx context.Context, in, dbPath string) (Manifest, error) {
	var m Manifest
	if _, err := os.Stat(dbPath); err == nil {
		return m, fmt.Errorf("restore: %s already exists; restore --backup installs the store of a new machine (move the old one away first)", dbPath)
	}
	f, err := os.Open(in)
	if err != nil {
		return m, fmt.Errorf("restore: backup: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	magic, err := r.ReadString('\n')
	if err != nil || magic != Magic+"\n" {
		return m, fmt.Errorf("%w: %s does not start with %q", ErrCorrupt, in, Magic)
	}
	line, err := readLine(r, maxManifest)
	if err != nil {
		return m, fmt.Errorf("%w: manifest: %v", ErrCorrupt, err)
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("%w: manifest: %v", ErrCorrupt, err)
	}
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o700); err != nil {
		return m, err
	}
	tmp := dbPath + ".restore.tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return m, err
	}
	defer os.Remove(tmp)
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(r, m.DBSize+1))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return m, fmt.Errorf("restore: write %s: %w", tmp, err)
	}
	if n != m.DBSize || hex.EncodeToString(h.Sum(nil)) != m.DBSHA256 {
		return m, fmt.Errorf("%w: the database holds %d bytes with SHA-256 %x; the manifest says %d bytes, %s", ErrCorrupt, n, h.Sum(nil), m.DBSize, m.DBSHA256)
	}
	got, err := describe(ctx, tmp)
	if err != nil {
		return m, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if got.RootFingerprint != m.RootFingerprint || got.AuditHeadSeq != m.AuditHeadSeq || got.AuditHeadHash != m.AuditHeadHash {
		return m, fmt.Errorf("%w: the database (root %s, audit head %d) does not match its manifest (root %s, audit head %d)", ErrCorrupt, got.RootFingerprint, got.AuditHeadSeq, m.RootFingerprint, m.AuditHeadSeq)
	}
	if err := os.Rename(tmp, dbPath); err != nil {
		return m, err
	}
	return m, nil
}

func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var out []byte
	for {
		chunk, err := r.ReadSlice('\n')
		out = append(out, chunk...)
		if len(out) > limit {
			return nil, fmt.Errorf("longer than %d bytes", limit)
		}
		if err == nil {
			return out[:len(out)-1], nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

// Name is the file name of a backup taken at t, for --out-dir.
func Name(t time.Time) string {
	return "cachet-" + t.UTC().Format("20060102T150405Z") + ".backup"
}

// Prune removes all but the newest keep backups named by Name in dir, and
// returns what it removed.
func Prune(dir string, keep int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("backup: keep %d: want at least 1", keep)
	}
	matches, err := filepath.Glob(filepath.Join(dir, "cachet-*Z.backup"))
	if err != nil {
		return nil, err
	}
	// Names sort by time.
	var removed []string
	for i := 0; i < len(matches)-keep; i++ {
		if err := os.Remove(matches[i]); err != nil {
			return removed, err
		}
		removed = append(removed, matches[i])
	}
	return removed, nil
}

// String is a one-line summary for operators.
func (m Manifest) String() string {
	return "root " + m.RootFingerprint + ", generation " + m.Generation + ", key format " + m.KeyFormat +
		", schema " + strconv.Itoa(m.SchemaVersion) + ", " + strconv.FormatInt(m.Wallets, 10) + " wallets, audit head " +
		strconv.FormatUint(m.AuditHeadSeq, 10) + " (" + m.AuditHeadHash + "), " + strconv.FormatInt(m.DBSize, 10) +
		" bytes, sha256 " + m.DBSHA256
}
