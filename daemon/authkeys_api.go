package daemon

import (
	"net/http"

	"github.com/cachet-custody/cachet/authkeys"
)

// CodeTooManyRequests is the code of a rate-limited request.
const CodeTooManyRequests = "too_many_requests"

// routeAuthKeys registers the appliance's authorization keys.
func (s *Server) routeAuthKeys() {
	s.Handle("POST /v1/authorization_keys", AccessAdmin, s.createAuthKey)
	s.Handle("GET /v1/authorization_keys", AccessApp, s.listAuthKeys)
	s.Handle("GET /v1/authorization_keys/{id}", AccessApp, s.getAuthKey)
	s.Handle("DELETE /v1/authorization_keys/{id}", AccessAdmin, s.deleteAuthKey)
	s.Handle("POST /v1/authorization_keys/{id}/sign", AccessApp, s.signWithAuthKey)
}

// caller is the request's peer and app as authkeys needs them.
func caller(r *http.Request) authkeys.Caller {
	c := authkeys.Caller{Actor: actor(r.Context())}
	if p, err := PeerFrom(r.Context()); err == nil {
		c.UID, c.GID, c.Groups = p.UID, p.GID, p.Groups
	}
	return c
}

func (s *Server) createAuthKey(w http.ResponseWriter, r *http.Request) error {
	r, cancel := s.detach(r)
	defer cancel()
	_, body, err := s.call(r)
	if err != nil {
		return err
	}
	var in authkeys.CreateInput
	if err := decodeStrict(body, &in); err != nil {
		return err
	}
	app, _ := AppFrom(r.Context())
	k, err := s.deps.AuthKeys.Create(r.Context(), app.ID, caller(r), in)
	return get(w, k, apiError(err))
}

func (s *Server) listAuthKeys(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	ks, err := s.deps.AuthKeys.List(r.Context(), app.ID)
	return get(w, map[string]any{"data": ks}, apiError(err))
}

func (s *Server) getAuthKey(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	k, err := s.deps.AuthKeys.Get(r.Context(), app.ID, r.PathValue("id"))
	return get(w, k, apiError(err))
}

func (s *Server) deleteAuthKey(w http.ResponseWriter, r *http.Request) error {
	r, cancel := s.detach(r)
	defer cancel()
	// Read and checked like every other DELETE's: a member in the body
	// would be ignored, which no route may do.
	_, body, err := s.call(r)
	if err != nil {
		return err
	}
	if err := noMembers(body); err != nil {
		return err
	}
	app, _ := AppFrom(r.Context())
	k, err := s.deps.AuthKeys.Delete(r.Context(), app.ID, caller(r), r.PathValue("id"))
	return get(w, k, apiError(err))
}

func (s *Server) signWithAuthKey(w http.ResponseWriter, r *http.Request) error {
	r, cancel := s.detach(r)
	defer cancel()
	_, body, err := s.call(r)
	if err != nil {
		return err
	}
	var in authkeys.SignInput
	if err := decodeStrict(body, &in); err != nil {
		return err
	}
	app, _ := AppFrom(r.Context())
	sig, err := s.deps.AuthKeys.Sign(r.Context(), app.ID, caller(r), r.PathValue("id"), in)
	return get(w, map[string]string{"signature": sig}, apiError(err))
}
