package tpm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
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
	format      keys.Format
	mem         *lockedmem.Buffer // root || one KEK per purpose || wrapping key
	root        []byte
	keks        map[keys.Purpose][]byte
	wrap        []byte // format 2: the key that wraps P-256 keys for the store
	fingerprint string

	mu      sync.Mutex // guards arena, scalars and pubs
	arena   lockedmem.Arena
	scalars map[string][]byte // P-256 private scalars, in arena
	pubs    map[string][]byte // uncompressed public points; not secret
}

// sealedPayload is what the TPM seals for a root of format f: the 32 bytes
// alone for format 1 (as appliances before formats sealed it), and the format
// byte followed by the root otherwise, so that Open knows how to derive.
func sealedPayload(f keys.Format, root []byte) []byte {
	if f == keys.FormatHMAC {
		return append([]byte(nil), root...)
	}
	return append([]byte{byte(f)}, root...)
}

// newKeyring moves the unsealed payload into locked memory, zeroing the
// caller's copy, and derives the KEKs, the wrapping key (format 2) and the
// fingerprint from the root, with the format's derivation: HKDF-Expand for
// format 1, keys.Derive (what a PKCS#11 token computes with
// CKM_AES_ECB_ENCRYPT_DATA) for format 2.
func newKeyring(gen uint32, payload []byte) (_ *keyring, err error) {
	defer keys.Zero(payload)
	format, root := keys.FormatHMAC, payload
	if len(payload) == keys.RootSize+1 {
		format, root = keys.Format(payload[0]), payload[1:]
	}
	if len(root) != keys.RootSize || !format.Valid() {
		return nil, fmt.Errorf("sealed root of generation %d holds %d bytes, not a Cachet root", gen, len(payload))
	}
	derive := keys.Expand
	kekInfo := keys.KEKInfo
	if format == keys.FormatDerive {
		derive, kekInfo = keys.Derive, keys.KEKInfoV2
	}
	mem, err := lockedmem.New(keys.RootSize * (2 + len(keys.Purposes)))
	if err != nil {
		return nil, err
	}
	kr := &keyring{gen: gen, format: format, mem: mem, keks: map[keys.Purpose][]byte{}, scalars: map[string][]byte{}, pubs: map[string][]byte{}}
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
		out, err := derive(kr.root, kekInfo(p))
		if err != nil {
			return nil, err
		}
		copy(kek, out)
		keys.Zero(out)
		kr.keks[p] = kek
	}
	if format == keys.FormatDerive {
		off := keys.RootSize * (1 + len(keys.Purposes))
		kr.wrap = buf[off : off+keys.RootSize : off+keys.RootSize]
		out, err := keys.Derive(kr.root, keys.WrapInfoV2())
		if err != nil {
			return nil, err
		}
		copy(kr.wrap, out)
		keys.Zero(out)
	}
	if kr.fingerprint, err = keys.FingerprintOf(format, kr.root); err != nil {
		return nil, err
	}
	return kr, nil
}

func (kr *keyring) kek(p keys.Purpose) ([]byte, error) {
	k, ok := kr.keks[p]
	if !ok {
		return nil, fmt.Errorf("%w: unknown purpose %q", keys.ErrInvalidInput, string(p))
	}
	return k, nil
}

// p256For returns the scalar and public point of label in this generation's
// format: derived from the root (format 1), or taken from the wrapped backup
// in ws, which is made from a fresh random key the first time (format 2).
func (kr *keyring) p256For(ctx context.Context, ws keys.WrappedKeys, label string) (scalar, pub []byte, err error) {
	if kr.format == keys.FormatHMAC {
		return kr.p256(label)
	}
	if err := keys.ValidLabel(label); err != nil {
		return nil, nil, err
	}
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if d, ok := kr.scalars[label]; ok {
		return d, kr.pubs[label], nil
	}
	if ws == nil {
		return nil, nil, keys.ErrNoWrappedKeys
	}
	wk, found, err := ws.WrappedKey(ctx, kr.gen, label)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: wrapped key %q: %w", label, err)
	}
	if !found {
		mine, err := kr.newWrapped(label)
		if err != nil {
			return nil, nil, err
		}
		// Another process may have recorded one first; then that one is
		// the key, and ours is dropped.
		if wk, err = ws.PutWrappedKey(ctx, mine); err != nil {
			return nil, nil, fmt.Errorf("tpm: record wrapped key %q: %w", label, err)
		}
	}
	raw, pub, err := kr.unwrapP256(wk)
	if err != nil {
		return nil, nil, err
	}
	defer keys.Zero(raw)
	d, err := kr.arena.Alloc(len(raw))
	if err != nil {
		return nil, nil, err
	}
	copy(d, raw)
	kr.scalars[label], kr.pubs[label] = d, pub
	return d, pub, nil
}

// newWrapped makes a random P-256 key and wraps its PKCS#8 encoding under the
// generation's wrapping key with RFC 5649, as a PKCS#11 token's C_WrapKey with
// CKM_AES_KEY_WRAP_PAD does.
func (kr *keyring) newWrapped(label string) (keys.WrappedKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keys.WrappedKey{}, fmt.Errorf("tpm: generate P-256 key %q: %w", label, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return keys.WrappedKey{}, fmt.Errorf("tpm: encode P-256 key %q: %w", label, err)
	}
	defer keys.Zero(der)
	wrapped, err := keys.WrapKeyPad(kr.wrap, der)
	if err != nil {
		return keys.WrappedKey{}, err
	}
	pub, err := k.PublicKey.Bytes()
	if err != nil {
		return keys.WrappedKey{}, err
	}
	return keys.WrappedKey{Generation: kr.gen, Label: label, Wrapped: wrapped, Public: pub}, nil
}

// unwrapP256 opens a wrapped backup and checks it against its recorded public
// point. The caller zeroes the scalar.
func (kr *keyring) unwrapP256(wk keys.WrappedKey) (scalar, pub []byte, err error) {
	der, err := keys.UnwrapKeyPad(kr.wrap, wk.Wrapped)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: wrapped key %q of generation %d: %w", wk.Label, kr.gen, err)
	}
	defer keys.Zero(der)
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	k, ok := parsed.(*ecdsa.PrivateKey)
	if err != nil || !ok || k.Curve != elliptic.P256() {
		return nil, nil, fmt.Errorf("tpm: wrapped key %q is not a P-256 private key: %w", wk.Label, keys.ErrAuthFailed)
	}
	pub, err = k.PublicKey.Bytes()
	if err != nil || !bytes.Equal(pub, wk.Public) {
		return nil, nil, fmt.Errorf("tpm: wrapped key %q does not match its recorded public key: %w", wk.Label, keys.ErrAuthFailed)
	}
	scalar, err = k.Bytes()
	if err != nil {
		return nil, nil, err
	}
	return scalar, pub, nil
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
	kr.root, kr.keks, kr.wrap, kr.scalars = nil, nil, nil, nil
	return errors.Join(kr.mem.Destroy(), kr.arena.Destroy())
}
