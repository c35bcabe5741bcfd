package keys

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"math/big"
)

type ecdsaSig struct{ R, S *big.Int }

var (
	p256N     = elliptic.P256().Params().N
	p256HalfN = new(big.Int).Rsh(p256N, 1)
)

// RawToDER converts a PKCS#11 CKM_ECDSA result (r || s, each 32 bytes for
// P-256) into ASN.1 DER with S normalised to the lower half of the group
// order. PKCS#11 returns high S about half the time.
func RawToDER(raw []byte) ([]byte, error) {
	if len(raw) != 64 {
		return nil, fmt.Errorf("ECDSA P-256 signature of %d bytes, want 64", len(raw))
	}
	r := new(big.Int).SetBytes(raw[:32])
	s := new(big.Int).SetBytes(raw[32:])
	return encodeLowS(r, s)
}

// LowS re-encodes a DER ECDSA P-256 signature with S <= N/2.
func LowS(der []byte) ([]byte, error) {
	var sig ecdsaSig
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 || sig.R == nil || sig.S == nil {
		return nil, fmt.Errorf("malformed DER ECDSA signature")
	}
	return encodeLowS(sig.R, sig.S)
}

func encodeLowS(r, s *big.Int) ([]byte, error) {
	if r.Sign() <= 0 || s.Sign() <= 0 || r.Cmp(p256N) >= 0 || s.Cmp(p256N) >= 0 {
		return nil, fmt.Errorf("ECDSA signature value out of range")
	}
	if s.Cmp(p256HalfN) > 0 {
		s = new(big.Int).Sub(p256N, s)
	}
	return asn1.Marshal(ecdsaSig{R: r, S: s})
}

// IsLowS reports whether a DER ECDSA P-256 signature has S <= N/2.
func IsLowS(der []byte) bool {
	var sig ecdsaSig
	rest, err := asn1.Unmarshal(der, &sig)
	return err == nil && len(rest) == 0 && sig.S != nil && sig.S.Cmp(p256HalfN) <= 0
}

// PublicKeySPKI returns the base64 DER SubjectPublicKeyInfo of a P-256 key,
// the form Privy's API uses for public keys.
func PublicKeySPKI(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(der), nil
}
