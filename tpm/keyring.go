package tpm

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cachet-custody/cachet/internal/lockedmem"
	"github.com/cachet-custody/cachet/keys"
)

// keyring is one generation's root and the keys derived from it, all in
// locked memory. Its slices are valid until destroy; the backend's lock
// keeps every use before that.
type keyring struct {
	gen         uint32
	mem         *lockedmem.Buffer // root || one KEK per purpose
	root        []byte
	keks        map[keys.Purpose][]byte
	fingerprint string

	mu      sync.Mutex // guards arena, scalars and pubs
	arena   lockedmem.Arena
	scalars map[string][]byte // P-256 private scalars, in arena
	pubs    map[string][]byte // uncompressed public points; not secret
}

// newKeyring moves root into locked memory, zeroing the caller's copy, and
// derives the KEKs and the fingerprint from it.
func newKeyring(gen uint32, root []byte) (_ *keyring, err error) {
	defer keys.Zero(root)
	if len(root) != keys.RootSize {
		return nil, fmt.Errorf("sealed root of generation %d holds %d bytes, want %d", gen, len(root), keys.RootSize)
	}
	mem, err := lockedmem.New(keys.RootSize * (1 + len(keys.Purposes)))
	if err != nil {
		return nil, err
	}
	kr := &keyring{gen: gen, mem: mem, keks: map[keys.Purpose][]byte{}, scalars: map[string][]byte{}, pubs: map[string][]byte{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, kr.destroy())
		}
	}()
	buf := mem.Bytes()
	kr.root = buf[:keys.RootSize:keys.RootSize]
	copy(kr.root, root)
	for i, p := range keys.Purposes {
		off := keys.RootSize * (i + 1)
		kek := buf[off : off+keys.RootSize : off+keys.RootSize]
		out, err := keys.Expand(kr.root, keys.KEKInfo(p))
		if err != nil {
			return nil, err
		}
		copy(kek, out)
		keys.Zero(out)
		kr.keks[p] = kek
	}
	out, err := keys.Expand(kr.root, keys.FingerprintInfo())
	if err != nil {
		return nil, err
	}
	kr.fingerprint = keys.FingerprintFromExpand(out)
	keys.Zero(out)
	return kr, nil
}

func (kr *keyring) kek(p keys.Purpose) ([]byte, error) {
	k, ok := kr.keks[p]
	if !ok {
		return nil, fmt.Errorf("%w: unknown purpose %q", keys.ErrInvalidInput, string(p))
	}
	return k, nil
}

// p256 returns the scalar and the uncompressed public point of label,
// deriving them on first use (keys.DeriveP256 over the locked root) and
// keeping the scalar in locked memory. The public point is cached as bytes
// so that no caller can alter the cached key through a returned pointer.
func (kr *keyring) p256(label string) (scalar, pub []byte, err error) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if d, ok := kr.scalars[label]; ok {
		return d, kr.pubs[label], nil
	}
	k, err := keys.DeriveP256(label, func(info []byte) ([]byte, error) { return keys.Expand(kr.root, info) })
	if err != nil {
		return nil, nil, err
	}
	raw, err := k.Bytes()
	if err != nil {
		return nil, nil, fmt.Errorf("derive P-256 key %q: %w", label, err)
	}
	defer keys.Zero(raw)
	pub, err = k.PublicKey.Bytes()
	if err != nil {
		return nil, nil, fmt.Errorf("derive P-256 key %q: %w", label, err)
	}
	d, err := kr.arena.Alloc(len(raw))
	if err != nil {
		return nil, nil, err
	}
	copy(d, raw)
	kr.scalars[label], kr.pubs[label] = d, pub
	return d, pub, nil
}

// destroy zeroes and unmaps everything the keyring holds.
func (kr *keyring) destroy() error {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	kr.root, kr.keks, kr.scalars = nil, nil, nil
	return errors.Join(kr.mem.Destroy(), kr.arena.Destroy())
}
