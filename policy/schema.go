package policy

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/cachet-custody/cachet/wallet"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// Policy is a policy as the API stores and shows it. ParsePolicy fills it
// from a create body; encoding/json round-trips it for storage (leniently:
// Validate or Compile is what checks a stored policy).
type Policy struct {
	// ID is assigned by the caller (the API), never read from a create body.
	ID        string `json:"id"`
	Version   string `json:"version"`
	Name      string `json:"name"`
	ChainType string `json:"chain_type"`
	// OwnerID is the owner's key-quorum id, or nil for no owner.
	OwnerID   *string `json:"owner_id"`
	CreatedAt int64   `json:"created_at"`
	Rules     []Rule  `json:"rules"`

	// Owner is the create body's "owner" ({"public_key"} or {"user_id"});
	// the API resolves it into OwnerID. It is never shown or stored.
	Owner *Owner `json:"-"`
}

// Owner is the "owner" of a policy or an aggregation in a request body.
// Exactly one field is set.
type Owner struct {
	PublicKey *string `json:"public_key,omitempty"`
	UserID    *string `json:"user_id,omitempty"`
}

// Rule is one rule of a policy. Its conditions are AND-ed.
type Rule struct {
	// ID is assigned by the caller (the API), never read from a body.
	ID         string      `json:"id"`
	Name       string      `json:"name"`
	Method     string      `json:"method"`
	Conditions []Condition `json:"conditions"`
	Action     string      `json:"action"`
}

// Condition is one condition of a rule or of an aggregation.
type Condition struct {
	FieldSource string `json:"field_source"`
	Field       string `json:"field"`
	Operator    string `json:"operator"`
	Value       Value  `json:"value"`
	// ABI is the JSON ABI of an ethereum_calldata condition: an array of
	// ABI items, or a single item.
	ABI json.RawMessage `json:"abi,omitempty"`
	// TypedData is the EIP-712 type set an ethereum_typed_data_message
	// condition applies to.
	TypedData *TypedDataSpec `json:"typed_data,omitempty"`
}

// TypedDataSpec is the "typed_data" of an ethereum_typed_data_message
// condition.
type TypedDataSpec struct {
	Types       apitypes.Types `json:"types"`
	PrimaryType string         `json:"primary_type"`
}

// Value is a condition's value: one string, or a list of strings for the
// "in" operator. JSON numbers and booleans in a body are kept as their
// literal text ("1000", "true").
type Value struct {
	Scalar string
	List   []string
	IsList bool
}

// StringValue returns a single value.
func StringValue(s string) Value { return Value{Scalar: s} }

// ListValue returns a list value, as "in" takes.
func ListValue(l ...string) Value { return Value{List: l, IsList: true} }

// MarshalJSON writes a string, or an array of strings.
func (v Value) MarshalJSON() ([]byte, error) {
	if v.IsList {
		if v.List == nil {
			return []byte("[]"), nil
		}
		return json.Marshal(v.List)
	}
	return json.Marshal(v.Scalar)
}

// UnmarshalJSON reads a string, a number, a boolean, or an array of those.
func (v *Value) UnmarshalJSON(b []byte) error {
	s, list, isList, err := decodeValue(b)
	if err != nil {
		return err
	}
	*v = Value{Scalar: s, List: list, IsList: isList}
	return nil
}

var errValueShape = errors.New("must be a string, a number, a boolean, or an array of those")

func decodeValue(b []byte) (string, []string, bool, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", nil, false, errValueShape
	}
	if b[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(b, &items); err != nil {
			return "", nil, false, errValueShape
		}
		list := make([]string, len(items))
		for i, it := range items {
			s, err := scalarText(it)
			if err != nil {
				return "", nil, false, &itemError{index: i}
			}
			list[i] = s
		}
		return "", list, true, nil
	}
	s, err := scalarText(b)
	return s, nil, false, err
}

// itemError names the bad element of a list value.
type itemError struct{ index int }

func (e *itemError) Error() string { return errValueShape.Error() }

func scalarText(b []byte) (string, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", errValueShape
	}
	switch c := b[0]; {
	case c == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return "", errValueShape
		}
		return s, nil
	case c == '-' || (c >= '0' && c <= '9'):
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return "", errValueShape
		}
		return n.String(), nil
	case c == 't' || c == 'f':
		var x bool
		if err := json.Unmarshal(b, &x); err != nil {
			return "", errValueShape
		}
		if x {
			return "true", nil
		}
		return "false", nil
	}
	return "", errValueShape
}

// Aggregation is a stateful metric: the sum of a transaction or calldata
// field over a rolling window, per wallet and optional group.
type Aggregation struct {
	// ID is assigned by the caller (the API), never read from a body.
	ID         string         `json:"id"`
	Name       string         `json:"name"`
	Method     string         `json:"method"`
	Metric     Metric         `json:"metric"`
	Window     Window         `json:"window"`
	Conditions []Condition    `json:"conditions,omitempty"`
	GroupBy    []GroupByField `json:"group_by,omitempty"`
	OwnerID    *string        `json:"owner_id"`
	CreatedAt  int64          `json:"created_at"`
	// Owner is the create body's "owner"; the API resolves it into OwnerID.
	Owner *Owner `json:"-"`
}

// Metric is what an aggregation sums.
type Metric struct {
	FieldSource string          `json:"field_source"`
	Field       string          `json:"field"`
	ABI         json.RawMessage `json:"abi,omitempty"`
	Function    string          `json:"function"`
}

// Window is an aggregation's time window.
type Window struct {
	Type    string `json:"type"`
	Seconds int64  `json:"seconds"`
}

// GroupByField is one field an aggregation groups its sums by.
type GroupByField struct {
	FieldSource string          `json:"field_source"`
	Field       string          `json:"field"`
	ABI         json.RawMessage `json:"abi,omitempty"`
}

// Methods a rule may name. Privy's other methods (Solana, Tron, Sui, XRPL,
// user operations, wallet actions) are refused: Cachet holds Ethereum
// wallets and signs none of them.
const (
	MethodAny              = "*"
	MethodExportPrivateKey = "exportPrivateKey"
	MethodExportSeedPhrase = "exportSeedPhrase"
)

// Actions.
const (
	ActionAllow = "ALLOW"
	ActionDeny  = "DENY"
)

// Field sources.
const (
	SourceTransaction      = "ethereum_transaction"
	SourceCalldata         = "ethereum_calldata"
	SourceTypedDataDomain  = "ethereum_typed_data_domain"
	SourceTypedDataMessage = "ethereum_typed_data_message"
	Source7702             = "ethereum_7702_authorization"
	SourceMessage          = "message"
	SourceSystem           = "system"
	SourceReference        = "reference"
)

// Fixed values of the schema.
const (
	PolicyVersion     = "1.0"
	ChainTypeEthereum = "ethereum"
	// AggregationPrefix starts a reference field: "aggregation.<id>".
	AggregationPrefix  = "aggregation."
	AggregationSum     = "sum"
	AggregationRolling = "rolling"
)

// Limits. Privy documents only the name, "in", window and group_by limits;
// the others are Cachet's, to bound the work one policy or request can
// cause.
const (
	MaxNameChars       = 50
	MaxAggregationName = 255
	MaxRules           = 100
	MaxConditions      = 100
	MaxInValues        = 100
	MaxABIBytes        = 64 << 10
	MaxGroupBy         = 2
	MinWindowSeconds   = 3600
	MaxWindowSeconds   = 259200
	MaxFieldChars      = 256
	MaxValueChars      = 4096
	MaxTypedDataTypes  = 100
	MaxTypedDataFields = 100

	maxPathSegments     = 32
	maxValidationErrors = 20
	maxTraceActualChars = 256
	// maxDecodedABIValues caps the values one function's calldata may
	// decode into (see decodeArgs for the per-size budget below it).
	maxDecodedABIValues = 1 << 15
	// maxABIStaticBytes is the largest static ABI type accepted: a
	// transaction's data (wallet.MaxHexBytes) could not hold a larger one.
	maxABIStaticBytes    = wallet.MaxHexBytes
	maxABINesting        = 16
	maxABIArrayDimension = 1 << 16
)
