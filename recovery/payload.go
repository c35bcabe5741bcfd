package recovery

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Recovery methods: how a wallet's recovery share is protected.
const (
	// MethodAutomatic: the device uploads the plaintext recovery share
	// (inside the HPKE-encrypted payload) and the server seals it under
	// its hardware KMS key, so the user recovers by logging in.
	MethodAutomatic = "automatic"
	// MethodPassword: the device seals the recovery share under a key
	// derived from the user's password (SealWithPassword); the server
	// stores the ciphertext and the KDF parameters.
	MethodPassword = "password"
	// MethodCloud: the device seals the recovery share under a random
	// secret kept in the user's cloud account (SealWithSecret); the server
	// stores only the ciphertext.
	MethodCloud = "cloud"
)

// ValidMethod reports whether m is one of the three recovery methods.
func ValidMethod(m string) bool {
	switch m {
	case MethodAutomatic, MethodPassword, MethodCloud:
		return true
	}
	return false
}

// The EIP-712 domain of recovery changes. A domain of its own keeps this
// signature apart from anything else an app may ask the device to sign: no
// personal_sign (EIP-191 version 0x45) can stand for it, and a wallet that
// shows typed data names what is being authorized.
const (
	ChallengeDomainName    = "Cachet embedded wallet recovery"
	ChallengeDomainVersion = "1"
	challengeType          = "RecoveryChange"
)

// ChallengeTypedData returns the EIP-712 typed data a device signs
// (eth_signTypedData_v4, with the wallet's own key) to authorize a change
// of its recovery method. It binds the wallet, the server's one-time
// challenge and the SHA-256 of the exact (HPKE-encrypted) payload the
// device uploads, so whoever relays the request can neither replay the
// signature (the challenge is spent) nor swap the payload (the digest would
// differ). It has no chain id: it authorizes nothing on any chain.
func ChallengeTypedData(walletID, challenge string, payloadDigest [32]byte) apitypes.TypedData {
	return apitypes.TypedData{
		Types: apitypes.Types{
			"EIP712Domain": {{Name: "name", Type: "string"}, {Name: "version", Type: "string"}},
			challengeType:  {{Name: "wallet", Type: "string"}, {Name: "challenge", Type: "string"}, {Name: "payloadSha256", Type: "bytes32"}},
		},
		PrimaryType: challengeType,
		Domain:      apitypes.TypedDataDomain{Name: ChallengeDomainName, Version: ChallengeDomainVersion},
		Message: apitypes.TypedDataMessage{
			"wallet": walletID, "challenge": challenge, "payloadSha256": "0x" + hex.EncodeToString(payloadDigest[:]),
		},
	}
}

// ChallengeDigest is the EIP-712 hash of ChallengeTypedData: what the
// wallet's key signs. The server builds it from its own stored ids, never
// from the request's.
func ChallengeDigest(walletID, challenge string, payloadDigest [32]byte) ([]byte, error) {
	h, _, err := apitypes.TypedDataAndHash(ChallengeTypedData(walletID, challenge, payloadDigest))
	if err != nil {
		return nil, fmt.Errorf("recovery: challenge digest: %w", err)
	}
	return h, nil
}

// Payload is the plaintext (JSON) of the payload a device HPKE-encrypts to
// the server's one-time challenge key when it sets its recovery method.
type Payload struct {
	// Method is MethodAutomatic, MethodPassword or MethodCloud.
	Method string `json:"method"`
	// RecoveryShare, automatic only: standard base64 of the plaintext
	// recovery Share, which the server seals under its KMS key.
	RecoveryShare string `json:"recovery_share,omitempty"`
	// EncryptedRecoveryShare, password and cloud only: standard base64 of
	// SealWithPassword's or SealWithSecret's output, which the server
	// stores as it is.
	EncryptedRecoveryShare string `json:"encrypted_recovery_share,omitempty"`
	// KDF, password only: the parameters the device derived its key with.
	KDF *KDF `json:"recovery_kdf,omitempty"`
}

// Validate checks that p has exactly the fields its method needs, that they
// decode as standard base64 to a share of 16..32 bytes of entropy (17..33
// bytes) or a sealed share of at most MaxSealedShare bytes in the current
// format, and, for password, that the KDF is in range. Errors name the JSON
// field and never hold share bytes. The server cannot check more: it cannot
// open a sealed share, and it checks a plaintext recovery share against the
// wallet when it combines it.
func (p Payload) Validate() error {
	if !ValidMethod(p.Method) {
		return fmt.Errorf("method: %q is not %q, %q or %q", p.Method, MethodAutomatic, MethodPassword, MethodCloud)
	}
	if p.Method == MethodAutomatic {
		if p.EncryptedRecoveryShare != "" {
			return fmt.Errorf("encrypted_recovery_share: not allowed with method %q", p.Method)
		}
		if p.KDF != nil {
			return fmt.Errorf("recovery_kdf: not allowed with method %q", p.Method)
		}
		return validShareField(p.RecoveryShare)
	}
	if p.RecoveryShare != "" {
		return fmt.Errorf("recovery_share: not allowed with method %q (the device sends it sealed, in encrypted_recovery_share)", p.Method)
	}
	switch {
	case p.Method == MethodPassword && p.KDF == nil:
		return errors.New(`recovery_kdf: required with method "password"`)
	case p.Method == MethodPassword:
		if err := p.KDF.Validate(); err != nil {
			return err
		}
	case p.KDF != nil:
		return fmt.Errorf("recovery_kdf: not allowed with method %q", p.Method)
	}
	return validSealedField(p.EncryptedRecoveryShare)
}

// validShareField checks recovery_share and clears its decoded bytes.
func validShareField(b64 string) error {
	const field = "recovery_share"
	if b64 == "" {
		return errors.New(field + ": required with method \"automatic\"")
	}
	if base64.StdEncoding.DecodedLen(len(b64)) > 2*(MaxEntropySize+1) {
		return fmt.Errorf("%s: longer than a share (%d..%d bytes)", field, EntropySize+1, MaxEntropySize+1)
	}
	share, err := base64.StdEncoding.DecodeString(b64)
	defer clear(share)
	if err != nil {
		return errors.New(field + ": not standard base64")
	}
	if len(share) < EntropySize+1 || len(share) > MaxEntropySize+1 {
		return fmt.Errorf("%s: %d bytes, a share is %d..%d", field, len(share), EntropySize+1, MaxEntropySize+1)
	}
	if Share(share).Index() == 0 {
		return errors.New(field + ": index (last byte) is 0, which no share has")
	}
	return nil
}

// validSealedField checks encrypted_recovery_share.
func validSealedField(b64 string) error {
	const field = "encrypted_recovery_share"
	if b64 == "" {
		return errors.New(field + ": required with methods \"password\" and \"cloud\"")
	}
	if base64.StdEncoding.DecodedLen(len(b64)) > 2*MaxSealedShare {
		return fmt.Errorf("%s: longer than %d bytes", field, MaxSealedShare)
	}
	sealed, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return errors.New(field + ": not standard base64")
	}
	switch {
	case len(sealed) > MaxSealedShare:
		return fmt.Errorf("%s: %d bytes is above %d", field, len(sealed), MaxSealedShare)
	case len(sealed) < SealOverhead+EntropySize+1:
		return fmt.Errorf("%s: %d bytes is below %d, the smallest sealed share", field, len(sealed), SealOverhead+EntropySize+1)
	case sealed[0] != SealVersion:
		return fmt.Errorf("%s: version %d is not %d", field, sealed[0], SealVersion)
	}
	return nil
}
