// Package keys owns the boundary between Cachet and its hardware: the Backend
// interface that the PKCS#11 (package hsm) and TPM 2.0 (package tpm) backends
// implement, the names of the keys derived from the root secret, the sealed
// blob envelope that carries a key generation, and the ECDSA encoding rules
// (DER, low S) that every backend's signatures obey.
//
// # Key hierarchy
//
// A 32-byte root secret is held only by the hardware. Every other key is
// HKDF-Expand(SHA-256, root, info, 32) for an info string built here (RFC 5869
// section 2.3 with L = 32, which is the single block HMAC-SHA256(root, info ||
// 0x01)). Both backends derive with the same info strings, so the same root
// gives the same keys on an HSM and on a TPM, and a restore onto new hardware
// brings every key back.
//
// This package does not talk to hardware and holds no key material.
package keys

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"regexp"
)

// Purpose names what a sealed secret is for. Each purpose has its own
// key-encryption key, so a blob sealed for one purpose never unseals as
// another.
type Purpose string

const (
	// PurposeWallet seals wallet secrets (entropy, derived private keys) and
	// embedded-wallet auth shares under the wallet KEK.
	PurposeWallet Purpose = "wallet"
	// PurposeRecovery seals users' recovery shares under the recovery KMS key.
	// Nothing else uses that key.
	PurposeRecovery Purpose = "recovery"
)

// Purposes lists every purpose, in the order their tags are numbered.
var Purposes = []Purpose{PurposeWallet, PurposeRecovery}

// tag is the byte that stands for the purpose inside a sealed blob.
func (p Purpose) tag() (byte, error) {
	switch p {
	case PurposeWallet:
		return 1, nil
	case PurposeRecovery:
		return 2, nil
	}
	return 0, fmt.Errorf("%w: unknown purpose %q", ErrInvalidInput, string(p))
}

// Valid reports whether p is one of Purposes.
func (p Purpose) Valid() bool { _, err := p.tag(); return err == nil }

// AuditKeyLabel is the P-256 key that signs audit checkpoints. Authorization
// keys for callers use labels under AuthKeyPrefix, so a caller can never name
// the audit key.
const AuditKeyLabel = "audit"

// AuthKeyPrefix starts the label of every authorization key that a caller may
// ask the appliance to sign with.
const AuthKeyPrefix = "auth/"

var labelRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._/-]{0,99}$`)

// ValidLabel reports whether label can name a P-256 key: lower-case ASCII
// letters, digits and . _ / -, at most 100 bytes, not starting with a
// separator and without "..".
func ValidLabel(label string) error {
	if !labelRE.MatchString(label) {
		return fmt.Errorf("%w: key label %q: want 1-100 of [a-z0-9._/-], starting with a letter or digit", ErrInvalidInput, label)
	}
	for i := 0; i+1 < len(label); i++ {
		if label[i] == '.' && label[i+1] == '.' {
			return fmt.Errorf("%w: key label %q contains \"..\"", ErrInvalidInput, label)
		}
	}
	return nil
}

// Backend is everything Cachet asks of the hardware.
//
// Implementations must be safe for concurrent use. Seal must use a fresh
// random 96-bit IV for every call and bind the blob header (purpose,
// generation) and aad into the GCM tag; Unseal must return an error wrapping
// ErrAuthFailed when the tag does not verify (tampered blob, wrong aad, wrong
// purpose) and ErrUnknownGeneration when the blob names a generation the
// hardware does not hold. SignAuth returns an ASN.1 DER ECDSA signature with
// S <= N/2 over a 32-byte digest the caller computed. AuthKey and SignAuth
// create the key from the root the first time a label is used.
//
// Every method returns an error wrapping ErrNotProvisioned when the hardware
// holds no root yet (before `cachet init` or `cachet restore`).
type Backend interface {
	Seal(ctx context.Context, purpose Purpose, plaintext, aad []byte) ([]byte, error)
	Unseal(ctx context.Context, purpose Purpose, sealed, aad []byte) ([]byte, error)
	AuthKey(ctx context.Context, label string) (*ecdsa.PublicKey, error)
	SignAuth(ctx context.Context, label string, digest []byte) ([]byte, error)
	Info(ctx context.Context) (BackendInfo, error)
	Close() error
}

// ProvisionOptions says what Provision may do.
type ProvisionOptions struct {
	// Generation is the key generation the root becomes (1 at init).
	Generation uint32
	// Replace allows provisioning over a root that the hardware already
	// holds. The ceremony sets it only after checking the new root's
	// fingerprint against the store's.
	Replace bool
	// Format is how the generation derives its keys; 0 means FormatHMAC,
	// the format of appliances provisioned before formats existed.
	Format Format
}

// Provisioner is the optional interface of a backend that can take a root
// secret into fresh hardware. Ceremonies find it by type assertion.
//
// Provision must not keep a reference to root; the caller zeroes it. It
// returns an error wrapping ErrAlreadyProvisioned when the hardware holds a
// root and opts.Replace is false.
type Provisioner interface {
	Provision(ctx context.Context, root []byte, opts ProvisionOptions) error
}

// BackendInfo describes the hardware for `cachet status` and /healthz. It
// never contains secret material.
type BackendInfo struct {
	// Kind is "pkcs11" or "tpm".
	Kind string `json:"kind"`
	// Identity names the device: token label, manufacturer, model and serial
	// for PKCS#11; manufacturer, firmware and storage-key name for TPM.
	Identity map[string]string `json:"identity"`
	// Provisioned is true once the hardware holds a root.
	Provisioned bool `json:"provisioned"`
	// Generation is the key generation new blobs are sealed under.
	Generation uint32 `json:"generation,omitempty"`
	// Generations lists every generation the hardware can unseal.
	Generations []uint32 `json:"generations,omitempty"`
	// RootFingerprint is Fingerprint of the current root, computed by the
	// hardware (see FingerprintInfo).
	RootFingerprint string `json:"root_fingerprint,omitempty"`
	// Format is the key format of the current generation.
	Format Format `json:"key_format,omitempty"`
}

var (
	// ErrNotProvisioned means the hardware holds no Cachet root.
	ErrNotProvisioned = errors.New("hardware holds no Cachet root (run `cachet init` or `cachet restore`)")
	// ErrAlreadyProvisioned means Provision found a root already in place.
	ErrAlreadyProvisioned = errors.New("hardware already holds a Cachet root")
	// ErrAuthFailed means a sealed blob did not authenticate: it was altered,
	// or the purpose or aad differ from those it was sealed with.
	ErrAuthFailed = errors.New("sealed blob failed authentication")
	// ErrUnknownGeneration means a blob names a key generation the hardware
	// does not hold.
	ErrUnknownGeneration = errors.New("sealed blob names a key generation this hardware does not hold")
	// ErrInvalidInput means the caller passed a malformed argument.
	ErrInvalidInput = errors.New("invalid input")
	// ErrUnavailable means the hardware did not do its part (device gone,
	// session lost, command failed). Callers fail closed.
	ErrUnavailable = errors.New("key backend unavailable")
)

// Zero overwrites b with zeros. Use it on every secret once it is no longer
// needed.
func Zero(b []byte) {
	clear(b)
}

// Retirer is the optional interface of a backend that can remove a key
// generation from the hardware once nothing refers to it (`cachet rotate
// --finish`). It refuses to remove the current generation.
type Retirer interface {
	RetireGeneration(ctx context.Context, gen uint32) error
}
