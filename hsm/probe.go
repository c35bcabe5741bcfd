package hsm

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/cachet-custody/cachet/keys"
)

var _ keys.Prober = (*backend)(nil)

// Probe proves the token still answers and still holds the root of the
// current generation: C_GetTokenInfo and one C_FindObjects by label on a
// pooled session (v2.40 sections 5.5 and 5.7), without the handle cache. A
// token that does not answer gives keys.ErrUnavailable; one that answers
// without the root gives keys.ErrNotProvisioned, so the two are never
// confused. A lost session is replaced by the pool, so a token that comes
// back is used again without a restart.
func (b *backend) Probe(ctx context.Context) error {
	if b.p.closing.Load() {
		return errClosed
	}
	gens := b.cachedGens()
	if len(gens) == 0 {
		return b.errNotProvisioned()
	}
	gen := gens[len(gens)-1]
	var found bool
	err := b.p.do(ctx, func(s pkcs11.SessionHandle) error {
		if _, err := b.p.mod.ctx.GetTokenInfo(b.p.currentSlot()); err != nil {
			return mapErr("C_GetTokenInfo", err)
		}
		if _, err := b.p.login(s); err != nil {
			return err
		}
		var err error
		_, found, err = b.findOne(s, rootKey(gen))
		return err
	})
	if err != nil {
		return fmt.Errorf("hsm: token %q does not answer: %w", b.p.label, err)
	}
	if !found {
		return fmt.Errorf("hsm: token %q answers but no longer holds the root of generation %d: %w", b.p.label, gen, keys.ErrNotProvisioned)
	}
	return nil
}
