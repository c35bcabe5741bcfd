package audit

import (
	"context"
	"crypto/ecdsa"
	"fmt"

	"github.com/cachet-custody/cachet/keys"
)

type actorKey struct{}

// WithActor returns a context whose key uses are recorded as done by actor.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// ActorFrom returns the actor WithActor set, or "cachet" for the daemon's own
// work.
func ActorFrom(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return "cachet"
}

// Backend wraps a key backend so that every use of a secret key appends an
// audit record, and the result is released only once that record is durable.
// If the record cannot be written, the result is zeroed and an error returned.
// Reading a public key or the backend's info is not a use and is not
// recorded.
func Backend(inner keys.Backend, l *Log) keys.Backend { return &audited{inner: inner, log: l} }

type audited struct {
	inner keys.Backend
	log   *Log
}

func (a *audited) record(ctx context.Context, action, target string, req, res []byte) error {
	_, err := a.log.Record(ctx, Entry{
		Actor: ActorFrom(ctx), Action: action, Target: target, Decision: DecisionAllow,
		RequestDigest: req, ResultDigest: res,
	})
	if err != nil {
		return fmt.Errorf("audit %s %s: %w", action, target, err)
	}
	return nil
}

func (a *audited) Seal(ctx context.Context, p keys.Purpose, plaintext, aad []byte) ([]byte, error) {
	out, err := a.inner.Seal(ctx, p, plaintext, aad)
	if err != nil {
		return nil, err
	}
	// The request digest covers the aad only: a digest of the plaintext
	// could confirm a guess of a low-entropy secret.
	if err := a.record(ctx, ActionKeySeal, string(p), Digest(aad), Digest(out)); err != nil {
		return nil, err
	}
	return out, nil
}

func (a *audited) Unseal(ctx context.Context, p keys.Purpose, sealed, aad []byte) ([]byte, error) {
	out, err := a.inner.Unseal(ctx, p, sealed, aad)
	if err != nil {
		return nil, err
	}
	if err := a.record(ctx, ActionKeyUnseal, string(p), Digest(sealed), nil); err != nil {
		keys.Zero(out)
		return nil, err
	}
	return out, nil
}

func (a *audited) SignAuth(ctx context.Context, label string, digest []byte) ([]byte, error) {
	sig, err := a.inner.SignAuth(ctx, label, digest)
	if err != nil {
		return nil, err
	}
	if err := a.record(ctx, ActionKeySign, label, digest, Digest(sig)); err != nil {
		return nil, err
	}
	return sig, nil
}

func (a *audited) AuthKey(ctx context.Context, label string) (*ecdsa.PublicKey, error) {
	return a.inner.AuthKey(ctx, label)
}

func (a *audited) Info(ctx context.Context) (keys.BackendInfo, error) { return a.inner.Info(ctx) }

func (a *audited) Close() error { return a.inner.Close() }
