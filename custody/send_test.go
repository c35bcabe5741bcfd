package custody_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/wallet"
)

// fakeNode is an Ethereum JSON-RPC node above the boundary: it answers the
// calls a fill and a broadcast make, and keeps the raw transactions it was
// sent.
type fakeNode struct {
	srv     *httptest.Server
	chainID int64

	mu        sync.Mutex
	methods   []string
	raw       [][]byte
	sendError bool // eth_sendRawTransaction answers a JSON-RPC error
	revert    bool // eth_estimateGas answers a JSON-RPC error
}

const (
	nodeNonce   = 7
	nodeTip     = 1_000_000_000
	nodeBaseFee = 100_000_000
	nodeGas     = 21_000
)

func newFakeNode(t testing.TB, chainID int64) *fakeNode {
	n := &fakeNode{chainID: chainID}
	n.srv = httptest.NewServer(http.HandlerFunc(n.serve))
	t.Cleanup(n.srv.Close)
	return n
}

func (n *fakeNode) serve(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID     json.RawMessage   `json:"id"`
		Method string            `json:"method"`
		Params []json.RawMessage `json:"params"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.methods = append(n.methods, req.Method)
	var result any
	var rpcErr map[string]any
	switch req.Method {
	case "eth_chainId":
		result = hexutil.EncodeBig(big.NewInt(n.chainID))
	case "eth_getTransactionCount":
		result = hexutil.EncodeUint64(nodeNonce)
	case "eth_maxPriorityFeePerGas":
		result = hexutil.EncodeUint64(nodeTip)
	case "eth_getBlockByNumber":
		result = map[string]any{"number": "0x100", "baseFeePerGas": hexutil.EncodeUint64(nodeBaseFee)}
	case "eth_estimateGas":
		if n.revert {
			rpcErr = map[string]any{"code": 3, "message": "execution reverted"}
		} else {
			result = hexutil.EncodeUint64(nodeGas)
		}
	case "eth_sendRawTransaction":
		var s string
		if len(req.Params) == 1 {
			json.Unmarshal(req.Params[0], &s)
		}
		raw, err := hexutil.Decode(s)
		var tx types.Transaction
		if err == nil {
			err = tx.UnmarshalBinary(raw)
		}
		switch {
		case err != nil:
			rpcErr = map[string]any{"code": -32602, "message": "invalid raw transaction"}
		case n.sendError:
			rpcErr = map[string]any{"code": -32000, "message": "insufficient funds for gas * price + value"}
		default:
			n.raw = append(n.raw, raw)
			result = tx.Hash().Hex()
		}
	default:
		rpcErr = map[string]any{"code": -32601, "message": "method not found"}
	}
	reply := map[string]any{"jsonrpc": "2.0", "id": req.ID}
	if rpcErr != nil {
		reply["error"] = rpcErr
	} else {
		reply["result"] = result
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(reply)
}

func (n *fakeNode) set(f func(n *fakeNode)) {
	n.mu.Lock()
	f(n)
	n.mu.Unlock()
}

func (n *fakeNode) sent() [][]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([][]byte(nil), n.raw...)
}

func (n *fakeNode) node(t testing.TB) wallet.Node {
	t.Helper()
	nd, err := wallet.NewNode(n.srv.URL, wallet.NodeOptions{Client: n.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return nd
}

// deadURL is a loopback address where nothing listens.
func deadURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/"
}

// splitNode fills from one node and broadcasts through another.
type splitNode struct {
	wallet.Filler
	wallet.Broadcaster
}

func sendBody(caip2 string) []byte {
	return fmt.Appendf(nil, `{"method":"eth_sendTransaction","caip2":%q,"params":{"transaction":{"to":"0x000000000000000000000000000000000000dEaD","value":"0x2386f26fc10000"}}}`, caip2)
}

func TestSendTransactionWithoutChain(t *testing.T) {
	e := newEnv(t, envConfig{})
	w := e.ownedWallet("")
	e.refused(t, custody.Invalid, func() error { _, err := e.rpc(request{body: sendBody("eip155:1")}, w.ID); return err })
}

func TestSendTransaction(t *testing.T) {
	mainnet := newFakeNode(t, 1)
	optimism := newFakeNode(t, 10)
	dead, err := wallet.NewNode(deadURL(t), wallet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chains := map[string]wallet.Node{
		"eip155:1":   mainnet.node(t),
		"eip155:5":   mainnet.node(t), // a node on the wrong chain
		"eip155:10":  splitNode{optimism.node(t), dead},
		"eip155:137": dead,
	}
	e := newEnv(t, envConfig{opts: custody.Options{Chains: func(caip2 string) (wallet.Node, bool) {
		n, ok := chains[caip2]
		return n, ok
	}}})
	k := newAuthKey(t)
	w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"public_key":"`+k.pub+`"}}`)

	t.Run("broadcast", func(t *testing.T) {
		out, err := e.rpc(request{body: sendBody("eip155:1"), signers: keysOf(k), idem: "send-1"}, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		var resp struct {
			Method string `json:"method"`
			Data   struct {
				Hash  string `json:"hash"`
				CAIP2 string `json:"caip2"`
			} `json:"data"`
		}
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Method != "eth_sendTransaction" || resp.Data.CAIP2 != "eip155:1" {
			t.Errorf("response %s", out)
		}
		sent := mainnet.sent()
		if len(sent) != 1 {
			t.Fatalf("node received %d transactions, want 1", len(sent))
		}
		var tx types.Transaction
		if err := tx.UnmarshalBinary(sent[0]); err != nil {
			t.Fatal(err)
		}
		if tx.Hash().Hex() != resp.Data.Hash {
			t.Errorf("response hash %s, node received %s", resp.Data.Hash, tx.Hash().Hex())
		}
		from, err := types.Sender(types.LatestSignerForChainID(tx.ChainId()), &tx)
		if err != nil {
			t.Fatal(err)
		}
		if from != common.HexToAddress(w.Address) {
			t.Errorf("transaction signed by %s, want the wallet %s", from.Hex(), w.Address)
		}
		wantFee := big.NewInt(2*nodeBaseFee + nodeTip)
		if tx.Type() != types.DynamicFeeTxType || tx.ChainId().Int64() != 1 || tx.Nonce() != nodeNonce || tx.Gas() != nodeGas ||
			tx.GasTipCap().Int64() != nodeTip || tx.GasFeeCap().Cmp(wantFee) != 0 ||
			*tx.To() != common.HexToAddress("0x000000000000000000000000000000000000dEaD") || tx.Value().String() != "10000000000000000" {
			t.Errorf("transaction type %d chain %v nonce %d gas %d tip %v cap %v to %v value %v", tx.Type(), tx.ChainId(), tx.Nonce(),
				tx.Gas(), tx.GasTipCap(), tx.GasFeeCap(), tx.To(), tx.Value())
		}
		if e.audits("wallet.rpc", "allow") != 1 || e.audits("wallet.broadcast", "allow") != 1 {
			t.Errorf("audit: %d wallet.rpc, %d wallet.broadcast; want 1 and 1", e.audits("wallet.rpc", "allow"), e.audits("wallet.broadcast", "allow"))
		}

		before := e.snapshot()
		again, err := e.rpc(request{body: sendBody("eip155:1"), signers: keysOf(k), idem: "send-1"}, w.ID)
		if err != nil || string(again) != string(out) {
			t.Errorf("idempotent retry = %s, %v; want %s", again, err, out)
		}
		if n := len(mainnet.sent()); n != 1 {
			t.Errorf("the retry broadcast again: node received %d transactions", n)
		}
		e.unchanged(t, before)
	})

	// Failures after the signature: the signature is recorded, the failed
	// broadcast too, and no idempotent response is stored. A node that
	// refused the transaction frees the idempotency key; one that did not
	// answer leaves the outcome unknown, so the key stays in progress and a
	// retry under it is refused as a conflict rather than sent again.
	for _, tc := range []struct {
		name      string
		caip2     string
		setup     func()
		want      custody.Kind
		keyKept   bool         // the key stays, marked in progress
		retryKind custody.Kind // the same request sent again
	}{
		{"node refuses the transaction", "eip155:1", func() { mainnet.set(func(n *fakeNode) { n.sendError = true }) }, custody.Invalid, false, custody.Unauthorized},
		{"node unreachable for the broadcast", "eip155:10", func() {}, custody.Unavailable, true, custody.Conflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			defer mainnet.set(func(n *fakeNode) { n.sendError = false })
			rpcs, denied, idems := e.audits("wallet.rpc", "allow"), e.audits("wallet.broadcast", "deny"), e.count(`SELECT COUNT(*) FROM idempotency_keys`)
			call := e.rpcCall(request{body: sendBody(tc.caip2), signers: keysOf(k), idem: "fail-" + tc.caip2}, w.ID)
			_, err := e.svc.RPC(e.ctx, call, w.ID, sendBody(tc.caip2), false)
			wantKind(t, err, tc.want)
			if got := e.audits("wallet.rpc", "allow"); got != rpcs+1 {
				t.Errorf("wallet.rpc records %d, want %d", got, rpcs+1)
			}
			if got := e.audits("wallet.broadcast", "deny"); got != denied+1 {
				t.Errorf("wallet.broadcast deny records %d, want %d", got, denied+1)
			}
			wantIdems := idems
			if tc.keyKept {
				wantIdems++
			}
			if got := e.count(`SELECT COUNT(*) FROM idempotency_keys`); got != wantIdems {
				t.Errorf("idempotency keys %d after a failed broadcast, want %d", got, wantIdems)
			}
			if got := e.count(`SELECT COUNT(*) FROM idempotency_keys WHERE length(response) > 0`); got != idems {
				t.Errorf("a failed broadcast stored an idempotent response")
			}
			// The SDK's retry of the same request is not signed and sent a
			// second time.
			sent := len(mainnet.sent())
			e.refused(t, tc.retryKind, func() error {
				_, err := e.svc.RPC(e.ctx, call, w.ID, sendBody(tc.caip2), false)
				return err
			})
			if len(mainnet.sent()) != sent {
				t.Errorf("the retry reached the node")
			}
		})
	}

	// Failures before the signature change nothing.
	for _, tc := range []struct {
		name  string
		caip2 string
		setup func()
		want  custody.Kind
	}{
		{"no node for the chain", "eip155:42161", func() {}, custody.Invalid},
		{"node on another chain", "eip155:5", func() {}, custody.Invalid},
		{"node unreachable", "eip155:137", func() {}, custody.Unavailable},
		{"gas estimate reverts", "eip155:1", func() { mainnet.set(func(n *fakeNode) { n.revert = true }) }, custody.Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			defer mainnet.set(func(n *fakeNode) { n.revert = false })
			sent := len(mainnet.sent())
			e.refused(t, tc.want, func() error {
				_, err := e.rpc(request{body: sendBody(tc.caip2), signers: keysOf(k)}, w.ID)
				return err
			})
			if len(mainnet.sent()) != sent {
				t.Errorf("a refused request reached eth_sendRawTransaction")
			}
		})
	}
}

// hangUp is a broadcaster above the boundary whose caller goes away: it
// cancels the request's context after the node accepted the transaction
// (ok) or while the node is being asked (!ok).
type hangUp struct {
	inner  wallet.Broadcaster
	cancel context.CancelFunc
	ok     bool
}

func (h hangUp) SendRawTransaction(ctx context.Context, signed []byte) (common.Hash, error) {
	if !h.ok {
		h.cancel()
		return h.inner.SendRawTransaction(ctx, signed)
	}
	hash, err := h.inner.SendRawTransaction(ctx, signed)
	h.cancel()
	return hash, err
}

// TestSendTransactionCallerGone: what reached the node is recorded even when
// the caller went away, and an idempotent retry does not send a second
// transaction.
func TestSendTransactionCallerGone(t *testing.T) {
	node := newFakeNode(t, 1)
	var mu sync.Mutex
	var broadcaster wallet.Broadcaster
	e := newEnv(t, envConfig{opts: custody.Options{Chains: func(caip2 string) (wallet.Node, bool) {
		mu.Lock()
		defer mu.Unlock()
		return splitNode{node.node(t), broadcaster}, caip2 == "eip155:1"
	}}})
	w := e.ownedWallet("")
	send := func(ctx context.Context, idem string) (json.RawMessage, error) {
		body := sendBody("eip155:1")
		return e.svc.RPC(ctx, e.call(request{method: "POST", path: "/v1/wallets/" + w.ID + "/rpc", body: body, idem: idem}), w.ID, body, false)
	}

	t.Run("after the node accepted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(e.ctx)
		defer cancel()
		mu.Lock()
		broadcaster = hangUp{inner: node.node(t), cancel: cancel, ok: true}
		mu.Unlock()
		out, err := send(ctx, "gone-1")
		if err != nil {
			t.Errorf("RPC after a broadcast the node accepted: %v", err)
		}
		if n := len(node.sent()); n != 1 {
			t.Fatalf("node received %d transactions, want 1", n)
		}
		if e.audits("wallet.broadcast", "allow") != 1 {
			t.Errorf("the accepted broadcast is not in the audit log")
		}
		again, err := send(e.ctx, "gone-1")
		if err != nil || string(again) != string(out) {
			t.Errorf("retry = %s, %v; want the stored %s", again, err, out)
		}
		if n := len(node.sent()); n != 1 {
			t.Errorf("the idempotent retry sent a second transaction: node received %d", n)
		}
	})
	t.Run("during the broadcast", func(t *testing.T) {
		ctx, cancel := context.WithCancel(e.ctx)
		defer cancel()
		mu.Lock()
		broadcaster = hangUp{inner: node.node(t), cancel: cancel}
		mu.Unlock()
		denied := e.audits("wallet.broadcast", "deny")
		_, err := send(ctx, "gone-2")
		wantKind(t, err, custody.Unavailable)
		if got := e.audits("wallet.broadcast", "deny"); got != denied+1 {
			t.Errorf("wallet.broadcast deny records %d, want %d", got, denied+1)
		}
	})
}
