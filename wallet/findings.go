package wallet

import (
	"math/big"

	"github.com/ethereum/go-ethereum/core/types"
)

// Severity grades a Finding.
type Severity int

const (
	// Info marks something a reviewer may want in the trace.
	Info Severity = iota
	// Warn marks a request that is valid but risky in a way policies
	// commonly guard against.
	Warn
)

func (s Severity) String() string {
	if s == Warn {
		return "warn"
	}
	return "info"
}

// Finding is an observation about a valid request, for the policy engine's
// evaluation trace. Findings never block signing by themselves.
type Finding struct {
	Severity Severity
	Field    string // JSON path the finding is about
	Message  string
}

// Findings reports risky but valid properties of the request. It reads the
// request and never changes it.
func (r *Request) Findings() []Finding {
	var f []Finding
	add := func(s Severity, field, msg string) { f = append(f, Finding{s, field, msg}) }
	switch r.Method {
	case MethodSecp256k1Sign, MethodRawSign:
		add(Warn, "params.hash", "blind signature over a 32-byte digest, which may be a transaction or permit hash")
	case MethodPersonalSign:
		if r.MessageEncoding == EncodingHex && len(r.Message) == 32 {
			add(Warn, "params.message", "personal_sign over 32 bytes, which looks like a hash signed blindly")
		}
	case MethodSign7702Authorization:
		if r.Auth.ChainID.Sign() == 0 {
			add(Warn, "params.chain_id", "chain_id 0 makes the authorization valid on every chain")
		}
		add(Warn, "params.contract", "delegates the wallet's code (and all its assets) to this contract")
	case MethodSignTypedData:
		if id := r.ChainID(); id != nil && r.TypedData.Domain.ChainId != nil &&
			id.Cmp((*big.Int)(r.TypedData.Domain.ChainId)) != 0 {
			add(Warn, "params.typed_data.domain.chainId", "differs from caip2")
		}
	case MethodSignTransaction, MethodSendTransaction:
		t := r.Tx
		if t.To == nil {
			add(Info, "params.transaction.to", "contract creation")
		}
		if t.Type == types.SetCodeTxType {
			add(Warn, "params.transaction.authorization_list", "sets account code (EIP-7702)")
		}
		if !t.TypeGiven {
			add(Info, "params.transaction.type", "type not given; resolved from the fee fields")
		}
	}
	return f
}
