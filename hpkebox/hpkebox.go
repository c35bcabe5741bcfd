// Package hpkebox owns the one HPKE suite Cachet speaks with Privy's SDKs
// (RFC 9180, mode base): DHKEM(P-256, HKDF-SHA256), HKDF-SHA256,
// ChaCha20-Poly1305, empty info and empty AAD, a single message per
// encapsulation. It is used wherever key material leaves or enters the
// appliance: user keys handed out for a JWT, wallet export, wallet import,
// and shares released to devices.
//
// The HPKE itself is Go's crypto/hpke; this package only fixes the suite
// and the wire encodings (base64 of the 65-byte uncompressed encapsulated
// key and of the ciphertext), so that every caller gets them the same way.
package hpkebox

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
)

// EncryptionType is the value of Privy's encryption_type fields.
const EncryptionType = "HPKE"

// Suite identifiers (RFC 9180 section 7).
const (
	KEMID  = 0x0010 // DHKEM(P-256, HKDF-SHA256)
	KDFID  = 0x0001 // HKDF-SHA256
	AEADID = 0x0003 // ChaCha20-Poly1305
)

// MaxPlaintext bounds what Seal accepts and Open returns: the largest thing
// Cachet moves this way is a 24-word mnemonic.
const MaxPlaintext = 4096

// ErrOpen is returned by Open for any ciphertext that does not decrypt: a
// wrong key, a damaged message or a malformed encapsulated key. It says
// nothing more, so the caller cannot be used as a decryption oracle.
var ErrOpen = errors.New("hpke: the message does not decrypt with this key")

// Box is a sealed message as Privy's API carries it.
type Box struct {
	EncryptionType  string `json:"encryption_type"`
	EncapsulatedKey string `json:"encapsulated_key"`
	Ciphertext      string `json:"ciphertext"`
}

func kem() hpke.KEM { return hpke.DHKEM(ecdh.P256()) }

// GenerateKey returns a fresh recipient key pair of the suite.
func GenerateKey() (*ecdh.PrivateKey, error) { return ecdh.P256().GenerateKey(rand.Reader) }

// Seal encrypts plaintext to pub and returns the encapsulated key and the
// ciphertext.
func Seal(pub *ecdh.PublicKey, plaintext []byte) (enc, ciphertext []byte, err error) {
	return seal(pub, nil, nil, plaintext)
}

func seal(pub *ecdh.PublicKey, info, aad, plaintext []byte) (enc, ciphertext []byte, err error) {
	if pub == nil || pub.Curve() != ecdh.P256() {
		return nil, nil, errors.New("hpke: recipient key is not a P-256 key")
	}
	if len(plaintext) > MaxPlaintext {
		return nil, nil, fmt.Errorf("hpke: %d bytes to seal, at most %d", len(plaintext), MaxPlaintext)
	}
	pk, err := hpke.NewDHKEMPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("hpke: recipient key: %w", err)
	}
	enc, s, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), info)
	if err != nil {
		return nil, nil, fmt.Errorf("hpke: set up sender: %w", err)
	}
	ct, err := s.Seal(aad, plaintext)
	if err != nil {
		return nil, nil, fmt.Errorf("hpke: seal: %w", err)
	}
	return enc, ct, nil
}

// SealBox is Seal with the result in Privy's wire form.
func SealBox(pub *ecdh.PublicKey, plaintext []byte) (Box, error) {
	enc, ct, err := Seal(pub, plaintext)
	if err != nil {
		return Box{}, err
	}
	return Box{
		EncryptionType:  EncryptionType,
		EncapsulatedKey: base64.StdEncoding.EncodeToString(enc),
		Ciphertext:      base64.StdEncoding.EncodeToString(ct),
	}, nil
}

// Open decrypts a message sealed to priv. Every failure is ErrOpen.
func Open(priv *ecdh.PrivateKey, enc, ciphertext []byte) ([]byte, error) {
	return open(priv, enc, nil, nil, ciphertext)
}

func open(priv *ecdh.PrivateKey, enc, info, aad, ciphertext []byte) ([]byte, error) {
	if priv == nil || priv.Curve() != ecdh.P256() {
		return nil, errors.New("hpke: recipient key is not a P-256 key")
	}
	// The tag is 16 bytes; anything longer than the largest plaintext
	// plus the tag was never sealed by a well-behaved sender.
	if len(ciphertext) > MaxPlaintext+16 {
		return nil, ErrOpen
	}
	sk, err := hpke.NewDHKEMPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("hpke: recipient key: %w", err)
	}
	r, err := hpke.NewRecipient(enc, sk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), info)
	if err != nil {
		return nil, ErrOpen
	}
	pt, err := r.Open(aad, ciphertext)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// OpenBox decodes the base64 fields of a message in Privy's wire form and
// opens it. A field that is not base64 is reported by name; everything else
// is ErrOpen.
func OpenBox(priv *ecdh.PrivateKey, encapsulatedKey, ciphertext string) ([]byte, error) {
	enc, err := base64.StdEncoding.DecodeString(encapsulatedKey)
	if err != nil {
		return nil, fmt.Errorf("encapsulated_key: not standard base64")
	}
	ct, err := base64.StdEncoding.DecodeString(ciphertext)
	if err != nil {
		return nil, fmt.Errorf("ciphertext: not standard base64")
	}
	return Open(priv, enc, ct)
}

// ParseRawPublicKey parses the 65-byte uncompressed point (0x04 || X || Y)
// that import init hands out, as Privy's SDK deserializes it.
func ParseRawPublicKey(b []byte) (*ecdh.PublicKey, error) {
	if len(b) != 65 || b[0] != 4 {
		return nil, errors.New("hpke: not a 65-byte uncompressed P-256 point")
	}
	return ecdh.P256().NewPublicKey(b)
}
