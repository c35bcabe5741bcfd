// Package jwtauth verifies the JSON Web Tokens that a customer's own
// identity provider issues for its users ("JWT-based auth" in Privy's API):
// Cachet exchanges a verified user JWT for a short-lived user key.
//
// The package owns the policy around the token, and nothing else: which key
// sources an app may use and how they are refreshed (a JWKS file, a JWKS URL
// or a single PEM key), which algorithms and keys are acceptable (RS256 with
// RSA >= 2048 bits, ES256 on P-256, EdDSA with Ed25519; never "none" nor
// HMAC), and which claims a token must carry (iss, aud, exp, the user id).
// Parsing, JWK decoding and signature checks are left to
// github.com/go-jose/go-jose/v4. Exchanging the identity for a user key,
// answering HTTP and reading TOML belong to other packages.
//
// There is one Verifier per app. Verify is safe for concurrent use.
package jwtauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	// MaxTokenBytes is the largest token Verify parses. IdP tokens are
	// well under 2 KiB; the limit keeps parsing cost bounded for hostile
	// input.
	MaxTokenBytes = 16 << 10
	// MaxUserIDBytes is the longest user id accepted. The id is stored and
	// logged downstream; an unbounded one would be a storage problem.
	MaxUserIDBytes = 256
)

// Options are the verifier's dependencies; every field may be left zero.
type Options struct {
	// HTTPClient fetches a JWKS URL. Nil means a client with a 10 s
	// timeout. Each fetch is limited to 10 s whatever the client.
	HTTPClient *http.Client
	// Now is the clock for claim checks and JWKS refresh. Nil means
	// time.Now. It must be safe for concurrent use.
	Now func() time.Time
	// Logger receives warnings about key sets (skipped keys, failed
	// refreshes). Nil means slog.Default(). No token is ever logged.
	Logger *slog.Logger
}

// Identity is what a verified token says about its user.
type Identity struct {
	UserID   string    // value of Config.UserIDClaim
	Issuer   string    // "iss", equal to Config.Issuer
	Expiry   time.Time // "exp"
	IssuedAt time.Time // "iat"; zero if the token has none
}

// Verifier verifies one app's user JWTs.
type Verifier struct {
	s   settings
	src keySource
	now func() time.Time
	log *slog.Logger
}

// New validates cfg and prepares its key source. A JWKS file or PEM key is
// read now, so that a bad file stops the daemon at startup rather than
// failing every login later; a JWKS URL is fetched on first use, so that an
// IdP outage does not stop the daemon from starting.
func New(cfg Config, opts Options) (*Verifier, error) {
	s, err := newSettings(cfg)
	if err != nil {
		return nil, err
	}
	v := &Verifier{s: s, now: opts.Now, log: opts.Logger}
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	switch {
	case s.JWKSFile != "":
		src, err := newFileSource(s.JWKSFile, s.algs, v.log)
		if err != nil {
			return nil, fmt.Errorf("jwtauth: jwks_file: %w", err)
		}
		v.src = src
	case s.PublicKeyFile != "":
		data, err := readLimited(s.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("jwtauth: public_key_file: %w", err)
		}
		set, err := parsePEMKey(data, s.algs)
		if err != nil {
			return nil, fmt.Errorf("jwtauth: public_key_file %s: %w", s.PublicKeyFile, err)
		}
		v.src = staticSource{set: set}
	default:
		if u, err := url.Parse(s.JWKSURL); err == nil && u.Scheme == "http" && !isLoopback(u.Hostname()) {
			v.log.Warn("jwtauth: jwks_url uses plain http; anyone on the path can substitute the keys",
				"url", u.Redacted())
		}
		v.src = newURLSource(s.JWKSURL, s, opts.HTTPClient, v.now, v.log)
	}
	return v, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeySetBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeySetBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxKeySetBytes)
	}
	return data, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Verify checks token and returns the identity it carries. A token that
// fails a check gives an *Error; a verifier that cannot get its keys gives an
// error wrapping ErrKeysUnavailable. Either way the token is not accepted.
//
// Checks run in this order: format, algorithm, key, signature, then the
// claims (issuer, audience, expiry, not-before, issued-at, user id). Claims
// of a token whose signature has not verified are never looked at.
func (v *Verifier) Verify(ctx context.Context, token string) (Identity, error) {
	if len(token) > MaxTokenBytes {
		return Identity{}, reject(CheckFormat, "the token is %d bytes, over the %d-byte limit", len(token), MaxTokenBytes)
	}
	if token == "" {
		return Identity{}, reject(CheckFormat, "empty token")
	}
	switch n := strings.Count(token, ".") + 1; n {
	case 3:
	case 5:
		return Identity{}, reject(CheckFormat, "an encrypted token (JWE) is not accepted; want a signed JWT")
	default:
		return Identity{}, reject(CheckFormat, "not a compact JWS: %d dot-separated parts, want 3", n)
	}

	// ParseSignedCompact refuses any "alg" outside the allowed list, so
	// "none" and HS256 never get as far as a key. (jwt.ParseSigned is the
	// same call; we keep the JWS to get the verified payload back from
	// Verify, which tells signature failures apart from payload ones.)
	jws, err := jose.ParseSignedCompact(token, v.s.algs)
	if err != nil {
		return Identity{}, parseRejection(err, v.s.algs)
	}
	hdr := jws.Signatures[0].Protected
	if _, ok := hdr.ExtraHeaders["crit"]; ok {
		// We implement no JWS extension. go-jose would honour "b64": false
		// (RFC 7797), which has no business in a JWT, whose payload is
		// always base64url-encoded claims.
		return Identity{}, reject(CheckFormat, `the token has a "crit" header; no JWS extension is accepted`)
	}
	alg := jose.SignatureAlgorithm(hdr.Algorithm)

	// The token's own "jwk", "x5c" and "jku" headers are never used: the
	// key always comes from the configured source.
	set, err := v.src.keys(ctx, hdr.KeyID)
	if err != nil {
		return Identity{}, err
	}
	cands, rej := set.candidates(alg, hdr.KeyID)
	if rej != nil {
		return Identity{}, rej
	}
	var payload []byte
	verified := false
	for _, k := range cands {
		if p, err := jws.Verify(k.key); err == nil {
			payload, verified = p, true
			break
		}
	}
	if !verified {
		switch {
		case set.single:
			return Identity{}, reject(CheckSignature, "the signature does not verify with the configured public key")
		case hdr.KeyID != "":
			return Identity{}, reject(CheckSignature, "the signature does not verify with the key with kid %s", quote(hdr.KeyID))
		default:
			return Identity{}, reject(CheckSignature, "the signature does not verify with any of the %d keys that can verify %s", len(cands), alg)
		}
	}
	return v.checkClaims(payload)
}

func parseRejection(err error, allowed []jose.SignatureAlgorithm) *Error {
	var ua *jose.ErrUnexpectedSignatureAlgorithm
	if errors.As(err, &ua) {
		got := string(ua.Got)
		switch {
		case got == "":
			return reject(CheckAlgorithm, "the token header has no alg")
		case strings.EqualFold(got, "none"):
			return reject(CheckAlgorithm, `alg "none" (an unsigned token) is never accepted`)
		case strings.HasPrefix(strings.ToUpper(got), "HS"):
			return reject(CheckAlgorithm, "HMAC algorithm %s is never accepted", quote(got))
		default:
			return reject(CheckAlgorithm, "algorithm %s is not allowed (allowed: %v)", quote(got), allowed)
		}
	}
	// go-jose's own messages can quote header values at length, so they
	// are summarised rather than passed on.
	var b64 base64.CorruptInputError
	if errors.As(err, &b64) {
		return reject(CheckFormat, "a part of the token is not valid unpadded base64url")
	}
	return reject(CheckFormat, "the token header is not valid (not a JSON object, or a parameter such as kid has the wrong type)")
}

// checkClaims applies the claim policy to a verified payload.
func (v *Verifier) checkClaims(payload []byte) (Identity, error) {
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(payload, &claims); err != nil || claims == nil {
		return Identity{}, reject(CheckFormat, "the payload is not a JSON object")
	}
	var id Identity

	raw, ok := claims["iss"]
	if !ok {
		return Identity{}, reject(CheckIssuer, "the token has no iss claim")
	}
	if err := json.Unmarshal(raw, &id.Issuer); err != nil {
		return Identity{}, reject(CheckIssuer, "the iss claim is not a string")
	}
	if id.Issuer != v.s.Issuer {
		return Identity{}, reject(CheckIssuer, "issuer %s is not the configured issuer %q", quote(id.Issuer), v.s.Issuer)
	}

	raw, ok = claims["aud"]
	if !ok {
		return Identity{}, reject(CheckAudience, "the token has no aud claim")
	}
	var aud jwt.Audience
	if err := aud.UnmarshalJSON(raw); err != nil {
		return Identity{}, reject(CheckAudience, "the aud claim is not a string or an array of strings")
	}
	if !aud.Contains(v.s.Audience) {
		return Identity{}, reject(CheckAudience, "audience %s does not contain the configured audience %q", quoteList(aud), v.s.Audience)
	}

	now := v.now()
	skew := v.s.ClockSkew
	raw, ok = claims["exp"]
	if !ok {
		// RFC 7519 makes exp optional; we do not, because a token without
		// one would be a permanent credential for the user.
		return Identity{}, reject(CheckExpiry, "the token has no exp claim")
	}
	exp, ok := numericDate(raw)
	if !ok {
		return Identity{}, reject(CheckExpiry, "the exp claim is not a NumericDate")
	}
	if !now.Before(exp.Add(skew)) {
		return Identity{}, reject(CheckExpiry, "expired at %s, now %s, clock skew %s", stamp(exp), stamp(now), skew)
	}
	id.Expiry = exp

	if raw, ok := claims["nbf"]; ok {
		nbf, ok := numericDate(raw)
		if !ok {
			return Identity{}, reject(CheckNotBefore, "the nbf claim is not a NumericDate")
		}
		if now.Add(skew).Before(nbf) {
			return Identity{}, reject(CheckNotBefore, "not valid before %s, now %s, clock skew %s", stamp(nbf), stamp(now), skew)
		}
	}

	if raw, ok := claims["iat"]; ok {
		iat, ok := numericDate(raw)
		if !ok {
			return Identity{}, reject(CheckIssuedAt, "the iat claim is not a NumericDate")
		}
		// A token from the future means a broken IdP clock or a forged
		// timeline; either way its exp cannot be trusted.
		if now.Add(skew).Before(iat) {
			return Identity{}, reject(CheckIssuedAt, "issued at %s, in the future: now %s, clock skew %s", stamp(iat), stamp(now), skew)
		}
		id.IssuedAt = iat
	}

	userID, rej := userIDClaim(claims, v.s.UserIDClaim)
	if rej != nil {
		return Identity{}, rej
	}
	id.UserID = userID
	return id, nil
}

// userIDClaim extracts the user id. It accepts strings only: numbers lose
// precision past 2^53 in many JSON stacks, so a numeric id could silently map
// two users to one; the IdP should send the id as a string.
func userIDClaim(claims map[string]json.RawMessage, name string) (string, *Error) {
	raw, ok := claims[name]
	if !ok {
		return "", reject(CheckClaim, "the token has no %q claim (the user id)", name)
	}
	var val any
	if err := json.Unmarshal(raw, &val); err != nil {
		return "", reject(CheckClaim, "the %q claim cannot be decoded", name)
	}
	switch s := val.(type) {
	case string:
		if s == "" {
			return "", reject(CheckClaim, "the %q claim (the user id) is empty", name)
		}
		if len(s) > MaxUserIDBytes {
			return "", reject(CheckClaim, "the %q claim (the user id) is %d bytes, over the %d-byte limit", name, len(s), MaxUserIDBytes)
		}
		return s, nil
	case float64:
		return "", reject(CheckClaim, "the %q claim (the user id) is a number; it must be a string (numeric ids lose precision)", name)
	case nil:
		return "", reject(CheckClaim, "the %q claim (the user id) is null", name)
	case bool:
		return "", reject(CheckClaim, "the %q claim (the user id) is a boolean; it must be a string", name)
	default:
		return "", reject(CheckClaim, "the %q claim (the user id) is an object or array; it must be a string", name)
	}
}

// numericDate decodes a NumericDate with go-jose's rules (a JSON number of
// seconds, fractions truncated, absurd magnitudes refused).
func numericDate(raw json.RawMessage) (time.Time, bool) {
	var n jwt.NumericDate
	if err := n.UnmarshalJSON(raw); err != nil {
		return time.Time{}, false
	}
	return n.Time().UTC(), true
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
