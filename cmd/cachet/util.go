package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/store"
)

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func openStoreOnly(ctx context.Context, cfg *config.Config) (*store.Store, error) {
	return openStore(ctx, cfg, store.Options{MaxBatch: cfg.Store.MaxBatch, Readers: cfg.Store.Readers, MustExist: true})
}

// openStore opens the store the config names: the SQLite file, or the
// PostgreSQL database with its password from a file or the environment.
func openStore(ctx context.Context, cfg *config.Config, opts store.Options) (*store.Store, error) {
	if cfg.Store.Kind != config.StorePostgres {
		return store.Open(ctx, cfg.Store.Path, opts)
	}
	// data_dir still holds this appliance's own files (the TPM state file);
	// with SQLite the store's Open creates it.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	pw, err := cfg.Store.Password()
	if err != nil {
		return nil, fmt.Errorf("store password: %w", err)
	}
	defer clear(pw)
	return store.OpenPostgres(ctx, store.PostgresConfig{DSN: cfg.Store.DSN, Password: string(pw), Appliance: cfg.Store.Appliance}, opts)
}

// printJSON writes v as indented JSON, as every command's --json output.
func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
