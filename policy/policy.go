package policy

import (
	"encoding/json"
	"errors"

	"github.com/cachet-custody/cachet/wallet"
)

// Input is one request to decide.
type Input struct {
	AppID string
	// WalletID is the wallet the request is for: aggregation sums are per
	// wallet.
	WalletID string
	// PolicyIDs are the policies that apply: the wallet's, or the
	// additional signer's override policy alone.
	PolicyIDs []string
	// Request is the parsed RPC or raw_sign request.
	Request *wallet.Request
}

// Decision is the outcome of an evaluation.
type Decision struct {
	Allowed bool `json:"allowed"`
	// RuleID and RuleName name the deciding rule, when one decided.
	RuleID   string `json:"rule_id,omitempty"`
	RuleName string `json:"rule_name,omitempty"`
	// Reason says in words why.
	Reason string `json:"reason"`
	// Trace is the evaluation trace written to the audit record.
	Trace json.RawMessage `json:"trace,omitempty"`
}

// ErrNotFound means a policy id does not name a policy of the app.
var ErrNotFound = errors.New("policy not found")
