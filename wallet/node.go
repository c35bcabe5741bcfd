package wallet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/cachet-custody/cachet/internal/clip"
)

// Filler reads what Fill needs from an Ethereum node. Each method is one
// JSON-RPC call; implementations honour ctx for cancellation and deadlines.
type Filler interface {
	// ChainID is eth_chainId.
	ChainID(ctx context.Context) (*big.Int, error)
	// PendingNonce is eth_getTransactionCount(account, "pending").
	PendingNonce(ctx context.Context, account common.Address) (uint64, error)
	// EstimateGas is eth_estimateGas.
	EstimateGas(ctx context.Context, call CallMsg) (uint64, error)
	// GasPrice is eth_gasPrice.
	GasPrice(ctx context.Context) (*big.Int, error)
	// MaxPriorityFeePerGas is eth_maxPriorityFeePerGas.
	MaxPriorityFeePerGas(ctx context.Context) (*big.Int, error)
	// LatestBaseFee is baseFeePerGas of eth_getBlockByNumber("latest");
	// it returns ErrNoBaseFee if the block has none.
	LatestBaseFee(ctx context.Context) (*big.Int, error)
}

// Broadcaster sends a signed transaction.
type Broadcaster interface {
	// SendRawTransaction is eth_sendRawTransaction; it returns the hash the
	// node reports.
	SendRawTransaction(ctx context.Context, signed []byte) (common.Hash, error)
}

// Node is an Ethereum JSON-RPC endpoint: a Filler and a Broadcaster.
type Node interface {
	Filler
	Broadcaster
}

// CallMsg is the transaction estimated by EstimateGas.
type CallMsg struct {
	From       common.Address
	To         *common.Address
	Value      *big.Int
	Data       []byte
	AccessList types.AccessList
	AuthList   []types.SetCodeAuthorization
}

// NodeOptions configures NewNode. The zero value is usable.
type NodeOptions struct {
	// Client is the HTTP client; nil means one with a 30 s timeout. Per-call
	// deadlines come from the ctx passed to each method.
	Client *http.Client
	// MaxResponseBytes caps a reply; 0 means 8 MiB (a latest block with
	// transaction hashes only is well below that).
	MaxResponseBytes int64
}

// NewNode returns a JSON-RPC client for an http or https endpoint. The URL
// may carry an API key in its path or query; it never appears in errors.
func NewNode(endpoint string, opts NodeOptions) (Node, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("wallet: node endpoint must be an http or https URL")
	}
	n := &jsonrpcNode{url: endpoint, client: opts.Client, max: opts.MaxResponseBytes}
	if n.client == nil {
		n.client = &http.Client{Timeout: 30 * time.Second}
	}
	if n.max <= 0 {
		n.max = 8 << 20
	}
	return n, nil
}

type jsonrpcNode struct {
	url    string
	client *http.Client
	max    int64
	id     atomic.Uint64
}

// maxNodeMessage bounds the node's error message passed on to clients.
const maxNodeMessage = 512

func (n *jsonrpcNode) call(ctx context.Context, method string, result any, params ...any) error {
	if params == nil {
		params = []any{}
	}
	id := n.id.Add(1)
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	if err != nil {
		return &NodeError{Method: method, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, bytes.NewReader(body))
	if err != nil {
		return &NodeError{Method: method, Err: errors.New("building request")}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		// *url.Error quotes the URL; keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return &NodeError{Method: method, Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, n.max+1))
	if err != nil {
		return &NodeError{Method: method, Err: err}
	}
	if int64(len(data)) > n.max {
		return &NodeError{Method: method, Err: fmt.Errorf("reply exceeds %d bytes", n.max)}
	}
	var reply struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  json.RawMessage `json:"result"`
		Error   *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(data, &reply); err != nil {
		if resp.StatusCode != http.StatusOK {
			return &NodeError{Method: method, Err: fmt.Errorf("HTTP status %d", resp.StatusCode)}
		}
		return &NodeError{Method: method, Err: errors.New("reply is not JSON-RPC")}
	}
	if reply.Error != nil {
		return &RPCError{Method: method, Code: reply.Error.Code, Message: cleanMessage(reply.Error.Message)}
	}
	if resp.StatusCode != http.StatusOK {
		return &NodeError{Method: method, Err: fmt.Errorf("HTTP status %d", resp.StatusCode)}
	}
	if reply.JSONRPC != "2.0" || string(reply.ID) != fmt.Sprint(id) {
		return &NodeError{Method: method, Err: errors.New("reply is not JSON-RPC 2.0 for this request")}
	}
	if err := json.Unmarshal(reply.Result, result); err != nil {
		return &NodeError{Method: method, Err: errors.New("malformed result")}
	}
	return nil
}

// cleanMessage bounds a node error message and drops control characters, so
// it is safe to return to clients and to log.
func cleanMessage(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return clip.To(s, maxNodeMessage)
}

func (n *jsonrpcNode) bigResult(ctx context.Context, method string, params ...any) (*big.Int, error) {
	var v *hexutil.Big
	if err := n.call(ctx, method, &v, params...); err != nil {
		return nil, err
	}
	if v == nil {
		return nil, &NodeError{Method: method, Err: errors.New("null result")}
	}
	return v.ToInt(), nil
}

func (n *jsonrpcNode) uintResult(ctx context.Context, method string, params ...any) (uint64, error) {
	var v *hexutil.Uint64
	if err := n.call(ctx, method, &v, params...); err != nil {
		return 0, err
	}
	if v == nil {
		return 0, &NodeError{Method: method, Err: errors.New("null result")}
	}
	return uint64(*v), nil
}

func (n *jsonrpcNode) ChainID(ctx context.Context) (*big.Int, error) {
	return n.bigResult(ctx, "eth_chainId")
}

func (n *jsonrpcNode) PendingNonce(ctx context.Context, account common.Address) (uint64, error) {
	return n.uintResult(ctx, "eth_getTransactionCount", account, "pending")
}

func (n *jsonrpcNode) EstimateGas(ctx context.Context, call CallMsg) (uint64, error) {
	arg := map[string]any{"from": call.From}
	if call.To != nil {
		arg["to"] = call.To
	}
	if call.Value != nil && call.Value.Sign() > 0 {
		arg["value"] = (*hexutil.Big)(call.Value)
	}
	if len(call.Data) > 0 {
		arg["data"] = hexutil.Bytes(call.Data)
	}
	if len(call.AccessList) > 0 {
		arg["accessList"] = call.AccessList
	}
	if len(call.AuthList) > 0 {
		arg["authorizationList"] = call.AuthList
	}
	return n.uintResult(ctx, "eth_estimateGas", arg)
}

func (n *jsonrpcNode) GasPrice(ctx context.Context) (*big.Int, error) {
	return n.bigResult(ctx, "eth_gasPrice")
}

func (n *jsonrpcNode) MaxPriorityFeePerGas(ctx context.Context) (*big.Int, error) {
	return n.bigResult(ctx, "eth_maxPriorityFeePerGas")
}

func (n *jsonrpcNode) LatestBaseFee(ctx context.Context) (*big.Int, error) {
	var head *struct {
		BaseFee *hexutil.Big `json:"baseFeePerGas"`
	}
	if err := n.call(ctx, "eth_getBlockByNumber", &head, "latest", false); err != nil {
		return nil, err
	}
	if head == nil {
		return nil, &NodeError{Method: "eth_getBlockByNumber", Err: errors.New("null result")}
	}
	if head.BaseFee == nil {
		return nil, ErrNoBaseFee
	}
	return head.BaseFee.ToInt(), nil
}

func (n *jsonrpcNode) SendRawTransaction(ctx context.Context, signed []byte) (common.Hash, error) {
	var h common.Hash
	err := n.call(ctx, "eth_sendRawTransaction", &h, hexutil.Bytes(signed))
	return h, err
}

// Fill completes the request from the node before signing, and checks the
// node's chain. For a transaction it sets, if absent: nonce
// (eth_getTransactionCount(from, "pending")), fees, and gas_limit
// (eth_estimateGas, without a safety margin, as ethers and viem do). Fees for
// types 2 and 4: max_priority_fee_per_gas = eth_maxPriorityFeePerGas and
// max_fee_per_gas = 2 × latest baseFeePerGas + max_priority_fee_per_gas (the
// formula go-ethereum's and ethers' fee suggestions use, which survives six
// full blocks of base-fee increases); a client-given max fee below the
// suggested tip lowers the tip to it. Types 0 and 1: gas_price =
// eth_gasPrice. For an eth_sign7702Authorization without nonce it sets nonce
// = pending nonce, plus one when executor is "self" (EIP-7702: the type 4
// transaction increments the sender's nonce before the authorization list is
// processed).
//
// from is the wallet's address. Other methods are left unchanged (Fill
// returns nil). Fill never touches the fields a policy reads (to, value, data,
// chain_id), so policies may run before or after it.
func (r *Request) Fill(ctx context.Context, f Filler, from common.Address) error {
	switch {
	case r.Tx != nil:
		return r.Tx.fill(ctx, f, from)
	case r.Auth != nil && r.Auth.Nonce == nil:
		if r.Auth.ChainID.Sign() != 0 {
			if err := checkChain(ctx, f, r.Auth.ChainID); err != nil {
				return err
			}
		}
		n, err := f.PendingNonce(ctx, from)
		if err != nil {
			return err
		}
		if r.Auth.Executor == "self" {
			n++
		}
		r.Auth.Nonce = &n
	}
	return nil
}

func checkChain(ctx context.Context, f Filler, want *big.Int) error {
	got, err := f.ChainID(ctx)
	if err != nil {
		return err
	}
	if got.Cmp(want) != 0 {
		return fmt.Errorf("%w: node is on chain %s, request is for chain %s", ErrChainMismatch, got, want)
	}
	return nil
}

func (t *TxRequest) fill(ctx context.Context, f Filler, from common.Address) error {
	if t.ChainID == nil {
		return inputErr("params.transaction.chain_id", "is required (or give caip2)")
	}
	if t.From != nil && *t.From != from {
		return inputErr("params.transaction.from", "is not this wallet's address")
	}
	// The chain is checked even when nothing is missing: the same node
	// broadcasts the transaction afterwards.
	if err := checkChain(ctx, f, t.ChainID); err != nil {
		return err
	}
	if t.Nonce == nil {
		n, err := f.PendingNonce(ctx, from)
		if err != nil {
			return err
		}
		t.Nonce = &n
	}
	switch t.Type {
	case types.LegacyTxType, types.AccessListTxType:
		if t.GasPrice == nil {
			p, err := f.GasPrice(ctx)
			if err != nil {
				return err
			}
			t.GasPrice = p
		}
	default:
		if t.MaxFeePerGas == nil || t.MaxPriorityFeePerGas == nil {
			tip := t.MaxPriorityFeePerGas
			if tip == nil {
				var err error
				if tip, err = f.MaxPriorityFeePerGas(ctx); err != nil {
					return err
				}
			}
			if t.MaxFeePerGas == nil {
				base, err := f.LatestBaseFee(ctx)
				if err != nil {
					return err
				}
				t.MaxFeePerGas = new(big.Int).Add(new(big.Int).Lsh(base, 1), tip)
			} else if tip.Cmp(t.MaxFeePerGas) > 0 {
				tip = new(big.Int).Set(t.MaxFeePerGas)
			}
			t.MaxPriorityFeePerGas = tip
		}
	}
	if t.GasLimit == nil {
		g, err := f.EstimateGas(ctx, CallMsg{
			From: from, To: t.To, Value: t.Value, Data: t.Data,
			AccessList: t.AccessList, AuthList: t.AuthorizationList,
		})
		if err != nil {
			return err
		}
		t.GasLimit = &g
	}
	return nil
}

// Broadcast sends resp.SignedTx, the result of signing an
// eth_sendTransaction, and checks that the node reports the same hash as
// resp.
func Broadcast(ctx context.Context, b Broadcaster, resp *Response) error {
	d, ok := resp.Data.(*SendTransactionData)
	if !ok || len(resp.SignedTx) == 0 {
		return errors.New("wallet: Broadcast needs an eth_sendTransaction response")
	}
	h, err := b.SendRawTransaction(ctx, resp.SignedTx)
	if err != nil {
		return err
	}
	if h.Hex() != d.Hash {
		return fmt.Errorf("%w: node %s, computed %s", ErrHashMismatch, h.Hex(), d.Hash)
	}
	return nil
}
