package jwtauth

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Config is one app's JWT settings. The config package fills it from the
// app's TOML table; the TOML key of each field is given in its comment and is
// what Problem.Field names.
type Config struct {
	// JWKSFile (jwks_file) is a JWKS JSON file on disk. It is re-read when its
	// modification time or size changes.
	JWKSFile string
	// JWKSURL (jwks_url) is a JWKS endpoint, http or https.
	JWKSURL string
	// PublicKeyFile (public_key_file) is a single PEM public key: RSA (at
	// least 2048 bits), EC P-256 or Ed25519, as a "PUBLIC KEY" (SPKI) or
	// "RSA PUBLIC KEY" (PKCS #1) block.
	PublicKeyFile string
	// JWKSRefresh (jwks_refresh) is how long a key set fetched from JWKSURL
	// is used before it is fetched again. Zero means DefaultJWKSRefresh. It
	// is ignored for the other key sources.
	JWKSRefresh time.Duration
	// Algorithms (algorithms) are the accepted "alg" values, a subset of
	// RS256, ES256 and EdDSA. Empty means all three.
	Algorithms []string
	// Issuer (issuer) must equal the token's "iss" exactly. Required.
	Issuer string
	// Audience (audience) must be one of the token's "aud" values. Required.
	Audience string
	// ClockSkew (clock_skew) is the leeway for exp, nbf and iat. Zero means
	// DefaultClockSkew; at most MaxClockSkew.
	ClockSkew time.Duration
	// UserIDClaim (user_id_claim) names the claim that carries the user's
	// id. Empty means "sub".
	UserIDClaim string
}

// Defaults and limits of Config. They are exported so that the config
// package and documentation can quote them instead of repeating numbers.
const (
	// DefaultJWKSRefresh is used when Config.JWKSRefresh is zero.
	DefaultJWKSRefresh = 5 * time.Minute
	// MinJWKSRefresh is the shortest refresh interval: refreshing more often
	// than the unknown-kid refetch throttle would only add load on the IdP.
	MinJWKSRefresh = refetchInterval
	// MaxJWKSRefresh bounds how long a revoked key can stay trusted.
	MaxJWKSRefresh = 24 * time.Hour
	// DefaultClockSkew is used when Config.ClockSkew is zero.
	DefaultClockSkew = 30 * time.Second
	// MaxClockSkew bounds the leeway: more would let a stolen token live
	// well past its exp.
	MaxClockSkew = 5 * time.Minute
	// DefaultUserClaim is used when Config.UserIDClaim is empty.
	DefaultUserClaim = "sub"
)

// supportedAlgorithms are the only algorithms a Config may name. HMAC is
// deliberately absent: a shared secret would let anyone holding it (the IdP's
// customer, or anyone it leaks to) mint tokens, and an HS256 token verified
// against a public key is the classic algorithm-confusion attack.
var supportedAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}

// Problem is one thing wrong with a Config.
type Problem struct {
	Field  string // TOML key: jwks_file, jwks_url, issuer, ...
	Reason string
}

// String formats p as "field: reason".
func (p Problem) String() string { return p.Field + ": " + p.Reason }

// ConfigError is returned by New when Validate finds problems.
type ConfigError struct {
	Problems []Problem
}

// Error lists every problem.
func (e *ConfigError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "jwtauth: invalid config: " + strings.Join(parts, "; ")
}

// Validate returns every problem of c, without touching the disk or the
// network (New does that). A nil result means New will at least try.
func (c Config) Validate() []Problem {
	var ps []Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Reason: fmt.Sprintf(format, args...)})
	}

	// Key source: exactly one, because two sources would raise the question
	// of which one wins, and a silent answer is a security bug.
	sources := []struct{ field, value string }{
		{"jwks_file", c.JWKSFile},
		{"jwks_url", c.JWKSURL},
		{"public_key_file", c.PublicKeyFile},
	}
	var set []string
	for _, s := range sources {
		if s.value != "" {
			set = append(set, s.field)
		}
	}
	switch len(set) {
	case 0:
		add("jwks_file", "no key source: set exactly one of jwks_file, jwks_url, public_key_file")
	case 1:
	default:
		for _, f := range set {
			add(f, "only one of jwks_file, jwks_url, public_key_file may be set (set: %s)", strings.Join(set, ", "))
		}
	}
	for _, s := range sources {
		if s.value != "" && strings.TrimSpace(s.value) != s.value {
			add(s.field, "has leading or trailing whitespace")
		}
	}
	if c.JWKSURL != "" {
		if reason := checkJWKSURL(c.JWKSURL); reason != "" {
			add("jwks_url", "%s", reason)
		}
	}

	if c.JWKSRefresh < 0 {
		add("jwks_refresh", "must not be negative (got %s)", c.JWKSRefresh)
	} else if c.JWKSRefresh != 0 && (c.JWKSRefresh < MinJWKSRefresh || c.JWKSRefresh > MaxJWKSRefresh) {
		add("jwks_refresh", "must be between %s and %s (got %s)", MinJWKSRefresh, MaxJWKSRefresh, c.JWKSRefresh)
	}

	for _, a := range c.Algorithms {
		if reason := checkAlgorithm(a); reason != "" {
			add("algorithms", "%s", reason)
		}
	}

	checkExact := func(field, v string) {
		switch {
		case v == "":
			add(field, "required")
		case strings.TrimSpace(v) != v:
			// The match is exact, so stray whitespace would make every token fail.
			add(field, "has leading or trailing whitespace")
		}
	}
	checkExact("issuer", c.Issuer)
	checkExact("audience", c.Audience)

	if c.ClockSkew < 0 || c.ClockSkew > MaxClockSkew {
		add("clock_skew", "must be between 0 and %s (got %s)", MaxClockSkew, c.ClockSkew)
	}

	if c.UserIDClaim != "" {
		switch c.UserIDClaim {
		case "iss", "aud", "exp", "nbf", "iat", "jti":
			// These are about the token, not the user; using one would give
			// every user of an issuer (or every token) its own identity.
			add("user_id_claim", "%q is a registered claim that does not identify a user", c.UserIDClaim)
		default:
			if strings.TrimSpace(c.UserIDClaim) != c.UserIDClaim {
				add("user_id_claim", "has leading or trailing whitespace")
			}
		}
	}
	return ps
}

func checkJWKSURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "not a valid URL"
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Sprintf("scheme must be https or http (got %q)", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return "has no host"
	}
	return ""
}

func checkAlgorithm(a string) string {
	switch {
	case strings.EqualFold(a, "none"):
		return `"none" (unsigned tokens) is never accepted`
	case strings.HasPrefix(strings.ToUpper(a), "HS"):
		return fmt.Sprintf("%q: HMAC algorithms are never accepted", a)
	}
	for _, s := range supportedAlgorithms {
		if string(s) == a {
			return ""
		}
	}
	return fmt.Sprintf("unknown algorithm %q (allowed: RS256, ES256, EdDSA; names are case-sensitive)", a)
}

// settings is a validated Config with its defaults applied.
type settings struct {
	Config
	algs []jose.SignatureAlgorithm
}

func newSettings(c Config) (settings, error) {
	if ps := c.Validate(); len(ps) > 0 {
		return settings{}, &ConfigError{Problems: ps}
	}
	s := settings{Config: c}
	if s.JWKSRefresh == 0 {
		s.JWKSRefresh = DefaultJWKSRefresh
	}
	if s.ClockSkew == 0 {
		s.ClockSkew = DefaultClockSkew
	}
	if s.UserIDClaim == "" {
		s.UserIDClaim = DefaultUserClaim
	}
	if len(c.Algorithms) == 0 {
		s.algs = append(s.algs, supportedAlgorithms...)
	} else {
		// Keep the canonical order and drop duplicates, so error messages
		// list the allowed algorithms the same way whatever the config says.
		for _, a := range supportedAlgorithms {
			for _, b := range c.Algorithms {
				if string(a) == b {
					s.algs = append(s.algs, a)
					break
				}
			}
		}
	}
	return s, nil
}
