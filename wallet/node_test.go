package wallet

import (
	"context"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
)

// fakeNode is a JSON-RPC 2.0 server on loopback that answers from a table
// and records calls. It stands in for an Ethereum node, above the network
// boundary the Node interface abstracts.
type fakeNode struct {
	t       *testing.T
	mu      sync.Mutex
	results map[string]any             // method → result
	errors  map[string]map[string]any  // method → JSON-RPC error object
	calls   []string                   // methods in call order
	params  map[string]json.RawMessage // last params per method
	delay   time.Duration
	raw     func(w http.ResponseWriter) bool // optional override
	srv     *httptest.Server
}

func newFakeNode(t *testing.T) *fakeNode {
	f := &fakeNode{
		t: t,
		results: map[string]any{
			"eth_chainId":              "0xaa36a7", // 11155111
			"eth_getTransactionCount":  "0x5",
			"eth_estimateGas":          "0x5208",
			"eth_gasPrice":             "0x3b9aca00",
			"eth_maxPriorityFeePerGas": "0x59682f00",
			"eth_getBlockByNumber":     map[string]any{"number": "0x10", "baseFeePerGas": "0x7", "transactions": []string{}},
		},
		errors: map[string]map[string]any{},
		params: map[string]json.RawMessage{},
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeNode) serve(w http.ResponseWriter, r *http.Request) {
	var req struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.JSONRPC != "2.0" || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, req.Method)
	f.params[req.Method] = req.Params
	delay, raw := f.delay, f.raw
	res, hasRes := f.results[req.Method]
	rpcErr := f.errors[req.Method]
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if raw != nil && raw(w) {
		return
	}
	reply := map[string]any{"jsonrpc": "2.0", "id": req.ID}
	switch {
	case rpcErr != nil:
		reply["error"] = rpcErr
	case hasRes:
		reply["result"] = res
	default:
		reply["error"] = map[string]any{"code": -32601, "message": "the method " + req.Method + " does not exist/is not available"}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(reply)
}

func (f *fakeNode) node(t *testing.T, path string) Node {
	n, err := NewNode(f.srv.URL+path, NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// set changes the fake's state under its lock; the handler runs on other
// goroutines.
func (f *fakeNode) set(fn func(*fakeNode)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeNode) lastParams(method string) json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.params[method]
}

func (f *fakeNode) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func TestFillAndBroadcast(t *testing.T) {
	f := newFakeNode(t)
	n := f.node(t, "/")
	req, err := ParseRPC([]byte(`{"method":"eth_sendTransaction","caip2":"eip155:11155111","params":{"transaction":{"to":"` + testAddr + `","value":"0x1","data":"0xabcd"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	from := common.HexToAddress(testAddr)
	if err := req.Fill(context.Background(), n, from); err != nil {
		t.Fatal(err)
	}
	tx := req.Tx
	if *tx.Nonce != 5 || *tx.GasLimit != 21000 {
		t.Fatalf("nonce %d gas %d", *tx.Nonce, *tx.GasLimit)
	}
	// tip = eth_maxPriorityFeePerGas; max fee = 2 × base fee (7) + tip.
	if tx.MaxPriorityFeePerGas.Int64() != 1_500_000_000 || tx.MaxFeePerGas.Int64() != 1_500_000_014 {
		t.Fatalf("fees %v %v", tx.MaxPriorityFeePerGas, tx.MaxFeePerGas)
	}
	if len(tx.Missing()) != 0 {
		t.Fatalf("still missing %v", tx.Missing())
	}
	var est []map[string]any
	if err := json.Unmarshal(f.lastParams("eth_estimateGas"), &est); err != nil {
		t.Fatal(err)
	}
	if est[0]["from"] != strings.ToLower(testAddr) || est[0]["value"] != "0x1" || est[0]["data"] != "0xabcd" {
		t.Fatalf("estimateGas params %v", est)
	}
	var nonceParams []any
	_ = json.Unmarshal(f.lastParams("eth_getTransactionCount"), &nonceParams)
	if nonceParams[1] != "pending" {
		t.Fatalf("nonce block tag %v", nonceParams[1])
	}

	resp, err := req.Sign(testKey)
	if err != nil {
		t.Fatal(err)
	}
	var signed types.Transaction
	if err := signed.UnmarshalBinary(resp.SignedTx); err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeNode) { f.results["eth_sendRawTransaction"] = signed.Hash().Hex() })
	if err := Broadcast(context.Background(), n, resp); err != nil {
		t.Fatal(err)
	}
	var sent []string
	_ = json.Unmarshal(f.lastParams("eth_sendRawTransaction"), &sent)
	if sent[0] != hexutil.Encode(resp.SignedTx) {
		t.Fatal("broadcast other bytes than signed")
	}
	if d := resp.Data.(*SendTransactionData); d.Hash != signed.Hash().Hex() || d.CAIP2 != "eip155:11155111" {
		t.Fatalf("response %+v", d)
	}

	// A node reporting another hash is not trusted.
	f.set(func(f *fakeNode) { f.results["eth_sendRawTransaction"] = common.Hash{1}.Hex() })
	if err := Broadcast(context.Background(), n, resp); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("error %v", err)
	}
}

func TestFillVariants(t *testing.T) {
	from := common.HexToAddress(testAddr)
	tests := []struct {
		name  string
		body  string
		check func(*testing.T, *Request)
		calls []string
	}{
		{
			name:  "legacy gets gas price",
			body:  `{"method":"eth_sendTransaction","caip2":"eip155:11155111","params":{"transaction":{"type":0,"to":"` + testAddr + `","gas_limit":21000}}}`,
			check: func(t *testing.T, r *Request) { assertBig(t, r.Tx.GasPrice, 1_000_000_000) },
			calls: []string{"eth_chainId", "eth_getTransactionCount", "eth_gasPrice"},
		},
		{
			name: "given max fee below suggested tip lowers the tip",
			body: `{"method":"eth_sendTransaction","caip2":"eip155:11155111","params":{"transaction":{"to":"` + testAddr + `","nonce":1,"gas_limit":21000,"max_fee_per_gas":100}}}`,
			check: func(t *testing.T, r *Request) {
				assertBig(t, r.Tx.MaxFeePerGas, 100)
				assertBig(t, r.Tx.MaxPriorityFeePerGas, 100)
			},
			calls: []string{"eth_chainId", "eth_maxPriorityFeePerGas"},
		},
		{
			name: "given tip keeps it",
			body: `{"method":"eth_sendTransaction","caip2":"eip155:11155111","params":{"transaction":{"to":"` + testAddr + `","nonce":1,"gas_limit":21000,"max_priority_fee_per_gas":3}}}`,
			check: func(t *testing.T, r *Request) {
				assertBig(t, r.Tx.MaxPriorityFeePerGas, 3)
				assertBig(t, r.Tx.MaxFeePerGas, 17)
			},
			calls: []string{"eth_chainId", "eth_getBlockByNumber"},
		},
		{
			name:  "complete transaction only checks the chain",
			body:  `{"method":"eth_sendTransaction","caip2":"eip155:11155111","params":{"transaction":{"to":"` + testAddr + `","nonce":1,"gas_limit":21000,"max_fee_per_gas":2,"max_priority_fee_per_gas":1}}}`,
			check: func(t *testing.T, r *Request) {},
			calls: []string{"eth_chainId"},
		},
		{
			name:  "sign transaction may be filled too",
			body:  `{"method":"eth_signTransaction","params":{"transaction":{"chain_id":11155111,"to":"` + testAddr + `","gas_limit":21000,"max_fee_per_gas":2,"max_priority_fee_per_gas":1}}}`,
			check: func(t *testing.T, r *Request) { assertBig(t, new(big.Int).SetUint64(*r.Tx.Nonce), 5) },
			calls: []string{"eth_chainId", "eth_getTransactionCount"},
		},
		{
			name:  "authorization nonce, another executor",
			body:  `{"method":"eth_sign7702Authorization","params":{"contract":"` + testAddr + `","chain_id":11155111}}`,
			check: func(t *testing.T, r *Request) { assertBig(t, new(big.Int).SetUint64(*r.Auth.Nonce), 5) },
			calls: []string{"eth_chainId", "eth_getTransactionCount"},
		},
		{
			name:  "authorization nonce, executor self",
			body:  `{"method":"eth_sign7702Authorization","params":{"contract":"` + testAddr + `","chain_id":11155111,"executor":"self"}}`,
			check: func(t *testing.T, r *Request) { assertBig(t, new(big.Int).SetUint64(*r.Auth.Nonce), 6) },
			calls: []string{"eth_chainId", "eth_getTransactionCount"},
		},
		{
			name:  "authorization with nonce untouched",
			body:  `{"method":"eth_sign7702Authorization","params":{"contract":"` + testAddr + `","chain_id":1,"nonce":9}}`,
			check: func(t *testing.T, r *Request) { assertBig(t, new(big.Int).SetUint64(*r.Auth.Nonce), 9) },
			calls: nil,
		},
		{
			name:  "message untouched",
			body:  `{"method":"personal_sign","params":{"message":"x"}}`,
			check: func(t *testing.T, r *Request) {},
			calls: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeNode(t)
			req, err := ParseRPC([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if err := req.Fill(context.Background(), f.node(t, "/"), from); err != nil {
				t.Fatal(err)
			}
			tt.check(t, req)
			if got := f.called(); strings.Join(got, ",") != strings.Join(tt.calls, ",") {
				t.Fatalf("calls %v, want %v", got, tt.calls)
			}
			if _, err := req.Sign(testKey); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func assertBig(t *testing.T, got *big.Int, want int64) {
	t.Helper()
	if got == nil || got.Cmp(big.NewInt(want)) != 0 {
		t.Fatalf("got %v, want %d", got, want)
	}
}

func TestNodeErrors(t *testing.T) {
	from := common.HexToAddress(testAddr)
	send := `{"method":"eth_sendTransaction","caip2":"eip155:11155111","params":{"transaction":{"to":"` + testAddr + `"}}}`
	const secretPath = "/v3/SECRET-API-KEY"
	tests := []struct {
		name  string
		body  string
		setup func(*fakeNode)
		ctx   func() (context.Context, context.CancelFunc)
		check func(*testing.T, error)
	}{
		{
			name:  "chain mismatch",
			body:  send,
			setup: func(f *fakeNode) { f.results["eth_chainId"] = "0x1" },
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrChainMismatch) {
					t.Fatalf("error %v", err)
				}
			},
		},
		{
			name: "JSON-RPC error surfaces as RPCError",
			body: send,
			setup: func(f *fakeNode) {
				f.errors["eth_estimateGas"] = map[string]any{"code": -32000, "message": "insufficient funds for gas * price + value\n" + strings.Repeat("x", 2000)}
			},
			check: func(t *testing.T, err error) {
				var re *RPCError
				if !errors.As(err, &re) || re.Method != "eth_estimateGas" || re.Code != -32000 {
					t.Fatalf("error %v", err)
				}
				if !strings.HasPrefix(re.Message, "insufficient funds for gas * price + value ") || len(re.Message) > maxNodeMessage+4 {
					t.Fatalf("message not cleaned: %q", re.Message[:80])
				}
			},
		},
		{
			name:  "no base fee",
			body:  send,
			setup: func(f *fakeNode) { f.results["eth_getBlockByNumber"] = map[string]any{"number": "0x10"} },
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrNoBaseFee) {
					t.Fatalf("error %v", err)
				}
			},
		},
		{
			name:  "method not available",
			body:  send,
			setup: func(f *fakeNode) { delete(f.results, "eth_maxPriorityFeePerGas") },
			check: func(t *testing.T, err error) {
				var re *RPCError
				if !errors.As(err, &re) || re.Code != -32601 {
					t.Fatalf("error %v", err)
				}
			},
		},
		{
			name: "HTTP 500 without JSON",
			body: send,
			setup: func(f *fakeNode) {
				f.raw = func(w http.ResponseWriter) bool { http.Error(w, "upstream down", 500); return true }
			},
			check: func(t *testing.T, err error) {
				var ne *NodeError
				if !errors.As(err, &ne) || !strings.Contains(err.Error(), "HTTP status 500") {
					t.Fatalf("error %v", err)
				}
			},
		},
		{
			name: "reply for another id",
			body: send,
			setup: func(f *fakeNode) {
				f.raw = func(w http.ResponseWriter) bool {
					_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":999,"result":"0xaa36a7"}`))
					return true
				}
			},
			check: func(t *testing.T, err error) {
				var ne *NodeError
				if !errors.As(err, &ne) {
					t.Fatalf("error %v", err)
				}
			},
		},
		{
			name:  "timeout from ctx",
			body:  send,
			setup: func(f *fakeNode) { f.delay = 2 * time.Second },
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("error %v", err)
				}
			},
		},
		{
			name: "from is another account",
			body: `{"method":"eth_sendTransaction","caip2":"eip155:11155111","params":{"transaction":{"to":"` + testAddr + `","from":"0x9858EfFD232B4033E47d90003D41EC34EcaEda94"}}}`,
			check: func(t *testing.T, err error) {
				var ie *InputError
				if !errors.As(err, &ie) || ie.Field != "params.transaction.from" {
					t.Fatalf("error %v", err)
				}
			},
		},
		{
			name: "sign transaction without chain",
			body: `{"method":"eth_signTransaction","params":{"transaction":{"to":"` + testAddr + `"}}}`,
			check: func(t *testing.T, err error) {
				var ie *InputError
				if !errors.As(err, &ie) || ie.Field != "params.transaction.chain_id" {
					t.Fatalf("error %v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeNode(t)
			if tt.setup != nil {
				f.set(tt.setup)
			}
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			req, err := ParseRPC([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			err = req.Fill(ctx, f.node(t, secretPath), from)
			if err == nil {
				t.Fatal("Fill succeeded")
			}
			tt.check(t, err)
			if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "127.0.0.1") {
				t.Fatalf("error leaks the endpoint: %v", err)
			}
		})
	}
}

func TestBroadcastNodeRejects(t *testing.T) {
	f := newFakeNode(t)
	f.set(func(f *fakeNode) {
		f.errors["eth_sendRawTransaction"] = map[string]any{"code": -32000, "message": "nonce too low: next nonce 6, tx nonce 5"}
	})
	req, err := ParseRPC([]byte(`{"method":"eth_sendTransaction","caip2":"eip155:11155111","params":{"transaction":{"to":"` + testAddr + `","nonce":5,"gas_limit":21000,"max_fee_per_gas":2,"max_priority_fee_per_gas":1}}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := req.Sign(testKey)
	if err != nil {
		t.Fatal(err)
	}
	err = Broadcast(context.Background(), f.node(t, "/"), resp)
	var re *RPCError
	if !errors.As(err, &re) || re.Message != "nonce too low: next nonce 6, tx nonce 5" {
		t.Fatalf("error %v", err)
	}
	// Only a send response can be broadcast.
	if err := Broadcast(context.Background(), f.node(t, "/"), &Response{Method: MethodPersonalSign, Data: &SignatureData{}}); err == nil {
		t.Fatal("broadcast a signature")
	}
}

func TestNewNodeRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "ftp://node", "node:8545", "http://", "unix:///tmp/x"} {
		if _, err := NewNode(u, NodeOptions{}); err == nil {
			t.Errorf("NewNode(%q) accepted", u)
		}
	}
}
