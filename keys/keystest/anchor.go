package keystest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/cachet-custody/cachet/keys"
)

// RunAnchor checks a backend's keys.Anchor against real hardware: nothing
// anchored on new hardware, Advance then Read, an Advance backwards refused
// without changing the anchor, the anchor surviving a restart, Reanchor
// moving it anywhere, and a malformed state refused.
func RunAnchor(t *testing.T, hw Hardware) {
	ctx := context.Background()
	b, reopen := hw.New(t)
	a, ok := b.(keys.Anchor)
	if !ok {
		t.Fatalf("backend %T does not implement keys.Anchor", b)
	}
	state := func(seq uint64) keys.AnchorState {
		h := sha256.Sum256(fmt.Appendf(nil, "checkpoint %d", seq))
		return keys.AnchorState{Seq: seq, Hash: h[:]}
	}
	want := func(a keys.Anchor, w keys.AnchorState, when string) {
		t.Helper()
		got, ok, err := a.ReadAnchor(ctx)
		if err != nil || !ok || got.Seq != w.Seq || !bytes.Equal(got.Hash, w.Hash) {
			t.Fatalf("%s: ReadAnchor = %d %x %v %v, want %d %x", when, got.Seq, got.Hash, ok, err, w.Seq, w.Hash)
		}
	}
	if _, ok, err := a.ReadAnchor(ctx); err != nil || ok {
		t.Fatalf("new hardware: ReadAnchor ok=%v err=%v, want nothing anchored", ok, err)
	}
	for _, tc := range []struct {
		seq     uint64
		reanch  bool
		wantErr error
		holds   uint64
	}{
		{seq: 5, holds: 5},
		{seq: 5, holds: 5}, // the same state again is not backwards
		{seq: 3, wantErr: keys.ErrAnchorBackwards, holds: 5},
		{seq: 9, holds: 9},
		{seq: 2, reanch: true, holds: 2},
		{seq: 4, holds: 4},
	} {
		var err error
		if tc.reanch {
			err = a.Reanchor(ctx, state(tc.seq))
		} else {
			err = a.AdvanceAnchor(ctx, state(tc.seq))
		}
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Fatalf("anchor %d (reanchor %v): %v, want %v", tc.seq, tc.reanch, err, tc.wantErr)
		}
		want(a, state(tc.holds), fmt.Sprintf("after anchoring %d", tc.seq))
	}
	if err := a.AdvanceAnchor(ctx, keys.AnchorState{Seq: 10, Hash: []byte("short")}); !errors.Is(err, keys.ErrInvalidInput) {
		t.Fatalf("a 5-byte hash: %v, want ErrInvalidInput", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	want(reopen(t).(keys.Anchor), state(4), "after a restart")
}
