package health

import (
	"context"
	"crypto/ecdsa"

	"github.com/cachet-custody/cachet/keys"
)

// Gate returns b with every key operation (Seal, Unseal, AuthKey, SignAuth)
// refused while m reports a failing part, checked before the operation and
// again after it: a plaintext unsealed while a part failed is zeroed and
// not returned. Info and Close pass through, so health probes still reach
// the hardware.
//
// A TPM backend holds its keys in memory after start; without this gate it
// would go on signing after the TPM is gone.
func Gate(b keys.Backend, m *Monitor) keys.Backend { return &gated{b: b, m: m} }

type gated struct {
	b keys.Backend
	m *Monitor
}

func (g *gated) Seal(ctx context.Context, p keys.Purpose, plaintext, aad []byte) ([]byte, error) {
	if err := g.m.Err(); err != nil {
		return nil, err
	}
	out, err := g.b.Seal(ctx, p, plaintext, aad)
	if err != nil {
		return nil, g.cause(err)
	}
	return out, nil
}

func (g *gated) Unseal(ctx context.Context, p keys.Purpose, sealed, aad []byte) ([]byte, error) {
	if err := g.m.Err(); err != nil {
		return nil, err
	}
	out, err := g.b.Unseal(ctx, p, sealed, aad)
	if err != nil {
		return nil, g.cause(err)
	}
	if err := g.m.Err(); err != nil {
		keys.Zero(out)
		return nil, err
	}
	return out, nil
}

func (g *gated) AuthKey(ctx context.Context, label string) (*ecdsa.PublicKey, error) {
	if err := g.m.Err(); err != nil {
		return nil, err
	}
	k, err := g.b.AuthKey(ctx, label)
	if err != nil {
		return nil, g.cause(err)
	}
	return k, nil
}

func (g *gated) SignAuth(ctx context.Context, label string, digest []byte) ([]byte, error) {
	if err := g.m.Err(); err != nil {
		return nil, err
	}
	sig, err := g.b.SignAuth(ctx, label, digest)
	if err != nil {
		return nil, g.cause(err)
	}
	if err := g.m.Err(); err != nil {
		return nil, err
	}
	return sig, nil
}

func (g *gated) Info(ctx context.Context) (keys.BackendInfo, error) { return g.b.Info(ctx) }

func (g *gated) Close() error { return g.b.Close() }

// cause prefers the monitor's account of a failure: an operation that
// failed because a part went away is reported as that part's failure, not
// as, say, a blob that does not authenticate.
func (g *gated) cause(err error) error {
	if herr := g.m.Err(); herr != nil {
		return herr
	}
	return err
}
