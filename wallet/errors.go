package wallet

import (
	"errors"
	"fmt"

	"github.com/cachet-custody/cachet/internal/clip"
)

// InputError reports a request that Cachet refuses to sign because a field is
// malformed, missing, out of range or not supported. The HTTP edge maps it to
// 400 {"code":"invalid_data"}.
//
// Field is the dotted JSON path of the field in the request body, for example
// "params.transaction.nonce" or "params.typed_data.message.to.wallet"; array
// elements appear as "access_list[2]". Reason says what is wrong without
// repeating the value, so that a large or hostile input is never echoed back.
type InputError struct {
	Field  string
	Reason string
}

func (e *InputError) Error() string {
	return "invalid " + e.Field + ": " + e.Reason
}

// inputErr builds an *InputError. Callers pass only public, bounded values as
// arguments (field names, limits, type names), never the input itself.
// Field paths are built from the client's keys, so they are capped too.
func inputErr(field, format string, args ...any) error {
	field = clip.To(field, maxFieldPath)
	return &InputError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// maxFieldPath caps InputError.Field.
const maxFieldPath = 256

var (
	// ErrInvalidKey is returned when the private key handed to a signing or
	// derivation function is not a valid 32-byte secp256k1 scalar. The key is
	// never part of the message.
	ErrInvalidKey = errors.New("wallet: invalid secp256k1 private key")

	// ErrInvalidEntropy is returned for entropy that is not 16 to 32 bytes in
	// steps of 4 (BIP-39).
	ErrInvalidEntropy = errors.New("wallet: invalid BIP-39 entropy")

	// ErrInvalidMnemonic is returned for a mnemonic that is not a valid BIP-39
	// English phrase (unknown word, wrong length or bad checksum). The phrase
	// is never part of the message.
	ErrInvalidMnemonic = errors.New("wallet: invalid BIP-39 mnemonic")

	// ErrChainMismatch means the Ethereum node reports a different chain id
	// than the request is for: the daemon's endpoint configuration is wrong
	// for this caip2. Nothing was signed or sent.
	ErrChainMismatch = errors.New("wallet: node chain id does not match the request")

	// ErrNoBaseFee means the node's latest block has no baseFeePerGas, so
	// the chain does not support EIP-1559 fees; the client must send a type 0
	// transaction with gas_price instead.
	ErrNoBaseFee = errors.New("wallet: node reports no base fee (chain without EIP-1559)")

	// ErrHashMismatch means the node accepted a signed transaction but
	// reported a hash other than the one Cachet computed. It points at a
	// broken or hostile node.
	ErrHashMismatch = errors.New("wallet: node returned a different transaction hash")
)

// RPCError is a JSON-RPC error object returned by the Ethereum node, such as
// "nonce too low" or "insufficient funds for gas * price + value". The message
// is public chain data and may be shown to the client; it is truncated to
// maxNodeMessage bytes.
type RPCError struct {
	Method  string // JSON-RPC method that failed, e.g. "eth_sendRawTransaction"
	Code    int
	Message string
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("node %s: %s (code %d)", e.Method, e.Message, e.Code)
}

// NodeError is a failure to talk to the Ethereum node: a transport error, a
// timeout, an HTTP status without a JSON-RPC error, or a malformed reply. It
// never includes the endpoint URL's path or query, where providers put API
// keys; a dial or DNS error does name the host. It is for the operator's log:
// the edge should answer clients with a generic upstream error.
type NodeError struct {
	Method string
	Err    error
}

func (e *NodeError) Error() string { return "node " + e.Method + ": " + e.Err.Error() }

// Unwrap lets errors.Is find context.DeadlineExceeded and friends.
func (e *NodeError) Unwrap() error { return e.Err }
