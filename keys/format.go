package keys

import (
	"context"
	"crypto/aes"
	"crypto/sha256"
	"fmt"
)

// Format is how a key generation turns its root into keys. It is chosen when
// the generation is provisioned and never changes; `cachet rotate` moves an
// appliance to a new generation, possibly of another format.
type Format uint8

const (
	// FormatHMAC (format 1, the first one) derives every key as
	// HKDF-Expand(SHA-256, root, info): on PKCS#11 the root is an HMAC key
	// that computes the step with C_Sign and the host imports the result.
	// Anyone holding the PIN can ask such a token for any derived key in
	// clear, so this format is kept only for appliances provisioned before
	// format 2, until they rotate.
	FormatHMAC Format = 1
	// FormatDerive (format 2) derives the KEKs and the P-256 wrapping key
	// with DeriveData (AES-256 used as a PRF, one block per half), which a
	// PKCS#11 token computes with C_DeriveKey(CKM_AES_ECB_ENCRYPT_DATA)
	// straight into sensitive, non-extractable objects. P-256 keys are not
	// derived: they are generated at random and kept, wrapped under the
	// derived wrapping key, in the store (see WrappedKeys), so restore
	// brings them back and both backends use the same ones.
	FormatDerive Format = 2
)

// DefaultFormat is the format new generations are provisioned in.
const DefaultFormat = FormatDerive

// Valid reports whether f is a known format.
func (f Format) Valid() bool { return f == FormatHMAC || f == FormatDerive }

// ParseFormat reads a format number as stored in the store's metadata; the
// empty string is FormatHMAC, the format of appliances that predate formats.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "", "1":
		return FormatHMAC, nil
	case "2":
		return FormatDerive, nil
	}
	return 0, fmt.Errorf("%w: unknown key format %q", ErrInvalidInput, s)
}

// String is the number, as stored in the store's metadata.
func (f Format) String() string { return fmt.Sprintf("%d", uint8(f)) }

// infoPrefixV2 versions every format-2 derivation.
const infoPrefixV2 = "cachet/v2/"

// KEKInfoV2 is the label of purpose p's KEK in format 2.
func KEKInfoV2(p Purpose) []byte { return []byte(infoPrefixV2 + "kek/" + string(p)) }

// WrapInfoV2 is the label of the AES-256 key that wraps P-256 keys for the
// store in format 2.
func WrapInfoV2() []byte { return []byte(infoPrefixV2 + "wrap/p256") }

// FingerprintInfoV2 is the label whose derivation, truncated to 16 bytes, is a
// format-2 root's public fingerprint.
func FingerprintInfoV2() []byte { return []byte(infoPrefixV2 + "fingerprint") }

// DeriveDataSize is the size of the data block DeriveData encrypts and of
// the key it yields.
const DeriveDataSize = 32

// DeriveData is the 32-byte block that format 2 encrypts under the root to
// derive the key labelled info: h || 0x01 || h || 0x02 with h the first 15
// bytes of SHA-256(info). Encrypting it with AES-256-ECB under the root gives
// two blocks of AES used as a PRF in counter mode (the shape of NIST SP
// 800-108 section 4.1 with a fixed-length, hashed label), so the 32-byte
// result is as good as a random key for each label, and distinct labels give
// independent keys.
//
// ECB over a 32-byte block is exactly what PKCS#11's CKM_AES_ECB_ENCRYPT_DATA
// computes (Current Mechanisms v2.40 section 2.15.5), which SoftHSM 2.6 and
// the common network HSMs implement; CKM_AES_CBC_ENCRYPT_DATA would chain the
// blocks, and HKDF or SP800-108 mechanisms are missing from SoftHSM 2.6 and
// from many deployed HSMs. Fixing the function here, rather than letting each
// token pick one, is what lets one root give the same keys on every token and
// on the TPM backend, which computes it in software (Derive).
func DeriveData(info []byte) []byte {
	h := sha256.Sum256(info)
	out := make([]byte, 0, DeriveDataSize)
	out = append(out, h[:15]...)
	out = append(out, 0x01)
	out = append(out, h[:15]...)
	return append(out, 0x02)
}

// Derive computes the format-2 key labelled info from a root held in memory:
// AES-256-ECB(root, DeriveData(info)). The caller zeroes the result.
func Derive(root, info []byte) ([]byte, error) {
	if len(root) != RootSize {
		return nil, fmt.Errorf("%w: root must be %d bytes", ErrInvalidInput, RootSize)
	}
	block, err := aes.NewCipher(root)
	if err != nil {
		return nil, fmt.Errorf("derive: %w", err)
	}
	data := DeriveData(info)
	out := make([]byte, DeriveDataSize)
	block.Encrypt(out[:16], data[:16])
	block.Encrypt(out[16:], data[16:])
	return out, nil
}

// FingerprintOf returns the public fingerprint of a root held in memory for a
// generation of format f.
func FingerprintOf(f Format, root []byte) (string, error) {
	switch f {
	case FormatHMAC:
		return Fingerprint(root)
	case FormatDerive:
		out, err := Derive(root, FingerprintInfoV2())
		if err != nil {
			return "", err
		}
		defer Zero(out)
		return FingerprintFromExpand(out), nil
	}
	return "", fmt.Errorf("%w: unknown key format %d", ErrInvalidInput, f)
}

// WrappedKey is a P-256 private key of a format-2 generation as the store
// keeps it: the PKCS#8 encoding of the key wrapped with AES key wrap with
// padding (RFC 5649) under the generation's wrapping key, and its public
// point (uncompressed), which is not secret. The public point lets a backend
// check an unwrapped key before it uses it.
type WrappedKey struct {
	Generation uint32
	Label      string
	Wrapped    []byte
	Public     []byte
}

// WrappedKeys is where format-2 backends keep the wrapped backups of the
// P-256 keys they generate, so that a restore onto new hardware, or onto the
// other backend, brings the same keys back. The store implements it. Nothing
// in it is secret in clear.
type WrappedKeys interface {
	// WrappedKey returns the backup of label in generation gen, if any.
	WrappedKey(ctx context.Context, gen uint32, label string) (WrappedKey, bool, error)
	// PutWrappedKey records k unless a backup of the same generation and
	// label exists already, and returns the backup that is recorded: k, or
	// the one another process recorded first, which the caller must then
	// use instead of its own.
	PutWrappedKey(ctx context.Context, k WrappedKey) (WrappedKey, error)
}

// WrappedKeysUser is the optional interface of a backend that keeps P-256
// keys in a WrappedKeys. The appliance sets it once, right after opening the
// backend and the store; a format-2 generation cannot make or load a P-256
// key before.
type WrappedKeysUser interface {
	UseWrappedKeys(WrappedKeys)
}

// ErrNoWrappedKeys means a format-2 generation needed the store of wrapped
// P-256 keys and the backend was given none.
var ErrNoWrappedKeys = fmt.Errorf("%w: no store for wrapped P-256 keys was attached to the backend", ErrUnavailable)
