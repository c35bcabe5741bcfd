package hsm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cachet-custody/cachet/keys"
	"github.com/miekg/pkcs11"
)

// p11Error is a PKCS#11 return value together with the C_ function that
// returned it. It unwraps to the pkcs11.Error (so callers can read the CKR_
// code with errors.As) and to the keys sentinel the failure means.
type p11Error struct {
	op   string // "C_Decrypt"
	rv   pkcs11.Error
	kind error // keys.ErrUnavailable or keys.ErrAuthFailed
}

func (e *p11Error) Error() string {
	return fmt.Sprintf("%v: pkcs11 %s: %s", e.kind, e.op, rvName(e.rv))
}

func (e *p11Error) Unwrap() []error { return []error{e.kind, e.rv} }

// rvName is the CKR_ name of rv ("CKR_GENERAL_ERROR"); miekg/pkcs11 only
// exposes it inside its own "pkcs11: 0x5: CKR_GENERAL_ERROR" text.
func rvName(rv pkcs11.Error) string {
	s := rv.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s[i+2:], "CKR_") {
		return s[i+2:]
	}
	return fmt.Sprintf("CKR 0x%X", uint(rv))
}

// mapErr is the one place where an error from the module gets the name of the
// C_ function and the keys sentinel that callers branch on. Every PKCS#11
// failure means the hardware did not do its part (keys.ErrUnavailable), with
// one exception: a GCM tag that does not verify. SoftHSM 2.6 reports that as
// CKR_GENERAL_ERROR from C_Decrypt; other tokens use CKR_ENCRYPTED_DATA_INVALID
// or CKR_ENCRYPTED_DATA_LEN_RANGE (v2.40 section 5.9, C_Decrypt).
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return fmt.Errorf("%w: pkcs11 %s: %w", keys.ErrUnavailable, op, err)
	}
	kind := keys.ErrUnavailable
	if op == opDecrypt {
		switch rv {
		case pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE:
			kind = keys.ErrAuthFailed
		}
	}
	return &p11Error{op: op, rv: rv, kind: kind}
}

const opDecrypt = "C_Decrypt"

// rvOf returns the PKCS#11 return value inside err, if there is one.
func rvOf(err error) (pkcs11.Error, bool) {
	var rv pkcs11.Error
	if errors.As(err, &rv) {
		return rv, true
	}
	return 0, false
}

// sessionLost reports whether err means the session cannot be trusted for
// another call: it is gone, the token was logged out under it (C_CloseAllSessions
// logs out, v2.40 section 5.6), the device failed, or an operation was left
// active in it. The pool replaces such a session and retries once.
func sessionLost(err error) bool {
	rv, ok := rvOf(err)
	if !ok {
		return false
	}
	switch rv {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_DEVICE_ERROR,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_OPERATION_ACTIVE:
		return true
	}
	return false
}

// sessionGone reports whether the session handle in err no longer exists, so
// closing it would at best fail and, on a token that reuses handles, could
// close another caller's session.
func sessionGone(err error) bool {
	rv, ok := rvOf(err)
	return ok && (rv == pkcs11.CKR_SESSION_HANDLE_INVALID || rv == pkcs11.CKR_SESSION_CLOSED)
}

// staleHandle reports whether err means a cached object handle no longer
// names an object. Logging out removes the handles of private objects, and
// C_*Init calls report that as CKR_KEY_HANDLE_INVALID, other calls as
// CKR_OBJECT_HANDLE_INVALID.
func staleHandle(err error) bool {
	rv, ok := rvOf(err)
	return ok && (rv == pkcs11.CKR_OBJECT_HANDLE_INVALID || rv == pkcs11.CKR_KEY_HANDLE_INVALID)
}

// errClosed is returned by every method after Close.
var errClosed = fmt.Errorf("hsm: backend is closed: %w", keys.ErrUnavailable)
