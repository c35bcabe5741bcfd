package quorum

import "errors"

// Sentinels name each condition a caller may branch on. Every error this
// package returns for bad input or a refused authorization is an *InputError
// or an *AuthError whose Unwrap gives one of these, so errors.Is works on it.
var (
	// ErrInvalidBody: the request body is not JSON that RFC 8785 accepts
	// (syntax, duplicate keys, lone surrogates, invalid UTF-8, a number out
	// of the IEEE 754 double range, ...).
	ErrInvalidBody = errors.New("request body is not canonicalizable JSON")
	// ErrInexactNumber: an integer in the body is not exactly a double, so
	// RFC 8785 would sign another integer than the one sent (see Payload).
	ErrInexactNumber = errors.New("integer is not exactly representable")
	// ErrMissingHeader: privy-app-id is absent or empty.
	ErrMissingHeader = errors.New("missing header")
	// ErrInvalidRequest: a header, the method or the URL cannot go into the
	// signed payload (repeated header, invalid UTF-8, empty method or URL).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrInvalidPublicKey: not a P-256 public key in base64 DER SPKI form.
	ErrInvalidPublicKey = errors.New("invalid public key")
	// ErrInvalidQuorum: a key quorum breaks a structural rule (Validate).
	ErrInvalidQuorum = errors.New("invalid key quorum")

	// ErrMalformedSignature: privy-authorization-signature does not parse.
	ErrMalformedSignature = errors.New("malformed authorization signature")
	// ErrTooManySignatures: more than MaxSignatures signatures.
	ErrTooManySignatures = errors.New("too many authorization signatures")
	// ErrUnknownSigner: a signature verifies against no candidate key.
	ErrUnknownSigner = errors.New("a signature does not belong to any member")
	// ErrMalformedExpiry: privy-request-expiry is not decimal Unix milliseconds.
	ErrMalformedExpiry = errors.New("malformed request expiry")
	// ErrExpired: privy-request-expiry is in the past.
	ErrExpired = errors.New("request expired")
	// ErrExpiryTooFar: privy-request-expiry is further ahead than allowed.
	ErrExpiryTooFar = errors.New("request expiry too far in the future")
)

// InputError is input that no signature can fix. The daemon maps it to HTTP
// 400 with Privy's code invalid_data. Reason is short, safe to show to the
// client, and never holds a signature or a whole key.
type InputError struct {
	Field  string // what was wrong, in Privy's vocabulary: "body", "privy-app-id", "public_keys", ...
	Reason string
	Err    error // one of the sentinels above
}

func (e *InputError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// Unwrap returns the sentinel.
func (e *InputError) Unwrap() error { return e.Err }

// AuthError is an authorization refusal. The daemon maps it to HTTP 401 with
// Privy's code unauthorized. Reason is short, safe to show to the client, and
// never holds a signature or a whole key.
type AuthError struct {
	Reason string
	Err    error // one of the sentinels above
}

func (e *AuthError) Error() string { return e.Reason }

// Unwrap returns the sentinel.
func (e *AuthError) Unwrap() error { return e.Err }

func inputErr(sentinel error, field, reason string) *InputError {
	return &InputError{Field: field, Reason: reason, Err: sentinel}
}

func authErr(sentinel error, reason string) *AuthError {
	return &AuthError{Reason: reason, Err: sentinel}
}
