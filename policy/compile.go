package policy

import (
	"encoding/json"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/cachet-custody/cachet/internal/strictjson"
	"github.com/cachet-custody/cachet/wallet"
)

// Refs lets validation check that the condition sets and aggregations a
// policy names exist (and belong to the app). A nil Refs skips those checks.
type Refs interface {
	ConditionSetExists(id string) bool
	AggregationExists(id string) bool
}

// Validate checks a policy: version "1.0", chain_type "ethereum", a name of
// 1 to 50 characters, at most 100 rules; for each rule a name, a method
// Cachet knows, an action, at most 100 conditions; for each condition a
// field source that applies to the rule's method, a field that exists for
// that source (and in the ABI or typed-data types), an operator that
// applies to the field's type, and values of that type. The error is
// ValidationErrors (up to 20), each naming the path of a bad element.
func Validate(p *Policy, refs Refs) error {
	_, err := compilePolicy(p, refs)
	return err
}

// ValidateRule checks one rule as Validate does; paths are relative to the
// rule ("conditions[0].operator"). The caller checks that the policy stays
// within 100 rules.
func ValidateRule(r *Rule, refs Refs) error {
	var c collector
	k := newCompiler(refs)
	k.rule(r, "", &c)
	return c.err()
}

// Compile checks p (without Refs: a condition set or aggregation deleted
// since the policy was written fails closed at evaluation instead) and
// prepares it for evaluation: ABIs parsed, numbers and addresses decoded,
// paths resolved. A Compiled is immutable and safe for concurrent use;
// compile once per policy version and cache it.
func Compile(p *Policy) (*Compiled, error) {
	return compilePolicy(p, nil)
}

// Compiled is a policy ready for evaluation.
type Compiled struct {
	id, name string
	rules    []*rule
	aggIDs   []string
	setIDs   []string
	// traceSize estimates a trace's length, to size its buffer once.
	traceSize int
}

// ID returns the policy's id.
func (c *Compiled) ID() string { return c.id }

// AggregationIDs lists the aggregations the policy's rules reference, in
// first-use order: the aggregations a request allowed under this policy
// should be recorded against (see CompiledAggregation.Contribution).
func (c *Compiled) AggregationIDs() []string { return slices.Clone(c.aggIDs) }

// ConditionSetIDs lists the condition sets the policy's rules name.
func (c *Compiled) ConditionSetIDs() []string { return slices.Clone(c.setIDs) }

type rule struct {
	id, name, method, action string
	deny                     bool
	conds                    []*cond
	specs                    []*typedSpec // typed_data of its message conditions
}

func (r *rule) appliesTo(method string) bool {
	return r.method == MethodAny || r.method == method
}

// source is a field source.
type source uint8

const (
	srcTransaction source = iota + 1
	srcCalldata
	srcDomain
	srcTypedMessage
	src7702
	srcMessage
	srcSystem
	srcReference
)

var sourceNames = map[string]source{
	SourceTransaction:      srcTransaction,
	SourceCalldata:         srcCalldata,
	SourceTypedDataDomain:  srcDomain,
	SourceTypedDataMessage: srcTypedMessage,
	Source7702:             src7702,
	SourceMessage:          srcMessage,
	SourceSystem:           srcSystem,
	SourceReference:        srcReference,
}

// otherChainSources are Privy field sources for chains or actions Cachet
// does not serve; they get a clearer error than an unknown name.
var otherChainSources = []string{
	"tempo_transaction", "solana_program_instruction", "solana_system_program_instruction",
	"solana_token_program_instruction", "tron_transaction", "tron_trigger_smart_contract_data",
	"sui_transaction_command", "sui_transfer_objects_command", "xrpl_transaction", "action_request_body",
}

// ruleMethods are the methods a rule may name. secp256k1_sign and raw_sign
// are Cachet's: Privy has no policy method for raw hash signing.
var ruleMethods = []string{
	wallet.MethodSignTransaction, wallet.MethodSendTransaction, wallet.MethodPersonalSign,
	wallet.MethodSignTypedData, wallet.MethodSign7702Authorization,
	MethodExportPrivateKey, MethodExportSeedPhrase,
	wallet.MethodSecp256k1Sign, wallet.MethodRawSign, MethodAny,
}

// otherChainMethods are Privy policy methods Cachet does not serve.
var otherChainMethods = []string{
	"eth_signUserOperation", "wallet_sendCalls", "signTransaction", "signAndSendTransaction",
	"signMessage", "signTransactionBytes", "signRawMessageBytes", "tron_sendTransaction",
	"tron_signTransaction", "xrpl_signTransaction", "earn_deposit", "earn_withdraw", "transfer",
}

// methodsOf lists the methods a source applies to (nil: every method).
func (s source) methods() []string {
	switch s {
	case srcTransaction, srcCalldata, srcReference:
		return []string{wallet.MethodSignTransaction, wallet.MethodSendTransaction}
	case srcDomain, srcTypedMessage:
		return []string{wallet.MethodSignTypedData}
	case src7702:
		return []string{wallet.MethodSign7702Authorization}
	case srcMessage:
		return []string{wallet.MethodPersonalSign}
	}
	return nil
}

// fixed fields of the sources whose fields are not paths.
type fieldID uint8

const (
	fTo fieldID = iota + 1
	fValue
	fChainID
	fDomainChainID
	fVerifyingContract
	fContract
	fContent
	fByteLength
	fNow
)

var fixedFields = map[source]map[string]struct {
	id   fieldID
	kind kind
}{
	srcTransaction: {"to": {fTo, kindAddress}, "value": {fValue, kindNumber}, "chain_id": {fChainID, kindNumber}},
	srcDomain: {
		"chainId": {fDomainChainID, kindNumber}, "chain_id": {fDomainChainID, kindNumber},
		"verifyingContract": {fVerifyingContract, kindAddress}, "verifying_contract": {fVerifyingContract, kindAddress},
	},
	src7702:    {"contract": {fContract, kindAddress}},
	srcMessage: {"content": {fContent, kindString}, "byte_length": {fByteLength, kindNumber}},
	srcSystem:  {"current_unix_timestamp": {fNow, kindNumber}},
}

// field is a resolved field: where a request's value comes from and its
// kind.
type field struct {
	src      source
	id       fieldID
	kind     kind
	calldata *calldataPath
	typed    *typedSpec
	steps    []typedStep
	aggID    string
}

// cond is a compiled condition.
type cond struct {
	field
	op      op
	operand operand
	// For the trace, as written.
	sourceName, fieldName, opName string
	valueJSON                     json.RawMessage
}

// compiler compiles the conditions of one policy or aggregation, sharing
// parsed ABIs between conditions that carry the same one.
type compiler struct {
	refs   Refs
	abis   map[string]*abiInfo
	specs  map[*TypedDataSpec]*typedSpec
	aggIDs []string
	setIDs []string
}

func newCompiler(refs Refs) *compiler {
	return &compiler{refs: refs, abis: map[string]*abiInfo{}, specs: map[*TypedDataSpec]*typedSpec{}}
}

func compilePolicy(p *Policy, refs Refs) (*Compiled, error) {
	var c collector
	if p == nil {
		c.add(verr("", "no policy"))
		return nil, c.err()
	}
	if p.Version != PolicyVersion {
		c.add(verr("version", "must be %q", PolicyVersion))
	}
	checkName(&c, "name", p.Name, MaxNameChars)
	if p.ChainType != ChainTypeEthereum {
		c.add(verr("chain_type", "must be %q: Cachet holds ethereum wallets", ChainTypeEthereum))
	}
	if len(p.Rules) > MaxRules {
		c.add(verr("rules", "has more than %d rules", MaxRules))
		return nil, c.err()
	}
	k := newCompiler(refs)
	out := &Compiled{id: p.ID, name: p.Name}
	for i := range p.Rules {
		if c.full() {
			break
		}
		if r := k.rule(&p.Rules[i], strictjson.IndexPath("rules", i), &c); r != nil {
			out.rules = append(out.rules, r)
		}
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	out.aggIDs, out.setIDs = k.aggIDs, k.setIDs
	out.traceSize = 128
	for _, r := range out.rules {
		out.traceSize += 160 + len(r.id) + len(r.name)
		for _, cd := range r.conds {
			out.traceSize += 160 + len(cd.fieldName) + len(cd.valueJSON)
		}
	}
	return out, nil
}

func checkName(c *collector, path, name string, limit int) {
	n := utf8.RuneCountInString(name)
	switch {
	case !utf8.ValidString(name):
		c.add(verr(path, "is not valid UTF-8"))
	case n < 1 || n > limit:
		c.add(verr(path, "must be 1 to %d characters", limit))
	}
}

// rule compiles one rule; path is its path ("rules[2]" or "").
func (k *compiler) rule(r *Rule, path string, c *collector) *rule {
	before := len(c.errs)
	checkName(c, joinPath(path, "name"), r.Name, MaxNameChars)
	methodOK := checkMethod(c, joinPath(path, "method"), r.Method, ruleMethods)
	if r.Action != ActionAllow && r.Action != ActionDeny {
		c.add(verr(joinPath(path, "action"), "must be %q or %q", ActionAllow, ActionDeny))
	}
	cp := joinPath(path, "conditions")
	if len(r.Conditions) > MaxConditions {
		c.add(verr(cp, "has more than %d conditions", MaxConditions))
		return nil
	}
	out := &rule{id: r.ID, name: r.Name, method: r.Method, action: r.Action, deny: r.Action == ActionDeny}
	for i := range r.Conditions {
		if c.full() {
			return nil
		}
		method := r.Method
		if !methodOK {
			method = MethodAny // report condition errors that do not depend on it
		}
		cd, err := k.condition(&r.Conditions[i], strictjson.IndexPath(cp, i), method, false)
		if err != nil {
			c.add(err)
			continue
		}
		out.conds = append(out.conds, cd)
		if cd.typed != nil && !slices.Contains(out.specs, cd.typed) {
			out.specs = append(out.specs, cd.typed)
		}
	}
	if len(c.errs) > before {
		return nil
	}
	return out
}

func checkMethod(c *collector, path, m string, allowed []string) bool {
	if slices.Contains(allowed, m) {
		return true
	}
	if slices.Contains(otherChainMethods, m) {
		c.add(verr(path, "method %q is a Privy method that Cachet does not serve (Cachet holds ethereum wallets and signs their RPC methods only)", m))
		return false
	}
	c.add(verr(path, "unknown method; use one of %s", quoteList(allowed)))
	return false
}

// condition compiles one condition for a rule (or aggregation) of method.
func (k *compiler) condition(in *Condition, path, method string, inAggregation bool) (*cond, *ValidationError) {
	sp, op, vp := joinPath(path, "field_source"), joinPath(path, "operator"), joinPath(path, "value")
	src, ok := sourceNames[in.FieldSource]
	switch {
	case !ok && slices.Contains(otherChainSources, in.FieldSource):
		return nil, verr(sp, "field source %q is not supported: Cachet holds ethereum wallets", in.FieldSource)
	case !ok:
		return nil, verr(sp, "unknown field source")
	case inAggregation && src == srcReference:
		return nil, verr(sp, "an aggregation's conditions cannot reference aggregations")
	}
	if ms := src.methods(); ms != nil && method != MethodAny && !slices.Contains(ms, method) {
		return nil, verr(sp, "%s does not apply to method %s (only to %s)", in.FieldSource, method, strings.Join(ms, ", "))
	}
	o, ok := opNames[in.Operator]
	if !ok {
		return nil, verr(op, "unknown operator; use one of eq, neq, gt, gte, lt, lte, in, in_condition_set, contains, starts_with, ends_with")
	}
	if len(in.ABI) > 0 && src != srcCalldata {
		return nil, verr(joinPath(path, "abi"), "is only for ethereum_calldata conditions")
	}
	if in.TypedData != nil && src != srcTypedMessage {
		return nil, verr(joinPath(path, "typed_data"), "is only for ethereum_typed_data_message conditions")
	}
	f, err := k.field(src, in.Field, in.ABI, in.TypedData, path)
	if err != nil {
		return nil, err
	}
	if !o.allowed(f.kind) {
		return nil, verr(op, "%s does not apply to %s fields", in.Operator, f.kind)
	}
	if src == srcReference && (o == opIn || o == opInSet) {
		return nil, verr(op, "an aggregation reference takes eq, neq, gt, gte, lt or lte")
	}
	cd := &cond{field: *f, op: o, sourceName: in.FieldSource, fieldName: in.Field, opName: in.Operator}
	v := in.Value
	switch {
	case o == opIn:
		if !v.IsList {
			return nil, verr(vp, "in takes an array of values")
		}
		if len(v.List) < 1 || len(v.List) > MaxInValues {
			return nil, verr(vp, "must have 1 to %d values (use in_condition_set for more)", MaxInValues)
		}
		for i, s := range v.List {
			if len(s) > MaxValueChars {
				return nil, verr(strictjson.IndexPath(vp, i), "exceeds %d characters", MaxValueChars)
			}
			if err := cd.operand.add(f.kind, s); err != nil {
				return nil, verr(strictjson.IndexPath(vp, i), "%s field value %s", f.kind, err.Error())
			}
		}
	case v.IsList:
		return nil, verr(vp, "%s takes a single value, not an array", in.Operator)
	case len(v.Scalar) > MaxValueChars:
		return nil, verr(vp, "exceeds %d characters", MaxValueChars)
	case o == opInSet:
		if v.Scalar == "" {
			return nil, verr(vp, "must be a condition set id")
		}
		if k.refs != nil && !k.refs.ConditionSetExists(v.Scalar) {
			return nil, verr(vp, "condition set not found")
		}
		cd.operand.setID = v.Scalar
		if !slices.Contains(k.setIDs, v.Scalar) {
			k.setIDs = append(k.setIDs, v.Scalar)
		}
	default:
		if err := cd.operand.add(f.kind, v.Scalar); err != nil {
			return nil, verr(vp, "%s field value %s", f.kind, err.Error())
		}
	}
	cd.valueJSON, _ = json.Marshal(in.Value)
	return cd, nil
}

// field resolves a field of src. path is the condition's (or metric's, or
// group_by item's) path; errors name its "field", "abi" or "typed_data".
func (k *compiler) field(src source, name string, rawABI json.RawMessage, td *TypedDataSpec, path string) (*field, *ValidationError) {
	fp := joinPath(path, "field")
	if name == "" {
		return nil, verr(fp, "is required")
	}
	if len(name) > MaxFieldChars {
		return nil, verr(fp, "exceeds %d characters", MaxFieldChars)
	}
	f := &field{src: src}
	if fixed, ok := fixedFields[src]; ok {
		x, ok := fixed[name]
		if !ok {
			names := make([]string, 0, len(fixed))
			for n := range fixed {
				names = append(names, n)
			}
			slices.Sort(names)
			return nil, verr(fp, "unknown field for %s; use one of %s", sourceName(src), quoteList(names))
		}
		f.id, f.kind = x.id, x.kind
		return f, nil
	}
	switch src {
	case srcCalldata:
		info, err := k.abi(rawABI)
		if err != nil {
			return nil, verr(joinPath(path, "abi"), "%s", err.Error())
		}
		p, kd, err := compileCalldataField(info, name)
		if err != nil {
			return nil, verr(fp, "%s", err.Error())
		}
		f.calldata, f.kind = p, kd
	case srcTypedMessage:
		ts, sub, err := k.typedSpec(td)
		if err != nil {
			return nil, verr(joinPath(joinPath(path, "typed_data"), sub), "%s", err.Error()) // joinPath drops an empty sub
		}
		steps, kd, err := compileTypedPath(ts, name)
		if err != nil {
			return nil, verr(fp, "%s", err.Error())
		}
		f.typed, f.steps, f.kind = ts, steps, kd
	case srcReference:
		id, ok := strings.CutPrefix(name, AggregationPrefix)
		if !ok || id == "" {
			return nil, verr(fp, "must be \"aggregation.<aggregation id>\"")
		}
		if k.refs != nil && !k.refs.AggregationExists(id) {
			return nil, verr(fp, "aggregation not found")
		}
		f.aggID, f.kind = id, kindNumber
		if !slices.Contains(k.aggIDs, id) {
			k.aggIDs = append(k.aggIDs, id)
		}
	}
	return f, nil
}

func sourceName(s source) string {
	for n, x := range sourceNames {
		if x == s {
			return n
		}
	}
	return "?"
}

func (k *compiler) abi(raw json.RawMessage) (*abiInfo, error) {
	key := string(raw)
	if info, ok := k.abis[key]; ok {
		return info, nil
	}
	info, err := parseABI(raw)
	if err != nil {
		return nil, err
	}
	k.abis[key] = info
	return info, nil
}

func (k *compiler) typedSpec(td *TypedDataSpec) (*typedSpec, string, error) {
	if ts, ok := k.specs[td]; ok && td != nil {
		return ts, "", nil
	}
	ts, sub, err := compileTypedSpec(td)
	if err != nil {
		return nil, sub, err
	}
	k.specs[td] = ts
	return ts, "", nil
}
