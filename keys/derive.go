package keys

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// RootSize is the size of the root secret in bytes.
const RootSize = 32

// infoPrefix versions every derivation. Changing it changes every key.
const infoPrefix = "cachet/v1/"

// KEKInfo is the HKDF info of the AES-256-GCM key that seals purpose p.
func KEKInfo(p Purpose) []byte { return []byte(infoPrefix + "kek/" + string(p)) }

// P256Info is the HKDF info of the P-256 key named label. attempt is 0 for the
// first try; see P256Scalar.
func P256Info(label string, attempt int) []byte {
	if attempt == 0 {
		return []byte(infoPrefix + "p256/" + label)
	}
	return fmt.Appendf(nil, "%sp256/%s#%d", infoPrefix, label, attempt)
}

// FingerprintInfo is the HKDF info whose output, truncated to 16 bytes, is the
// root's public fingerprint. Publishing a PRF output under its own label
// reveals nothing about the outputs under other labels.
func FingerprintInfo() []byte { return []byte(infoPrefix + "fingerprint") }

// Expand is HKDF-Expand(SHA-256, root, info, 32): the derivation every backend
// performs. Backends that keep the root in Go memory (TPM) call it directly;
// the PKCS#11 backend computes the same value inside the token as
// HMAC-SHA256(root, info || 0x01).
func Expand(root, info []byte) ([]byte, error) {
	if len(root) != RootSize {
		return nil, fmt.Errorf("%w: root must be %d bytes", ErrInvalidInput, RootSize)
	}
	return hkdf.Expand(sha256.New, root, string(info), 32)
}

// FingerprintFromExpand formats the output of the fingerprint derivation as
// the hex string shown to operators.
func FingerprintFromExpand(out []byte) string { return hex.EncodeToString(out[:16]) }

// Fingerprint returns the public fingerprint of a root held in memory
// (ceremonies and tests). Backends compute the same value from the hardware.
func Fingerprint(root []byte) (string, error) {
	out, err := Expand(root, FingerprintInfo())
	if err != nil {
		return "", err
	}
	defer Zero(out)
	return FingerprintFromExpand(out), nil
}

// MaxP256Attempts bounds the retries of P256Scalar. An HMAC output is outside
// [1, N-1] with probability about 2^-32, so two attempts already fail only
// with probability 2^-64.
const MaxP256Attempts = 4

// P256Scalar turns derivation output into a P-256 private key. It returns
// ok=false when the 32 bytes are not a valid scalar (zero or >= N); the
// caller then derives again with the next attempt number in P256Info. This
// rejection sampling keeps the key uniform and lets both backends agree.
func P256Scalar(d []byte) (*ecdsa.PrivateKey, bool) {
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, false
	}
	return k, true
}

// DeriveP256 derives the P-256 key for label from a root held in memory,
// using expand for each attempt. It is the shared rejection-sampling loop of
// both backends.
func DeriveP256(label string, expand func(info []byte) ([]byte, error)) (*ecdsa.PrivateKey, error) {
	if err := ValidLabel(label); err != nil {
		return nil, err
	}
	for attempt := 0; attempt < MaxP256Attempts; attempt++ {
		d, err := expand(P256Info(label, attempt))
		if err != nil {
			return nil, err
		}
		k, ok := P256Scalar(d)
		Zero(d)
		if ok {
			return k, nil
		}
	}
	return nil, fmt.Errorf("derive P-256 key %q: no valid scalar in %d attempts", label, MaxP256Attempts)
}
