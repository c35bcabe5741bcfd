package hsm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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
	found, err := b.probeOnce(ctx, gen)
	if err != nil {
		restarted, rerr := b.reinit()
		if rerr != nil {
			err = errors.Join(err, rerr)
		}
		if restarted {
			found, err = b.probeOnce(ctx, gen)
		}
	}
	if err != nil {
		return fmt.Errorf("hsm: token %q does not answer: %w", b.p.label, err)
	}
	if !found {
		return fmt.Errorf("hsm: token %q answers but no longer holds generation %d: %w", b.p.label, gen, keys.ErrNotProvisioned)
	}
	return nil
}

func (b *backend) probeOnce(ctx context.Context, gen uint32) (bool, error) {
	var found bool
	err := b.p.do(ctx, func(s pkcs11.SessionHandle) error {
		if _, err := b.p.mod.ctx.GetTokenInfo(b.p.currentSlot()); err != nil {
			return mapErr("C_GetTokenInfo", err)
		}
		if _, err := b.p.login(s); err != nil {
			return err
		}
		var err error
		_, found, err = b.findOne(s, b.presenceKey(gen))
		return err
	})
	return found, err
}

// reinitEvery bounds how often a probe restarts the module.
const reinitEvery = time.Second

var reinitMu sync.Mutex

// reinit restarts the PKCS#11 library (C_Finalize, C_Initialize; v2.40
// section 5.4) and finds the token again by label, so a token that went away
// and came back is used again without restarting the daemon: SoftHSM, for
// one, keeps a vanished token invalid until the library is initialized
// again, and a real token may return in another slot. It runs only while no
// other call of the module does (module.objMu held exclusively) and only
// when this backend is the module's only user, since finalizing ends every
// session of the process. The pool's sessions are then stale; a new epoch
// makes each one be checked and replaced before it is lent, and the object
// handle cache is dropped.
// It reports whether the token was found again.
func (b *backend) reinit() (bool, error) {
	reinitMu.Lock()
	defer reinitMu.Unlock()
	if time.Since(b.p.lastReinit) < reinitEvery {
		return false, nil
	}
	b.p.lastReinit = time.Now()
	m := b.p.mod
	registry.mu.Lock()
	only := m.refs == 1 && m.owned
	registry.mu.Unlock()
	if !only {
		return false, nil
	}
	m.objMu.Lock()
	defer m.objMu.Unlock()
	_ = m.ctx.Finalize() // the sessions are gone either way
	if err := m.ctx.Initialize(); err != nil {
		return false, mapErr("C_Initialize", err)
	}
	b.p.epoch.Add(1)
	b.forgetHandles()
	slot, err := findSlot(m.ctx, b.p.label)
	if err != nil {
		return false, err
	}
	b.p.slotMu.Lock()
	b.p.slot = slot
	b.p.slotMu.Unlock()
	b.p.log.Warn("pkcs11 library restarted and the lost token found again", logToken, b.p.label, logSlot, slot)
	return true, nil
}
