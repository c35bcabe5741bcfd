package daemon

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cachet-custody/cachet/custody"
)

// routePolicyAPI registers policies, their rules, condition sets and
// aggregations.
func (s *Server) routePolicyAPI() {
	s.Handle("POST /v1/policies", AccessApp, s.change(s.createPolicy))
	s.Handle("GET /v1/policies/{id}", AccessApp, s.getPolicy)
	s.Handle("PATCH /v1/policies/{id}", AccessApp, s.change(s.updatePolicy))
	s.Handle("DELETE /v1/policies/{id}", AccessApp, s.change(s.deletePolicy))
	s.Handle("POST /v1/policies/{id}/evaluate", AccessApp, s.evaluatePolicy)
	s.Handle("POST /v1/policies/{id}/rules", AccessApp, s.change(s.addRule))
	s.Handle("GET /v1/policies/{id}/rules/{rule}", AccessApp, s.getRule)
	s.Handle("PATCH /v1/policies/{id}/rules/{rule}", AccessApp, s.change(s.updateRule))
	s.Handle("DELETE /v1/policies/{id}/rules/{rule}", AccessApp, s.change(s.deleteRule))
	s.Handle("POST /v1/aggregations", AccessApp, s.change(s.createAggregation))
	s.Handle("GET /v1/aggregations/{id}", AccessApp, s.getAggregation)
	s.Handle("DELETE /v1/aggregations/{id}", AccessApp, s.change(s.deleteAggregation))
	s.Handle("POST /v1/condition_sets", AccessApp, s.change(s.createConditionSet))
	s.Handle("GET /v1/condition_sets/{id}", AccessApp, s.getConditionSet)
	s.Handle("PATCH /v1/condition_sets/{id}", AccessApp, s.change(s.updateConditionSet))
	s.Handle("DELETE /v1/condition_sets/{id}", AccessApp, s.change(s.deleteConditionSet))
	s.Handle("POST /v1/condition_sets/{id}/condition_set_items", AccessApp, s.change(s.appendItems))
	s.Handle("PUT /v1/condition_sets/{id}/condition_set_items", AccessApp, s.change(s.replaceItems))
	s.Handle("GET /v1/condition_sets/{id}/condition_set_items", AccessApp, s.listItems)
	s.Handle("DELETE /v1/condition_sets/{id}/condition_set_items/{item}", AccessApp, s.change(s.deleteItem))
}

func (s *Server) createConditionSet(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	var in custody.ConditionSetInput
	if err := decodeStrict(body, &in); err != nil {
		return nil, err
	}
	return s.deps.Custody.CreateConditionSet(r.Context(), c, in)
}

func (s *Server) getConditionSet(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	cs, err := s.deps.Custody.GetConditionSet(r.Context(), app.ID, r.PathValue("id"))
	return get(w, cs, err)
}

func (s *Server) updateConditionSet(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	var in custody.ConditionSetInput
	if err := decodeStrict(body, &in); err != nil {
		return nil, err
	}
	return s.deps.Custody.UpdateConditionSet(r.Context(), c, r.PathValue("id"), in)
}

func (s *Server) deleteConditionSet(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	if err := noMembers(body); err != nil {
		return nil, err
	}
	return s.deps.Custody.DeleteConditionSet(r.Context(), c, r.PathValue("id"))
}

func (s *Server) appendItems(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	vals, err := custody.ParseItems(body)
	if err != nil {
		return nil, err
	}
	return s.deps.Custody.AddItems(r.Context(), c, r.PathValue("id"), vals, false)
}

func (s *Server) replaceItems(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	vals, err := custody.ParseItems(body)
	if err != nil {
		return nil, err
	}
	return s.deps.Custody.AddItems(r.Context(), c, r.PathValue("id"), vals, true)
}

func (s *Server) deleteItem(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	if err := noMembers(body); err != nil {
		return nil, err
	}
	return s.deps.Custody.DeleteItem(r.Context(), c, r.PathValue("id"), r.PathValue("item"))
}

func (s *Server) listItems(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	q, limit, err := listQuery(r)
	if err != nil {
		return err
	}
	page, err := s.deps.Custody.ListItems(r.Context(), app.ID, r.PathValue("id"), q.Get("cursor"), limit)
	if err != nil {
		return apiError(err)
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// listQuery reads the query of a paginated list: its parameters, each
// given at most once (which of two cursors or limits counts would otherwise
// be Go's choice, the first, not the caller's), and limit, 0 if absent.
func listQuery(r *http.Request) (url.Values, int, error) {
	q := r.URL.Query()
	for _, name := range []string{"limit", "cursor", "chain_type"} {
		if n := len(q[name]); n > 1 {
			return nil, 0, badRequest(fmt.Sprintf("%s: given %d times; give it once.", name, n))
		}
	}
	l := q.Get("limit")
	if l == "" {
		return q, 0, nil
	}
	// Digits only: strconv.Atoi also takes "+5" and "-0".
	n, err := strconv.Atoi(l)
	if strings.Trim(l, "0123456789") != "" || err != nil || n < 1 || n > 100 {
		return nil, 0, badRequest("limit: an integer from 1 to 100.")
	}
	return q, n, nil
}

func (s *Server) createPolicy(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.CreatePolicy(r.Context(), c, body)
}

func (s *Server) updatePolicy(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.UpdatePolicy(r.Context(), c, r.PathValue("id"), body)
}

func (s *Server) deletePolicy(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	if err := noMembers(body); err != nil {
		return nil, err
	}
	return s.deps.Custody.DeletePolicy(r.Context(), c, r.PathValue("id"))
}

func (s *Server) addRule(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.AddRule(r.Context(), c, r.PathValue("id"), body)
}

func (s *Server) updateRule(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.UpdateRule(r.Context(), c, r.PathValue("id"), r.PathValue("rule"), body)
}

func (s *Server) deleteRule(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	if err := noMembers(body); err != nil {
		return nil, err
	}
	return s.deps.Custody.DeleteRule(r.Context(), c, r.PathValue("id"), r.PathValue("rule"))
}

func (s *Server) createAggregation(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	return s.deps.Custody.CreateAggregation(r.Context(), c, body)
}

func (s *Server) deleteAggregation(r *http.Request, c custody.Call, body []byte) ([]byte, error) {
	if err := noMembers(body); err != nil {
		return nil, err
	}
	return s.deps.Custody.DeleteAggregation(r.Context(), c, r.PathValue("id"))
}

// get writes what a read returns, mapping its error once.
func get[T any](w http.ResponseWriter, v T, err error) error {
	if err != nil {
		return apiError(err)
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	p, err := s.deps.Custody.GetPolicy(r.Context(), app.ID, r.PathValue("id"))
	return get(w, p, err)
}

func (s *Server) getRule(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	rule, err := s.deps.Custody.GetRule(r.Context(), app.ID, r.PathValue("id"), r.PathValue("rule"))
	return get(w, rule, err)
}

func (s *Server) getAggregation(w http.ResponseWriter, r *http.Request) error {
	app, _ := AppFrom(r.Context())
	a, err := s.deps.Custody.GetAggregation(r.Context(), app.ID, r.PathValue("id"))
	return get(w, a, err)
}

// evaluatePolicy is the explain call: the decision and trace for an RPC
// body, with nothing signed or recorded.
func (s *Server) evaluatePolicy(w http.ResponseWriter, r *http.Request) error {
	_, body, err := s.call(r)
	if err != nil {
		return err
	}
	app, _ := AppFrom(r.Context())
	d, err := s.deps.Custody.EvaluatePolicy(r.Context(), app.ID, r.PathValue("id"), body)
	return get(w, d, err)
}
