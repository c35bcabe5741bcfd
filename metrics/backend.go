package metrics

import (
	"context"
	"crypto/ecdsa"
	"time"

	"github.com/cachet-custody/cachet/keys"
)

// Backend wraps a key backend so that every operation is timed, and
// counted as an error when it fails, under its name (seal, unseal,
// auth_key, sign_auth, info, close). Nothing about the arguments is
// recorded. A nil *Metrics returns inner unchanged.
//
// Optional interfaces of inner (keys.Provisioner, keys.Anchor,
// keys.Prober) are not carried over: give the wrapper only to code that uses
// keys, and make every type assertion on the raw backend.
func (m *Metrics) Backend(inner keys.Backend) keys.Backend {
	if m == nil {
		return inner
	}
	return &timed{inner: inner, m: m}
}

type timed struct {
	inner keys.Backend
	m     *Metrics
}

func (t *timed) Seal(ctx context.Context, p keys.Purpose, plaintext, aad []byte) ([]byte, error) {
	start := time.Now()
	out, err := t.inner.Seal(ctx, p, plaintext, aad)
	t.m.backendOp("seal", start, err)
	return out, err
}

func (t *timed) Unseal(ctx context.Context, p keys.Purpose, sealed, aad []byte) ([]byte, error) {
	start := time.Now()
	out, err := t.inner.Unseal(ctx, p, sealed, aad)
	t.m.backendOp("unseal", start, err)
	return out, err
}

func (t *timed) AuthKey(ctx context.Context, label string) (*ecdsa.PublicKey, error) {
	start := time.Now()
	k, err := t.inner.AuthKey(ctx, label)
	t.m.backendOp("auth_key", start, err)
	return k, err
}

func (t *timed) SignAuth(ctx context.Context, label string, digest []byte) ([]byte, error) {
	start := time.Now()
	sig, err := t.inner.SignAuth(ctx, label, digest)
	t.m.backendOp("sign_auth", start, err)
	return sig, err
}

func (t *timed) Info(ctx context.Context) (keys.BackendInfo, error) {
	start := time.Now()
	info, err := t.inner.Info(ctx)
	t.m.backendOp("info", start, err)
	return info, err
}

func (t *timed) Close() error {
	start := time.Now()
	err := t.inner.Close()
	t.m.backendOp("close", start, err)
	return err
}
