// Package recovery owns the formats an embedded wallet's server and its
// devices must agree on to split, protect and recover the wallet's seed
// (Privy's embedded-wallet model):
//
//   - the 2-of-3 Shamir split of the wallet's BIP-39 entropy into a device
//     share, an auth share and a recovery share (Split, Combine), and the
//     re-derivation of any share from two others (ShareAt);
//   - the sealed form of a recovery share that a device encrypts itself,
//     under a key derived from the user's password (Argon2id, KDF) or from a
//     random secret kept in the user's cloud account, so that the server
//     stores it without being able to open it (SealWithPassword,
//     SealWithSecret and their Open counterparts);
//   - the recovery methods, the EIP-712 typed data a device signs to change
//     its method (ChallengeTypedData) and the plaintext of the payload it
//     uploads for the change (Payload).
//
// The server (package custody) and the device reference client both import
// it, so every byte layout and every limit lives here exactly once. Nothing
// here touches storage, HTTP or the hardware: sealing the auth share and an
// "automatic" recovery share under the appliance's KMS key is the server's
// business.
package recovery

import (
	"errors"
	"fmt"

	"github.com/cachet-custody/cachet/internal/shamir"
)

// EntropySize is the BIP-39 entropy size of a 12-word wallet, what embedded
// wallets are created with. Split also accepts up to 32 bytes (24 words), so
// that imported mnemonics can be split the same way.
const EntropySize = 16

// MaxEntropySize is the largest BIP-39 entropy (24 words) Split accepts.
const MaxEntropySize = 32

// Share is one Shamir share in HashiCorp Vault's format: the share bytes
// (one y value per secret byte) followed by one byte, its x coordinate
// (never 0, because the polynomial's value at 0 is the secret itself).
type Share []byte

// Index returns the share's x coordinate, or 0 for an empty share (which is
// never valid).
func (s Share) Index() byte {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1]
}

// Valid reports whether s can be a share of a secretLen-byte secret: exactly
// secretLen+1 bytes and a non-zero x coordinate. The error never includes
// share bytes.
func (s Share) Valid(secretLen int) error {
	switch {
	case secretLen < 1:
		return fmt.Errorf("recovery: a secret is at least 1 byte, not %d", secretLen)
	case len(s) != secretLen+1:
		return fmt.Errorf("recovery: a share of a %d-byte secret is %d bytes, not %d", secretLen, secretLen+1, len(s))
	case s.Index() == 0:
		return errors.New("recovery: a share's index (x coordinate) is never 0")
	}
	return nil
}

// Split splits entropy (16..32 bytes) 2-of-3 with
// HashiCorp Vault's shamir package (vendored in internal/shamir), which the
// repository also uses for operator shares, and returns the three shares in the
// roles device, auth and recovery. Any two of them give the entropy back
// (Combine); one alone says nothing about it. The x coordinates are distinct
// and non-zero but otherwise random, as vault picks them, so callers must
// keep each share's index with it (it is the share's last byte).
func Split(entropy []byte) (device, auth, recovery Share, err error) {
	if len(entropy) < EntropySize || len(entropy) > MaxEntropySize {
		return nil, nil, nil, fmt.Errorf("recovery: entropy is %d..%d bytes, not %d", EntropySize, MaxEntropySize, len(entropy))
	}
	parts, err := shamir.Split(entropy, 3, 2)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("recovery: split: %w", err)
	}
	return parts[0], parts[1], parts[2], nil
}

// Combine returns the secret from two shares of distinct indexes, with
// vault's Combine. It refuses shares of different lengths, equal or zero
// indexes, and shares too short to hold a secret, before vault sees them:
// vault itself would accept an index-0 "share" and return its bytes as the
// secret. The caller owns the returned secret and should clear it after use.
func Combine(a, b Share) ([]byte, error) {
	if err := checkPair(a, b); err != nil {
		return nil, err
	}
	secret, err := shamir.Combine([][]byte{a, b})
	if err != nil {
		return nil, fmt.Errorf("recovery: combine: %w", err)
	}
	return secret, nil
}

// ShareAt evaluates the line through shares a and b at x (x != 0) and
// returns the share of index x. With a 2-of-3 split the polynomial for each
// secret byte is a line, so two shares determine every other one: this is
// how a device re-derives the share of any index from two it holds (its own
// device share on a new device, or the recovery share when switching to
// automatic recovery) without ever reconstructing the entropy as a whole.
// ShareAt(a, b, a.Index()) returns a copy of a. x = 0 is refused because the
// value there is the secret, which Combine is for.
//
// Vault's shamir exposes only Split and Combine (interpolation at 0), so the
// Lagrange evaluation is written here, over the same field vault uses:
// GF(2^8) modulo the AES polynomial x^8+x^4+x^3+x+1 (0x11b).
func ShareAt(a, b Share, x byte) (Share, error) {
	if x == 0 {
		return nil, errors.New("recovery: the value at x = 0 is the secret, not a share")
	}
	if err := checkPair(a, b); err != nil {
		return nil, err
	}
	xa, xb := a.Index(), b.Index()
	// Lagrange basis polynomials of the line through xa and xb, evaluated
	// at x: la = (x-xb)/(xa-xb), lb = (x-xa)/(xb-xa). In characteristic 2
	// subtraction is XOR, so both denominators are xa^xb. They depend only
	// on the indexes, which are public.
	inv := gfInv(xa ^ xb)
	la := gfMul(x^xb, inv)
	lb := gfMul(x^xa, inv)
	n := len(a) - 1
	out := make(Share, n+1)
	for i := range n {
		out[i] = gfMul(a[i], la) ^ gfMul(b[i], lb)
	}
	out[n] = x
	return out, nil
}

// checkPair checks that a and b are two shares of the same secret that can
// be interpolated: same length, at least one secret byte, distinct non-zero
// indexes.
func checkPair(a, b Share) error {
	if len(a) < 2 || len(b) < 2 {
		return errors.New("recovery: a share is at least 2 bytes (one secret byte and its index)")
	}
	if len(a) != len(b) {
		return fmt.Errorf("recovery: shares of different lengths (%d and %d bytes) are not from one split", len(a), len(b))
	}
	if err := a.Valid(len(a) - 1); err != nil {
		return err
	}
	if err := b.Valid(len(b) - 1); err != nil {
		return err
	}
	if a.Index() == b.Index() {
		return fmt.Errorf("recovery: both shares have index %d; two distinct shares are needed", a.Index())
	}
	return nil
}

// gfMul multiplies a and b in GF(2^8) modulo 0x11b, the multiplication of
// FIPS-197 section 4.2 and of vault's shamir package. It has no branches or
// table lookups on its operands, so its timing does not depend on share
// bytes.
func gfMul(a, b byte) byte {
	var r byte
	for i := 7; i >= 0; i-- {
		// Shift r left (multiply by x), reduce by 0x1b if the bit shifted
		// out was set, and add a if bit i of b is set; the masks are
		// 0x00 or 0xff.
		r = (-(b >> i & 1) & a) ^ (-(r >> 7) & 0x1b) ^ (r << 1)
	}
	return r
}

// gfInv returns the multiplicative inverse of a in GF(2^8) as a^254 (the
// multiplicative group has order 255), and 0 for 0. The exponent is a
// constant, so the square-and-multiply sequence does not depend on a.
func gfInv(a byte) byte {
	r, p := byte(1), a
	for e := 254; e > 0; e >>= 1 {
		if e&1 == 1 {
			r = gfMul(r, p)
		}
		p = gfMul(p, p)
	}
	return r
}
