package quorum

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"

	"github.com/cachet-custody/cachet/keys"
)

// MaxSignatures is the most signatures one privy-authorization-signature
// header may carry. Verify may try every signature against every candidate
// key, so this bounds its cost.
const MaxSignatures = 16

// maxSignatureB64 bounds one base64 signature: a DER P-256 signature is at
// most 72 bytes, 96 characters of base64.
const maxSignatureB64 = 96

// maxPublicKeyText bounds ParsePublicKey's input: a P-256 SPKI is 91 bytes,
// under 200 characters even as PEM.
const maxPublicKeyText = 1024

var p256N = elliptic.P256().Params().N

// ParseSignatures splits a privy-authorization-signature header into DER
// signatures. The header is one or more standard base64 (padded) DER ECDSA
// signatures joined by commas; spaces and tabs around the commas are
// tolerated. An empty header gives nil, nil. An empty element, bad base64,
// something that is not a DER SEQUENCE of two integers in [1, N-1], or more
// than MaxSignatures signatures is an *AuthError wrapping
// ErrMalformedSignature or ErrTooManySignatures. Duplicates are kept: Verify
// counts a key once however often it signs.
func ParseSignatures(header string) ([][]byte, error) {
	if strings.Trim(header, " \t") == "" {
		return nil, nil
	}
	if n := strings.Count(header, ",") + 1; n > MaxSignatures {
		return nil, authErr(ErrTooManySignatures, fmt.Sprintf("%d authorization signatures, at most %d are accepted", n, MaxSignatures))
	}
	parts := strings.Split(header, ",")
	out := make([][]byte, 0, len(parts))
	for i, p := range parts {
		p = strings.Trim(p, " \t")
		if p == "" {
			return nil, authErr(ErrMalformedSignature, fmt.Sprintf("authorization signature %d is empty", i+1))
		}
		if len(p) > maxSignatureB64 {
			return nil, authErr(ErrMalformedSignature, fmt.Sprintf("authorization signature %d is too long for a P-256 signature", i+1))
		}
		der, err := base64.StdEncoding.Strict().DecodeString(p)
		if err != nil {
			return nil, authErr(ErrMalformedSignature, fmt.Sprintf("authorization signature %d is not standard base64", i+1))
		}
		if !wellFormedDER(der) {
			return nil, authErr(ErrMalformedSignature, fmt.Sprintf("authorization signature %d is not a DER ECDSA P-256 signature", i+1))
		}
		out = append(out, der)
	}
	return out, nil
}

// wellFormedDER reports whether der is an ECDSA-Sig-Value with r and s in
// [1, N-1]. ecdsa.VerifyASN1 has the last word; this gives a precise error
// early.
func wellFormedDER(der []byte) bool {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 {
		return false
	}
	for _, v := range []*big.Int{sig.R, sig.S} {
		if v.Sign() <= 0 || v.Cmp(p256N) >= 0 {
			return false
		}
	}
	return true
}

// ParsePublicKey parses a P-256 public key given as base64 (standard, padded)
// DER SubjectPublicKeyInfo, the form Privy's API uses. It tolerates PEM
// armour ("-----BEGIN PUBLIC KEY-----"), line breaks inside the base64 and
// surrounding whitespace. Anything else (another curve, RSA, Ed25519, a
// private key, trailing data, garbage) is an *InputError wrapping
// ErrInvalidPublicKey. Store and compare keys by CanonicalPublicKey.
func ParsePublicKey(s string) (*ecdsa.PublicKey, error) {
	bad := func(reason string) error { return inputErr(ErrInvalidPublicKey, "public_key", reason) }
	if len(s) > maxPublicKeyText {
		return nil, bad("too long for a P-256 public key")
	}
	s = strings.TrimSpace(s)
	var der []byte
	if strings.HasPrefix(s, "-----BEGIN") {
		block, rest := pem.Decode([]byte(s))
		if block == nil || strings.TrimSpace(string(rest)) != "" {
			return nil, bad("malformed PEM")
		}
		if block.Type != "PUBLIC KEY" || len(block.Headers) != 0 {
			return nil, bad(fmt.Sprintf("PEM block %q, want PUBLIC KEY", block.Type))
		}
		der = block.Bytes
	} else {
		compact := strings.Map(func(r rune) rune {
			if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, s)
		var err error
		if der, err = base64.StdEncoding.Strict().DecodeString(compact); err != nil {
			return nil, bad("not standard base64")
		}
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, bad("not a DER SubjectPublicKeyInfo")
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, bad(fmt.Sprintf("a %T, want an ECDSA P-256 key", pub))
	}
	if ec.Curve != elliptic.P256() {
		return nil, bad(fmt.Sprintf("curve %s, want P-256", ec.Curve.Params().Name))
	}
	return ec, nil
}

// CanonicalPublicKey returns the one string Cachet stores and compares for a
// key: base64 (standard, padded) DER SubjectPublicKeyInfo with an
// uncompressed point, as keys.PublicKeySPKI writes it. It returns "" for
// anything that is not a valid P-256 key; a key from ParsePublicKey always
// has a canonical form, and "" matches no member (Validate refuses it, and
// Verify fails on it).
func CanonicalPublicKey(pub *ecdsa.PublicKey) string {
	if pub == nil || pub.Curve != elliptic.P256() {
		return ""
	}
	s, err := keys.PublicKeySPKI(pub)
	if err != nil {
		return ""
	}
	return s
}

// CanonicalizePublicKey is ParsePublicKey followed by CanonicalPublicKey.
func CanonicalizePublicKey(s string) (string, error) {
	pub, err := ParsePublicKey(s)
	if err != nil {
		return "", err
	}
	c := CanonicalPublicKey(pub)
	if c == "" {
		return "", inputErr(ErrInvalidPublicKey, "public_key", "not a valid P-256 point")
	}
	return c, nil
}

// Approvals is who validly signed one payload.
type Approvals struct {
	// Keys holds the candidate keys (as given to Verify) that signed.
	Keys map[string]bool
	// Users holds the ids of users whose user key signed.
	Users map[string]bool
}

// candidate is one key a signature may belong to.
type candidate struct {
	spki   string
	pub    *ecdsa.PublicKey
	member bool   // listed in candidates: approves as a key
	user   string // a user key: approves for this user
}

// Verify checks every signature over payload against the candidate keys and
// says who signed.
//
// candidates are the keys that may sign (Quorum.Candidates: canonical SPKI).
// userKeys maps the canonical SPKI of each user's current, unexpired user
// key to that user's id; the caller supplies it and may pass nil. A key that
// is both a candidate and a user key approves for both.
//
// Every signature must verify against some candidate: one that verifies
// against none makes the whole call fail with an *AuthError wrapping
// ErrUnknownSigner, as Privy refuses a request carrying any invalid or
// foreign signature. A key that signs twice (the same signature repeated, or
// its high-S twin) is approved once. High-S and low-S signatures are both
// accepted, since Privy's Go SDK does not normalize S. No signatures give
// empty Approvals and a nil error: whether that suffices is the caller's
// decision. More than MaxSignatures signatures is an *AuthError wrapping
// ErrTooManySignatures. A candidate or user key that does not parse is a
// plain error (a corrupt store, not the client's fault).
//
// The returned maps are never nil. On error the Approvals are empty.
//
// Cost: one P-256 verification (about 85 µs on the reference machine) per
// candidate tried. Keys that have not signed yet are tried first and a
// repeated signature is not verified again, so honest signatures from
// distinct keys cost at most len(sigs) × len(candidates) verifications, and
// so does anything else (MaxSignatures bounds len(sigs)).
func Verify(payload []byte, sigs [][]byte, candidates []string, userKeys map[string]string) (Approvals, error) {
	a := Approvals{Keys: map[string]bool{}, Users: map[string]bool{}}
	if len(sigs) == 0 {
		return a, nil
	}
	if len(sigs) > MaxSignatures {
		return a, authErr(ErrTooManySignatures, fmt.Sprintf("%d authorization signatures, at most %d are accepted", len(sigs), MaxSignatures))
	}
	cands, err := candidateKeys(candidates, userKeys)
	if err != nil {
		return a, err
	}
	digest := Digest(payload)
	used := make([]bool, len(cands))
	seen := map[string]int{} // signature bytes -> candidate, so a repeat costs nothing
	for i, sig := range sigs {
		j, ok := seen[string(sig)]
		if !ok {
			j = match(digest[:], sig, cands, used)
			seen[string(sig)] = j
		}
		if j < 0 {
			return Approvals{Keys: map[string]bool{}, Users: map[string]bool{}},
				authErr(ErrUnknownSigner, fmt.Sprintf("%s (signature %d)", ErrUnknownSigner, i+1))
		}
		used[j] = true
		if cands[j].member {
			a.Keys[cands[j].spki] = true
		}
		if cands[j].user != "" {
			a.Users[cands[j].user] = true
		}
	}
	return a, nil
}

// match returns the index of the candidate whose key verifies sig, or -1.
// Keys that have not signed yet are tried first: in the common case every
// signature comes from a different key.
func match(digest, sig []byte, cands []candidate, used []bool) int {
	for _, wantUsed := range []bool{false, true} {
		for j, c := range cands {
			if used[j] == wantUsed && ecdsa.VerifyASN1(c.pub, digest, sig) {
				return j
			}
		}
	}
	return -1
}

// candidateKeys parses the candidate and user keys, merging duplicates.
func candidateKeys(candidates []string, userKeys map[string]string) ([]candidate, error) {
	index := map[string]int{}
	var out []candidate
	add := func(spki string) (int, error) {
		if j, ok := index[spki]; ok {
			return j, nil
		}
		pub, err := ParsePublicKey(spki)
		if err != nil {
			// Not wrapped: a stored key that does not parse is not the
			// client's input error.
			return 0, fmt.Errorf("quorum: stored key %q is not a P-256 public key", abbreviate(spki))
		}
		index[spki] = len(out)
		out = append(out, candidate{spki: spki, pub: pub})
		return len(out) - 1, nil
	}
	for _, k := range candidates {
		j, err := add(k)
		if err != nil {
			return nil, err
		}
		out[j].member = true
	}
	// Sorted, so that which user a shared key approves for is deterministic.
	for _, k := range slices.Sorted(maps.Keys(userKeys)) {
		j, err := add(k)
		if err != nil {
			return nil, err
		}
		if out[j].user == "" {
			out[j].user = userKeys[k]
		}
	}
	return out, nil
}

// abbreviate shortens a key for an error message: SPKI strings of one curve
// share their first 36 characters, so the tail identifies the key.
func abbreviate(s string) string {
	if len(s) <= 16 {
		return s
	}
	return "..." + s[len(s)-12:]
}

// Fingerprint names a public key in logs and audit records without the
// whole key: the hex of the first 16 bytes of the SHA-256 of its DER
// SubjectPublicKeyInfo. Give it a canonical key (CanonicalPublicKey).
func Fingerprint(canonical string) string {
	der, err := base64.StdEncoding.DecodeString(canonical)
	if err != nil {
		der = []byte(canonical)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:16])
}
