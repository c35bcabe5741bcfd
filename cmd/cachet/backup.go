package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/backup"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/keys"
)

// runBackup takes an online snapshot of the store. It reads the store only;
// it needs no hardware and no share, and may run while the daemon serves.
func runBackup(ctx context.Context, args []string, out io.Writer) error {
	fs := newConfigFlags("backup")
	cfgPath := fs.config
	outFile := fs.String("out", "", "the backup file to write")
	outDir := fs.String("out-dir", "", "write cachet-<time>.backup into this directory instead of --out")
	keep := fs.Int("keep", 0, "with --out-dir, keep only the newest N backups there (0: keep all)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if (*outFile == "") == (*outDir == "") {
		return usageError{"give exactly one of --out FILE and --out-dir DIR"}
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if cfg.Store.Kind == config.StorePostgres {
		return errPostgresBackup
	}
	path := *outFile
	if *outDir != "" {
		if err := os.MkdirAll(*outDir, 0o700); err != nil {
			return err
		}
		path = filepath.Join(*outDir, backup.Name(time.Now()))
	}
	m, err := backup.Take(ctx, cfg.Store.Path, path)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "backup %s\n  %s\n", path, m)
	if m.RotationFrom != "" {
		fmt.Fprintf(out, "warning: taken during the re-seal of a rotation: it still holds blobs of generation %s, which the new shares alone cannot open; take another backup once `cachet rotate --finish` has run\n", m.RotationFrom)
	}
	if *outDir != "" && *keep > 0 {
		removed, err := backup.Prune(*outDir, *keep)
		for _, r := range removed {
			fmt.Fprintf(out, "removed old backup %s\n", r)
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "It holds no secret in clear; with m operator shares it restores this appliance (cachet restore --backup).")
	return nil
}

// installBackup puts the backup's database where cfg's store lives, before a
// restore opens it, and returns a function that removes it again if the
// restore fails.
func installBackup(ctx context.Context, cfgPath, file string, out io.Writer) (func(), error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	if cfg.Store.Kind == config.StorePostgres {
		return nil, errPostgresBackup
	}
	m, err := backup.Extract(ctx, file, cfg.Store.Path)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "installed backup of %s\n  %s\n", m.CreatedAt.Format(time.RFC3339), m)
	return func() {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			os.Remove(cfg.Store.Path + suffix)
		}
	}, nil
}

// verifyAudit checks the whole audit chain with the audit key the restored
// hardware holds, so that a restore from a backup ends with proof that the
// record came through whole.
func verifyAudit(ctx context.Context, a *appliance, out io.Writer) error {
	pub, err := a.backend.AuthKey(ctx, keys.AuditKeyLabel)
	if err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	rep, err := audit.Verify(ctx, a.store.DB(), pub)
	if err != nil {
		return fmt.Errorf("the restored audit log does not verify: %w", err)
	}
	fmt.Fprintf(out, "audit log verified: %d records, %d signed checkpoints, head %d\n", rep.Records, rep.Checkpoints, rep.HeadSeq)
	return nil
}

// errPostgresBackup: backups are SQLite snapshots; a PostgreSQL store is
// backed up by PostgreSQL's own tools.
var errPostgresBackup = errors.New("store.kind is postgres: back the database up with PostgreSQL's own tools (pg_basebackup with WAL archiving, or pg_dump); `cachet backup` snapshots a SQLite store")
