package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/quorum"
)

// Privy's error codes for the wallet API.
const (
	CodePolicyViolation = "policy_violation"
)

// maxIdempotencyKey is Privy's limit on privy-idempotency-key.
const maxIdempotencyKey = 256

// routeWalletAPI registers the wallet API.
func (s *Server) routeWalletAPI() {
	s.Handle("POST /v1/key_quorums", AccessApp, s.change(s.createQuorum))
	s.Handle("GET /v1/key_quorums/{id}", AccessApp, s.getQuorum)
	s.Handle("PATCH /v1/key_quorums/{id}", AccessApp, s.change(s.updateQuorum))
	s.Handle("DELETE /v1/key_quorums/{id}", AccessApp, s.change(s.deleteQuorum))
	s.Handle("POST /v1/wallets", AccessApp, s.change(s.createWallet))
	s.Handle("GET /v1/wallets", AccessApp, s.listWallets)
	s.Handle("GET /v1/wallets/{id}", AccessApp, s.getWallet)
	s.Handle("PATCH /v1/wallets/{id}", AccessApp, s.change(s.updateWallet))
	s.Handle("POST /v1/wallets/{id}/archive", AccessApp, s.change(s.archiveWallet))
	s.Handle("POST /v1/wallets/{id}/rpc", AccessApp, s.change(s.rpc))
	s.Handle("POST /v1/wallets/{id}/raw_sign", AccessApp, s.change(s.rawSign))
}

// call reads the body and builds what custody needs to know about the
// request: the app, the actor, the idempotency key, and, when the request
// is signed, the canonical payload the SDK signed with its signatures.
func (s *Server) call(r *http.Request) (custody.Call, []byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return custody.Call{}, nil, &APIError{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: fmt.Sprintf("The body is larger than %d bytes.", mbe.Limit)}
		}
		return custody.Call{}, nil, badRequest("The body could not be read.")
	}
	app, _ := AppFrom(r.Context())
	c := custody.Call{
		App:         app.ID,
		Actor:       actor(r.Context()),
		RequestHash: custody.RequestHash(r.Method, r.URL.EscapedPath(), body),
	}
	c.IdempotencyKey = r.Header.Get("privy-idempotency-key")
	if len(c.IdempotencyKey) > maxIdempotencyKey {
		return c, nil, badRequest(fmt.Sprintf("privy-idempotency-key is longer than %d characters.", maxIdempotencyKey))
	}
	expiry, err := quorum.CheckExpiry(r.Header.Get("privy-request-expiry"), time.Now(), s.deps.Config.API.MaxRequestExpiry.Duration)
	if err != nil {
		return c, nil, apiError(err)
	}
	sigHeader := r.Header.Get("privy-authorization-signature")
	if sigHeader == "" {
		return c, body, nil
	}
	sigs, err := quorum.ParseSignatures(sigHeader)
	if err != nil {
		return c, nil, apiError(err)
	}
	payload, err := quorum.Payload(quorum.Request{
		Method: r.Method, URL: s.deps.Config.Server.PublicBase() + r.URL.EscapedPath(), Body: body, Headers: r.Header,
	})
	if err != nil {
		return c, nil, apiError(err)
	}
	c.Signed = &custody.Signed{Payload: payload, Sigs: sigs, Expiry: expiry}
	return c, body, nil
}

func actor(ctx context.Context) string {
	a := "unknown peer"
	if p, err := PeerFrom(ctx); err == nil {
		a = p.String()
	}
	if app, ok := AppFrom(ctx); ok {
		a += " app=" + app.ID
	}
	return a
}

// apiError maps errors of the wallet API's packages to the API shape, once.
func apiError(err error) error {
	var ce *custody.Error
	var qi *quorum.InputError
	var qa *quorum.AuthError
	switch {
	case errors.As(err, &ce):
		switch ce.Kind {
		case custody.Invalid:
			return &APIError{Status: http.StatusBadRequest, Code: CodeInvalidData, Message: ce.Message}
		case custody.Unauthorized:
			return &APIError{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: ce.Message}
		case custody.Forbidden:
			return &APIError{Status: http.StatusForbidden, Code: CodeForbidden, Message: ce.Message}
		case custody.NotFound:
			return &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: ce.Message}
		case custody.Conflict:
			return &APIError{Status: http.StatusConflict, Code: CodeConflict, Message: ce.Message}
		case custody.PolicyViolation:
			msg := ce.Message
			if ce.RuleID != "" {
				msg = fmt.Sprintf("%s (rule %s %q)", msg, ce.RuleID, ce.RuleName)
			}
			return &APIError{Status: http.StatusForbidden, Code: CodePolicyViolation, Message: msg, Audited: ce.Audited}
		case custody.Unavailable:
			return &APIError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: ce.Message}
		}
	case errors.As(err, &qi):
		return &APIError{Status: http.StatusBadRequest, Code: CodeInvalidData, Message: qi.Error()}
	case errors.As(err, &qa):
		return &APIError{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: qa.Error()}
	}
	return err
}

func writeRaw(w http.ResponseWriter, body []byte) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(body)
	return err
}

// change builds the handler of a request that changes something or signs:
// the call is built and checked at the edge, op does the work in custody,
// and the response it committed is written as it is.
func (s *Server) change(op func(r *http.Request, c custody.Call, body []byte) ([]byte, error)) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		c, body, err := s.call(r)
		if err != nil {
			return err
		}
		out, err := op(r, c, body)
		if err != nil {
			return apiError(err)
		}
		return writeRaw(w, out)
	}
}

func (s *Server) createQuorum(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	var in custody.QuorumInput
	if err := decodeStrict(body, &in); err != nil {
		return nil, err
	}
	return s.deps.Custody.CreateQuorum(r.Context(), c, in)
}

func (s *Server) updateQuorum(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	var in custody.QuorumInput
	if err := decodeStrict(body, &in); err != nil {
		return nil, err
	}
	return s.deps.Custody.UpdateQuorum(r.Context(), c, r.PathValue("id"), in)
}

func (s *Server) deleteQuorum(r *http.Request, c custody.Call, _ []byte) ([]byte, error) {
	return s.deps.Custody.DeleteQuorum(r.Context(), c, r.PathValue("id"))
}

func (s *Server) createWallet(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	in, err := custody.ParseWalletInput(body, true)
	if err != nil {
		return nil, err
	}
	return s.deps.Custody.CreateWallet(r.Context(), c, in)
}

func (s *Server) updateWallet(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	in, err := custody.ParseWalletInput(body, false)
	if err != nil {
		return nil, err
	}
	return s.deps.Custody.UpdateWallet(r.Context(), c, r.PathValue("id"), in)
}

func (s *Server) archiveWallet(r *http.Request, c custody.Call, _ []byte) ([]byte, error) {
	return s.deps.Custody.ArchiveWallet(r.Context(), c, r.PathValue("id"))
}

func (s *Server) rpc(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.RPC(r.Context(), c, r.PathValue("id"), body, false)
}

func (s *Server) rawSign(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.RPC(r.Context(), c, r.PathValue("id"), body, true)
}

func (s *Server) getQuorum(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	q, err := s.deps.Custody.GetQuorum(r.Context(), app.ID, r.PathValue("id"))
	if err != nil {
		return apiError(err)
	}
	writeJSON(w, http.StatusOK, q)
	return nil
}

func (s *Server) getWallet(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	wl, err := s.deps.Custody.GetWallet(r.Context(), app.ID, r.PathValue("id"))
	if err != nil {
		return apiError(err)
	}
	writeJSON(w, http.StatusOK, wl)
	return nil
}

func (s *Server) listWallets(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	q := r.URL.Query()
	limit, err := pageLimit(r)
	if err != nil {
		return err
	}
	page, err := s.deps.Custody.ListWallets(r.Context(), app.ID, q.Get("cursor"), limit, q.Get("chain_type"))
	if err != nil {
		return apiError(err)
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// decodeStrict decodes a JSON object body, refusing unknown fields with the
// field's name. An empty body is an empty object.
func decodeStrict(body []byte, v any) error {
	if len(body) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytesReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return badRequest(fmt.Sprintf("%s: expected %s, not a JSON %s.", te.Field, te.Type, te.Value))
		}
		return badRequest("The body is not valid: " + err.Error())
	}
	if dec.More() {
		return badRequest("The body holds more than one JSON value.")
	}
	return nil
}
