package tpm

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cachet-custody/cachet/keys"
)

var _ keys.Prober = (*backend)(nil)

// Probe proves the TPM is still there and still holds the sealed root this
// backend unsealed at Open: one TPM2_ReadPublic (Part 3, section 12.4) of
// the current generation's persistent handle over a fresh connection, about
// a millisecond on swtpm. The object's Name is a digest of its public area,
// which for a sealed object includes a digest of the sealed secret, so the
// same Name means the same root object; the first Probe records it.
//
// The keys stay in memory while the TPM is gone, so it is this check, and the
// daemon's gate on it, that stops signing. When the same TPM answers again
// (a restarted swtpm, a device reset) Probe succeeds again and the daemon
// serves without a restart; another TPM, or a cleared one, fails it for good.
func (b *backend) Probe(ctx context.Context) error {
	b.mu.RLock()
	closed, gen := b.closed, b.current
	b.mu.RUnlock()
	if closed {
		return errClosed
	}
	if gen == 0 {
		return fmt.Errorf("tpm %s: %w", b.dev.name, keys.ErrNotProvisioned)
	}
	h := b.handle(gen)
	var name []byte
	var sealed bool
	err := b.dev.do(ctx, "probe", func(t transport.TPM) error {
		pub, n, ok, err := persistent(t, h)
		if err != nil || !ok {
			return err
		}
		name, sealed = n.Buffer, looksSealed(pub)
		return nil
	})
	if err != nil {
		return err
	}
	if name == nil || !sealed {
		return fmt.Errorf("tpm %s answers but no longer holds Cachet's sealed root of generation %d at %#x (another TPM, or it was cleared): %w", b.dev.name, gen, uint32(h), keys.ErrNotProvisioned)
	}
	b.probeMu.Lock()
	defer b.probeMu.Unlock()
	if b.probeName == nil {
		b.probeName = bytes.Clone(name)
		return nil
	}
	if !bytes.Equal(b.probeName, name) {
		return fmt.Errorf("tpm %s: the object at %#x is no longer the sealed root this daemon unsealed (its Name changed): %w", b.dev.name, uint32(h), keys.ErrNotProvisioned)
	}
	return nil
}
