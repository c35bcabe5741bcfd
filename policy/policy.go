// Package policy owns the decision whether a wallet request may proceed
// under the policies attached to the wallet (or to the additional signer
// that makes it): Privy's policy schema, its validation and its evaluation.
//
// This file is the boundary the wallet API calls. The engine itself (rules
// over transaction fields, calldata, typed data, condition sets,
// aggregations, and the evaluation trace) is the policy issue's work; until
// it lands, no policy can be created, so every wallet has none and every
// request is allowed, exactly as a Privy wallet without policies behaves.
package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cachet-custody/cachet/wallet"
)

// Input is one request to decide.
type Input struct {
	AppID string
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

// Engine is what the wallet API asks of the policy engine.
//
// Evaluate must deny, not err, when a policy says no; an error means the
// engine could not decide, and the caller refuses the request (fail closed).
type Engine interface {
	// Exist returns an error wrapping ErrNotFound naming the first id that
	// is not a policy of app.
	Exist(ctx context.Context, appID string, ids []string) error
	Evaluate(ctx context.Context, in Input) (Decision, error)
}

// ErrNotFound means a policy id does not name a policy of the app.
var ErrNotFound = errors.New("policy not found")

// None is the engine of a Cachet without policies: no policy exists, and a
// request to which no policy applies is allowed.
type None struct{}

// Exist fails for any id: no policy exists.
func (None) Exist(_ context.Context, _ string, ids []string) error {
	if len(ids) > 0 {
		return fmt.Errorf("%w: %q", ErrNotFound, ids[0])
	}
	return nil
}

// Evaluate allows a request that no policy governs, and refuses to decide
// one that names a policy it does not know.
func (None) Evaluate(_ context.Context, in Input) (Decision, error) {
	if len(in.PolicyIDs) > 0 {
		return Decision{}, fmt.Errorf("%w: %q (no policy engine)", ErrNotFound, in.PolicyIDs[0])
	}
	return Decision{Allowed: true, Reason: "no policy applies"}, nil
}
