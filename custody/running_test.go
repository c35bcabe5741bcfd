package custody

import (
	"context"
	"math/big"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/policy"
	"github.com/cachet-custody/cachet/store"
)

// Running totals give exactly the sum of the contributions in any window,
// whatever the windows, the clock (which may step back), the purge of old
// contributions, and contributions recorded before running totals existed;
// checked against a plain sum over 2,000 random contributions.
func TestRunningSumsAreExact(t *testing.T) {
	ctx := context.Background()
	st := aggregationStore(t)
	type event struct {
		group string
		at    int64
		v     *big.Int
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var events []event
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	// Legacy contributions, recorded one by one before migration 0009.
	if err := st.Write(ctx, func(tx *store.Tx) error {
		for i := range 50 {
			at := now - int64(50-i)*60_000
			v := big.NewInt(int64(rng.IntN(1000)))
			events = append(events, event{"g1", at, v})
			if _, err := tx.Exec(`INSERT INTO aggregation_events_legacy(aggregation_id, wallet_id, group_key, amount, at) VALUES ('agg', 'w', 'g1', ?, ?)`, v.String(), at); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	last := map[string]int64{}
	// As the reader pool sees it: committed, so the legacy table is asked
	// whether it is empty, and once it is, no more.
	r := resolvers{ctx: ctx, q: st, e: &storedPolicies{}, committed: true}
	check := func(group string, since, until int64) {
		t.Helper()
		want := new(big.Int)
		for _, e := range events {
			if e.group == group && e.at > since && e.at <= until {
				want.Add(want, e.v)
			}
		}
		got, err := r.Sum(policy.SumQuery{AggregationID: "agg", WalletID: "w", GroupKey: group, Since: time.UnixMilli(since), Until: time.UnixMilli(until)})
		if err != nil {
			t.Fatal(err)
		}
		if got.Cmp(want) != 0 {
			t.Fatalf("sum of %s over (%d, %d] = %s, want %s", group, since, until, got, want)
		}
	}
	for i := range 2000 {
		group := []string{"g1", "g2"}[rng.IntN(2)]
		// Mostly forward, sometimes a step back of the clock.
		now += int64(rng.IntN(120_000)) - 10_000
		v := new(big.Int).Lsh(big.NewInt(int64(rng.IntN(1<<20))), uint(rng.IntN(200))) // up to 2^220: beyond any float
		if err := st.Write(ctx, func(tx *store.Tx) error { return addContribution(tx, "agg", "w", group, v, now) }); err != nil {
			t.Fatal(err)
		}
		events = append(events, event{group, max(now, last[group]), v})
		last[group] = max(now, last[group])
		if i%97 == 0 {
			// The purge drops what is older than the longest window.
			cut := now - 3*3600_000
			if err := st.Write(ctx, func(tx *store.Tx) error {
				if _, err := tx.Exec(`DELETE FROM aggregation_events WHERE at < ?`, cut); err != nil {
					return err
				}
				_, err := tx.Exec(`DELETE FROM aggregation_events_legacy WHERE at < ?`, cut)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			var kept []event
			for _, e := range events {
				if e.at >= cut {
					kept = append(kept, e)
				}
			}
			events = kept
		}
		for _, w := range []int64{60_000, 3600_000, 3 * 3600_000} {
			check(group, now-w, now)
		}
		check(group, now-int64(rng.IntN(3*3600_000)), now+int64(rng.IntN(60_000)))
	}
	// The purges emptied the legacy table, and Sum noticed: it no longer
	// asks it (the checks after that point passed without it).
	if !r.e.legacyGone.Load() {
		t.Error("the legacy table is empty, but Sum still reads it")
	}
}

// The window is (Since, Until]: a contribution at Since is out, one at Until
// is in, and one a millisecond after Until is out.
func TestSumWindowEdges(t *testing.T) {
	ctx := context.Background()
	st := aggregationStore(t)
	if err := st.Write(ctx, func(tx *store.Tx) error {
		for _, c := range []struct{ at, v int64 }{{1000, 1}, {2000, 10}, {2000, 20}, {3000, 100}} {
			if err := addContribution(tx, "agg", "w", "", big.NewInt(c.v), c.at); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r := resolvers{ctx: ctx, q: st, e: &storedPolicies{}, committed: true}
	for _, c := range []struct{ since, until, want int64 }{
		{999, 1000, 1}, {1000, 2000, 30}, {1000, 1999, 0}, {1999, 2000, 30}, {2000, 3000, 100},
		{2000, 2999, 0}, {0, 5000, 131}, {3000, 4000, 0}, {500, 999, 0}, {0, 0, 0}, {999, 2999, 31},
	} {
		got, err := r.Sum(policy.SumQuery{AggregationID: "agg", WalletID: "w", Since: time.UnixMilli(c.since), Until: time.UnixMilli(c.until)})
		if err != nil {
			t.Fatal(err)
		}
		if got.Int64() != c.want {
			t.Errorf("sum over (%d, %d] = %s, want %d", c.since, c.until, got, c.want)
		}
	}
}

// aggregationStore is a fresh store holding one aggregation, "agg", for
// contributions to be added to directly.
func aggregationStore(t *testing.T) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "c.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Write(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`INSERT INTO aggregations(id, app_id, name, definition, created_at) VALUES ('agg', 'app', 'n', '{}', 0)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return st
}
