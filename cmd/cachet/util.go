package main

import (
	"context"
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
	return store.Open(ctx, cfg.Store.Path, store.Options{MaxBatch: cfg.Store.MaxBatch, Readers: cfg.Store.Readers})
}
