// Package apierr owns the refusals a caller of the API may see: their kinds
// (each one Privy error code and HTTP status, mapped once by the daemon)
// and the error that carries one. The packages behind the API (custody,
// authkeys) return these, so that a new kind or a change of mapping is made
// in one place.
package apierr

import "fmt"

// Kind classifies a refusal for the HTTP edge.
type Kind int

// Refusal kinds, each mapped to one Privy error code.
const (
	Invalid         Kind = iota + 1 // 400 invalid_data
	Unauthorized                    // 401 unauthorized
	Forbidden                       // 403 forbidden
	NotFound                        // 404 not_found
	Conflict                        // 409 resource_conflict
	PolicyViolation                 // 403 policy_violation
	Unavailable                     // 503: a dependency did not answer, or a sealed secret did not open
	TooManyRequests                 // 429 too_many_requests: a rate limit
)

// Error is a refusal the caller may see. Message never holds a secret.
type Error struct {
	Kind    Kind
	Message string
	// RuleID and RuleName name the deciding policy rule of a
	// PolicyViolation.
	RuleID, RuleName string
	// Audited is set when the refusal is already in the audit log (with
	// its policy trace), so the edge does not record it again.
	Audited bool
}

func (e *Error) Error() string { return e.Message }

// Errorf makes a refusal of kind k.
func Errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}
