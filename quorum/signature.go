package quorum

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"filippo.io/nistec"
	"github.com/cachet-custody/cachet/keys"
)

// MaxSignatures is the most signatures one privy-authorization-signature
// header may carry, and one Verify call checks. Verify's cost grows with the
// number of signatures (not with the number of candidate keys), so this
// bounds it.
const MaxSignatures = 16

// MaxCandidateKeys is the most distinct keys (candidate keys and user keys
// together) one Verify call may check signatures against. It covers an owner
// quorum of 50 keys with five nested quorums of 50 keys each (300), several
// such quorums verified together (CandidatesOf), and their users' keys, with
// room to spare: one quorum with its nested ones has at most 300 keys and 300
// users, each user with at most 20 live user keys (6,300 keys). Verify's
// signature matching does not grow with it; parsing the keys does (about
// 1.5 µs each, so 12 ms at the limit). Beyond it Verify returns a plain
// error: the limit is the server's configuration to enforce when quorums are
// written, not something a client can cause.
const MaxCandidateKeys = 8192

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
	_, _, ok := parseRS(der)
	return ok
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
	point  string // uncompressed SEC 1 point, 65 bytes: what recovery finds
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
// ErrTooManySignatures. A candidate or user key that does not parse, or more
// than MaxCandidateKeys distinct candidate and user keys, is a plain error
// (the server's store or configuration, not the client's fault).
//
// The returned maps are never nil. On error the Approvals are empty.
//
// Several quorums, one verification: to decide a request that any of
// several quorums may approve (a wallet's owner and its additional
// signers), call Verify once with CandidatesOf(all of them) and the user
// keys of all of them, then ask each Quorum.Satisfied with the same
// Approvals. Approvals only says which keys and users signed, so it serves
// every quorum; each signature is then verified once per request instead of
// once per quorum. Note the difference from one Verify per quorum: a
// signature by a key of another of these quorums is no longer an unknown
// signer, it simply does not count toward this quorum.
//
// Cost: independent of the number of candidates. With one candidate, one
// ecdsa.VerifyASN1 per distinct signature. With more, each distinct
// signature costs one public-key recovery (about 1.2 verifications) and,
// when the recovered key is a candidate, one ecdsa.VerifyASN1 against that
// candidate alone. The first signature that matches no candidate ends the
// call. So a call costs at most MaxSignatures × about 2.2 verifications
// (under 5 ms on the reference machine) plus parsing the candidate and user
// keys, about 1.5 µs each (3 ms at MaxCandidateKeys). See BENCHMARKS.md,
// "Verify against many candidate keys".
func Verify(payload []byte, sigs [][]byte, candidates []string, userKeys map[string]string) (Approvals, error) {
	return NewSignatures(payload, sigs).Verify(candidates, userKeys)
}

// Signatures are one request's signatures over its payload, checked against
// any number of candidate sets (a wallet's owner, then each of its
// additional signers; an owner checked outside the writer and again inside
// it) with each signature's cryptography done once: its keys recovered once,
// and its match with a key confirmed by ecdsa.VerifyASN1 once. Later checks
// are map lookups. A Signatures is safe for concurrent use.
type Signatures struct {
	digest [32]byte
	sigs   [][]byte
	// mu guards the two memos; the cryptography runs outside it, so two
	// goroutines may both do a check once, never a wrong one.
	mu sync.Mutex
	// recovered maps a distinct signature to its recovered key points.
	recovered map[string][][]byte
	// confirmed maps a signature and a point to whether the signature
	// verifies under that key.
	confirmed map[string]bool
}

// NewSignatures prepares sigs over payload; nothing is verified yet.
func NewSignatures(payload []byte, sigs [][]byte) *Signatures {
	return &Signatures{digest: Digest(payload), sigs: sigs, recovered: map[string][][]byte{}, confirmed: map[string]bool{}}
}

// Verify is the package's Verify against these signatures: the same
// semantics, errors and Approvals, with each signature's cryptography done
// at most once over all the calls.
func (s *Signatures) Verify(candidates []string, userKeys map[string]string) (Approvals, error) {
	a := Approvals{Keys: map[string]bool{}, Users: map[string]bool{}}
	if len(s.sigs) == 0 {
		return a, nil
	}
	if len(s.sigs) > MaxSignatures {
		return a, authErr(ErrTooManySignatures, fmt.Sprintf("%d authorization signatures, at most %d are accepted", len(s.sigs), MaxSignatures))
	}
	cands, err := candidateKeys(candidates, userKeys)
	if err != nil {
		return a, err
	}
	byPoint := make(map[string][]int, len(cands))
	for j, c := range cands {
		byPoint[c.point] = append(byPoint[c.point], j)
	}
	used := make([]bool, len(cands))
	seen := map[string]int{} // signature bytes -> candidate, so a repeat costs nothing
	for i, sig := range s.sigs {
		j, ok := seen[string(sig)]
		if !ok {
			j = s.match(sig, cands, byPoint, used)
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

// SignedBy reports whether any of the signatures verifies under the key
// spki, with the same once-only cryptography: a lookup among the recovered
// keys, and one confirmation when found. A key that does not parse signed
// nothing.
func (s *Signatures) SignedBy(spki string) bool {
	pt, err := keyPoint(spki)
	if err != nil {
		return false
	}
	for _, sig := range s.sigs {
		for _, q := range s.keysOf(sig) {
			if string(q) == string(pt) && s.verifies(sig, string(pt)) {
				return true
			}
		}
	}
	return false
}

// keysOf returns the recovered key points of sig, recovering them once.
func (s *Signatures) keysOf(sig []byte) [][]byte {
	s.mu.Lock()
	ks, ok := s.recovered[string(sig)]
	s.mu.Unlock()
	if ok {
		return ks
	}
	ks = recoverKeys(s.digest[:], sig)
	s.mu.Lock()
	s.recovered[string(sig)] = ks
	s.mu.Unlock()
	return ks
}

// verifies reports whether sig verifies under the key at point, checking
// each pair once.
func (s *Signatures) verifies(sig []byte, point string) bool {
	k := string(sig) + "\x00" + point
	s.mu.Lock()
	ok, done := s.confirmed[k]
	s.mu.Unlock()
	if done {
		return ok
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), []byte(point))
	ok = err == nil && ecdsa.VerifyASN1(pub, s.digest[:], sig)
	s.mu.Lock()
	s.confirmed[k] = ok
	s.mu.Unlock()
	return ok
}

// CandidatesOf returns the candidate keys of several quorums (each one's
// Candidates), deduplicated, in order: what Verify needs to check a request
// once for all of them.
func CandidatesOf(qs ...Quorum) []string {
	var out []string
	seen := map[string]bool{}
	for _, q := range qs {
		for _, k := range q.Candidates() {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}

// match returns the index of the candidate whose key verifies sig, or -1.
//
// With one candidate, that candidate is the only possible answer: one
// ecdsa.VerifyASN1 decides, and recovery would only add its cost. With more,
// the signature's possible keys are recovered (recoverKeys) and looked up in
// byPoint, which maps a point to the candidates with that point, in order
// (two distinct candidate strings share a point only if one key is spelled
// twice, PEM and base64 say; both are kept, as trying each candidate
// would). Among the candidates found, one that has not signed yet is
// preferred, then the first listed: the choice that trying every candidate
// in order, unused ones first, makes. That candidate alone is then checked
// with ecdsa.VerifyASN1, so recovery can only ever cause a refusal.
func (s *Signatures) match(sig []byte, cands []candidate, byPoint map[string][]int, used []bool) int {
	best := -1
	if len(cands) == 1 {
		best = 0
	} else {
		for _, q := range s.keysOf(sig) {
			for _, j := range byPoint[string(q)] {
				if best < 0 || (used[best] && !used[j]) || (used[best] == used[j] && j < best) {
					best = j
				}
			}
		}
	}
	if best < 0 || !s.verifies(sig, cands[best].point) {
		return -1
	}
	return best
}

// spkiPrefix is the DER SubjectPublicKeyInfo of a P-256 key up to its
// uncompressed point: SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 },
// BIT STRING { 0x00 (unused bits), 0x04 || X || Y } }. A canonical key
// (CanonicalPublicKey) is exactly this followed by the 64 bytes of X and Y.
var spkiPrefix = []byte{
	0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
}

// keyPoint returns the uncompressed point (65 bytes) of a stored key. A
// canonical key, which is what the store holds, is decoded directly and its
// point checked to be on the curve (nistec refuses anything else), a few
// times cheaper than x509.ParsePKIXPublicKey; anything else goes through
// ParsePublicKey. Both accept the same canonical keys, so the shortcut
// changes the cost of parsing MaxCandidateKeys keys, not which keys parse.
func keyPoint(spki string) ([]byte, error) {
	if pt, ok := points.get(spki); ok {
		return pt, nil
	}
	pt, err := parseKeyPoint(spki)
	if err == nil {
		points.put(spki, pt)
	}
	return pt, err
}

// points caches the points of keys that parsed: the same quorum keys are
// checked request after request, and a key is public, so keeping its
// parsed form costs nothing but memory, which maxCachedPoints bounds (the
// cache is emptied when full).
var points = pointCache{m: map[string][]byte{}}

const maxCachedPoints = 1 << 16

type pointCache struct {
	mu sync.RWMutex
	m  map[string][]byte
}

func (c *pointCache) get(spki string) ([]byte, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	pt, ok := c.m[spki]
	return pt, ok
}

func (c *pointCache) put(spki string, pt []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCachedPoints {
		clear(c.m)
	}
	c.m[spki] = pt
}

func parseKeyPoint(spki string) ([]byte, error) {
	var der [91]byte
	if base64.StdEncoding.EncodedLen(len(der)) == len(spki) {
		if n, err := base64.StdEncoding.Strict().Decode(der[:], []byte(spki)); err == nil && n == len(der) &&
			bytes.Equal(der[:len(spkiPrefix)], spkiPrefix) {
			if _, err := nistec.NewP256Point().SetBytes(der[len(spkiPrefix):]); err == nil {
				return der[len(spkiPrefix):], nil
			}
		}
	}
	pub, err := ParsePublicKey(spki)
	if err != nil {
		return nil, err
	}
	return pub.Bytes()
}

// candidateKeys parses the candidate and user keys, merging duplicates. More
// than MaxCandidateKeys distinct keys is refused before any is parsed.
func candidateKeys(candidates []string, userKeys map[string]string) ([]candidate, error) {
	distinct := make(map[string]struct{}, len(candidates)+len(userKeys))
	for _, k := range candidates {
		distinct[k] = struct{}{}
	}
	for k := range userKeys {
		distinct[k] = struct{}{}
	}
	if len(distinct) > MaxCandidateKeys {
		return nil, fmt.Errorf("quorum: %d candidate and user keys for one request, more than MaxCandidateKeys (%d)", len(distinct), MaxCandidateKeys)
	}
	index := map[string]int{}
	var out []candidate
	add := func(spki string) (int, error) {
		if j, ok := index[spki]; ok {
			return j, nil
		}
		pt, err := keyPoint(spki)
		if err != nil {
			// Not wrapped: a stored key that does not parse is not the
			// client's input error.
			return 0, fmt.Errorf("quorum: stored key %q is not a P-256 public key", abbreviate(spki))
		}
		index[spki] = len(out)
		out = append(out, candidate{spki: spki, point: string(pt)})
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
