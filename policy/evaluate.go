package policy

import (
	"errors"
	"fmt"
	"math/big"
	"time"
	"unicode/utf8"

	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/wallet"
)

// Env is what an evaluation needs besides the request.
type Env struct {
	// Now is system.current_unix_timestamp and the end of aggregation
	// windows. The zero time makes conditions that need it fail closed.
	Now time.Time
	// WalletID is the wallet whose aggregation sums are read.
	WalletID string
	// Sets resolves in_condition_set values; nil fails them closed.
	Sets SetResolver
	// Aggregates resolves aggregation references; nil fails them closed.
	Aggregates AggregateResolver
}

// SetResolver returns a condition set's items.
type SetResolver interface {
	// ConditionSet returns the set with this id. An error (the set was
	// deleted, or the store failed) makes the condition fail closed; the
	// error text goes into the trace, so it must not carry secrets.
	ConditionSet(id string) (*ConditionSet, error)
}

// AggregateResolver returns aggregations and their recorded sums.
type AggregateResolver interface {
	// Aggregation returns the compiled aggregation with this id. An error
	// makes references to it fail closed.
	Aggregation(id string) (*CompiledAggregation, error)
	// Sum returns the sum of the amounts recorded for q's aggregation,
	// wallet and group key at times in (q.Since, q.Until]: the requests
	// already signed in the window. It must read the amounts in the same
	// serialized step that records this request's contribution, or
	// concurrent requests can each stay under a limit that together they
	// exceed. An error makes the reference fail closed.
	Sum(q SumQuery) (*big.Int, error)
}

// SumQuery names the amounts a reference adds up.
type SumQuery struct {
	AggregationID string
	WalletID      string
	GroupKey      string
	Since, Until  time.Time
}

// DefaultDenyReason is the reason when no rule allows a request.
const DefaultDenyReason = "no rule allows this request"

// Evaluate decides req under the policy: only rules for req.Method (or
// "*") count; a rule matches when all its conditions hold; the first
// matching DENY denies; otherwise the first matching ALLOW allows;
// otherwise the request is denied. Evaluate never fails: whatever cannot be
// evaluated fails closed, and the trace says so. It only reads req and
// env, so it is safe to call concurrently if env's resolvers are.
func (c *Compiled) Evaluate(req *wallet.Request, env Env) Decision {
	if req == nil {
		return Decision{Reason: "no request"}
	}
	d, tr := c.evaluate(req, env)
	d.Trace = tr.appendJSON(make([]byte, 0, c.traceSize))
	return d
}

func (c *Compiled) evaluate(req *wallet.Request, env Env) (Decision, *Trace) {
	e := &evaluation{req: req, env: env}
	tr := Trace{PolicyID: c.id, Method: req.Method, Rules: make([]RuleTrace, 0, len(c.rules))}
	var allow, deny *rule
	denyByError := false
	for _, r := range c.rules {
		if !r.appliesTo(req.Method) {
			tr.RulesForOtherMethods++
			continue
		}
		rt, matched, byError := e.rule(r)
		tr.Rules = append(tr.Rules, rt)
		switch {
		case !matched:
		case r.deny && deny == nil:
			deny, denyByError = r, byError
		case !r.deny && allow == nil:
			allow = r
		}
	}
	var d Decision
	switch {
	case deny != nil:
		d = Decision{RuleID: deny.id, RuleName: deny.name, Reason: fmt.Sprintf("DENY rule %q matched", deny.name)}
		if denyByError {
			d.Reason += " (a condition that could not be evaluated counted as holding)"
		}
	case allow != nil:
		d = Decision{Allowed: true, RuleID: allow.id, RuleName: allow.name, Reason: fmt.Sprintf("ALLOW rule %q matched", allow.name)}
	default:
		d = Decision{Reason: DefaultDenyReason}
	}
	tr.Allowed, tr.RuleID = d.Allowed, d.RuleID
	return d, &tr
}

// evaluation is the state of one Evaluate call: caches so that calldata is
// decoded once per function, and each condition set and aggregation
// resolved once.
type evaluation struct {
	req     *wallet.Request
	env     Env
	decoded []decoded
	sets    map[string]setResult
	refs    map[string]refResult
}

type setResult struct {
	set *ConditionSet
	err error
}

type refResult struct {
	total *big.Int
	err   error
}

// rule evaluates r. byError reports that a DENY rule matched only because
// a condition could not be evaluated.
func (e *evaluation) rule(r *rule) (rt RuleTrace, matched, byError bool) {
	rt = RuleTrace{RuleID: r.id, Name: r.name, Method: r.method, Action: r.action, Applicable: true,
		Conditions: make([]ConditionTrace, len(r.conds))}
	for i, c := range r.conds {
		rt.Conditions[i] = ConditionTrace{FieldSource: c.sourceName, Field: c.fieldName, Operator: c.opName, Value: c.valueJSON}
	}
	if td := e.req.TypedData; td != nil && len(r.specs) > 0 {
		for _, s := range r.specs {
			if !s.matches(td) {
				rt.Applicable = false
				rt.Note = "not applicable: the request's typed data types or primary type differ from the rule's typed_data"
				for i, c := range r.conds {
					if c.typed != nil {
						rt.Conditions[i].Result = ResultNotApplicable
					} else {
						rt.Conditions[i].Result = ResultSkipped
					}
				}
				return rt, false, false
			}
		}
	}
	matched = true
	stop := false
	for i, c := range r.conds {
		ct := &rt.Conditions[i]
		if stop {
			ct.Result = ResultSkipped
			continue
		}
		actual, ok, note, err := e.condition(c)
		ct.Actual, ct.Note = clip.To(actual, maxTraceActualChars), note
		switch {
		case err != nil:
			ct.Result, ct.Error = ResultError, clip.To(err.Error(), 512)
			if r.deny {
				byError = true
			} else {
				matched, stop = false, true
			}
		case !ok:
			ct.Result = ResultFalse
			matched, stop = false, true
		default:
			ct.Result = ResultTrue
		}
	}
	rt.Matched = matched
	if !matched {
		byError = false
	}
	return rt, matched, byError
}

// condition evaluates c: the request's value as text, whether c holds, a
// note for the trace, or an error if it cannot be evaluated.
func (e *evaluation) condition(c *cond) (actual string, ok bool, note string, err error) {
	v, notThis, err := e.value(&c.field)
	if err != nil {
		return "", false, "", err
	}
	if notThis != "" {
		return "", false, notThis, nil
	}
	if c.op == opInSet {
		set, err := e.set(c.operand.setID)
		if err != nil {
			return v.String(), false, "", err
		}
		ok, err = set.has(v)
		return v.String(), ok, "", err
	}
	ok, err = compare(c.op, v, &c.operand)
	return v.String(), ok, "", err
}

// value reads f from the request. notThis is set, with no value, when f is
// calldata of a function other than the one the call is to: the call
// decoded, it is just not that function.
func (e *evaluation) value(f *field) (v val, notThis string, err error) {
	req := e.req
	switch f.src {
	case srcTransaction:
		if req.Tx == nil {
			return val{}, "", errNoTx
		}
		switch f.id {
		case fTo:
			if req.Tx.To == nil {
				return val{}, "", errors.New("the transaction has no to (contract creation)")
			}
			return val{kind: kindAddress, addr: *req.Tx.To}, "", nil
		case fValue:
			n := req.Tx.Value
			if n == nil {
				n = new(big.Int)
			}
			return val{kind: kindNumber, num: n}, "", nil
		case fChainID:
			if req.Tx.ChainID == nil {
				return val{}, "", errors.New("the transaction has no chain_id (and the request no caip2)")
			}
			return val{kind: kindNumber, num: req.Tx.ChainID}, "", nil
		}
	case srcCalldata:
		return e.calldata(f.calldata)
	case srcDomain:
		td := req.TypedData
		if td == nil {
			return val{}, "", errors.New("the request is not typed data")
		}
		switch f.id {
		case fDomainChainID:
			if td.Domain.ChainId == nil {
				return val{}, "", errors.New("the typed data's domain has no chainId")
			}
			return val{kind: kindNumber, num: (*big.Int)(td.Domain.ChainId)}, "", nil
		case fVerifyingContract:
			a, ok := looseAddress(td.Domain.VerifyingContract)
			if !ok {
				return val{}, "", errors.New("the typed data's domain has no verifyingContract")
			}
			return val{kind: kindAddress, addr: a}, "", nil
		}
	case srcTypedMessage:
		td := req.TypedData
		if td == nil {
			return val{}, "", errors.New("the request is not typed data")
		}
		if !f.typed.matches(td) {
			// Only a rule's applicability check should see this.
			return val{}, "", errors.New("the request's typed data types differ from the condition's")
		}
		v, err := typedLeaf(td.Message, f.steps, f.kind)
		return v, "", err
	case src7702:
		if req.Auth == nil {
			return val{}, "", errors.New("the request is not an EIP-7702 authorization")
		}
		return val{kind: kindAddress, addr: req.Auth.Contract}, "", nil
	case srcMessage:
		if req.Method != wallet.MethodPersonalSign {
			return val{}, "", errors.New("the request is not a personal_sign message")
		}
		switch f.id {
		case fContent:
			if !utf8.Valid(req.Message) {
				return val{}, "", errors.New("the message is not valid UTF-8 text")
			}
			return val{kind: kindString, str: string(req.Message)}, "", nil
		case fByteLength:
			return val{kind: kindNumber, num: big.NewInt(int64(len(req.Message)))}, "", nil
		}
	case srcSystem:
		if e.env.Now.IsZero() || e.env.Now.Unix() < 0 {
			return val{}, "", errors.New("no current time")
		}
		return val{kind: kindNumber, num: big.NewInt(e.env.Now.Unix())}, "", nil
	case srcReference:
		// An aggregation sums transactions; any other request (a "*" rule
		// on a raw hash, a permit, a delegation) has no amount it could
		// count, so the reference cannot be evaluated for it and fails
		// closed, rather than comparing the transactions' prior sum and
		// letting the request through uncounted.
		if req.Tx == nil {
			return val{}, "", errNoTx
		}
		total, err := e.reference(f.aggID)
		if err != nil {
			return val{}, "", err
		}
		return val{kind: kindNumber, num: total}, "", nil
	}
	return val{}, "", errors.New("unknown field")
}

// calldata reads a calldata field; see the package comment for the cases.
func (e *evaluation) calldata(p *calldataPath) (val, string, error) {
	tx := e.req.Tx
	if tx == nil {
		return val{}, "", errNoTx
	}
	if len(tx.Data) < 4 {
		return val{}, "", errNoCalldata
	}
	f, ok := p.abi.bySelector[[4]byte(tx.Data[:4])]
	if !ok {
		return val{}, "", errUnknownFn
	}
	if f != p.fn {
		return val{}, "the call is to " + f.name + ", not " + p.fn.name, nil
	}
	values, err := e.decode(f, tx.Data[4:])
	if err != nil {
		return val{}, "", err
	}
	if p.fnOnly {
		return val{kind: kindString, str: p.fn.name}, "", nil
	}
	v, err := p.leafValue(values)
	return v, "", err
}

func (e *evaluation) decode(f *fnInfo, args []byte) ([]any, error) {
	for i := range e.decoded {
		if e.decoded[i].sig == f.sig {
			return e.decoded[i].values, e.decoded[i].err
		}
	}
	values, err := decodeArgs(f, args)
	if err != nil && !errors.Is(err, errTooComplex) && !errors.Is(err, errDecodePanics) && !errors.Is(err, errABILayout) {
		err = fmt.Errorf("%w: %s", errABILayout, clip.To(err.Error(), 200))
	}
	e.decoded = append(e.decoded, decoded{sig: f.sig, values: values, err: err})
	return values, err
}

func (e *evaluation) set(id string) (*ConditionSet, error) {
	if r, ok := e.sets[id]; ok {
		return r.set, r.err
	}
	var r setResult
	switch {
	case e.env.Sets == nil:
		r.err = errors.New("no condition set resolver")
	default:
		r.set, r.err = e.env.Sets.ConditionSet(id)
		if r.err == nil && r.set == nil {
			r.err = errors.New("condition set not found")
		}
		if r.err != nil {
			r.err = fmt.Errorf("condition set %q cannot be resolved: %w", clip.To(id, 64), r.err)
		}
	}
	if e.sets == nil {
		e.sets = map[string]setResult{}
	}
	e.sets[id] = r
	return r.set, r.err
}

// reference returns an aggregation's value for this request: the sum
// recorded in the window for the request's wallet and group, plus this
// request's own amount if it counts toward the aggregation.
func (e *evaluation) reference(id string) (*big.Int, error) {
	if r, ok := e.refs[id]; ok {
		return r.total, r.err
	}
	total, err := e.resolveReference(id)
	if err != nil {
		err = fmt.Errorf("aggregation %q cannot be evaluated: %w", clip.To(id, 64), err)
	}
	if e.refs == nil {
		e.refs = map[string]refResult{}
	}
	e.refs[id] = refResult{total: total, err: err}
	return total, err
}

func (e *evaluation) resolveReference(id string) (*big.Int, error) {
	if e.env.Aggregates == nil {
		return nil, errors.New("no aggregate resolver")
	}
	if e.env.Now.IsZero() {
		return nil, errors.New("no current time")
	}
	agg, err := e.env.Aggregates.Aggregation(id)
	if err != nil {
		return nil, err
	}
	if agg == nil {
		return nil, errors.New("aggregation not found")
	}
	if e.req.Method != agg.method {
		// The request would be compared with a sum it never joins: a
		// limit that never binds on it. Fail closed instead.
		return nil, fmt.Errorf("the aggregation counts %s requests, not %s", agg.method, e.req.Method)
	}
	amount, key, keyErr, counts, err := agg.contribution(e)
	if err == nil {
		err = keyErr
	}
	if err != nil {
		return nil, err
	}
	prior, err := e.env.Aggregates.Sum(SumQuery{
		AggregationID: agg.id, WalletID: e.env.WalletID, GroupKey: key,
		Since: e.env.Now.Add(-agg.window), Until: e.env.Now,
	})
	if err != nil {
		return nil, err
	}
	if prior == nil || prior.Sign() < 0 {
		return nil, errors.New("the recorded sum is missing or negative")
	}
	total := new(big.Int).Set(prior)
	if counts {
		total.Add(total, amount)
	}
	return total, nil
}
