package quorum

import (
	"fmt"
	"strconv"
	"time"
)

// CheckExpiry checks a privy-request-expiry header: decimal Unix time in
// milliseconds, the last instant at which the request may be served.
//
//   - absent (""): zero time, nil error (the caller decides how long to
//     remember the digest for replay protection);
//   - not 1 to 15 ASCII digits: *AuthError wrapping ErrMalformedExpiry;
//   - before now: *AuthError wrapping ErrExpired;
//   - more than horizon after now: *AuthError wrapping ErrExpiryTooFar
//     (with horizon <= 0 any future expiry is too far);
//   - otherwise the expiry and nil.
func CheckExpiry(header string, now time.Time, horizon time.Duration) (time.Time, error) {
	if header == "" {
		return time.Time{}, nil
	}
	if len(header) > 15 || !digits(header) {
		return time.Time{}, authErr(ErrMalformedExpiry, HeaderRequestExpiry+" is not a Unix time in milliseconds (decimal digits only)")
	}
	ms, err := strconv.ParseInt(header, 10, 64)
	if err != nil {
		return time.Time{}, authErr(ErrMalformedExpiry, HeaderRequestExpiry+" is not a Unix time in milliseconds (decimal digits only)")
	}
	exp := time.UnixMilli(ms)
	if exp.Before(now) {
		return time.Time{}, authErr(ErrExpired, fmt.Sprintf("the request expired at %s (%s)", exp.UTC().Format(time.RFC3339Nano), HeaderRequestExpiry))
	}
	if d := exp.Sub(now); d > horizon {
		return time.Time{}, authErr(ErrExpiryTooFar, fmt.Sprintf("%s is %s in the future, at most %s is accepted", HeaderRequestExpiry, d.Round(time.Second), horizon))
	}
	return exp, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
