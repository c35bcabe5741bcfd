package quorum

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/gowebpki/jcs"
)

// The Privy headers that go into the signed payload. No other header does:
// not privy-authorization-signature, privy-client, Authorization or
// Content-Type.
const (
	HeaderAppID          = "privy-app-id"
	HeaderIdempotencyKey = "privy-idempotency-key"
	HeaderRequestExpiry  = "privy-request-expiry"
)

// HeaderSignature is the header that carries the signatures, the input of
// ParseSignatures.
const HeaderSignature = "privy-authorization-signature"

// Request is the part of an HTTP request that an authorization signature
// covers.
type Request struct {
	// Method is the HTTP method as received: POST, PUT, PATCH or DELETE
	// (Privy's SDKs never sign GET).
	Method string
	// URL is the public base URL plus the path exactly as the client sent it
	// (r.URL.EscapedPath(), not the decoded r.URL.Path), without query
	// string or trailing slash, e.g. "http://localhost/v1/wallets/wlt_1/rpc".
	// The SDKs sign baseURL + path, so the daemon must use the base URL its
	// clients are configured with.
	URL string
	// Body is the raw request body as received; it may be empty.
	Body []byte
	// Headers are the request headers. Only privy-app-id,
	// privy-idempotency-key and privy-request-expiry are read; names are
	// matched case-insensitively.
	Headers http.Header
}

// emptyBody is the JSON text the SDKs sign in place of an empty body.
var emptyBody = []byte(`""`)

// Payload returns the bytes Privy's SDKs sign for r: the RFC 8785
// canonical form of
//
//	{"version":1, "method":..., "url":..., "body":..., "headers":{...}}
//
// body is the parsed JSON body, except that an absent body (empty or only
// whitespace) and a body that is the empty object {} both become the empty
// string "", as the SDKs do (an empty array stays []). headers always holds
// privy-app-id, and privy-idempotency-key and privy-request-expiry only when
// the request carries them with a non-empty value; the daemon must treat an
// empty one as absent too.
//
// A body that RFC 8785 refuses (invalid JSON, duplicate keys, lone
// surrogates, invalid UTF-8, numbers outside the double range) is an
// *InputError wrapping ErrInvalidBody. So is, wrapping ErrInexactNumber, an
// integer literal (no fraction, no exponent) that is not exactly a double,
// such as 9007199254740993, which RFC 8785 writes as 9007199254740992: the
// signature would then cover another integer than the one the daemon decodes,
// and both bodies would share one signature. RFC 7493 (I-JSON, which RFC
// 8785 builds on) already warns that such integers are not exact. Fractions
// and exponents are left to RFC 8785 (333333333.33333329 signs as
// 333333333.3333333): Go decodes them only into floats, and to the same
// double. No SDK writes an inexact integer, since they write the shortest
// round-trip form of a double. A missing privy-app-id, a repeated signed
// header, or an empty or non-UTF-8 method, URL or header value is an
// *InputError as well.
func Payload(r Request) ([]byte, error) {
	if r.Method == "" || !utf8.ValidString(r.Method) {
		return nil, inputErr(ErrInvalidRequest, "method", "empty or not UTF-8")
	}
	if r.URL == "" || !utf8.ValidString(r.URL) {
		return nil, inputErr(ErrInvalidRequest, "url", "empty or not UTF-8")
	}
	body, err := canonicalBody(r.Body)
	if err != nil {
		return nil, err
	}
	var hdr [len(signedHeaders)]string
	for i, name := range signedHeaders {
		if hdr[i], err = headerValue(r.Headers, name); err != nil {
			return nil, err
		}
	}
	if hdr[0] == "" {
		return nil, inputErr(ErrMissingHeader, HeaderAppID, "missing")
	}
	// The envelope's members, and the headers', are written in RFC 8785
	// order (all ASCII names, so UTF-16 order is byte order): body,
	// headers, method, url, version. The tests check that the result is
	// its own canonical form.
	out := make([]byte, 0, len(body)+len(r.URL)+200)
	out = append(out, `{"body":`...)
	out = append(out, body...)
	out = append(out, `,"headers":{`...)
	first := true
	for i, name := range signedHeaders {
		if hdr[i] == "" {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = appendString(out, name)
		out = append(out, ':')
		out = appendString(out, hdr[i])
	}
	out = append(out, `},"method":`...)
	out = appendString(out, r.Method)
	out = append(out, `,"url":`...)
	out = appendString(out, r.URL)
	out = append(out, `,"version":1}`...)
	return out, nil
}

// signedHeaders are the headers of the payload, in RFC 8785 order.
var signedHeaders = [...]string{HeaderAppID, HeaderIdempotencyKey, HeaderRequestExpiry}

// appendString appends s (valid UTF-8) as an RFC 8785 string (section
// 3.2.2.2): the two-character escapes for \b \t \n \f \r " and \\, \u00xx
// with lowercase hex for the other control characters, everything else
// as is.
func appendString(out []byte, s string) []byte {
	const hex = "0123456789abcdef"
	out = append(out, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\':
			out = append(out, '\\', c)
		case '\b':
			out = append(out, '\\', 'b')
		case '\t':
			out = append(out, '\\', 't')
		case '\n':
			out = append(out, '\\', 'n')
		case '\f':
			out = append(out, '\\', 'f')
		case '\r':
			out = append(out, '\\', 'r')
		default:
			if c < 0x20 {
				out = append(out, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			} else {
				out = append(out, c)
			}
		}
	}
	return append(out, '"')
}

// Digest is the SHA-256 of a payload: what the signatures sign, and the key
// of the daemon's replay cache.
func Digest(payload []byte) [32]byte { return sha256.Sum256(payload) }

// headerValue returns the single value of a header, "" when absent. A header
// given twice is refused: the daemon and the signature would not agree on
// which value counts.
func headerValue(h http.Header, name string) (string, error) {
	var vals []string
	for k, v := range h {
		if strings.EqualFold(k, name) {
			vals = append(vals, v...)
		}
	}
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1:
		return "", inputErr(ErrInvalidRequest, name, "header given more than once")
	case !utf8.ValidString(vals[0]):
		return "", inputErr(ErrInvalidRequest, name, "header value is not UTF-8")
	}
	return vals[0], nil
}

// canonicalBody returns the RFC 8785 form of a request body as it goes into
// the payload.
func canonicalBody(body []byte) ([]byte, error) {
	if len(bytes.Trim(body, " \t\r\n")) == 0 {
		return emptyBody, nil
	}
	// RFC 8785 by jsontext, the tokenizer of encoding/json/v2: five times
	// faster here than gowebpki/jcs, which the tests keep as the oracle
	// (the RFC's vectors, and FuzzPayload compares the two). It also
	// refuses repeated names and invalid UTF-8, which the edge refuses
	// before anyway.
	v := jsontext.Value(bytes.Clone(body))
	if err := v.Canonicalize(); err != nil {
		// The message names where, never what: the body may be a secret.
		reason := "not valid JSON for RFC 8785"
		var se *jsontext.SyntacticError
		if errors.As(err, &se) {
			reason += fmt.Sprintf(" (at byte %d)", se.ByteOffset)
		}
		return nil, inputErr(ErrInvalidBody, "body", reason)
	}
	c := []byte(v)
	if err := checkNumbers(body); err != nil {
		return nil, err
	}
	if string(c) == "{}" {
		return emptyBody, nil
	}
	return c, nil
}

// CheckNumbers refuses, as an *InputError wrapping ErrInexactNumber, an
// integer literal of a valid JSON body that a double cannot hold exactly
// (see Payload). The daemon applies it to unsigned bodies too, so that a
// body means the same whether or not it is signed.
func CheckNumbers(body []byte) error { return checkNumbers(body) }

// checkNumbers refuses an integer literal whose value differs from the
// value of its RFC 8785 form, and a number beyond a double. body must
// already be valid JSON: outside strings, a number is the only token that
// starts with '-' or a digit.
func checkNumbers(body []byte) error {
	for i := 0; i < len(body); {
		switch c := body[i]; {
		case c == '"':
			i++
			for i < len(body) && body[i] != '"' {
				if body[i] == '\\' {
					i++ // the escaped byte cannot end the string
				}
				i++
			}
			i++
		case c == '-' || ('0' <= c && c <= '9'):
			j := i
			for j < len(body) && strings.IndexByte("0123456789+-.eE", body[j]) >= 0 {
				j++
			}
			if lit := string(body[i:j]); !strings.ContainsAny(lit, ".eE") {
				if err := checkInteger(lit); err != nil {
					return err
				}
			} else if _, err := strconv.ParseFloat(lit, 64); err != nil {
				// Beyond a double: RFC 8785 has no form for it (jsontext
				// would round it to the largest double).
				return inputErr(ErrInvalidBody, "body", "number out of range")
			}
			i = j
		default:
			i++
		}
	}
	return nil
}

// checkInteger checks one JSON number literal (already known to be valid and
// finite) against its canonical form.
func checkInteger(lit string) error {
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		return inputErr(ErrInvalidBody, "body", "number out of range")
	}
	canon, err := jcs.NumberToJSON(f)
	if err != nil {
		return inputErr(ErrInvalidBody, "body", "number out of range")
	}
	a, okA := parseDecimal(lit)
	b, okB := parseDecimal(canon)
	if !okA || !okB || a != b {
		shown := lit
		if len(shown) > 32 {
			shown = shown[:32] + "..."
		}
		return inputErr(ErrInexactNumber, "body",
			fmt.Sprintf("integer %s is not exactly representable as an IEEE 754 double (RFC 8785 would sign it as %s); send it as a string", shown, canon))
	}
	return nil
}

// decimal is a number as neg × digits × 10^exp, with digits free of leading
// and trailing zeros; zero is the zero value.
type decimal struct {
	neg    bool
	digits string
	exp    int64
}

// parseDecimal reads a JSON number literal exactly. ok is false when the
// exponent is absurdly large, which no double's canonical form has.
func parseDecimal(s string) (d decimal, ok bool) {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, expPart, hasExp := strings.Cut(strings.ToLower(s), "e")
	var exp int64
	if hasExp {
		expNeg := strings.HasPrefix(expPart, "-")
		expPart = strings.TrimLeft(strings.TrimLeft(expPart, "+-"), "0")
		if len(expPart) > 6 {
			return decimal{}, false
		}
		if expPart != "" {
			e, err := strconv.ParseInt(expPart, 10, 64)
			if err != nil {
				return decimal{}, false
			}
			exp = e
		}
		if expNeg {
			exp = -exp
		}
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	exp -= int64(len(frac))
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	if trimmed == "" {
		return decimal{}, true
	}
	return decimal{neg: neg, digits: trimmed, exp: exp}, true
}
