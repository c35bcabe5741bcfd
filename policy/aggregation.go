package policy

import (
	"encoding/json"
	"errors"
	"math/big"
	"time"

	"github.com/cachet-custody/cachet/internal/strictjson"
	"github.com/cachet-custody/cachet/wallet"
)

// aggregationMethods are the methods an aggregation may count.
var aggregationMethods = []string{wallet.MethodSignTransaction, wallet.MethodSendTransaction}

// CompiledAggregation is an aggregation ready for evaluation. It is
// immutable and safe for concurrent use.
type CompiledAggregation struct {
	id      string
	method  string
	window  time.Duration
	metric  *field
	conds   []*cond
	groupBy []*field
}

// ID returns the aggregation's id.
func (a *CompiledAggregation) ID() string { return a.id }

// Window returns the length of the rolling window.
func (a *CompiledAggregation) Window() time.Duration { return a.window }

// ValidateAggregation checks an aggregation: a name of 1 to 255
// characters; method eth_signTransaction or eth_sendTransaction; metric
// {field_source ethereum_transaction or ethereum_calldata, a numeric field,
// function "sum"}; window {type "rolling", seconds 3600..259200}; at most
// 100 conditions over the same field sources and system (no references); at
// most 2 group_by fields of those sources. Errors are ValidationErrors.
func ValidateAggregation(a *Aggregation, refs Refs) error {
	_, err := compileAggregation(a, refs)
	return err
}

// CompileAggregation checks a (without Refs) and prepares it.
func CompileAggregation(a *Aggregation) (*CompiledAggregation, error) {
	return compileAggregation(a, nil)
}

func compileAggregation(a *Aggregation, refs Refs) (*CompiledAggregation, error) {
	var c collector
	if a == nil {
		c.add(verr("", "no aggregation"))
		return nil, c.err()
	}
	k := newCompiler(refs)
	out := &CompiledAggregation{id: a.ID, method: a.Method}
	checkName(&c, "name", a.Name, MaxAggregationName)
	methodOK := checkMethod(&c, "method", a.Method, aggregationMethods)
	method := a.Method
	if !methodOK {
		method = wallet.MethodSignTransaction
	}

	if a.Metric.FieldSource != SourceTransaction && a.Metric.FieldSource != SourceCalldata {
		c.add(verr("metric.field_source", "must be %q or %q", SourceTransaction, SourceCalldata))
	} else if len(a.Metric.ABI) > 0 && a.Metric.FieldSource != SourceCalldata {
		c.add(verr("metric.abi", "is only for ethereum_calldata"))
	} else if f, err := k.field(sourceNames[a.Metric.FieldSource], a.Metric.Field, a.Metric.ABI, nil, "metric"); err != nil {
		c.add(err)
	} else if f.kind != kindNumber {
		c.add(verr("metric.field", "must be a number field to sum (it is %s)", f.kind))
	} else if f.calldata != nil && f.calldata.fnOnly {
		c.add(verr("metric.field", "must name a numeric parameter, not the function"))
	} else {
		out.metric = f
	}
	if a.Metric.Function != AggregationSum {
		c.add(verr("metric.function", "must be %q", AggregationSum))
	}
	if a.Window.Type != AggregationRolling {
		c.add(verr("window.type", "must be %q", AggregationRolling))
	}
	if a.Window.Seconds < MinWindowSeconds || a.Window.Seconds > MaxWindowSeconds {
		c.add(verr("window.seconds", "must be %d to %d", MinWindowSeconds, MaxWindowSeconds))
	}
	out.window = time.Duration(a.Window.Seconds) * time.Second

	if len(a.Conditions) > MaxConditions {
		c.add(verr("conditions", "has more than %d conditions", MaxConditions))
	} else {
		for i := range a.Conditions {
			cd, err := k.condition(&a.Conditions[i], strictjson.IndexPath("conditions", i), method, true)
			if err != nil {
				c.add(err)
				continue
			}
			out.conds = append(out.conds, cd)
		}
	}
	if len(a.GroupBy) > MaxGroupBy {
		c.add(verr("group_by", "has more than %d fields", MaxGroupBy))
	} else {
		for i, g := range a.GroupBy {
			p := strictjson.IndexPath("group_by", i)
			src := sourceNames[g.FieldSource]
			switch {
			case src != srcTransaction && src != srcCalldata:
				c.add(verr(joinPath(p, "field_source"), "must be %q or %q", SourceTransaction, SourceCalldata))
			case len(g.ABI) > 0 && src != srcCalldata:
				c.add(verr(joinPath(p, "abi"), "is only for ethereum_calldata"))
			default:
				f, err := k.field(src, g.Field, g.ABI, nil, p)
				if err != nil {
					c.add(err)
					continue
				}
				out.groupBy = append(out.groupBy, f)
			}
		}
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// Contribution is what req adds to the aggregation: counts is true when
// req's method is the aggregation's, its conditions all hold, and (for a
// calldata metric) the call is to the metric's function; amount is then the
// metric's value. groupKey identifies the group (a JSON array of the
// group_by values as text; "" without group_by).
//
// Record the contribution after the request is signed, in the same
// serialized step as the Sum the evaluation read. err means the
// contribution cannot be determined (a condition or the metric cannot be
// evaluated); such a request was not allowed by any rule that references
// this aggregation, since the same error failed that reference closed.
// env supplies the time and condition sets the conditions may use.
func (a *CompiledAggregation) Contribution(req *wallet.Request, env Env) (amount *big.Int, groupKey string, counts bool, err error) {
	if req == nil || req.Method != a.method {
		return nil, "", false, nil
	}
	e := &evaluation{req: req, env: env}
	amount, groupKey, keyErr, counts, err := a.contribution(e)
	switch {
	case err != nil:
		return nil, "", false, err
	case !counts:
		return nil, "", false, nil
	case keyErr != nil:
		return nil, "", false, keyErr
	}
	return amount, groupKey, true, nil
}

// contribution says whether and how much req counts, and computes the
// group key whether or not it does: a reference needs the group's prior
// sum either way. It shares e's decode cache.
func (a *CompiledAggregation) contribution(e *evaluation) (amount *big.Int, key string, keyErr error, counts bool, err error) {
	key, keyErr = a.groupKey(e)
	if e.req.Method != a.method {
		return nil, key, keyErr, false, nil
	}
	for _, c := range a.conds {
		_, ok, _, err := e.condition(c)
		if err != nil {
			return nil, "", nil, false, errors.New("a condition of the aggregation cannot be evaluated: " + err.Error())
		}
		if !ok {
			return nil, key, keyErr, false, nil
		}
	}
	v, notThis, err := e.value(a.metric)
	if a.metric.calldata != nil && (errors.Is(err, errNoCalldata) || errors.Is(err, errUnknownFn) || notThis != "") {
		// A call that is not to the metric's function adds nothing to it.
		return nil, key, keyErr, false, nil
	}
	if err != nil {
		return nil, "", nil, false, errors.New("the metric cannot be evaluated: " + err.Error())
	}
	if v.num.Sign() < 0 {
		return nil, "", nil, false, errors.New("the metric is negative")
	}
	return v.num, key, keyErr, true, nil
}

func (a *CompiledAggregation) groupKey(e *evaluation) (string, error) {
	if len(a.groupBy) == 0 {
		return "", nil
	}
	parts := make([]string, 0, len(a.groupBy))
	for _, f := range a.groupBy {
		v, notThis, err := e.value(f)
		if err == nil && notThis != "" {
			err = errors.New(notThis)
		}
		if err != nil {
			return "", errors.New("a group_by field cannot be evaluated: " + err.Error())
		}
		parts = append(parts, v.String())
	}
	b, _ := json.Marshal(parts)
	return string(b), nil
}

// Method returns the method the aggregation counts.
func (a *CompiledAggregation) Method() string { return a.method }
