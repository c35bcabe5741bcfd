// Package policy owns the decision whether a wallet request may proceed
// under a policy: Privy's policy schema (policies, rules, conditions,
// condition sets, aggregations), its validation when a policy is written,
// and its evaluation against a parsed *wallet.Request, with a trace of
// every rule and condition considered.
//
// # What this package does not do
//
// It stores nothing and serves no HTTP. The API assigns policy, rule and
// aggregation ids, stores policies, condition sets and recorded aggregation
// amounts, decides which policy governs a request (the wallet's, or an
// additional signer's override), and serializes the read of an aggregation's
// sum with the recording of the request's contribution so that limits are
// exact. This package gives it pure functions for each step: ParsePolicy,
// ParsePolicyUpdate, ParseRule and ParseAggregation read bodies strictly;
// Validate, ValidateRule and ValidateAggregation check meaning and existence
// of referenced sets and aggregations (Refs); Compile and CompileAggregation
// prepare for evaluation; (*Compiled).Evaluate decides;
// (*CompiledAggregation).Contribution says what a signed request adds to an
// aggregation.
//
// # Schema
//
// Privy's, as summarised in shared/reference/privy-wallet-api.md section 3,
// for ethereum wallets only: chain_type must be "ethereum" and version
// "1.0". Rule methods are eth_signTransaction, eth_sendTransaction,
// personal_sign, eth_signTypedData_v4, eth_sign7702Authorization,
// exportPrivateKey, exportSeedPhrase and "*", plus two Cachet extensions
// named after their RPC methods, secp256k1_sign and raw_sign: Privy has no
// policy method for raw hash signing, so under default deny a wallet with a
// policy could otherwise sign hashes only through a "*" rule. Privy's other
// methods and field sources (Solana, Tron, Sui, XRPL, Tempo, user
// operations, wallet actions) are refused by name.
//
// Limits: names 1 to 50 characters (aggregations 255), at most 100 rules per
// policy and 100 conditions per rule or aggregation (Cachet's own limits;
// Privy documents none), "in" 1 to 100 values, an ABI at most 64 KiB,
// typed_data at most 100 types of 100 fields, at most 2 group_by fields,
// field paths at most 256 characters and 32 segments, single values at most
// 4096 characters.
//
// Bodies are read strictly: unknown keys, duplicate keys and values of the
// wrong JSON type are refused with the path of the element, as are "id"
// keys (the API assigns ids). JSON numbers and booleans given as condition
// values are kept as their text ("1000", "true").
//
// # Field sources and methods
//
// At write time a rule whose method is not "*" may only use the field
// sources that apply to it: ethereum_transaction, ethereum_calldata and
// reference for eth_signTransaction and eth_sendTransaction;
// ethereum_typed_data_domain and ethereum_typed_data_message for
// eth_signTypedData_v4; ethereum_7702_authorization for
// eth_sign7702Authorization; message for personal_sign; system for any
// method. A "*" rule may use any source; at evaluation, a field that the
// request's method does not have cannot be evaluated (fail closed, below).
//
//   - ethereum_transaction: to (address; a contract creation has none),
//     value (number; absent is zero), chain_id (number; from caip2 when the
//     transaction has none).
//   - ethereum_calldata: "fn" or "fn.param.sub.0.x" with the function's
//     JSON ABI (an array of items, or one item). Functions are named as
//     go-ethereum names them (a second overload of f is f0). After the
//     parameter, segments walk tuples by component name and arrays by
//     decimal index (a decimal index also picks a parameter or component by
//     position when none has that name). A path the ABI does not have is a
//     write-time error; an index beyond a dynamic array's length at
//     evaluation cannot be evaluated. The field "fn" alone has the value
//     "fn" when the call is to fn, so eq "fn" and in [...] hold. Leaves:
//     integers are numbers, address an address, bool "true"/"false", bytes
//     and bytesN bytes (written as 0x hex, compared as bytes), string a
//     string.
//   - ethereum_typed_data_domain: chainId or chain_id (number),
//     verifyingContract or verifying_contract (address).
//   - ethereum_typed_data_message: a dot path into the message (struct
//     fields by name, arrays by decimal index) with typed_data {types,
//     primary_type}; the path must exist in those types at write time and
//     end at an elementary type, which gives the leaf's kind.
//   - ethereum_7702_authorization: contract (address).
//   - message (personal_sign): content, the message as UTF-8 text (a hex
//     message that is not valid UTF-8 cannot be evaluated), and
//     byte_length, its length in bytes.
//   - system: current_unix_timestamp (number, seconds, from Env.Now).
//   - reference: aggregation.<id> (number), see Aggregations.
//
// # Operators and comparisons
//
// A field's kind (number, address, string, bytes, bool) comes from its
// source, ABI or EIP-712 type, and fixes which operators apply: eq, neq,
// in and in_condition_set to every kind; gt, gte, lt and lte to numbers;
// contains, starts_with and ends_with to strings and bytes. "in" takes an
// array of 1 to 100 values, in_condition_set a condition set id, every
// other operator one value. Values are checked against the field's kind
// when the policy is written.
//
// Numbers are written in decimal or 0x hex (either case of hex digits) and
// compare as unsigned 256-bit integers, so "0x2386f26fc10000" equals
// "10000000000000000". A negative request value (an intN parameter) cannot
// be evaluated. Addresses compare case-insensitively; a policy address in
// mixed case must carry a valid EIP-55 checksum, as the wallet API requires
// of requests, since a mixed-case address with a bad checksum is most likely
// a typo. Strings compare exactly (contains and friends are substring tests
// on UTF-8 text). A condition set's items are untyped strings, compared as
// the field's kind compares (see ConditionSet).
//
// # Evaluation
//
// Only rules whose method is the request's or "*" are considered (the
// trace counts the others without listing them). A rule matches when all
// its conditions hold; a rule without conditions always matches. The first
// matching DENY denies; otherwise the first matching ALLOW allows; otherwise
// the request is denied with DefaultDenyReason. Decision names the deciding
// rule; the API answers a denial with policy_violation.
//
// Fail closed: a condition that cannot be evaluated (a field the request
// does not have, calldata without a selector or whose selector is not in the
// ABI or whose arguments do not decode, a condition set or aggregation that
// cannot be resolved, no clock) counts as false in an ALLOW rule and as true
// in a DENY rule; its trace result is "error" with the reason. Calldata whose
// selector is another function of the same ABI decodes fine and is simply
// not that function: the condition is false, and the trace notes the call.
//
// Typed-data message conditions apply only to requests whose types equal
// the condition's typed_data.types exactly (the same type names, each with
// the same fields in the same order and the same type strings; an
// EIP712Domain entry on either side is ignored) and whose primary type is
// typed_data.primary_type. When they differ the whole rule is not
// applicable: it neither allows nor denies, for ALLOW and DENY alike, and
// the trace says so. This is Privy's behaviour (its DENY rules silently do
// not fire), made visible.
//
// Conditions are evaluated in order, and evaluation of a rule stops at the
// condition that decides it (the first false one; in an ALLOW rule also the
// first error); later conditions are traced as "skipped", so that a rule
// that cannot match costs no aggregation or condition-set look-up. Calldata
// is decoded at most once per function signature per evaluation.
//
// Calldata decoding uses go-ethereum's accounts/abi after a scan that
// mirrors its layout rules and refuses (fail closed) encodings that would
// decode into more than eight values per 32-byte word of calldata, plus
// 256, at most 32768: ABI offsets may point at the same bytes repeatedly,
// so a few kilobytes can describe millions of values. ABIs whose
// static types could never fit a transaction's data, or nest more than 16
// levels, are refused when written, before go-ethereum builds reflect types
// for them.
//
// # Aggregations
//
// An aggregation sums a numeric ethereum_transaction or ethereum_calldata
// field over a rolling window of 3600 to 259200 seconds, per wallet and per
// group (up to two group_by fields), for the requests of its method
// (eth_signTransaction or eth_sendTransaction) whose conditions hold. A
// calldata metric counts only calls to its function. A reference condition
// "aggregation.<id>" takes eq, neq, gt, gte, lt or lte and a number; its
// value at evaluation is the sum already recorded in the window for the
// aggregation, the wallet and the request's group (AggregateResolver.Sum),
// plus the request's own amount if the request counts toward the
// aggregation: "lte 1000" therefore means "this request keeps the total
// within 1000". On a request of another method than the aggregation's (a
// "*" rule on a message, typed data, a hash or a delegation, or a rule of
// the other transaction method) the reference cannot be evaluated and fails
// closed: the request would never join the sum it is compared with. After
// signing, the API records Contribution for the aggregations the governing
// policy references, in the same serialized step as the sums were read.
//
// # Trace
//
// Decision.Trace is the JSON of a Trace: for each rule considered, its id,
// name, method, action, whether it was applicable and matched, and for
// each condition the policy's value, the request's value as text (at most
// 256 characters), and a Result: true, false, error (with the reason),
// not_applicable or skipped. Nothing in a request is secret, so the trace
// may be written to the audit record as is.
package policy
