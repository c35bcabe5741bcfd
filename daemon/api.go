package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/internal/apierr"
	"github.com/cachet-custody/cachet/internal/strictjson"
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
	s.Handle("POST /v1/wallets/{id}/export", AccessApp, s.change(s.exportWallet))
	s.Handle("POST /v1/wallets/import/init", AccessApp, s.change(s.importInit))
	s.Handle("POST /v1/wallets/import/submit", AccessApp, s.change(s.importSubmit))
	s.Handle("POST /v1/wallets/authenticate", AccessApp, s.change(s.authenticate))
	s.Handle("POST /v1/users", AccessApp, s.change(s.createUser))
	s.Handle("GET /v1/users", AccessApp, s.listUsers)
	s.Handle("GET /v1/users/{id}", AccessApp, s.getUser)
	s.Handle("DELETE /v1/users/{id}", AccessApp, s.change(s.deleteUser))
	s.Handle("POST /v1/users/custom_auth/id", AccessApp, s.change(s.userByCustomID))
	s.Handle("POST /v1/embedded_wallets", AccessApp, s.change(s.createEmbedded))
	s.Handle("GET /v1/embedded_wallets/{id}", AccessApp, s.getEmbedded)
	s.Handle("POST /v1/embedded_wallets/{id}/recover", AccessApp, s.change(s.recoverEmbedded))
	s.Handle("POST /v1/embedded_wallets/{id}/auth_share", AccessApp, s.change(s.embeddedAuthShare))
	s.Handle("POST /v1/embedded_wallets/{id}/challenge", AccessApp, s.change(s.embeddedChallenge))
	s.Handle("PUT /v1/embedded_wallets/{id}/recovery", AccessApp, s.change(s.setEmbeddedRecovery))
}

func (s *Server) createEmbedded(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.CreateEmbeddedWallet(r.Context(), c, body)
}

func (s *Server) recoverEmbedded(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.RecoverEmbeddedWallet(r.Context(), c, r.PathValue("id"), body)
}

func (s *Server) embeddedAuthShare(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.EmbeddedAuthShare(r.Context(), c, r.PathValue("id"), body)
}

func (s *Server) embeddedChallenge(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.EmbeddedChallenge(r.Context(), c, r.PathValue("id"), body)
}

func (s *Server) setEmbeddedRecovery(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.SetEmbeddedRecovery(r.Context(), c, r.PathValue("id"), body)
}

func (s *Server) getEmbedded(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	ew, err := s.deps.Custody.GetEmbeddedWallet(r.Context(), app.ID, r.PathValue("id"))
	if err != nil {
		return apiError(err)
	}
	writeJSON(w, http.StatusOK, ew)
	return nil
}

// maxBodyDepth bounds the nesting of any request body at the edge; each
// route's parser may bound it further. Typed data is the deepest body.
const maxBodyDepth = 64

// checkBody is the edge's one check of every request body, before any
// route reads it or any signature is verified over it: valid UTF-8, one
// JSON value, no name repeated in any object, nesting bounded, and no
// integer that a double cannot hold exactly (numbers: for a signed body,
// quorum.Payload checks them as it canonicalizes). Each route then decodes the
// body with exact, case-sensitive names and refuses any member its schema
// does not have (package strictjson), so that the body the approvers
// signed, as RFC 8785 and every JavaScript reader see it, is the body
// Cachet executes.
func checkBody(body []byte, numbers bool) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := (*strictjson.Options)(nil).CheckValue(body, maxBodyDepth); err != nil {
		var se *strictjson.Error
		switch {
		case errors.As(err, &se):
			return badRequest(se.Error() + ".")
		case errors.Is(err, strictjson.ErrInvalidUTF8):
			return badRequest("The body is not valid UTF-8.")
		case errors.Is(err, strictjson.ErrTrailingData):
			return badRequest("The body has data after its JSON value.")
		}
		return badRequest("The body is not valid JSON.")
	}
	if !numbers {
		return nil
	}
	return apiError(quorum.CheckNumbers(body))
}

// singleHeaders refuses a request that repeats a privy- header: which
// value counts would depend on the reader. For privy-authorization-
// signature, a second line is not merged into the first (signatures are
// one comma-separated list in one line, as Privy's SDKs send them): a
// signature Cachet did not check must not ride along with one it did.
func singleHeaders(h http.Header) error {
	for name, vals := range h {
		if len(vals) > 1 && strings.HasPrefix(strings.ToLower(name), "privy-") {
			return badRequest(fmt.Sprintf("The %s header is given %d times; send it once (several authorization signatures go in one header, comma-separated).", strings.ToLower(name), len(vals)))
		}
	}
	return nil
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
	// A signed body's numbers are checked where its canonical form is built
	// (quorum.Payload); only an unsigned one is checked here.
	if err := checkBody(body, r.Header.Get("privy-authorization-signature") == ""); err != nil {
		return custody.Call{}, nil, err
	}
	if err := singleHeaders(r.Header); err != nil {
		return custody.Call{}, nil, err
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
	var ce *apierr.Error // custody's and authkeys' refusals
	var qi *quorum.InputError
	var qa *quorum.AuthError
	switch {
	case errors.As(err, &ce):
		switch ce.Kind {
		case apierr.Invalid:
			return &APIError{Status: http.StatusBadRequest, Code: CodeInvalidData, Message: ce.Message}
		case apierr.Unauthorized:
			return &APIError{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: ce.Message}
		case apierr.Forbidden:
			return &APIError{Status: http.StatusForbidden, Code: CodeForbidden, Message: ce.Message}
		case apierr.NotFound:
			return &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: ce.Message}
		case apierr.Conflict:
			return &APIError{Status: http.StatusConflict, Code: CodeConflict, Message: ce.Message}
		case apierr.PolicyViolation:
			msg := ce.Message
			if ce.RuleID != "" {
				msg = fmt.Sprintf("%s (rule %s %q)", msg, ce.RuleID, ce.RuleName)
			}
			return &APIError{Status: http.StatusForbidden, Code: CodePolicyViolation, Message: msg, Audited: ce.Audited}
		case apierr.Unavailable:
			return &APIError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: ce.Message}
		case apierr.TooManyRequests:
			return &APIError{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests, Message: ce.Message}
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

// detach gives a request that changes or signs something a context of its
// own: it runs to its end once it has started, whatever the client does
// with its socket (a half-closed socket cancels the request's context), so
// it is decided, recorded and committed, or refused and the refusal
// recorded, the same either way. The server's write timeout still bounds
// it.
func (s *Server) detach(r *http.Request) (*http.Request, context.CancelFunc) {
	ctx := context.WithoutCancel(r.Context())
	cancel := context.CancelFunc(func() {})
	if d := s.deps.Config.Server.WriteTimeout.Duration; d > 0 {
		ctx, cancel = context.WithTimeout(ctx, d)
	}
	return r.WithContext(ctx), cancel
}

// change builds the handler of a request that changes something or signs:
// the call is built and checked at the edge, op does the work in custody,
// and the response it committed is written as it is.
func (s *Server) change(op func(r *http.Request, c custody.Call, body []byte) ([]byte, error)) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		r, cancel := s.detach(r)
		defer cancel()
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

func (s *Server) deleteQuorum(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	if err := noMembers(body); err != nil {
		return nil, err
	}
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

func (s *Server) archiveWallet(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	if err := noMembers(body); err != nil {
		return nil, err
	}
	return s.deps.Custody.ArchiveWallet(r.Context(), c, r.PathValue("id"))
}

func (s *Server) rpc(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.RPC(r.Context(), c, r.PathValue("id"), body, false)
}

func (s *Server) rawSign(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.RPC(r.Context(), c, r.PathValue("id"), body, true)
}

func (s *Server) exportWallet(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.Export(r.Context(), c, r.PathValue("id"), body)
}

func (s *Server) importInit(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.ImportInit(r.Context(), c, body)
}

func (s *Server) importSubmit(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.ImportSubmit(r.Context(), c, body)
}

func (s *Server) authenticate(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.Authenticate(r.Context(), c, body)
}

func (s *Server) createUser(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.CreateUser(r.Context(), c, body)
}

func (s *Server) deleteUser(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	if err := noMembers(body); err != nil {
		return nil, err
	}
	return s.deps.Custody.DeleteUser(r.Context(), c, r.PathValue("id"))
}

// userByCustomID is a lookup that takes a body; it changes nothing.
func (s *Server) userByCustomID(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	u, err := s.deps.Custody.UserByCustomID(r.Context(), c.App, body)
	if err != nil {
		return nil, err
	}
	return json.Marshal(u)
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	u, err := s.deps.Custody.GetUser(r.Context(), app.ID, r.PathValue("id"))
	if err != nil {
		return apiError(err)
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	q, limit, err := listQuery(r)
	if err != nil {
		return err
	}
	page, err := s.deps.Custody.ListUsers(r.Context(), app.ID, q.Get("cursor"), limit)
	if err != nil {
		return apiError(err)
	}
	writeJSON(w, http.StatusOK, page)
	return nil
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
	q, limit, err := listQuery(r)
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

// noMembers refuses a body on a request that takes none (DELETE, archive):
// empty or {} only. A member would be signed by the approvers and ignored by
// Cachet, which is what no route may do.
func noMembers(body []byte) error {
	t := bytes.TrimSpace(body)
	if len(t) == 0 {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(t, &m); err != nil || m == nil || len(m) > 0 {
		return badRequest("This request takes no body: send none, or {}.")
	}
	return nil
}

// decodeStrict decodes a JSON object body the way custody does (no
// repeated or unknown key, type errors by field), as an API error.
func decodeStrict(body []byte, v any) error {
	if err := custody.DecodeBody(body, v); err != nil {
		return apiError(err)
	}
	return nil
}
