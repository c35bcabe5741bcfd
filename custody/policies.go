package custody

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cachet-custody/cachet/policy"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/wallet"
)

// PolicyEngine is what custody asks of the policy engine.
//
// Evaluate decides before the key is used. Commit decides again inside the
// write transaction that releases the signature, with that transaction's
// view of condition sets and aggregation sums, and records the request
// toward the aggregations it counts for. The store's single writer
// serializes these transactions, so concurrent requests cannot together
// exceed a limit each of them checked alone.
type PolicyEngine interface {
	Exist(ctx context.Context, appID string, ids []string) error
	Evaluate(ctx context.Context, in policy.Input) (policy.Decision, error)
	Commit(ctx context.Context, tx *store.Tx, in policy.Input) (policy.Decision, error)
}

// storedPolicies is the PolicyEngine over the store's policies, condition
// sets and aggregations. Compiled policies and aggregations are cached by id
// and version.
type storedPolicies struct {
	s    *Service
	mu   sync.Mutex
	pols map[string]compiledPolicy
	aggs map[string]*policy.CompiledAggregation
	sets map[string]indexedSet
	// legacyGone is set once aggregation_events_legacy was read empty from
	// committed data: nothing writes to it, so it stays empty and Sum stops
	// asking it.
	legacyGone atomic.Bool
}

// indexedSet is a condition set's items, indexed once per version: every
// change of the items bumps the version.
type indexedSet struct {
	version int64
	set     *policy.ConditionSet
}

type compiledPolicy struct {
	version int64
	c       *policy.Compiled
}

func newStoredPolicies(s *Service) *storedPolicies {
	return &storedPolicies{s: s, pols: map[string]compiledPolicy{}, aggs: map[string]*policy.CompiledAggregation{}, sets: map[string]indexedSet{}}
}

// Exist checks each id names a live policy of app.
func (e *storedPolicies) Exist(ctx context.Context, app string, ids []string) error {
	for _, id := range ids {
		if _, err := loadPolicy(ctx, e.s.st, app, id); err != nil {
			return fmt.Errorf("%w: %q", policy.ErrNotFound, id)
		}
	}
	return nil
}

// compiled returns the compiled form of a live policy, compiling a new
// version once.
func (e *storedPolicies) compiled(ctx context.Context, q querier, app, id string) (*policy.Compiled, error) {
	var version int64
	err := q.QueryRowContext(ctx, `SELECT version FROM policies WHERE id = ? AND app_id = ? AND deleted_at IS NULL`, id, app).Scan(&version)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", id, err)
	}
	e.mu.Lock()
	cp, ok := e.pols[id]
	e.mu.Unlock()
	if ok && cp.version == version {
		return cp.c, nil
	}
	p, err := loadPolicy(ctx, q, app, id)
	if err != nil {
		return nil, err
	}
	c, err := policy.Compile(p)
	if err != nil {
		return nil, fmt.Errorf("compile policy %s: %w", id, err)
	}
	// Only committed data fills the cache (see resolvers.committed).
	if _, committed := q.(*store.Store); committed {
		e.mu.Lock()
		e.pols[id] = compiledPolicy{version, c}
		e.mu.Unlock()
	}
	return c, nil
}

// resolvers are an evaluation's view of condition sets and aggregations,
// through one querier (the reader pool, or the releasing transaction).
type resolvers struct {
	ctx context.Context
	e   *storedPolicies
	q   querier
	app string
	// committed is true when q reads committed data (the reader pool).
	// Only then may what it reads fill the caches: a version read inside a
	// write transaction can be rolled back and reused for other content.
	committed bool
	// live holds the aggregations found live through q during this one
	// evaluation (and, in the writer, the recording of its contributions
	// that follows in the same transaction): each is asked once.
	live map[string]*policy.CompiledAggregation
}

func (r resolvers) ConditionSet(id string) (*policy.ConditionSet, error) {
	var version int64
	err := r.q.QueryRowContext(r.ctx, `SELECT version FROM condition_sets WHERE id = ? AND app_id = ? AND deleted_at IS NULL`, id, r.app).Scan(&version)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("condition set %s does not exist", id)
	}
	if err != nil {
		return nil, err
	}
	r.e.mu.Lock()
	cached, ok := r.e.sets[id]
	r.e.mu.Unlock()
	if ok && cached.version == version {
		return cached.set, nil
	}
	set, err := r.loadSet(id)
	if err != nil {
		return nil, err
	}
	if r.committed {
		r.e.mu.Lock()
		r.e.sets[id] = indexedSet{version, set}
		r.e.mu.Unlock()
	}
	return set, nil
}

func (r resolvers) loadSet(id string) (*policy.ConditionSet, error) {
	rows, err := r.q.QueryContext(r.ctx, `SELECT value FROM condition_set_items WHERE set_id = ?`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var items []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		items = append(items, v)
	}
	return policy.NewConditionSet(items), rows.Err()
}

func (r resolvers) Aggregation(id string) (*policy.CompiledAggregation, error) {
	if a, ok := r.live[id]; ok {
		return a, nil
	}
	a, err := r.aggregation(id)
	if err == nil && r.live != nil {
		r.live[id] = a
	}
	return a, err
}

func (r resolvers) aggregation(id string) (*policy.CompiledAggregation, error) {
	r.e.mu.Lock()
	a, ok := r.e.aggs[id]
	r.e.mu.Unlock()
	// Aggregations never change once created; a deleted one is gone.
	var live int
	if err := r.q.QueryRowContext(r.ctx, `SELECT COUNT(*) FROM aggregations WHERE id = ? AND app_id = ? AND deleted_at IS NULL`, id, r.app).Scan(&live); err != nil {
		return nil, err
	}
	if live == 0 {
		return nil, fmt.Errorf("aggregation %s does not exist", id)
	}
	if ok {
		return a, nil
	}
	def, err := loadAggregation(r.ctx, r.q, r.app, id)
	if err != nil {
		return nil, err
	}
	if a, err = policy.CompileAggregation(def); err != nil {
		return nil, err
	}
	if r.committed {
		r.e.mu.Lock()
		r.e.aggs[id] = a
		r.e.mu.Unlock()
	}
	return a, nil
}

// Sum is the total of a key's contributions with at in (Since, Until]: two
// index lookups whatever the number of contributions (see migration 0009).
// The running totals are exact: they are written in the single writer's
// transaction, each from the one before it, in (at, rowid) order.
//
// With next the key's first contribution after Since and last its last at
// or before Until, the total is last.running − (next.running − next.amount):
// next.running − next.amount is the running total just before next, that
// is at Since, whether or not the rows before next are still kept (the
// purge drops old ones). No next, or a next after Until, is an empty window.
func (r resolvers) Sum(q policy.SumQuery) (*big.Int, error) {
	const key = `aggregation_id = ? AND wallet_id = ? AND group_key = ?`
	var last sql.NullString
	var nextRunning, nextAmount string
	var nextAt int64
	a, w, g := q.AggregationID, q.WalletID, q.GroupKey
	until := q.Until.UnixMilli()
	err := r.q.QueryRowContext(r.ctx, `SELECT
		(SELECT running FROM aggregation_events WHERE `+key+` AND at <= ? ORDER BY at DESC, rowid DESC LIMIT 1),
		running, amount, at
		FROM aggregation_events WHERE `+key+` AND at > ? ORDER BY at, rowid LIMIT 1`,
		a, w, g, until, a, w, g, q.Since.UnixMilli()).Scan(&last, &nextRunning, &nextAmount, &nextAt)
	sum := new(big.Int)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, err
	case nextAt > until:
	case !last.Valid:
		// next is at or before Until, so last exists: a store that says
		// otherwise is not trusted with a limit.
		return nil, fmt.Errorf("aggregation %s: running totals are inconsistent", a)
	default:
		l, ok1 := sum.SetString(last.String, 10)
		nr, ok2 := new(big.Int).SetString(nextRunning, 10)
		na, ok3 := new(big.Int).SetString(nextAmount, 10)
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("aggregation %s holds a malformed amount", a)
		}
		sum = l.Sub(l, nr.Sub(nr, na))
	}
	if r.e != nil && r.e.legacyGone.Load() {
		return sum, nil
	}
	legacy, err := r.legacySum(q)
	if err != nil {
		return nil, err
	}
	return sum.Add(sum, legacy), nil
}

// legacySum sums contributions recorded before running totals existed, one
// by one; the purge empties their table within the longest window.
func (r resolvers) legacySum(q policy.SumQuery) (*big.Int, error) {
	if r.committed && r.e != nil {
		var left bool
		if err := r.q.QueryRowContext(r.ctx, `SELECT EXISTS (SELECT 1 FROM aggregation_events_legacy)`).Scan(&left); err != nil {
			return nil, err
		}
		if !left {
			r.e.legacyGone.Store(true)
			return new(big.Int), nil
		}
	}
	rows, err := r.q.QueryContext(r.ctx, `SELECT amount FROM aggregation_events_legacy
		WHERE aggregation_id = ? AND wallet_id = ? AND group_key = ? AND at > ? AND at <= ?`,
		q.AggregationID, q.WalletID, q.GroupKey, q.Since.UnixMilli(), q.Until.UnixMilli())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	sum := new(big.Int)
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		v, ok := new(big.Int).SetString(a, 10)
		if !ok {
			return nil, fmt.Errorf("aggregation %s holds a malformed amount", q.AggregationID)
		}
		sum.Add(sum, v)
	}
	return sum, rows.Err()
}

// addContribution records amount for a key at now, with its running total.
// It runs in the writer's transaction, so the row before it is final. The
// time never goes back within a key (a clock stepped back records at the
// key's last time), so that time order and running order agree.
func addContribution(tx *store.Tx, aggID, walletID, group string, amount *big.Int, now int64) error {
	running, at := new(big.Int), now
	var prev string
	var prevAt int64
	err := tx.QueryRow(`SELECT running, at FROM aggregation_events WHERE aggregation_id = ? AND wallet_id = ? AND group_key = ?
		ORDER BY at DESC, rowid DESC LIMIT 1`, aggID, walletID, group).Scan(&prev, &prevAt)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return err
	default:
		if _, ok := running.SetString(prev, 10); !ok {
			return fmt.Errorf("aggregation %s holds a malformed running total", aggID)
		}
		at = max(at, prevAt)
	}
	running.Add(running, amount)
	_, err = tx.Exec(`INSERT INTO aggregation_events(aggregation_id, wallet_id, group_key, amount, running, at) VALUES (?, ?, ?, ?, ?, ?)`,
		aggID, walletID, group, amount.String(), running.String(), at)
	return err
}

func (e *storedPolicies) env(ctx context.Context, q querier, in policy.Input) policy.Env {
	_, committed := q.(*store.Store)
	r := resolvers{ctx: ctx, e: e, q: q, app: in.AppID, committed: committed}
	if len(in.PolicyIDs) > 0 {
		r.live = map[string]*policy.CompiledAggregation{}
	}
	return policy.Env{Now: e.s.now(), WalletID: in.WalletID, Sets: r, Aggregates: r}
}

// decide evaluates every policy that applies; the first that denies decides.
// A policy that no longer exists denies: fail closed.
func (e *storedPolicies) decide(ctx context.Context, q querier, in policy.Input) (policy.Decision, []*policy.Compiled, policy.Env) {
	env := e.env(ctx, q, in)
	if len(in.PolicyIDs) == 0 {
		return policy.Decision{Allowed: true, Reason: "no policy applies"}, nil, env
	}
	var cs []*policy.Compiled
	var last policy.Decision
	for _, id := range in.PolicyIDs {
		c, err := e.compiled(ctx, q, in.AppID, id)
		if err != nil {
			return policy.Decision{Reason: fmt.Sprintf("policy %s cannot be evaluated: %v", id, err)}, nil, env
		}
		last = c.Evaluate(in.Request, env)
		if !last.Allowed {
			return last, nil, env
		}
		cs = append(cs, c)
	}
	return last, cs, env
}

func (e *storedPolicies) Evaluate(ctx context.Context, in policy.Input) (policy.Decision, error) {
	d, _, _ := e.decide(ctx, e.s.st, in)
	return d, nil
}

func (e *storedPolicies) Commit(ctx context.Context, tx *store.Tx, in policy.Input) (policy.Decision, error) {
	d, cs, env := e.decide(ctx, txq{tx}, in)
	if !d.Allowed {
		return d, nil
	}
	seen := map[string]bool{}
	for _, c := range cs {
		for _, id := range c.AggregationIDs() {
			if seen[id] {
				continue
			}
			seen[id] = true
			agg, err := env.Aggregates.Aggregation(id)
			if err != nil {
				return policy.Decision{Reason: fmt.Sprintf("aggregation %s cannot be updated: %v", id, err)}, nil
			}
			amount, group, counts, err := agg.Contribution(in.Request, env)
			if err != nil {
				return policy.Decision{Reason: fmt.Sprintf("aggregation %s cannot be updated: %v", id, err)}, nil
			}
			if !counts {
				continue
			}
			if err := addContribution(tx, id, in.WalletID, group, amount, env.Now.UnixMilli()); err != nil {
				return policy.Decision{}, err
			}
		}
	}
	return d, nil
}

// policyRefs lets policy validation check that the condition sets and
// aggregations a policy names exist for the app.
type policyRefs struct {
	ctx context.Context
	q   querier
	app string
}

func (r policyRefs) ConditionSetExists(id string) bool {
	_, err := loadConditionSet(r.ctx, r.q, r.app, id)
	return err == nil
}

func (r policyRefs) AggregationExists(id string) bool {
	var n int
	r.q.QueryRowContext(r.ctx, `SELECT COUNT(*) FROM aggregations WHERE id = ? AND app_id = ? AND deleted_at IS NULL`, id, r.app).Scan(&n)
	return n > 0
}

// validationError maps the policy package's refusals to Invalid, with the
// path of the bad element.
func validationError(err error) error {
	var ve *policy.ValidationError
	if errors.As(err, &ve) {
		return errorf(Invalid, "%s", err.Error())
	}
	return err
}

func ownerOf(o *policy.Owner) *Owner {
	if o == nil {
		return nil
	}
	return &Owner{PublicKey: o.PublicKey, UserID: o.UserID}
}

func loadPolicy(ctx context.Context, q querier, app, id string) (*policy.Policy, error) {
	var p policy.Policy
	var owner sql.NullString
	var rules string
	err := q.QueryRowContext(ctx, `SELECT id, name, chain_type, owner_id, rules, created_at FROM policies WHERE id = ? AND app_id = ? AND deleted_at IS NULL`,
		id, app).Scan(&p.ID, &p.Name, &p.ChainType, &owner, &rules, &p.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(NotFound, "Policy %q not found.", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read policy %s: %w", id, err)
	}
	p.Version = "1.0"
	if owner.Valid {
		p.OwnerID = &owner.String
	}
	if err := json.Unmarshal([]byte(rules), &p.Rules); err != nil {
		return nil, fmt.Errorf("policy %s rules: %w", id, err)
	}
	return &p, nil
}

func writePolicy(tx *store.Tx, p *policy.Policy, bump bool) error {
	rules, err := json.Marshal(p.Rules)
	if err != nil {
		return err
	}
	q := `UPDATE policies SET name = ?, owner_id = ?, rules = ? WHERE id = ?`
	if bump {
		q = `UPDATE policies SET name = ?, owner_id = ?, rules = ?, version = version + 1 WHERE id = ?`
	}
	_, err = tx.Exec(q, p.Name, p.OwnerID, string(rules), p.ID)
	return err
}

// CreatePolicy is POST /v1/policies: the app's credentials alone.
func (s *Service) CreatePolicy(ctx context.Context, c Call, body []byte) (json.RawMessage, error) {
	p, err := policy.ParsePolicy(body)
	if err != nil {
		return nil, validationError(err)
	}
	if out, ok, err := s.Replayed(ctx, c); err != nil || ok {
		return out, err
	}
	p.ID = newID()
	for i := range p.Rules {
		p.Rules[i].ID = newID()
	}
	return s.commit(ctx, action{call: c, name: "policy.create", target: p.ID,
		response: func(tx *store.Tx) (any, error) {
			if err := policy.Validate(p, policyRefs{ctx, txq{tx}, c.App}); err != nil {
				return nil, validationError(err)
			}
			owner, err := s.resolveOwner(ctx, tx, c.App, ownerOf(p.Owner), p.OwnerID)
			if err != nil {
				return nil, err
			}
			rules, _ := json.Marshal(p.Rules)
			if _, err := tx.Exec(`INSERT INTO policies(id, app_id, name, chain_type, owner_id, rules, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
				p.ID, c.App, p.Name, p.ChainType, nullable(owner), string(rules), s.nowMS()); err != nil {
				return nil, fmt.Errorf("insert policy: %w", err)
			}
			return loadPolicy(ctx, txq{tx}, c.App, p.ID)
		}})
}

// GetPolicy is GET /v1/policies/{id}.
func (s *Service) GetPolicy(ctx context.Context, app, id string) (*policy.Policy, error) {
	return loadPolicy(ctx, s.st, app, id)
}

// ownedPolicy loads a policy and checks its owner approved the request.
// Called first with the reader pool (verifying), then in the write
// transaction (checking the approval is unchanged); see authorizeOwner.
func (s *Service) ownedPolicy(ctx context.Context, q querier, c Call, id string) (*policy.Policy, error) {
	p, err := loadPolicy(ctx, q, c.App, id)
	if err != nil {
		return nil, err
	}
	owner := ""
	if p.OwnerID != nil {
		owner = *p.OwnerID
	}
	return p, s.authorizeOwner(ctx, q, c.App, owner, c.Signed, "policy "+id)
}

// changePolicy applies change to a policy under its owner's approval,
// validates the result and stores it as a new version.
func (s *Service) changePolicy(ctx context.Context, c Call, id, name string, detail map[string]any, change func(tx *store.Tx, p *policy.Policy) (any, error)) (json.RawMessage, error) {
	// The owner's signatures are verified here, outside the writer.
	if _, err := s.ownedPolicy(ctx, s.st, c, id); err != nil {
		return nil, err
	}
	return s.commit(ctx, action{call: c, name: name, target: id, replay: true, detail: detail,
		response: func(tx *store.Tx) (any, error) {
			p, err := s.ownedPolicy(ctx, txq{tx}, c, id)
			if err != nil {
				return nil, err
			}
			out, err := change(tx, p)
			if err != nil {
				return nil, err
			}
			if err := policy.Validate(p, policyRefs{ctx, txq{tx}, c.App}); err != nil {
				return nil, validationError(err)
			}
			if err := writePolicy(tx, p, true); err != nil {
				return nil, err
			}
			if out == nil {
				return loadPolicy(ctx, txq{tx}, c.App, id)
			}
			return out, nil
		}})
}

// UpdatePolicy is PATCH /v1/policies/{id}: name, rules (replaced, with new
// ids) and owner, under the policy owner's threshold.
func (s *Service) UpdatePolicy(ctx context.Context, c Call, id string, body []byte) (json.RawMessage, error) {
	u, err := policy.ParsePolicyUpdate(body)
	if err != nil {
		return nil, validationError(err)
	}
	return s.changePolicy(ctx, c, id, "policy.update", nil, func(tx *store.Tx, p *policy.Policy) (any, error) {
		if u.Name != nil {
			p.Name = *u.Name
		}
		if u.Rules != nil {
			p.Rules = *u.Rules
			for i := range p.Rules {
				p.Rules[i].ID = newID()
			}
		}
		if u.OwnerSet {
			owner, err := s.resolveOwner(ctx, tx, c.App, ownerOf(u.Owner), u.OwnerID)
			if err != nil {
				return nil, err
			}
			p.OwnerID = nil
			if owner != "" {
				p.OwnerID = &owner
			}
		}
		return nil, nil
	})
}

// DeletePolicy is DELETE /v1/policies/{id}: its owner's threshold, and only
// when no wallet uses it.
func (s *Service) DeletePolicy(ctx context.Context, c Call, id string) (json.RawMessage, error) {
	// The owner's signatures are verified here, outside the writer.
	if _, err := s.ownedPolicy(ctx, s.st, c, id); err != nil {
		return nil, err
	}
	return s.commit(ctx, action{call: c, name: "policy.delete", target: id, replay: true,
		response: func(tx *store.Tx) (any, error) {
			if _, err := s.ownedPolicy(ctx, txq{tx}, c, id); err != nil {
				return nil, err
			}
			// CROSS JOIN keeps SQLite from scanning every wallet.
			wallets, err := queryIDs(ctx, txq{tx}, `SELECT w.id FROM wallet_policies wp CROSS JOIN wallets w
				WHERE wp.policy_id = ? AND w.id = wp.wallet_id AND w.archived_at IS NULL ORDER BY w.rowid`, id)
			if err != nil {
				return nil, err
			}
			if len(wallets) > 0 {
				return nil, errorf(Conflict, "Policy %s is still used by wallet(s) %s; change those first.", id, strings.Join(wallets, ", "))
			}
			if _, err := tx.Exec(`UPDATE policies SET deleted_at = ?, version = version + 1 WHERE id = ?`, s.nowMS(), id); err != nil {
				return nil, err
			}
			return map[string]bool{"success": true}, nil
		}})
}

// AddRule is POST /v1/policies/{id}/rules.
func (s *Service) AddRule(ctx context.Context, c Call, id string, body []byte) (json.RawMessage, error) {
	r, err := policy.ParseRule(body)
	if err != nil {
		return nil, validationError(err)
	}
	r.ID = newID()
	return s.changePolicy(ctx, c, id, "policy.rule.add", map[string]any{"rule_id": r.ID}, func(tx *store.Tx, p *policy.Policy) (any, error) {
		p.Rules = append(p.Rules, *r)
		return r, nil
	})
}

// GetRule is GET /v1/policies/{id}/rules/{rule_id}.
func (s *Service) GetRule(ctx context.Context, app, id, ruleID string) (*policy.Rule, error) {
	p, err := loadPolicy(ctx, s.st, app, id)
	if err != nil {
		return nil, err
	}
	for i := range p.Rules {
		if p.Rules[i].ID == ruleID {
			return &p.Rules[i], nil
		}
	}
	return nil, errorf(NotFound, "Rule %q of policy %s not found.", ruleID, id)
}

// UpdateRule is PATCH /v1/policies/{id}/rules/{rule_id}: the rule is
// replaced and keeps its id.
func (s *Service) UpdateRule(ctx context.Context, c Call, id, ruleID string, body []byte) (json.RawMessage, error) {
	r, err := policy.ParseRule(body)
	if err != nil {
		return nil, validationError(err)
	}
	r.ID = ruleID
	return s.changePolicy(ctx, c, id, "policy.rule.update", map[string]any{"rule_id": ruleID}, func(tx *store.Tx, p *policy.Policy) (any, error) {
		for i := range p.Rules {
			if p.Rules[i].ID == ruleID {
				p.Rules[i] = *r
				return r, nil
			}
		}
		return nil, errorf(NotFound, "Rule %q of policy %s not found.", ruleID, id)
	})
}

// DeleteRule is DELETE /v1/policies/{id}/rules/{rule_id}.
func (s *Service) DeleteRule(ctx context.Context, c Call, id, ruleID string) (json.RawMessage, error) {
	return s.changePolicy(ctx, c, id, "policy.rule.delete", map[string]any{"rule_id": ruleID}, func(tx *store.Tx, p *policy.Policy) (any, error) {
		for i := range p.Rules {
			if p.Rules[i].ID == ruleID {
				p.Rules = append(p.Rules[:i], p.Rules[i+1:]...)
				return map[string]bool{"success": true}, nil
			}
		}
		return nil, errorf(NotFound, "Rule %q of policy %s not found.", ruleID, id)
	})
}

func loadAggregation(ctx context.Context, q querier, app, id string) (*policy.Aggregation, error) {
	var def string
	err := q.QueryRowContext(ctx, `SELECT definition FROM aggregations WHERE id = ? AND app_id = ? AND deleted_at IS NULL`, id, app).Scan(&def)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(NotFound, "Aggregation %q not found.", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read aggregation %s: %w", id, err)
	}
	var a policy.Aggregation
	if err := json.Unmarshal([]byte(def), &a); err != nil {
		return nil, fmt.Errorf("aggregation %s: %w", id, err)
	}
	return &a, nil
}

// CreateAggregation is POST /v1/aggregations: the app's credentials alone.
// Aggregations never change; delete one and make another.
func (s *Service) CreateAggregation(ctx context.Context, c Call, body []byte) (json.RawMessage, error) {
	a, err := policy.ParseAggregation(body)
	if err != nil {
		return nil, validationError(err)
	}
	if out, ok, err := s.Replayed(ctx, c); err != nil || ok {
		return out, err
	}
	a.ID = newID()
	return s.commit(ctx, action{call: c, name: "aggregation.create", target: a.ID,
		response: func(tx *store.Tx) (any, error) {
			if err := policy.ValidateAggregation(a, policyRefs{ctx, txq{tx}, c.App}); err != nil {
				return nil, validationError(err)
			}
			owner, err := s.resolveOwner(ctx, tx, c.App, ownerOf(a.Owner), a.OwnerID)
			if err != nil {
				return nil, err
			}
			a.OwnerID = nil
			if owner != "" {
				a.OwnerID = &owner
			}
			a.CreatedAt = s.nowMS()
			def, _ := json.Marshal(a)
			if _, err := tx.Exec(`INSERT INTO aggregations(id, app_id, name, definition, owner_id, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
				a.ID, c.App, a.Name, string(def), nullable(owner), a.CreatedAt); err != nil {
				return nil, fmt.Errorf("insert aggregation: %w", err)
			}
			return a, nil
		}})
}

// GetAggregation is GET /v1/aggregations/{id}.
func (s *Service) GetAggregation(ctx context.Context, app, id string) (*policy.Aggregation, error) {
	return loadAggregation(ctx, s.st, app, id)
}

// DeleteAggregation is DELETE /v1/aggregations/{id}: its owner's threshold,
// and only when no live policy refers to it.
func (s *Service) DeleteAggregation(ctx context.Context, c Call, id string) (json.RawMessage, error) {
	// The owner's signatures are verified here, outside the writer.
	if a, err := loadAggregation(ctx, s.st, c.App, id); err != nil {
		return nil, err
	} else if a.OwnerID != nil {
		if err := s.authorizeOwner(ctx, s.st, c.App, *a.OwnerID, c.Signed, "aggregation "+id); err != nil {
			return nil, err
		}
	}
	return s.commit(ctx, action{call: c, name: "aggregation.delete", target: id, replay: true,
		response: func(tx *store.Tx) (any, error) {
			a, err := loadAggregation(ctx, txq{tx}, c.App, id)
			if err != nil {
				return nil, err
			}
			owner := ""
			if a.OwnerID != nil {
				owner = *a.OwnerID
			}
			if err := s.authorizeOwner(ctx, txq{tx}, c.App, owner, c.Signed, "aggregation "+id); err != nil {
				return nil, err
			}
			var n int
			if err := tx.QueryRow(`SELECT COUNT(*) FROM policies WHERE app_id = ? AND deleted_at IS NULL AND instr(rules, ?) > 0`,
				c.App, `"aggregation.`+id+`"`).Scan(&n); err != nil {
				return nil, err
			}
			if n > 0 {
				return nil, errorf(Conflict, "Aggregation %s is still referenced by %d policy(ies).", id, n)
			}
			if _, err := tx.Exec(`UPDATE aggregations SET deleted_at = ? WHERE id = ?`, s.nowMS(), id); err != nil {
				return nil, err
			}
			return map[string]bool{"success": true}, nil
		}})
}

// EvaluatePolicy is POST /v1/policies/{id}/evaluate: the decision and trace
// for an RPC body, without signing or recording anything. A "wallet_id" in
// the body gives the wallet whose aggregation sums to use.
func (s *Service) EvaluatePolicy(ctx context.Context, app, id string, body []byte) (policy.Decision, error) {
	if _, err := loadPolicy(ctx, s.st, app, id); err != nil {
		return policy.Decision{}, err
	}
	req, err := wallet.ParseRPC(body)
	if err != nil {
		return policy.Decision{}, inputError(err)
	}
	// The wallet whose sums are used must be one of the app's: another
	// app's wallet id (or none at all) would be explained as if it were.
	if req.WalletID != "" {
		if _, err := loadStoredWallet(ctx, s.st, app, req.WalletID); err != nil {
			var ce *Error
			if errors.As(err, &ce) && ce.Kind == NotFound {
				return policy.Decision{}, errorf(Invalid, "wallet_id: %s", ce.Message)
			}
			return policy.Decision{}, err
		}
	}
	e, ok := s.policy.(*storedPolicies)
	if !ok {
		return policy.Decision{}, errorf(Invalid, "This Cachet's policy engine cannot explain decisions.")
	}
	d, _, _ := e.decide(ctx, s.st, policy.Input{AppID: app, WalletID: req.WalletID, PolicyIDs: []string{id}, Request: req})
	return d, nil
}
