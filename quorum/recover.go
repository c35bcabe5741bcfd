package quorum

import (
	"crypto/elliptic"
	"math/big"

	"filippo.io/nistec"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// ECDSA public-key recovery on P-256.
//
// Why by hand: a Privy authorization signature says nothing about which key
// made it, and Verify must find that key among up to MaxCandidateKeys
// candidates. Trying each candidate costs one verification per candidate;
// recovering the key from the signature costs about one verification
// whatever the number of candidates. No maintained Go library exposes
// P-256 key recovery (the standard library's crypto/ecdsa does not; the
// recovery in go-ethereum and btcec is for secp256k1 only), so the formula
// (SEC 1 v2.0, section 4.1.6) is written here over filippo.io/nistec, the
// maintained export of the standard library's P-256 group arithmetic.
//
// Recovery only proposes a key. Verify then checks the signature against
// that one candidate with ecdsa.VerifyASN1, so a mistake here can make
// Verify refuse a valid signature but never accept an invalid one.
//
// Everything computed here (the signature, the digest, the candidate public
// keys) is public, so the scalar arithmetic mod N uses math/big, which is
// not constant-time, with no harm. The point arithmetic is nistec's.

var (
	p256P = elliptic.P256().Params().P
	// p256PMinusN: when r < P-N, x = r+N is also a field element, and a
	// point with that x also gives r (its x mod N). Rare (P-N < 2^127, so
	// about one signature in 2^130) but legal, and ecdsa.VerifyASN1
	// accepts such signatures.
	p256PMinusN = new(big.Int).Sub(p256P, p256N)
)

// parseRS reads r and s from a DER ECDSA-Sig-Value exactly as
// crypto/ecdsa's VerifyASN1 does (cryptobyte, strict DER, nothing after the
// SEQUENCE) and checks that both are in [1, N-1]. ok is false for anything
// VerifyASN1 would refuse on its form alone.
func parseRS(sig []byte) (r, s *big.Int, ok bool) {
	var inner cryptobyte.String
	input := cryptobyte.String(sig)
	r, s = new(big.Int), new(big.Int)
	if !input.ReadASN1(&inner, cbasn1.SEQUENCE) || !input.Empty() ||
		!inner.ReadASN1Integer(r) || !inner.ReadASN1Integer(s) || !inner.Empty() {
		return nil, nil, false
	}
	for _, v := range []*big.Int{r, s} {
		if v.Sign() <= 0 || v.Cmp(p256N) >= 0 {
			return nil, nil, false
		}
	}
	return r, s, true
}

// recoverKeys returns the uncompressed encodings (SEC 1, 65 bytes) of every
// P-256 public key Q for which sig is a valid signature over digest: at most
// four, usually two. It returns nil for a signature that is malformed or
// that no key can have made.
//
// For a signature (r, s) over e, the verifier's point X = u1·G + u2·Q has
// x(X) ≡ r (mod N), so X is one of the points R with x(R) = r or r+N, and
// each x gives two points, R and -R. From s·X = e·G + r·Q:
//
//	Q = r⁻¹·(s·R − e·G) = (−e·r⁻¹)·G + (s·r⁻¹)·R
//
// and for -R the second term changes sign, so both points of one x cost a
// single scalar multiplication by R and one by G, shared.
func recoverKeys(digest, sig []byte) [][]byte {
	r, s, ok := parseRS(sig)
	if !ok {
		return nil
	}
	// e is the digest as an integer mod N: SHA-256 is 256 bits, the size
	// of N, so no truncation; the reduction is what verification does too.
	e := new(big.Int).SetBytes(digest)
	e.Mod(e, p256N)
	rInv := new(big.Int).ModInverse(r, p256N) // r in [1, N-1] and N prime
	u1 := new(big.Int).Mul(e, rInv)
	u1.Neg(u1).Mod(u1, p256N)
	u2 := new(big.Int).Mul(s, rInv)
	u2.Mod(u2, p256N)
	var u1b, u2b [32]byte
	u1.FillBytes(u1b[:])
	u2.FillBytes(u2b[:])
	u1G, err := nistec.NewP256Point().ScalarBaseMult(u1b[:])
	if err != nil {
		return nil
	}

	xs := []*big.Int{r}
	if r.Cmp(p256PMinusN) < 0 {
		xs = append(xs, new(big.Int).Add(r, p256N))
	}
	var out [][]byte
	for _, x := range xs {
		var enc [33]byte
		enc[0] = 0x02 // either parity: -R below gives the other
		x.FillBytes(enc[1:])
		R, err := nistec.NewP256Point().SetBytes(enc[:])
		if err != nil {
			continue // x is not the abscissa of a curve point
		}
		u2R, err := nistec.NewP256Point().ScalarMult(R, u2b[:])
		if err != nil {
			continue
		}
		for _, term := range []*nistec.P256Point{u2R, nistec.NewP256Point().Negate(u2R)} {
			q := nistec.NewP256Point().Add(u1G, term)
			if q.IsInfinity() == 1 {
				continue // not a public key
			}
			out = append(out, q.Bytes())
		}
	}
	return out
}
