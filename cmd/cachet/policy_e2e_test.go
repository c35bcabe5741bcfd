package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/keys"
)

const erc20ABI = `[{"type":"function","name":"transfer","stateMutability":"nonpayable","inputs":[{"name":"_to","type":"address"},{"name":"_value","type":"uint256"}],"outputs":[{"type":"bool"}]},
{"type":"function","name":"approve","stateMutability":"nonpayable","inputs":[{"name":"spender","type":"address"},{"name":"amount","type":"uint256"}],"outputs":[{"type":"bool"}]}]`

var (
	token     = common.HexToAddress("0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238")
	otherCtr  = common.HexToAddress("0x000000000000000000000000000000000000bEEF")
	recipient = common.HexToAddress("0x2222222222222222222222222222222222222222")
)

// transferData is the calldata of transfer(recipient, amount).
func transferData(t *testing.T, method string, amount int64) string {
	t.Helper()
	parsed, err := abi.JSON(strings.NewReader(erc20ABI))
	if err != nil {
		t.Fatal(err)
	}
	data, err := parsed.Pack(method, recipient, big.NewInt(amount))
	if err != nil {
		t.Fatal(err)
	}
	return hexutil.Encode(data)
}

// txBody is an eth_signTransaction body calling to with data.
func txBody(nonce int, to common.Address, data string, value string) map[string]any {
	return map[string]any{"method": "eth_signTransaction", "chain_type": "ethereum", "params": map[string]any{"transaction": map[string]any{
		"type": 2, "chain_id": 11155111, "nonce": nonce, "to": to.Hex(), "value": value, "data": data,
		"gas_limit": 90000, "max_fee_per_gas": "0x77359400", "max_priority_fee_per_gas": "0x3b9aca00"}}}
}

type policyEnv struct {
	t      *testing.T
	cl     *client.Client
	ctx    context.Context
	user   *ecdsa.PrivateKey // the wallet's owner
	server *ecdsa.PrivateKey // the additional signer
	nonce  int
}

func (e *policyEnv) do(method, path string, body any, signers ...*ecdsa.PrivateKey) (map[string]any, error) {
	resp, err := e.cl.Do(e.ctx, client.Request{Method: method, Path: path, Body: body, Keys: signers})
	if err != nil {
		return nil, err
	}
	var m map[string]any
	json.Unmarshal(resp.Body, &m)
	return m, nil
}

func (e *policyEnv) must(method, path string, body any, signers ...*ecdsa.PrivateKey) map[string]any {
	e.t.Helper()
	m, err := e.do(method, path, body, signers...)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return m
}

// sign asks walletID for a signature of a transaction calling to with
// data, as signer; it returns the signed transaction or the API error.
func (e *policyEnv) sign(walletID string, signer *ecdsa.PrivateKey, to common.Address, data, value string) (*types.Transaction, *client.Error) {
	e.t.Helper()
	e.nonce++
	m, err := e.do("POST", "/v1/wallets/"+walletID+"/rpc", txBody(e.nonce, to, data, value), signer)
	var ce *client.Error
	if errors.As(err, &ce) {
		return nil, ce
	}
	if err != nil {
		e.t.Fatal(err)
	}
	raw := m["data"].(map[string]any)["signed_transaction"].(string)
	tx := new(types.Transaction)
	if err := tx.UnmarshalBinary(hexutil.MustDecode(raw)); err != nil {
		e.t.Fatal(err)
	}
	return tx, nil
}

func pubOf(t testing.TB, k *ecdsa.PrivateKey) string {
	s, err := keys.PublicKeySPKI(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func cond(source, field, op string, value any, extra ...string) map[string]any {
	c := map[string]any{"field_source": source, "field": field, "operator": op, "value": value}
	if len(extra) > 0 {
		c["abi"] = json.RawMessage(extra[0])
	}
	return c
}

func newPolicyEnv(t *testing.T) (*policyEnv, *testAppliance) {
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	a.serve(a.cfg)
	user, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	server, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return &policyEnv{t: t, ctx: context.Background(), user: user, server: server,
		cl: client.New(a.socket, "http://localhost", a.appID, a.appSecret)}, a
}

// The seed's offline-actions recipe: a wallet owned by a user-side key, with
// a server key as additional signer whose override policy allows only
// transfers of one token, at most a per-transfer limit, before a deadline,
// and within a rolling 24 h sum. Each violation is refused naming its rule;
// the owner is bound by the wallet's own policy instead.
func TestPolicyScenario(t *testing.T) {
	e, _ := newPolicyEnv(t)
	deadline := time.Now().Add(time.Hour).Unix()
	agg := e.must("POST", "/v1/aggregations", map[string]any{
		"name": "token spent per 24h", "method": "eth_signTransaction",
		"metric":     map[string]any{"field_source": "ethereum_calldata", "field": "transfer._value", "abi": json.RawMessage(erc20ABI), "function": "sum"},
		"window":     map[string]any{"type": "rolling", "seconds": 86400},
		"conditions": []any{cond("ethereum_transaction", "to", "eq", token.Hex())},
		"owner":      map[string]string{"public_key": pubOf(t, e.user)},
	})
	signerPolicy := e.must("POST", "/v1/policies", map[string]any{
		"version": "1.0", "name": "server: token transfers", "chain_type": "ethereum",
		"owner": map[string]string{"public_key": pubOf(t, e.user)},
		"rules": []any{
			map[string]any{"name": "only the token", "method": "eth_signTransaction", "action": "DENY",
				"conditions": []any{cond("ethereum_transaction", "to", "neq", strings.ToLower(token.Hex()))}},
			map[string]any{"name": "per-transfer limit", "method": "eth_signTransaction", "action": "DENY",
				"conditions": []any{cond("ethereum_calldata", "transfer._value", "gt", "1000", erc20ABI)}},
			map[string]any{"name": "deadline", "method": "eth_signTransaction", "action": "DENY",
				"conditions": []any{cond("system", "current_unix_timestamp", "gte", fmt.Sprint(deadline))}},
			map[string]any{"name": "daily limit", "method": "eth_signTransaction", "action": "DENY",
				"conditions": []any{cond("reference", "aggregation."+agg["id"].(string), "gt", "2500")}},
			map[string]any{"name": "token transfers", "method": "eth_signTransaction", "action": "ALLOW",
				"conditions": []any{cond("ethereum_calldata", "transfer", "eq", "transfer", erc20ABI)}},
		},
	})
	walletPolicy := e.must("POST", "/v1/policies", map[string]any{
		"version": "1.0", "name": "owner: small ether payments", "chain_type": "ethereum",
		"owner": map[string]string{"public_key": pubOf(t, e.user)},
		"rules": []any{map[string]any{"name": "at most 1 ether", "method": "eth_signTransaction", "action": "ALLOW",
			"conditions": []any{cond("ethereum_transaction", "value", "lte", "1000000000000000000")}}},
	})
	serverQ := e.must("POST", "/v1/key_quorums", map[string]any{"public_keys": []string{pubOf(t, e.server)}, "authorization_threshold": 1})
	w := e.must("POST", "/v1/wallets", map[string]any{
		"chain_type": "ethereum", "owner": map[string]string{"public_key": pubOf(t, e.user)},
		"policy_ids":         []string{walletPolicy["id"].(string)},
		"additional_signers": []any{map[string]any{"signer_id": serverQ["id"], "override_policy_ids": []string{signerPolicy["id"].(string)}}},
	})
	wid := w["id"].(string)

	signed := func(name string, to common.Address, data string) {
		t.Helper()
		tx, err := e.sign(wid, e.server, to, data, "0x0")
		if err != nil {
			t.Fatalf("%s: refused: %v", name, err)
		}
		if tx.To() == nil || *tx.To() != to {
			t.Fatalf("%s: signed a transaction to %v", name, tx.To())
		}
	}
	refused := func(name string, signer *ecdsa.PrivateKey, to common.Address, data, value, rule string) {
		t.Helper()
		_, err := e.sign(wid, signer, to, data, value)
		if err == nil || err.Code != "policy_violation" || !strings.Contains(err.Message, rule) {
			t.Fatalf("%s: want policy_violation naming %q, got %v", name, rule, err)
		}
	}
	signed("1000 tokens", token, transferData(t, "transfer", 1000))
	signed("another 1000", token, transferData(t, "transfer", 1000))
	refused("1001 tokens at once", e.server, token, transferData(t, "transfer", 1001), "0x0", "per-transfer limit")
	refused("600 more would make 2600 today", e.server, token, transferData(t, "transfer", 600), "0x0", "daily limit")
	signed("500 more makes exactly 2500", token, transferData(t, "transfer", 500))
	refused("1 more is over the day's 2500", e.server, token, transferData(t, "transfer", 1), "0x0", "daily limit")
	refused("another contract", e.server, otherCtr, transferData(t, "transfer", 1), "0x0", "only the token")
	refused("approve instead of transfer", e.server, token, transferData(t, "approve", 1), "0x0", "no rule allows")

	// Past the deadline: the owner moves it into the past.
	pol := e.must("GET", "/v1/policies/"+signerPolicy["id"].(string), nil)
	var ruleID string
	for _, r := range pol["rules"].([]any) {
		if r.(map[string]any)["name"] == "deadline" {
			ruleID = r.(map[string]any)["id"].(string)
		}
	}
	e.must("PATCH", "/v1/policies/"+pol["id"].(string)+"/rules/"+ruleID, map[string]any{
		"name": "deadline", "method": "eth_signTransaction", "action": "DENY",
		"conditions": []any{cond("system", "current_unix_timestamp", "gte", fmt.Sprint(time.Now().Add(-time.Minute).Unix()))},
	}, e.user)
	refused("after the deadline", e.server, token, transferData(t, "transfer", 1), "0x0", "deadline")

	// The owner is judged by the wallet's policy, not the signer's.
	if _, err := e.sign(wid, e.user, token, transferData(t, "transfer", 5000), "0x0"); err != nil {
		t.Fatalf("the owner's token transfer within the wallet policy: %v", err)
	}
	refused("the owner sending 2 ether", e.user, recipient, "0x", "0x1bc16d674ec80000", "no rule allows")

	// Explain: the same request, evaluated without signing.
	ex := e.must("POST", "/v1/policies/"+signerPolicy["id"].(string)+"/evaluate", txBody(99, otherCtr, transferData(t, "transfer", 1), "0x0"))
	if ex["allowed"] != false || ex["rule_name"] != "only the token" || ex["trace"] == nil {
		t.Fatalf("evaluate: %v", ex)
	}
}

// 64 concurrent requests against a rolling sum limit: the check and the
// update are one serialized step, so no more than the limit is ever signed.
func TestAggregationLimitUnderConcurrency(t *testing.T) {
	e, _ := newPolicyEnv(t)
	w := e.budgetWallet()
	const clients, each = 64, 100
	signed, refused := spendConcurrently(t, clients, each, func(i int, body any) error {
		_, err := e.do("POST", "/v1/wallets/"+w+"/rpc", body, e.server)
		return err
	})
	if len(signed)*each > 2500 || len(signed) != 25 || refused != clients-25 {
		t.Fatalf("%d signed (%d tokens), %d refused; want exactly 25 signed (2500 tokens) and %d refused", len(signed), len(signed)*each, refused, clients-25)
	}
}

// budgetWallet makes a wallet owned by e.server under a policy that allows
// ERC-20 transfers up to 2,500 tokens an hour (an aggregation and policy
// owned by e.user), and returns its id.
func (e *policyEnv) budgetWallet() string {
	t := e.t
	agg := e.must("POST", "/v1/aggregations", map[string]any{
		"name": "spent", "method": "eth_signTransaction",
		"metric": map[string]any{"field_source": "ethereum_calldata", "field": "transfer._value", "abi": json.RawMessage(erc20ABI), "function": "sum"},
		"window": map[string]any{"type": "rolling", "seconds": 3600},
		"owner":  map[string]string{"public_key": pubOf(t, e.user)},
	})
	p := e.must("POST", "/v1/policies", map[string]any{
		"version": "1.0", "name": "budget", "chain_type": "ethereum", "owner": map[string]string{"public_key": pubOf(t, e.user)},
		"rules": []any{
			map[string]any{"name": "budget", "method": "eth_signTransaction", "action": "DENY",
				"conditions": []any{cond("reference", "aggregation."+agg["id"].(string), "gt", "2500")}},
			map[string]any{"name": "transfers", "method": "eth_signTransaction", "action": "ALLOW",
				"conditions": []any{cond("ethereum_calldata", "transfer", "eq", "transfer", erc20ABI)}},
		},
	})
	w := e.must("POST", "/v1/wallets", map[string]any{"chain_type": "ethereum", "owner": map[string]string{"public_key": pubOf(t, e.server)},
		"policy_ids": []string{p["id"].(string)}})
	return w["id"].(string)
}

// spendConcurrently sends, from clients goroutines at once, one transfer of
// each tokens per client through send (client i's body has nonce 1000+i).
// It returns the clients whose transfer was signed and how many were
// refused by policy; any other outcome fails t.
func spendConcurrently(t *testing.T, clients, each int, send func(i int, body any) error) (signed []int, refused int) {
	t.Helper()
	var mu sync.Mutex
	var other []error
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := send(i, txBody(1000+i, token, transferData(t, "transfer", int64(each)), "0x0"))
			mu.Lock()
			defer mu.Unlock()
			var ce *client.Error
			switch {
			case err == nil:
				signed = append(signed, i)
			case errors.As(err, &ce) && ce.Code == "policy_violation":
				refused++
			default:
				other = append(other, err)
			}
		}(i)
	}
	wg.Wait()
	if len(other) > 0 {
		t.Fatalf("unexpected errors: %v", other)
	}
	return signed, refused
}

// Policies, rules and condition sets as resources: validation names the bad
// element, mutations need the owner, a set deleted from under a policy fails
// it closed, and a policy in use cannot be deleted.
func TestPolicyResources(t *testing.T) {
	e, _ := newPolicyEnv(t)
	owner := map[string]string{"public_key": pubOf(t, e.user)}
	_, err := e.do("POST", "/v1/policies", map[string]any{"version": "1.0", "name": "bad", "chain_type": "ethereum",
		"rules": []any{map[string]any{"name": "r", "method": "eth_signTransaction", "action": "ALLOW",
			"conditions": []any{cond("ethereum_transaction", "to", "approximately", recipient.Hex())}}}})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 400 || !strings.Contains(ce.Message, "rules[0].conditions[0].operator") {
		t.Fatalf("bad operator: %v", err)
	}

	set := e.must("POST", "/v1/condition_sets", map[string]any{"name": "payees", "owner": owner})
	setID := set["id"].(string)
	if _, err := e.do("POST", "/v1/condition_sets/"+setID+"/condition_set_items", []any{map[string]string{"value": strings.ToLower(recipient.Hex())}}); err == nil {
		t.Fatal("items were added without the set owner's signature")
	}
	e.must("POST", "/v1/condition_sets/"+setID+"/condition_set_items", []any{map[string]string{"value": strings.ToLower(recipient.Hex())}}, e.user)
	items := e.must("GET", "/v1/condition_sets/"+setID+"/condition_set_items", nil)
	if len(items["items"].([]any)) != 1 {
		t.Fatalf("items: %v", items)
	}
	p := e.must("POST", "/v1/policies", map[string]any{"version": "1.0", "name": "payees only", "chain_type": "ethereum", "owner": owner,
		"rules": []any{map[string]any{"name": "known payees", "method": "eth_signTransaction", "action": "ALLOW",
			"conditions": []any{cond("ethereum_transaction", "to", "in_condition_set", setID)}}}})
	w := e.must("POST", "/v1/wallets", map[string]any{"chain_type": "ethereum", "owner": map[string]string{"public_key": pubOf(t, e.server)},
		"policy_ids": []string{p["id"].(string)}})
	wid := w["id"].(string)
	// The set holds the lower-case address; the request uses the checksum.
	if _, err := e.sign(wid, e.server, recipient, "0x", "0x1"); err != nil {
		t.Fatalf("payee in the set: %v", err)
	}
	if _, err := e.sign(wid, e.server, otherCtr, "0x", "0x1"); err == nil || err.Code != "policy_violation" {
		t.Fatalf("payee not in the set: %v", err)
	}
	// A rule read back by id, and changed only with the owner's signature.
	rid := p["rules"].([]any)[0].(map[string]any)["id"].(string)
	if r := e.must("GET", "/v1/policies/"+p["id"].(string)+"/rules/"+rid, nil); r["name"] != "known payees" {
		t.Fatalf("rule: %v", r)
	}
	if _, err := e.do("PATCH", "/v1/policies/"+p["id"].(string), map[string]any{"name": "renamed"}); !errors.As(err, &ce) || ce.Status != 401 {
		t.Fatalf("unsigned policy change: %v", err)
	}
	// Deleting the set fails the policy closed: the ALLOW can no longer hold.
	e.must("DELETE", "/v1/condition_sets/"+setID, nil, e.user)
	if _, err := e.sign(wid, e.server, recipient, "0x", "0x1"); err == nil || err.Code != "policy_violation" {
		t.Fatalf("payee of a deleted set: %v", err)
	}
	if _, err := e.do("DELETE", "/v1/policies/"+p["id"].(string), nil, e.user); !errors.As(err, &ce) || ce.Status != 409 {
		t.Fatalf("deleting a policy in use: %v", err)
	}
}
