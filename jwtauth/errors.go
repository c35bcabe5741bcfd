package jwtauth

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Check names the check a token failed. The values are stable and meant for
// metrics and logs.
type Check string

// The checks, in the order Verify applies them. Claims (issuer onwards) are
// only ever looked at once the signature has verified.
const (
	CheckFormat    Check = "format"     // size, structure, encoding
	CheckAlgorithm Check = "algorithm"  // "alg" not allowed by the config
	CheckKey       Check = "key"        // no usable key in the key set
	CheckSignature Check = "signature"  // signature does not verify
	CheckIssuer    Check = "issuer"     // "iss" missing or wrong
	CheckAudience  Check = "audience"   // "aud" missing or without our audience
	CheckExpiry    Check = "expiry"     // "exp" missing, malformed or past
	CheckNotBefore Check = "not_before" // "nbf" malformed or in the future
	CheckIssuedAt  Check = "issued_at"  // "iat" malformed or in the future
	CheckClaim     Check = "claim"      // the user id claim is missing or unusable
)

// Error is every rejection of a token: the token's fault, to be answered
// with 401. Neither field ever contains the token or a part of it, apart from
// short header and claim values (kid, alg, iss), which are quoted and cut to
// a few dozen bytes.
type Error struct {
	Check  Check
	Reason string
}

// Error formats the rejection as "JWT rejected (check): reason".
func (e *Error) Error() string {
	return fmt.Sprintf("JWT rejected (%s): %s", e.Check, e.Reason)
}

func reject(c Check, format string, args ...any) *Error {
	return &Error{Check: c, Reason: fmt.Sprintf(format, args...)}
}

// ErrKeysUnavailable is wrapped by the errors Verify returns when the
// verifier cannot get a key set at all (the JWKS URL never answered, the JWKS
// file became unreadable). It is not the token's fault, so callers should
// answer 503 rather than 401; the token is not accepted either way.
var ErrKeysUnavailable = errors.New("jwtauth: signing keys unavailable")

// maxQuoted bounds how much of a token-supplied string (kid, alg, iss, aud)
// goes into an error or a log line: enough to recognise a value, too little to
// carry a token or to make error strings a vector for log flooding.
const maxQuoted = 64

// quote quotes a token-supplied value for an error message, cut to maxQuoted
// bytes on a rune boundary.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:cut], len(s))
}

// quoteList quotes at most three values of a token-supplied list.
func quoteList(vs []string) string {
	const maxItems = 3
	parts := make([]string, 0, maxItems+1)
	for i, v := range vs {
		if i == maxItems {
			parts = append(parts, fmt.Sprintf("… (%d values)", len(vs)))
			break
		}
		parts = append(parts, quote(v))
	}
	return "[" + strings.Join(parts, " ") + "]"
}
