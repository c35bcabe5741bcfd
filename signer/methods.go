package signer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/authkeys"
	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/internal/apierr"
	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/internal/peercred"
	"github.com/cachet-custody/cachet/internal/strictjson"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/wallet"
)

// dispatch runs one request.
func (e *Endpoint) dispatch(ctx context.Context, cred peercred.Cred, r *request) (any, error) {
	switch r.Method {
	case "account_version":
		return Version, nil
	case "account_list", "eth_accounts":
		ws, err := e.wallets(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]common.Address, 0, len(ws))
		for _, w := range ws {
			out = append(out, w.addr)
		}
		return out, nil
	case "eth_chainId":
		return (*hexutil.Big)(e.chainID), nil
	case "account_signTransaction", "eth_signTransaction", "eth_sendTransaction":
		return e.transaction(ctx, cred, r)
	case "account_signData":
		if err := arity(r, 3); err != nil {
			return nil, err
		}
		var ct string
		if json.Unmarshal(r.Params[0], &ct) != nil || ct != "text/plain" {
			return nil, invalidParams("content type: only text/plain (EIP-191 personal messages) is signed; Clique headers, validator data and typed data sent as data are refused (typed data: account_signTypedData)")
		}
		return e.message(ctx, cred, r.Params[1], r.Params[2], true)
	case "personal_sign":
		if err := arity(r, 2, 3); err != nil { // a third parameter, a password, is ignored as geth does for external signers
			return nil, err
		}
		return e.message(ctx, cred, r.Params[1], r.Params[0], false)
	case "eth_sign":
		if err := arity(r, 2); err != nil {
			return nil, err
		}
		return e.message(ctx, cred, r.Params[0], r.Params[1], true)
	case "account_signTypedData", "eth_signTypedData_v4", "eth_signTypedData":
		if err := arity(r, 2); err != nil {
			return nil, err
		}
		return e.typedData(ctx, cred, r.Params[0], r.Params[1])
	}
	if e.opts.Config.OtherMethods == "forward" && e.opts.RPCURL != "" && !strings.HasPrefix(r.Method, "account_") && !strings.HasPrefix(r.Method, "personal_") {
		return e.forward(ctx, r)
	}
	return nil, &rpcError{Code: codeNoMethod, Message: fmt.Sprintf("the method %s does not exist/is not available on signer endpoint %s", clip.To(r.Method, 64), e.opts.Config.Name)}
}

func arity(r *request, n ...int) error {
	for _, k := range n {
		if len(r.Params) == k {
			return nil
		}
	}
	return invalidParams("%s takes %d parameters, got %d", r.Method, n[0], len(r.Params))
}

// exposed is a wallet the endpoint shows.
type exposed struct {
	id   string
	addr common.Address
}

// wallets are the endpoint's wallets that exist and are not archived, in
// the configuration's order.
func (e *Endpoint) wallets(ctx context.Context) ([]exposed, error) {
	var out []exposed
	for _, id := range e.opts.Config.Wallets {
		w, err := e.opts.Custody.GetWallet(ctx, e.opts.Config.App, id)
		var ce *apierr.Error
		if errors.As(err, &ce) && ce.Kind == apierr.NotFound {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read wallet %s: %w", id, err)
		}
		if w.ArchivedAt != nil || !common.IsHexAddress(w.Address) {
			continue
		}
		out = append(out, exposed{id: id, addr: common.HexToAddress(w.Address)})
	}
	return out, nil
}

// wallet finds the exposed wallet of an address parameter. Any other
// address, a wallet of the app included, is unknown here. A wallet's
// address never changes, so what was found is remembered; custody still
// checks the wallet (archived, owner, policies) on every request.
func (e *Endpoint) wallet(ctx context.Context, raw json.RawMessage) (exposed, error) {
	var s string
	if json.Unmarshal(raw, &s) != nil || !common.IsHexAddress(s) {
		return exposed{}, invalidParams("the account must be a 0x-prefixed 20-byte address")
	}
	addr := common.HexToAddress(s)
	e.mu.Lock()
	id, ok := e.byAddr[addr]
	e.mu.Unlock()
	if ok {
		return exposed{id: id, addr: addr}, nil
	}
	ws, err := e.wallets(ctx)
	if err != nil {
		return exposed{}, err
	}
	for _, w := range ws {
		if w.addr == addr {
			e.mu.Lock()
			e.byAddr[addr] = w.id
			e.mu.Unlock()
			return w, nil
		}
	}
	return exposed{}, &rpcError{Code: codeUnauthorized, Message: "unknown account " + addr.Hex()}
}

// txFields maps the JSON-RPC transaction object's members (geth's
// SendTxArgs, and what ethers and viem send) to the wallet API's.
var txFields = map[string]string{
	"type": "type", "chainId": "chain_id", "from": "from", "to": "to", "nonce": "nonce", "value": "value",
	"gas": "gas_limit", "gasPrice": "gas_price", "maxFeePerGas": "max_fee_per_gas",
	"maxPriorityFeePerGas": "max_priority_fee_per_gas", "accessList": "access_list",
	"data": "data", "input": "data",
}

// transaction runs account_signTransaction, eth_signTransaction and
// eth_sendTransaction.
func (e *Endpoint) transaction(ctx context.Context, cred peercred.Cred, r *request) (any, error) {
	if err := arity(r, 1); err != nil {
		return nil, err
	}
	tx, from, err := convertTx(r.Params[0])
	if err != nil {
		return nil, err
	}
	w, err := e.wallet(ctx, from)
	if err != nil {
		return nil, err
	}
	method := wallet.MethodSignTransaction
	if r.Method == "eth_sendTransaction" {
		method = wallet.MethodSendTransaction
	}
	body := map[string]any{"method": method, "caip2": e.opts.Config.CAIP2, "chain_type": "ethereum",
		"params": map[string]any{"transaction": tx}}
	out, err := e.call(ctx, cred, w.id, body)
	if err != nil {
		return nil, err
	}
	if method == wallet.MethodSendTransaction {
		var res struct {
			Data struct {
				Hash string `json:"hash"`
			} `json:"data"`
		}
		if err := json.Unmarshal(out, &res); err != nil || res.Data.Hash == "" {
			return nil, fmt.Errorf("signer: unexpected eth_sendTransaction response: %w", err)
		}
		return res.Data.Hash, nil
	}
	var res struct {
		Data struct {
			SignedTransaction string `json:"signed_transaction"`
		} `json:"data"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("signer: unexpected eth_signTransaction response: %w", err)
	}
	raw, err := hexutil.Decode(res.Data.SignedTransaction)
	if err != nil {
		return nil, fmt.Errorf("signer: signed transaction is not hex: %w", err)
	}
	if r.Method == "eth_signTransaction" {
		return hexutil.Bytes(raw), nil
	}
	var t types.Transaction
	if err := t.UnmarshalBinary(raw); err != nil {
		return nil, fmt.Errorf("signer: signed transaction does not decode: %w", err)
	}
	return map[string]any{"raw": hexutil.Bytes(raw), "tx": &t}, nil
}

// convertTx turns a JSON-RPC transaction object into the wallet API's
// params.transaction, member by member with exact names; it returns the
// from member for the wallet lookup. Blob transactions are refused (the
// wallet API signs none).
func convertTx(raw json.RawMessage) (map[string]json.RawMessage, json.RawMessage, error) {
	o, err := (*strictjson.Options)(nil).ParseObject(raw, "transaction")
	if err != nil {
		return nil, nil, invalidParams("the transaction must be a JSON object")
	}
	out := map[string]json.RawMessage{}
	for _, k := range o.Keys() {
		v := o.Get(k)
		switch k {
		case "maxFeePerBlobGas", "blobVersionedHashes", "blobs", "commitments", "proofs", "blobVersion":
			if strictjson.Present(v) {
				return nil, nil, invalidParams("transaction.%s: blob transactions are not signed by Cachet", k)
			}
			continue
		case "authorizationList":
			if strictjson.Present(v) {
				return nil, nil, invalidParams("transaction.authorizationList: EIP-7702 transactions go through the wallet API (eth_sign7702Authorization)")
			}
			continue
		}
		name, ok := txFields[k]
		if !ok {
			return nil, nil, invalidParams("transaction.%s: not a transaction member (from, to, gas, gasPrice, maxFeePerGas, maxPriorityFeePerGas, value, nonce, data, input, chainId, accessList, type)", clip.To(k, 64))
		}
		if !strictjson.Present(v) {
			continue // null is absent, as geth reads it
		}
		if k == "accessList" {
			if v, err = convertAccessList(v); err != nil {
				return nil, nil, err
			}
		}
		if prev, dup := out[name]; dup && !bytes.Equal(prev, v) {
			return nil, nil, invalidParams("transaction: data and input differ; send one")
		}
		out[name] = v
	}
	from, ok := out["from"]
	if !ok {
		return nil, nil, invalidParams("transaction.from: required; it names the wallet that signs")
	}
	return out, from, nil
}

// convertAccessList renames storageKeys to the wallet API's storage_keys.
func convertAccessList(raw json.RawMessage) (json.RawMessage, error) {
	items, err := strictjson.ParseArray(raw, "transaction.accessList")
	if err != nil {
		return nil, invalidParams("transaction.accessList must be an array")
	}
	out := make([]map[string]json.RawMessage, 0, len(items))
	for i, it := range items {
		o, err := (*strictjson.Options)(nil).ParseObject(it, "")
		if err != nil {
			return nil, invalidParams("transaction.accessList[%d] must be an object", i)
		}
		if err := o.Only("address", "storageKeys"); err != nil {
			return nil, invalidParams("transaction.accessList[%d]: members are address and storageKeys", i)
		}
		m := map[string]json.RawMessage{"address": o.Get("address")}
		if sk := o.Get("storageKeys"); strictjson.Present(sk) {
			m["storage_keys"] = sk
		}
		out = append(out, m)
	}
	return json.Marshal(out)
}

// message signs an EIP-191 personal message (personal_sign, eth_sign,
// account_signData text/plain); data is 0x-hex bytes, or, for
// personal_sign only, text that is not hex (as MetaMask takes it).
func (e *Endpoint) message(ctx context.Context, cred peercred.Cred, account, data json.RawMessage, hexOnly bool) (any, error) {
	var s string
	if json.Unmarshal(data, &s) != nil {
		return nil, invalidParams("the message must be a string (0x-prefixed hex)")
	}
	params := map[string]any{"message": s, "encoding": wallet.EncodingHex}
	if _, err := hexutil.Decode(s); err != nil {
		if hexOnly || !utf8.ValidString(s) {
			return nil, invalidParams("the message must be 0x-prefixed hex")
		}
		params["encoding"] = wallet.EncodingUTF8
	}
	w, err := e.wallet(ctx, account)
	if err != nil {
		return nil, err
	}
	out, err := e.call(ctx, cred, w.id, map[string]any{"method": wallet.MethodPersonalSign, "params": params})
	if err != nil {
		return nil, err
	}
	return signature(out)
}

// typedData signs EIP-712 typed data, sent as an object or as its JSON in
// a string (as ethers and viem send eth_signTypedData_v4).
func (e *Endpoint) typedData(ctx context.Context, cred peercred.Cred, account, data json.RawMessage) (any, error) {
	td := bytes.TrimSpace(data)
	if len(td) > 0 && td[0] == '"' {
		var s string
		if err := json.Unmarshal(td, &s); err != nil {
			return nil, invalidParams("typed data must be an object or its JSON text")
		}
		td = []byte(s)
		if err := (*strictjson.Options)(nil).CheckValue(td, maxDepth); err != nil {
			return nil, invalidParams("typed data: %s", strictMessage(err))
		}
	}
	if len(td) == 0 || td[0] != '{' {
		return nil, invalidParams("typed data must be an object or its JSON text")
	}
	w, err := e.wallet(ctx, account)
	if err != nil {
		return nil, err
	}
	out, err := e.call(ctx, cred, w.id, map[string]any{"method": wallet.MethodSignTypedData,
		"params": map[string]any{"typed_data": json.RawMessage(td)}})
	if err != nil {
		return nil, err
	}
	return signature(out)
}

func signature(out []byte) (any, error) {
	var res struct {
		Data struct {
			Signature string `json:"signature"`
		} `json:"data"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("signer: unexpected signature response: %w", err)
	}
	sig, err := hexutil.Decode(res.Data.Signature)
	if err != nil || len(sig) != 65 {
		return nil, fmt.Errorf("signer: unexpected signature %q", res.Data.Signature)
	}
	return hexutil.Bytes(sig), nil
}

// call sends one wallet API request through custody as the API socket
// would: the body is built here, the endpoint's authorization key signs the
// request (with an expiry and a fresh idempotency key) and custody checks
// that signature against the wallet's quorum like any other, applies the
// policies, guards against replay and records the outcome before the
// signature is returned.
func (e *Endpoint) call(ctx context.Context, cred peercred.Cred, walletID string, body map[string]any) (json.RawMessage, error) {
	// The request runs to its end whatever the client does with its
	// connection, as on the API socket.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.opts.Timeout)
	defer cancel()
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	if err := quorum.CheckNumbers(b); err != nil {
		return nil, invalidParams("%v", err)
	}
	var idem [16]byte
	if _, err := rand.Read(idem[:]); err != nil {
		return nil, err
	}
	c := e.opts.Config
	path := "/v1/wallets/" + walletID + "/rpc"
	url := strings.TrimRight(e.opts.PublicBase, "/") + path
	expiry := itoa(e.now().Add(e.expiry()).UnixMilli())
	hdrs := map[string]string{quorum.HeaderAppID: c.App, quorum.HeaderIdempotencyKey: "signer-" + hex.EncodeToString(idem[:]),
		quorum.HeaderRequestExpiry: expiry}
	actor := e.actor(cred)
	sig, err := e.opts.AuthKeys.Sign(ctx, c.App, authkeys.Caller{UID: cred.UID, GID: cred.GID, Groups: cred.Groups, Actor: actor},
		c.AuthorizationKey, authkeys.SignInput{Method: http.MethodPost, URL: url, Body: b, Headers: hdrs})
	if err != nil {
		e.recordRefusal(ctx, actor, http.MethodPost+" /v1/authorization_keys/"+c.AuthorizationKey+"/sign", err)
		return nil, &keyError{err}
	}
	sigs, err := quorum.ParseSignatures(sig)
	if err != nil {
		return nil, err
	}
	hdr := http.Header{}
	for k, v := range hdrs {
		hdr.Set(k, v)
	}
	exp, err := quorum.CheckExpiry(expiry, e.now(), e.opts.MaxRequestExpiry)
	if err != nil {
		return nil, err
	}
	payload, err := quorum.Payload(quorum.Request{Method: http.MethodPost, URL: url, Body: b, Headers: hdr})
	if err != nil {
		return nil, err
	}
	call := custody.Call{App: c.App, Actor: actor, Signed: &custody.Signed{Payload: payload, Sigs: sigs, Expiry: exp},
		IdempotencyKey: hdrs[quorum.HeaderIdempotencyKey], RequestHash: custody.RequestHash(http.MethodPost, path, b)}
	out, err := e.opts.Custody.RPC(ctx, call, walletID, b, false)
	if err != nil {
		e.recordRefusal(ctx, actor, http.MethodPost+" "+path, err)
	}
	return out, err
}

// recordRefusal records a refusal that custody did not record itself, as
// the API socket records every refused request (api.refused), so that a
// quorum that did not approve leaves the same trace from either socket.
func (e *Endpoint) recordRefusal(ctx context.Context, actor, target string, err error) {
	var ce *apierr.Error
	if e.opts.Audit == nil || !errors.As(err, &ce) || ce.Audited {
		return
	}
	detail, _ := json.Marshal(map[string]any{"endpoint": e.opts.Config.Name, "error": ce.Message})
	if _, aerr := e.opts.Audit.Record(context.WithoutCancel(ctx), audit.Entry{Actor: actor, Action: "api.refused", Target: target,
		Decision: audit.DecisionDeny, Detail: string(detail)}); aerr != nil {
		e.log.Error("audit of a refused request failed", "target", target, "error", aerr)
	}
}

// keyError is the authorization key's refusal to sign for this caller.
type keyError struct{ err error }

func (k *keyError) Error() string { return k.err.Error() }
func (k *keyError) Unwrap() error { return k.err }

// toRPCError maps a refusal to a JSON-RPC error with a clear message; the
// wallet API's code travels in data.code. Anything else is an internal
// error, logged and not shown.
func (e *Endpoint) toRPCError(method string, err error) *rpcError {
	var re *rpcError
	if errors.As(err, &re) {
		return re
	}
	var ce *apierr.Error
	if errors.As(err, &ce) {
		var ke *keyError
		keyRefused := errors.As(err, &ke)
		switch ce.Kind {
		case apierr.PolicyViolation:
			msg := "Cachet: " + ce.Message
			if ce.RuleID != "" {
				msg = fmt.Sprintf("%s (rule %s %q)", msg, ce.RuleID, ce.RuleName)
			}
			return &rpcError{Code: codeRejected, Message: msg, Data: map[string]any{"code": "policy_violation"}}
		case apierr.Unauthorized:
			return &rpcError{Code: codeUnauthorized, Message: fmt.Sprintf("Cachet: not approved: %s This endpoint approves with authorization key %s alone; a wallet whose quorum needs more approvals must be used through the wallet API with its other approvers' signatures.",
				strings.TrimSpace(ce.Message), e.opts.Config.AuthorizationKey), Data: map[string]any{"code": "unauthorized"}}
		case apierr.Forbidden:
			msg := "Cachet: " + ce.Message
			if keyRefused {
				msg = "Cachet: the endpoint's authorization key refused: " + ce.Message
			}
			return &rpcError{Code: codeUnauthorized, Message: msg, Data: map[string]any{"code": "forbidden"}}
		case apierr.Invalid:
			return &rpcError{Code: codeInvalidParams, Message: "Cachet: " + ce.Message, Data: map[string]any{"code": "invalid_data"}}
		case apierr.NotFound:
			return &rpcError{Code: codeServer, Message: "Cachet: " + ce.Message, Data: map[string]any{"code": "not_found"}}
		case apierr.Conflict:
			return &rpcError{Code: codeServer, Message: "Cachet: " + ce.Message, Data: map[string]any{"code": "conflict"}}
		case apierr.Unavailable:
			return &rpcError{Code: codeUnavailable, Message: "Cachet: " + ce.Message, Data: map[string]any{"code": "unavailable"}}
		case apierr.TooManyRequests:
			return &rpcError{Code: codeLimitExceeded, Message: "Cachet: " + ce.Message, Data: map[string]any{"code": "too_many_requests"}}
		}
	}
	var qi *quorum.InputError
	if errors.As(err, &qi) {
		return invalidParams("Cachet: %s", qi.Error())
	}
	e.log.Error("signer request failed", "method", method, "error", err)
	return &rpcError{Code: codeInternal, Message: "Cachet: internal error (see the daemon's log)"}
}

// maxForwardResponse bounds a node's answer to a forwarded request.
const maxForwardResponse = 16 << 20

// forward sends a method the endpoint does not implement to the chain's
// node and returns its answer.
func (e *Endpoint) forward(ctx context.Context, r *request) (any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.opts.RPCURL, bytes.NewReader(r.raw))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		return nil, &rpcError{Code: codeUnavailable, Message: "the chain's node did not answer"}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardResponse))
	if err != nil {
		return nil, &rpcError{Code: codeUnavailable, Message: "the chain's node did not answer"}
	}
	var out struct {
		Result json.RawMessage `json:"result"`
		Error  *rpcError       `json:"error"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, &rpcError{Code: codeUnavailable, Message: fmt.Sprintf("the chain's node answered HTTP %d without a JSON-RPC response", resp.StatusCode)}
	}
	if out.Error != nil {
		return nil, out.Error
	}
	if out.Result == nil {
		return nil, nil
	}
	return out.Result, nil
}
