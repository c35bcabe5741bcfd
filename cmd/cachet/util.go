package main

import (
	"context"
	"encoding/json"
	"io"
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
	return store.Open(ctx, cfg.Store.Path, store.Options{MaxBatch: cfg.Store.MaxBatch, Readers: cfg.Store.Readers, MustExist: true})
}

// printJSON writes v as indented JSON, as every command's --json output.
func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
