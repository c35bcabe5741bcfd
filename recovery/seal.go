package recovery

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// KDFAlgorithm is the only password KDF a device may use: Argon2id, the
// RFC 9106 variant that resists both side-channel and GPU attacks.
const KDFAlgorithm = "argon2id"

// Limits of KDF parameters. The lower bounds are OWASP's minimum for
// Argon2id (19 MiB, and at least one pass and one lane); the upper bounds
// keep a hostile or broken KDF record from making a device (or a test of the
// server) spend unbounded memory or time deriving a key.
const (
	MinKDFSalt      = 16      // bytes (RFC 9106 recommends 128 bits)
	MaxKDFSalt      = 64      // bytes
	MinKDFTime      = 1       // passes
	MaxKDFTime      = 10      // passes
	MinKDFMemoryKiB = 19456   // 19 MiB, OWASP's minimum for Argon2id
	MaxKDFMemoryKiB = 1048576 // 1 GiB
	MinKDFThreads   = 1
	MaxKDFThreads   = 16
)

// KDF is the Argon2id parameters a device used to derive the key that
// encrypts its recovery share from the user's password. The server stores
// and returns them unchanged, so a new device can derive the same key; it
// validates only their ranges, because it never sees the password.
type KDF struct {
	Algorithm string `json:"algorithm"`  // "argon2id"
	Salt      string `json:"salt"`       // standard base64, 16..64 bytes
	Time      uint32 `json:"time"`       // passes, 1..10
	MemoryKiB uint32 `json:"memory_kib"` // 19456 (OWASP minimum, 19 MiB)..1048576 (1 GiB)
	Threads   uint8  `json:"threads"`    // lanes, 1..16
}

// NewKDF returns the parameters a device uses for a new password: a fresh
// random 16-byte salt, 3 passes, 64 MiB (65536 KiB) and 4 lanes. That is
// RFC 9106 section 4's second recommended option (the one for when 2 GiB is
// too much memory, as it is on a phone), and well above OWASP's minimum of
// 19 MiB with 2 passes. The salt is fresh per seal so that equal passwords
// of two users (or of one user twice) never give the same key.
func NewKDF() (KDF, error) {
	salt := make([]byte, MinKDFSalt)
	if _, err := rand.Read(salt); err != nil {
		return KDF{}, fmt.Errorf("recovery: salt: %w", err)
	}
	return KDF{
		Algorithm: KDFAlgorithm,
		Salt:      base64.StdEncoding.EncodeToString(salt),
		Time:      3,
		MemoryKiB: 65536,
		Threads:   4,
	}, nil
}

// Validate checks every parameter's range and returns the first violation,
// naming its JSON field ("recovery_kdf.memory_kib: 1024 is below 19456").
func (k KDF) Validate() error {
	_, err := k.salt()
	return err
}

// salt validates k and returns its decoded salt.
func (k KDF) salt() ([]byte, error) {
	if k.Algorithm != KDFAlgorithm {
		return nil, fmt.Errorf("recovery_kdf.algorithm: %q is not supported (only %q)", k.Algorithm, KDFAlgorithm)
	}
	salt, err := base64.StdEncoding.DecodeString(k.Salt)
	if err != nil {
		return nil, errors.New("recovery_kdf.salt: not standard base64")
	}
	if err := inRange("recovery_kdf.salt", "bytes", uint64(len(salt)), MinKDFSalt, MaxKDFSalt); err != nil {
		return nil, err
	}
	if err := inRange("recovery_kdf.time", "", uint64(k.Time), MinKDFTime, MaxKDFTime); err != nil {
		return nil, err
	}
	if err := inRange("recovery_kdf.memory_kib", "", uint64(k.MemoryKiB), MinKDFMemoryKiB, MaxKDFMemoryKiB); err != nil {
		return nil, err
	}
	if err := inRange("recovery_kdf.threads", "", uint64(k.Threads), MinKDFThreads, MaxKDFThreads); err != nil {
		return nil, err
	}
	return salt, nil
}

// inRange returns an error naming field when v is outside min..max.
func inRange(field, unit string, v, min, max uint64) error {
	if unit != "" {
		unit = " " + unit
	}
	switch {
	case v < min:
		return fmt.Errorf("%s: %d%s is below %d", field, v, unit, min)
	case v > max:
		return fmt.Errorf("%s: %d%s is above %d", field, v, unit, max)
	}
	return nil
}

// SealVersion is the first byte of a sealed recovery share. A different
// first byte is a format this package does not know.
const SealVersion = 0x01

// SealOverhead is what sealing adds to a share: the version byte, the
// 24-byte XChaCha20-Poly1305 nonce and the 16-byte Poly1305 tag. A sealed
// share of 16 bytes of entropy (a 17-byte share) is 58 bytes.
const SealOverhead = 1 + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead

// MaxSealedShare is the largest sealed share, in bytes, the server accepts
// in an upload. The largest today is 33+41 = 74 bytes; the margin leaves
// room for a later version without a server change of this limit.
const MaxSealedShare = 256

// CloudSecretSize is the size of a cloud secret.
const CloudSecretSize = 32

// cloudInfo is the HKDF info that derives the AEAD key from a cloud secret.
const cloudInfo = "cachet/v1/embedded/cloud"

// ErrWrongSecret is the only error opening a sealed share returns for a
// wrong password or cloud secret, a different wallet id, or a damaged or
// truncated ciphertext. It never says which, because the AEAD cannot tell
// them apart and a more specific answer would only help a guesser.
var ErrWrongSecret = errors.New("recovery: the recovery share does not open with this secret")

// ErrUnknownVersion is returned for a sealed share whose first byte is not
// SealVersion: a format from a newer (or foreign) client, not a wrong
// secret.
var ErrUnknownVersion = errors.New("recovery: unknown sealed recovery share version")

// RecoveryAAD returns the associated data a recovery share is sealed under:
// "cachet/v1/embedded/<walletID>/recovery/<method>". It binds the
// ciphertext to its wallet and method, so a sealed share cannot be moved to
// another wallet's record, or opened as the other method, without failing
// authentication.
func RecoveryAAD(walletID, method string) []byte {
	return []byte("cachet/v1/embedded/" + walletID + "/recovery/" + method)
}

// SealWithPassword encrypts share under the key Argon2id derives from
// password with kdf's parameters (which must validate; a device gets them
// from NewKDF), bound to walletID. The result is
// SealVersion || 24-byte random nonce || XChaCha20-Poly1305 ciphertext, with
// RecoveryAAD(walletID, MethodPassword) as associated data. It runs on the
// device: the server never sees password.
func SealWithPassword(share Share, password []byte, kdf KDF, walletID string) ([]byte, error) {
	if len(password) == 0 {
		return nil, errors.New("recovery: empty password")
	}
	key, err := passwordKey(password, kdf)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return seal(share, key, walletID, MethodPassword)
}

// OpenWithPassword reverses SealWithPassword. A wrong password, KDF salt or
// wallet id, or any damaged byte, gives ErrWrongSecret.
func OpenWithPassword(sealed, password []byte, kdf KDF, walletID string) (Share, error) {
	if err := checkSealed(sealed, walletID); err != nil {
		return nil, err
	}
	if len(password) == 0 {
		// Nothing was ever sealed under an empty password.
		return nil, ErrWrongSecret
	}
	key, err := passwordKey(password, kdf)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return open(sealed, key, walletID, MethodPassword)
}

// NewCloudSecret returns a fresh 32-byte random secret for the cloud
// method. The device keeps it in the user's cloud account (iCloud Keychain,
// Google Drive app data) and never sends it to the server.
func NewCloudSecret() ([]byte, error) {
	s := make([]byte, CloudSecretSize)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("recovery: cloud secret: %w", err)
	}
	return s, nil
}

// SealWithSecret encrypts share under a cloud secret (CloudSecretSize
// bytes), bound to walletID, in the same format as SealWithPassword with
// RecoveryAAD(walletID, MethodCloud). The AEAD key is
// HKDF-SHA256(secret, no salt, info "cachet/v1/embedded/cloud"), 32 bytes,
// so the raw secret, which sits in a cloud account, is never itself the
// key; no salt is needed because the secret is already uniformly random.
func SealWithSecret(share Share, secret []byte, walletID string) ([]byte, error) {
	key, err := secretKey(secret)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return seal(share, key, walletID, MethodCloud)
}

// OpenWithSecret reverses SealWithSecret. A wrong secret or wallet id, or
// any damaged byte, gives ErrWrongSecret.
func OpenWithSecret(sealed, secret []byte, walletID string) (Share, error) {
	if err := checkSealed(sealed, walletID); err != nil {
		return nil, err
	}
	key, err := secretKey(secret)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return open(sealed, key, walletID, MethodCloud)
}

// passwordKey derives the 32-byte AEAD key from password with kdf, after
// validating kdf so that a hostile record cannot make argon2 panic or
// allocate without bound.
func passwordKey(password []byte, kdf KDF) ([]byte, error) {
	salt, err := kdf.salt()
	if err != nil {
		return nil, err
	}
	return argon2.IDKey(password, salt, kdf.Time, kdf.MemoryKiB, kdf.Threads, chacha20poly1305.KeySize), nil
}

// secretKey derives the 32-byte AEAD key from a cloud secret.
func secretKey(secret []byte) ([]byte, error) {
	if len(secret) != CloudSecretSize {
		return nil, fmt.Errorf("recovery: a cloud secret is %d bytes, not %d", CloudSecretSize, len(secret))
	}
	key, err := hkdf.Key(sha256.New, secret, nil, cloudInfo, chacha20poly1305.KeySize)
	if err != nil {
		return nil, fmt.Errorf("recovery: hkdf: %w", err)
	}
	return key, nil
}

// seal encrypts share under key in the sealed-share format.
func seal(share Share, key []byte, walletID, method string) ([]byte, error) {
	if err := validEntropyShare(share); err != nil {
		return nil, err
	}
	if err := CheckWalletID(walletID); err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	out := make([]byte, 1+chacha20poly1305.NonceSizeX, len(share)+SealOverhead)
	out[0] = SealVersion
	nonce := out[1:]
	// A random 192-bit nonce never repeats in practice, even though every
	// re-seal under one password (same salt) would reuse the key.
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("recovery: nonce: %w", err)
	}
	return aead.Seal(out, nonce, share, RecoveryAAD(walletID, method)), nil
}

// checkSealed refuses what is not a sealed share before any key is derived,
// so that garbage does not cost an Argon2id run.
func checkSealed(sealed []byte, walletID string) error {
	if err := CheckWalletID(walletID); err != nil {
		return err
	}
	if len(sealed) == 0 {
		return ErrWrongSecret
	}
	if sealed[0] != SealVersion {
		return fmt.Errorf("%w %d", ErrUnknownVersion, sealed[0])
	}
	if len(sealed) < SealOverhead+EntropySize+1 || len(sealed) > MaxSealedShare {
		return ErrWrongSecret
	}
	return nil
}

// open decrypts a sealed share checked by checkSealed.
func open(sealed, key []byte, walletID, method string) (Share, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	nonce := sealed[1 : 1+chacha20poly1305.NonceSizeX]
	plain, err := aead.Open(nil, nonce, sealed[1+chacha20poly1305.NonceSizeX:], RecoveryAAD(walletID, method))
	if err != nil {
		return nil, ErrWrongSecret
	}
	if err := validEntropyShare(plain); err != nil {
		// Authentic, so sealed by someone holding the secret, but not a
		// share: a broken client. Say so without the bytes.
		clear(plain)
		return nil, errors.New("recovery: the sealed recovery share opens but does not hold a share")
	}
	return plain, nil
}

// validEntropyShare checks that s is a share of 16..32 bytes of entropy.
func validEntropyShare(s []byte) error {
	if len(s) < EntropySize+1 || len(s) > MaxEntropySize+1 {
		return fmt.Errorf("recovery: a share is %d..%d bytes, not %d", EntropySize+1, MaxEntropySize+1, len(s))
	}
	return Share(s).Valid(len(s) - 1)
}

// CheckWalletID refuses wallet ids that could make RecoveryAAD or
// ChallengeTypedData ambiguous: they must be 1..128 printable ASCII
// characters other than space and '/' (the server's ids are 24 lower-case
// letters and digits).
func CheckWalletID(id string) error {
	if len(id) == 0 || len(id) > 128 {
		return fmt.Errorf("recovery: a wallet id is 1..128 characters, not %d", len(id))
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' || c == '/' {
			return fmt.Errorf("recovery: wallet id %q has a character that is not allowed", id)
		}
	}
	return nil
}
