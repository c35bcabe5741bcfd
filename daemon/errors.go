package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/health"
	"github.com/cachet-custody/cachet/internal/clip"
)

// Error codes of the API, in Privy's {"error": ..., "code": ...} shape.
const (
	CodeInvalidData  = "invalid_data"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeMethod       = "method_not_allowed"
	CodeConflict     = "resource_conflict"
	CodeTooLarge     = "payload_too_large"
	CodeInternal     = "internal_error"
	CodeUnavailable  = "unavailable"
)

// APIError is an error the client may see. Handlers return one for every
// refusal they mean; any other error becomes a 500 whose text stays in the
// log, so no internal detail (let alone a secret) reaches a client.
type APIError struct {
	Status  int
	Code    string
	Message string
	// Audited is set when the refusal is already in the audit log.
	Audited bool
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// Errorf-style constructors for the common cases.
func badRequest(msg string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Code: CodeInvalidData, Message: msg}
}
func unauthorized(msg string) *APIError {
	return &APIError{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: msg}
}
func forbidden(msg string) *APIError {
	return &APIError{Status: http.StatusForbidden, Code: CodeForbidden, Message: msg}
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// writeError maps err to a response once, at the edge. Every refusal of a
// /v1 request is recorded in the audit log before it is answered; nothing
// else changed, since a refused request commits nothing.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *APIError
	var ue *health.UnavailableError
	if !errors.As(err, &ae) {
		// A failure while a part is failing is that part's failure: a
		// vanished TPM is reported as such, not as a blob that does not
		// open or an internal error.
		if !errors.As(err, &ue) {
			if herr := s.healthErr(); herr != nil {
				s.log.Error("request failed while a part is failing", "method", r.Method, "path", r.URL.Path, "error", err)
				errors.As(herr, &ue)
			}
		}
		if ue != nil {
			ae = unavailable(ue)
		} else {
			s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
			ae = &APIError{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "Internal error; the daemon's log has the details."}
		}
	}
	if ae.Status != http.StatusInternalServerError {
		s.deps.Metrics.Refusal(ae.Code)
	}
	if strings.HasPrefix(r.URL.Path, "/v1/") && (ae.Status < 500 || ae.Code == CodeUnavailable) && !ae.Audited && s.deps.Audit != nil {
		detail, _ := json.Marshal(map[string]any{"status": ae.Status, "code": ae.Code, "error": clip.To(ae.Message, maxAuditedText)})
		// Detached from the request: a client that closes its socket does
		// not cancel the record of its refusal.
		if _, aerr := s.deps.Audit.Record(context.WithoutCancel(r.Context()), audit.Entry{
			Actor: actor(r.Context()), Action: "api.refused", Target: auditTarget(r),
			Decision: audit.DecisionDeny, Detail: string(detail),
		}); aerr != nil {
			s.log.Error("audit of a refused request failed", "method", r.Method, "path", r.URL.Path, "error", aerr)
		}
	}
	writeJSON(w, ae.Status, errorBody{Error: ae.Message, Code: ae.Code})
}

// unavailable is the 503 of a release refused because a part is failing.
func unavailable(ue *health.UnavailableError) *APIError {
	return &APIError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
		Message: fmt.Sprintf("The appliance's %s is unavailable, so nothing was released: %v", ue.Part, ue.Cause)}
}

// withhold answers 503 for a request whose result was ready when a part
// failed, and records that the result was withheld (where the record still
// works: the store may be the part that failed).
func (s *Server) withhold(w http.ResponseWriter, r *http.Request, err error) {
	var ue *health.UnavailableError
	errors.As(err, &ue)
	ae := unavailable(ue)
	if s.deps.Audit != nil {
		detail, _ := json.Marshal(map[string]any{"status": ae.Status, "code": ae.Code, "error": ae.Message, "part": ue.Part})
		if _, aerr := s.deps.Audit.Record(r.Context(), audit.Entry{
			Actor: actor(r.Context()), Action: "api.withheld", Target: auditTarget(r),
			Decision: audit.DecisionDeny, Detail: string(detail),
		}); aerr != nil {
			s.log.Error("audit of a withheld result failed", "method", r.Method, "path", r.URL.Path, "error", aerr)
		}
	}
	s.log.Error("result withheld: a part failed while the request ran", "method", r.Method, "path", r.URL.Path, "part", ue.Part, "error", ue.Cause)
	writeJSON(w, ae.Status, errorBody{Error: ae.Message, Code: ae.Code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// auditTarget names a request in its audit record by its path as sent
// (percent-encoded), not decoded: a decoded path can hold bytes that are
// not UTF-8, which the record would hash as they are and `cachet audit
// export` could only write as U+FFFD, so that no receiver could verify it.
// The encoded path is also the one the client signed.
func auditTarget(r *http.Request) string {
	return r.Method + " " + clip.To(r.URL.EscapedPath(), maxAuditedText)
}

// maxAuditedText bounds what a refusal record keeps of the request's path
// and of the error message (which may echo an id or a path): any allowed
// local process, credentials or not, can have refusals recorded, and an
// unbounded echo would let it grow the store by up to a body's size (1 MiB)
// per request.
const maxAuditedText = 1024
