package jwtauth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// minRSABits is the smallest RSA modulus accepted. 1024-bit RSA is within
// reach of well-funded attackers, and NIST disallowed it for signatures.
const minRSABits = 2048

// maxKeySetBytes bounds a JWKS document, from a file or a URL. Real key sets
// are a few KiB; the bound keeps a misbehaving endpoint from using our memory.
const maxKeySetBytes = 1 << 20

// keyEntry is one usable verification key.
type keyEntry struct {
	kid  string
	key  any                       // *rsa.PublicKey, *ecdsa.PublicKey (P-256) or ed25519.PublicKey
	algs []jose.SignatureAlgorithm // configured algorithms this key may verify
	desc string                    // "RSA-2048", "EC P-256", "Ed25519": for messages
}

func (k keyEntry) fits(alg jose.SignatureAlgorithm) bool {
	return slices.Contains(k.algs, alg)
}

// keySet is an immutable set of usable keys. Verify goroutines share it
// without locking; a reload builds a new one.
type keySet struct {
	keys []keyEntry
	// skipped maps the kid of each key that was left out to why, so that a
	// token naming it gets a precise reason instead of "no such kid", and so
	// that such a kid does not count as unknown (which would trigger a
	// refetch of the JWKS URL).
	skipped map[string]string
	// single is set for a PEM key: the token's kid is ignored because there
	// is nothing to choose from.
	single bool
}

// hasKid reports whether kid appears in the key set, usable or not.
func (s *keySet) hasKid(kid string) bool {
	if _, ok := s.skipped[kid]; ok {
		return true
	}
	for _, k := range s.keys {
		if k.kid == kid {
			return true
		}
	}
	return false
}

// candidates returns the keys to try for a token with the given alg and kid,
// or the rejection that explains why there are none.
//
// We pick keys ourselves instead of handing go-jose the JSONWebKeySet: its
// lookup requires a kid, takes the first key with that kid, and ignores the
// key's "alg" and "use" members.
func (s *keySet) candidates(alg jose.SignatureAlgorithm, kid string) ([]keyEntry, *Error) {
	if s.single {
		k := s.keys[0]
		if !k.fits(alg) {
			return nil, reject(CheckKey, "the configured public key (%s) cannot verify %s", k.desc, alg)
		}
		return s.keys, nil
	}
	var out []keyEntry
	if kid == "" {
		// Without a kid, every key that fits the algorithm is a candidate;
		// some IdPs with a single key leave kid out.
		for _, k := range s.keys {
			if k.fits(alg) {
				out = append(out, k)
			}
		}
		if len(out) == 0 {
			return nil, reject(CheckKey, "the token has no kid and no key in the key set can verify %s", alg)
		}
		return out, nil
	}
	var named []keyEntry
	for _, k := range s.keys {
		if k.kid == kid {
			named = append(named, k)
			if k.fits(alg) {
				out = append(out, k)
			}
		}
	}
	switch {
	case len(out) > 0:
		return out, nil
	case len(named) > 0:
		return nil, reject(CheckKey, "the key with kid %s (%s) cannot verify %s", quote(kid), named[0].desc, alg)
	}
	if why, ok := s.skipped[kid]; ok {
		return nil, reject(CheckKey, "the key with kid %s is not used: %s", quote(kid), why)
	}
	return nil, reject(CheckKey, "no key with kid %s in the key set", quote(kid))
}

// classify decides whether a parsed public key may verify tokens under algs
// and returns its entry, or the reason it may not. It is the one place key
// policy lives, for JWKS entries and PEM keys alike.
func classify(k jose.JSONWebKey, algs []jose.SignatureAlgorithm) (keyEntry, string) {
	switch k.Key.(type) {
	case []byte:
		return keyEntry{}, "symmetric (oct) key: HMAC is never accepted"
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
		// A published private key means anyone can forge tokens; refuse
		// the key rather than quietly using its public half.
		return keyEntry{}, "the key contains private key material"
	}
	if !k.IsPublic() || !k.Valid() {
		return keyEntry{}, "unsupported or invalid key"
	}
	if k.Use != "" && k.Use != "sig" {
		return keyEntry{}, fmt.Sprintf("the key is for use %s, not signatures", quote(k.Use))
	}

	e := keyEntry{kid: k.KeyID, key: k.Key}
	var fitsType []jose.SignatureAlgorithm
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		bits := key.N.BitLen()
		e.desc = fmt.Sprintf("RSA-%d", bits)
		if bits < minRSABits {
			return keyEntry{}, fmt.Sprintf("RSA key of %d bits is below the %d-bit minimum", bits, minRSABits)
		}
		fitsType = []jose.SignatureAlgorithm{jose.RS256}
	case *ecdsa.PublicKey:
		e.desc = "EC " + key.Curve.Params().Name
		if key.Curve == elliptic.P256() {
			fitsType = []jose.SignatureAlgorithm{jose.ES256}
		}
	case ed25519.PublicKey:
		e.desc = "Ed25519"
		fitsType = []jose.SignatureAlgorithm{jose.EdDSA}
	default:
		return keyEntry{}, fmt.Sprintf("unsupported key type %T", k.Key)
	}
	for _, a := range algs {
		// A key's "alg" member pins it to one algorithm (RFC 7517 §4.4).
		if slices.Contains(fitsType, a) && (k.Algorithm == "" || k.Algorithm == string(a)) {
			e.algs = append(e.algs, a)
		}
	}
	if len(e.algs) == 0 {
		if k.Algorithm != "" {
			return keyEntry{}, fmt.Sprintf("%s key with alg %s fits none of the allowed algorithms %v", e.desc, quote(k.Algorithm), algs)
		}
		return keyEntry{}, fmt.Sprintf("%s key fits none of the allowed algorithms %v", e.desc, algs)
	}
	return e, ""
}

// parseJWKS parses a JWKS document and keeps the keys that classify accepts,
// logging each key it skips. A set without a single usable key is an error:
// an empty set would reject everything for reasons that look like token
// problems, and hide the real one.
func parseJWKS(data []byte, algs []jose.SignatureAlgorithm, log *slog.Logger, source string) (*keySet, error) {
	// Decode the entries one by one rather than into jose.JSONWebKeySet,
	// where a single key of a type go-jose does not know (an X25519 "enc"
	// key, an RSA key over 4096 bits) fails the whole set.
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS document: %v", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`not a JWKS document: no "keys" array`)
	}
	set := &keySet{skipped: map[string]string{}}
	for i, raw := range doc.Keys {
		var k jose.JSONWebKey
		var why string
		if err := k.UnmarshalJSON(raw); err != nil {
			why = "cannot parse: " + strings.TrimPrefix(err.Error(), "go-jose/go-jose: ")
			// Salvage the kid for better messages, if the entry has one.
			var id struct {
				Kid string `json:"kid"`
			}
			_ = json.Unmarshal(raw, &id)
			k.KeyID = id.Kid
		} else {
			var e keyEntry
			if e, why = classify(k, algs); why == "" {
				set.keys = append(set.keys, e)
				continue
			}
		}
		if k.KeyID != "" {
			set.skipped[k.KeyID] = why
		}
		log.Warn("jwtauth: skipping key in JWKS", "source", source, "index", i, "kid", k.KeyID, "reason", why)
	}
	if len(set.keys) == 0 {
		return nil, fmt.Errorf("the key set has no usable signing key (%d keys, all skipped)", len(doc.Keys))
	}
	return set, nil
}

// parsePEMKey parses a single PEM public key. Unlike a JWKS entry, a PEM key
// that fails the policy is an error: it is the only key, so the operator must
// fix it before the app can work at all.
func parsePEMKey(data []byte, algs []jose.SignatureAlgorithm) (*keySet, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("more than one PEM block; public_key_file holds exactly one key (use a JWKS for several)")
	}
	var pub any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		if strings.Contains(block.Type, "PRIVATE") {
			return nil, fmt.Errorf("PEM block is a %s; give the public key only", block.Type)
		}
		return nil, fmt.Errorf("PEM block type %q is not a public key (want PUBLIC KEY or RSA PUBLIC KEY)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %v", block.Type, err)
	}
	// Round-trip through the JWK form so that a PEM key passes the same
	// go-jose checks as a JWKS entry (EC points on the curve, no low-order
	// Ed25519 points, RSA modulus at most jose.MaxRSAModulusBits).
	b, err := jose.JSONWebKey{Key: pub}.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("unsupported public key: %v", strings.TrimPrefix(err.Error(), "go-jose/go-jose: "))
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("unsupported public key: %v", strings.TrimPrefix(err.Error(), "go-jose/go-jose: "))
	}
	e, why := classify(k, algs)
	if why != "" {
		return nil, errors.New(why)
	}
	return &keySet{keys: []keyEntry{e}, single: true}, nil
}
