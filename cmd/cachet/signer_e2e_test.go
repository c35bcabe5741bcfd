package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
)

// signerEnv is an appliance serving a [[signer]] endpoint over wallets made
// for it: shown (owned by the endpoint's authorization key), hidden (the
// same owner, not listed), strict (a 2-of-2 quorum with the key and a key
// the endpoint does not hold) and bounded (the key's, under a policy that
// allows transactions of at most 1000 wei and nothing else).
type signerEnv struct {
	a                              *testAppliance
	d                              *proc
	sock                           string
	keyID                          string
	shown, hidden, strict, bounded rpcWallet
	cfg                            string
}

type rpcWallet struct {
	id   string
	addr common.Address
}

const signerChain = 1337

func newSignerEnv(t testing.TB, server, signerExtra string, sections ...string) *signerEnv {
	t.Helper()
	a := newAppliance(t, config.KindPKCS11)
	a.init()
	d := a.serve(a.cfg)
	cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)
	must := func(method, path string, body any) map[string]any {
		t.Helper()
		resp, err := cl.Do(context.Background(), client.Request{Method: method, Path: path, Body: body})
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		var m map[string]any
		mustJSON(t, resp.Body, &m)
		return m
	}
	e := &signerEnv{a: a}
	var pub string
	e.keyID, pub = authKey(t, cl, map[string][]int{"uids": {os.Getuid()}}, []string{"POST /v1/wallets/*/rpc"})
	q := must("POST", "/v1/key_quorums", map[string]any{"public_keys": []string{pub}, "authorization_threshold": 1})
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	q2 := must("POST", "/v1/key_quorums", map[string]any{"public_keys": []string{pub, pubOf(t, other)}, "authorization_threshold": 2})
	pol := must("POST", "/v1/policies", map[string]any{"version": "1.0", "name": "bot", "chain_type": "ethereum",
		"rules": []any{map[string]any{"name": "small payments", "method": "eth_signTransaction", "action": "ALLOW",
			"conditions": []any{cond("ethereum_transaction", "value", "lte", "1000")}}}})
	mk := func(body map[string]any) rpcWallet {
		body["chain_type"] = "ethereum"
		w := must("POST", "/v1/wallets", body)
		return rpcWallet{id: w["id"].(string), addr: common.HexToAddress(w["address"].(string))}
	}
	e.shown = mk(map[string]any{"owner_id": q["id"]})
	e.hidden = mk(map[string]any{"owner_id": q["id"]})
	e.strict = mk(map[string]any{"owner_id": q2["id"]})
	e.bounded = mk(map[string]any{"owner_id": q["id"], "policy_ids": []string{pol["id"].(string)}})
	d.stop()

	e.sock = filepath.Join(a.dir, "geth.ipc")
	b, _ := os.ReadFile(a.cfg)
	backend := string(b)[strings.Index(string(b), "[backend]"):strings.Index(string(b), "[[apps]]")]
	section := fmt.Sprintf(`[[signer]]
name = "geth"
socket = %q
app = %q
caip2 = "eip155:%d"
wallets = [%q, %q, %q]
authorization_key = %q
%s
`, e.sock, a.appID, signerChain, e.shown.id, e.strict.id, e.bounded.id, e.keyID, signerExtra)
	e.cfg = a.writeConfigWith("signer.toml", backend, server, strings.Join(sections, "\n")+section)
	// The [[signer]] section goes after [[apps]], which it refers to.
	cfgText, _ := os.ReadFile(e.cfg)
	s := strings.Replace(string(cfgText), section, "", 1) + section
	writeFile(t, e.cfg, s, 0o600)
	e.d = a.serve(e.cfg)
	waitSocket(t, e.sock)
	return e
}

func waitSocket(t testing.TB, path string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("signer socket %s never accepted", path)
}

// rpcConn is a JSON-RPC client over the socket, newline-delimited.
type rpcConn struct {
	t  testing.TB
	c  net.Conn
	rd *bufio.Reader
	id int
}

func dialRPC(t testing.TB, sock string) *rpcConn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rpcConn{t: t, c: c, rd: bufio.NewReaderSize(c, 1<<20)}
}

type rpcReply struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int            `json:"code"`
		Message string         `json:"message"`
		Data    map[string]any `json:"data"`
	} `json:"error"`
}

func (r *rpcConn) raw(line string) string {
	r.t.Helper()
	r.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := r.c.Write([]byte(line + "\n")); err != nil {
		r.t.Fatal(err)
	}
	out, err := r.rd.ReadString('\n')
	if err != nil {
		r.t.Fatalf("reading the answer to %s: %v", line, err)
	}
	return out
}

func (r *rpcConn) call(method string, params ...any) rpcReply {
	r.t.Helper()
	r.id++
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": r.id, "method": method, "params": params})
	var rep rpcReply
	mustJSON(r.t, []byte(r.raw(string(b))), &rep)
	if string(rep.ID) != fmt.Sprint(r.id) {
		r.t.Fatalf("answer id %s, want %d", rep.ID, r.id)
	}
	return rep
}

func (r *rpcConn) ok(out any, method string, params ...any) {
	r.t.Helper()
	rep := r.call(method, params...)
	if rep.Error != nil {
		r.t.Fatalf("%s: error %d %s", method, rep.Error.Code, rep.Error.Message)
	}
	mustJSON(r.t, rep.Result, out)
}

func (r *rpcConn) refused(code int, contains, method string, params ...any) {
	r.t.Helper()
	rep := r.call(method, params...)
	if rep.Error == nil || rep.Error.Code != code || !strings.Contains(rep.Error.Message, contains) {
		r.t.Fatalf("%s: want error %d containing %q, got %+v result %s", method, code, contains, rep.Error, rep.Result)
	}
	r.t.Logf("%s refused: %d %s", method, rep.Error.Code, rep.Error.Message)
}

func countDecisions(t testing.TB, dbPath, action, decision, target string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+dbPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM audit_records WHERE action = ? AND decision = ? AND target = ? AND actor LIKE 'signer=geth %'`,
		action, decision, target).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var typedDataJSON = `{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"}],
"Mail":[{"name":"from","type":"address"},{"name":"contents","type":"string"},{"name":"amount","type":"uint256"}]},
"primaryType":"Mail","domain":{"name":"Ether Mail","version":"1","chainId":"1337"},
"message":{"from":"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826","contents":"Hello, Bob!","amount":"12345"}}`

// The endpoint serves geth's external-signer methods and the
// unlocked-account methods over its socket: every signature recovers to the
// wallet, hidden wallets are unknown, a quorum needing more approvals and a
// policy denial are clear JSON-RPC errors, the denial is recorded, and each
// signature is recorded as the endpoint's.
func TestSignerEndpoint(t *testing.T) {
	e := newSignerEnv(t, "", "")
	r := dialRPC(t, e.sock)
	db := filepath.Join(e.a.dir, "data", "cachet.db")

	var version string
	r.ok(&version, "account_version")
	if version != "6.1.0" {
		t.Fatalf("account_version %q", version)
	}
	for _, m := range []string{"account_list", "eth_accounts"} {
		var got []common.Address
		r.ok(&got, m)
		want := []common.Address{e.shown.addr, e.strict.addr, e.bounded.addr}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: %v, want %v (the hidden wallet %s must not appear)", m, got, want, e.hidden.addr)
		}
	}
	var chain hexutil.Big
	r.ok(&chain, "eth_chainId")
	if chain.ToInt().Int64() != signerChain {
		t.Fatalf("eth_chainId %v", chain.ToInt())
	}

	signer := types.LatestSignerForChainID(big.NewInt(signerChain))
	to := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
	// What geth sends for a dynamic-fee transaction, and for a legacy one.
	gethArgs := func(from common.Address, value int64, legacy bool) map[string]any {
		m := map[string]any{"from": from, "to": to, "gas": "0x5208", "value": hexutil.EncodeBig(big.NewInt(value)),
			"nonce": "0x7", "input": "0x", "chainId": hexutil.EncodeUint64(signerChain)}
		if legacy {
			m["gasPrice"] = "0x3b9aca00"
		} else {
			m["maxFeePerGas"], m["maxPriorityFeePerGas"], m["accessList"] = "0x77359400", "0x3b9aca00", []any{}
		}
		return m
	}
	for _, legacy := range []bool{false, true} {
		var res struct {
			Raw hexutil.Bytes      `json:"raw"`
			Tx  *types.Transaction `json:"tx"`
		}
		r.ok(&res, "account_signTransaction", gethArgs(e.shown.addr, 1, legacy))
		var tx types.Transaction
		if err := tx.UnmarshalBinary(res.Raw); err != nil {
			t.Fatal(err)
		}
		from, err := types.Sender(signer, &tx)
		if err != nil || from != e.shown.addr || tx.Hash() != res.Tx.Hash() || tx.Nonce() != 7 || *tx.To() != to {
			t.Fatalf("account_signTransaction (legacy %v): sender %s %v, tx %s vs %s", legacy, from, err, tx.Hash(), res.Tx.Hash())
		}
		if legacy != (tx.Type() == types.LegacyTxType) {
			t.Fatalf("type %d for legacy=%v", tx.Type(), legacy)
		}
	}
	var raw hexutil.Bytes
	r.ok(&raw, "eth_signTransaction", gethArgs(e.shown.addr, 0, false))
	var tx types.Transaction
	if err := tx.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	if from, err := types.Sender(signer, &tx); err != nil || from != e.shown.addr {
		t.Fatalf("eth_signTransaction sender %s %v", from, err)
	}

	// Messages: V is 27 or 28, and the signature recovers to the wallet
	// over the EIP-191 hash.
	msg := []byte("hello from geth")
	check := func(name string, sig hexutil.Bytes, hash []byte) {
		t.Helper()
		if len(sig) != 65 || (sig[64] != 27 && sig[64] != 28) {
			t.Fatalf("%s: signature %x (V must be 27 or 28)", name, sig)
		}
		s := append([]byte(nil), sig...)
		s[64] -= 27
		pub, err := crypto.SigToPub(hash, s)
		if err != nil || crypto.PubkeyToAddress(*pub) != e.shown.addr {
			t.Fatalf("%s: signature does not recover to the wallet: %v", name, err)
		}
	}
	var sig hexutil.Bytes
	r.ok(&sig, "account_signData", "text/plain", e.shown.addr, hexutil.Encode(msg))
	check("account_signData", sig, accounts.TextHash(msg))
	r.ok(&sig, "personal_sign", hexutil.Encode(msg), e.shown.addr)
	check("personal_sign", sig, accounts.TextHash(msg))
	r.ok(&sig, "eth_sign", e.shown.addr, hexutil.Encode(msg))
	check("eth_sign", sig, accounts.TextHash(msg))
	r.refused(-32602, "text/plain", "account_signData", "application/x-clique-header", e.shown.addr, "0x00")

	var td apitypes.TypedData
	mustJSON(t, []byte(typedDataJSON), &td)
	hash, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		t.Fatal(err)
	}
	r.ok(&sig, "eth_signTypedData_v4", e.shown.addr, typedDataJSON)
	check("eth_signTypedData_v4", sig, hash)
	r.ok(&sig, "account_signTypedData", e.shown.addr, json.RawMessage(typedDataJSON))
	check("account_signTypedData", sig, hash)

	// A wallet the endpoint does not expose is as unknown as an address
	// that is no wallet at all.
	r.refused(4100, "unknown account "+e.hidden.addr.Hex(), "personal_sign", hexutil.Encode(msg), e.hidden.addr)
	r.refused(4100, "unknown account", "account_signTransaction", gethArgs(e.hidden.addr, 1, false))
	r.refused(4100, "unknown account", "account_signTransaction", gethArgs(common.HexToAddress("0x1234"), 1, false))

	// A quorum that needs a second approval.
	r.refused(4100, "needs more approvals", "account_signTransaction", gethArgs(e.strict.addr, 1, false))
	if n := countDecisions(t, db, "api.refused", "deny", "POST /v1/wallets/"+e.strict.id+"/rpc"); n != 1 {
		t.Fatalf("%d records of the refusal, want 1 (as the API socket records it)", n)
	}

	// The policy: 1000 wei passes, 1001 is denied and the denial recorded;
	// a personal message has no allowing rule.
	r.ok(&struct {
		Raw hexutil.Bytes `json:"raw"`
	}{}, "account_signTransaction", gethArgs(e.bounded.addr, 1000, false))
	before := countDecisions(t, db, "wallet.rpc", "deny", e.bounded.id)
	rep := r.call("account_signTransaction", gethArgs(e.bounded.addr, 1001, false))
	if rep.Error == nil || rep.Error.Code != -32003 || !strings.Contains(rep.Error.Message, "denied by policy") || rep.Error.Data["code"] != "policy_violation" {
		t.Fatalf("over the policy's limit: %+v", rep.Error)
	}
	r.refused(-32003, "denied by policy", "personal_sign", hexutil.Encode(msg), e.bounded.addr)
	if n := countDecisions(t, db, "wallet.rpc", "deny", e.bounded.id); n != before+2 {
		t.Fatalf("%d denials recorded, want %d", n-before, 2)
	}
	// Signatures are recorded as the endpoint's, with the caller's uid.
	if n := countDecisions(t, db, "wallet.rpc", "allow", e.shown.id); n != 8 {
		t.Fatalf("%d signatures of the shown wallet recorded, want 8", n)
	}

	// Without a [[chains]] node there is nothing to broadcast through, and
	// other methods are refused by default.
	r.refused(-32602, "no JSON-RPC endpoint is configured", "eth_sendTransaction", gethArgs(e.shown.addr, 1, false))
	r.refused(-32601, "does not exist", "eth_blockNumber")

	// Strict reading: a member in another case is refused, a batch is
	// answered in one array, notifications are not answered.
	var bad rpcReply
	mustJSON(t, []byte(r.raw(`{"jsonrpc":"2.0","id":1,"Method":"account_version"}`)), &bad)
	if bad.Error == nil || bad.Error.Code != -32600 {
		t.Fatalf("a misspelt member: %+v", bad)
	}
	var batch []rpcReply
	mustJSON(t, []byte(r.raw(`[{"jsonrpc":"2.0","id":"a","method":"account_version"},{"jsonrpc":"2.0","method":"account_list"},{"jsonrpc":"2.0","id":"b","method":"eth_chainId"}]`)), &batch)
	if len(batch) != 2 || string(batch[0].ID) != `"a"` || string(batch[1].Result) != `"0x539"` {
		t.Fatalf("batch: %+v", batch)
	}
	// A replay of what the endpoint signed cannot happen through it: each
	// request carries a fresh idempotency key and an expiry, which the
	// authorization key's own records show.
	if n := countRecords(t, db, "authorization_key.sign"); n < 12 {
		t.Fatalf("only %d uses of the authorization key recorded", n)
	}
	e.d.stop()
	e.a.e.ok("audit", "verify", "--config", e.cfg)
}

// An endpoint whose authorization key does not exist keeps the daemon from
// starting, with a message naming it.
func TestSignerUnknownKeyRefusesToServe(t *testing.T) {
	e := newSignerEnv(t, "", "")
	e.d.stop()
	b, _ := os.ReadFile(e.cfg)
	writeFile(t, e.cfg, strings.Replace(string(b), fmt.Sprintf("authorization_key = %q", e.keyID), `authorization_key = "nosuchkey"`, 1), 0o600)
	r := e.a.e.run("serve", "--config", e.cfg)
	if r.code == 0 || !strings.Contains(r.stderr, "signer geth: authorization_key nosuchkey") {
		t.Fatalf("serve with an unknown key: %s", r)
	}
}

// A uid the endpoint does not allow is refused at connect, before it sends
// anything; the same uid listed in allowed_uids is served.
func TestSignerPeerRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs a client under another uid and needs root (CI runs as root)")
	}
	const nobody = 65534
	for _, allowed := range []bool{false, true} {
		name := "refused"
		if allowed {
			name = "allowed"
		}
		t.Run(name, func(t *testing.T) {
			extra := fmt.Sprintf("socket_group = \"%d\"\n", nobody)
			if allowed {
				extra += fmt.Sprintf("allowed_uids = [%d]\n", nobody)
			}
			e := newSignerEnv(t, "", extra)
			if err := os.Chmod(e.a.dir, 0o755); err != nil {
				t.Fatal(err)
			}
			clientBin := filepath.Join(e.a.dir, "client")
			self, _ := os.ReadFile(os.Args[0])
			writeFile(t, clientBin, string(self), 0o755)
			cmd := exec.Command(clientBin)
			cmd.Env = []string{"CACHET_TEST_RPC_SOCKET=" + e.sock, `CACHET_TEST_RPC_LINE={"jsonrpc":"2.0","id":1,"method":"eth_accounts"}`}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("client: %v\n%s", err, out)
			}
			refused := strings.Contains(string(out), "uid 65534 may not use signer endpoint geth")
			if refused == allowed || (allowed && !strings.Contains(string(out), strings.ToLower(e.shown.addr.Hex()))) {
				t.Fatalf("uid %d, allowed=%v: %s", nobody, allowed, out)
			}
			// The refusal is recorded (aggregated per uid; flushed at stop).
			e.d.stop()
			want := 0
			if !allowed {
				want = 1
			}
			if n := countRecords(t, filepath.Join(e.a.dir, "data", "cachet.db"), "signer.peer_refused"); n != want {
				t.Fatalf("%d signer.peer_refused records, want %d", n, want)
			}
		})
	}
}

// rpcClientLine is the test client's one JSON-RPC exchange, run as another
// uid: connect, wait for the endpoint's verdict on the peer, send one line,
// print what comes back.
func rpcClientLine(sock, line string) (string, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(line + "\n"))
	out, err := bufio.NewReader(c).ReadString('\n')
	if out == "" && err != nil {
		return "", err
	}
	return out, nil
}

// ethers v6 (IpcSocketProvider + JsonRpcSigner) and viem (a JSON-RPC
// account) sign a transaction, a message and typed data through the
// endpoint, each verified independently (tests/node/signer.test.mjs).
func TestSignerNodeLibraries(t *testing.T) {
	e := newSignerEnv(t, "", "")
	runNode(t, "signer.test.mjs", 6, e.d, "CACHET_SIGNER_SOCKET="+e.sock, "CACHET_SIGNER_ADDRESS="+e.shown.addr.Hex(),
		fmt.Sprintf("CACHET_SIGNER_CHAIN=%d", signerChain))
	e.d.stop()
	if n := countDecisions(t, filepath.Join(e.a.dir, "data", "cachet.db"), "wallet.rpc", "allow", e.shown.id); n != 6 {
		t.Fatalf("%d signatures recorded, want 6", n)
	}
}

// BenchmarkSignerEndpoint is account_signTransaction through the endpoint
// as geth sends it (each one a wallet API request approved by the
// endpoint's authorization key, checked against the wallet's quorum,
// recorded twice: the key's use and the signature), from 1, 8 and 32
// connections. make bench-signer.
func BenchmarkSignerEndpoint(b *testing.B) {
	// The key's own rate limit (authorization_keys.rate_per_second,
	// default 100/s) would otherwise be what is measured.
	e := newSignerEnv(b, "", "", "[authorization_keys]\nrate_per_second = 100000\nburst = 100000\n")
	benchSignTransaction(b, e.sock, e.shown.addr)
}

// benchSignTransaction sends geth's account_signTransaction for from over
// 1, 8 and 32 connections to sock, each connection one request at a time.
func benchSignTransaction(b *testing.B, sock string, from common.Address) {
	args := map[string]any{"from": from.Hex(), "to": common.HexToAddress("0xdead").Hex(), // checksummed, as geth sends them (Clef requires it)
		"gas": "0x5208", "value": "0x1",
		"nonce": "0x0", "input": "0x", "chainId": "0x539", "maxFeePerGas": "0x77359400", "maxPriorityFeePerGas": "0x3b9aca00", "accessList": []any{}}
	for _, conns := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			rs := make([]*rpcConn, conns)
			for i := range rs {
				rs[i] = dialRPC(b, sock)
			}
			b.ResetTimer()
			errs := make(chan error, conns)
			for i := range rs {
				go func(r *rpcConn, n int) {
					for j := 0; j < n; j++ {
						r.id++
						line, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": r.id, "method": "account_signTransaction", "params": []any{args}})
						r.c.Write(append(line, '\n'))
						out, err := r.rd.ReadString('\n')
						if err != nil || !strings.Contains(out, `"raw"`) {
							errs <- fmt.Errorf("%v %s", err, out)
							return
						}
					}
					errs <- nil
				}(rs[i], b.N/conns)
			}
			for range rs {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N/conns*conns)/b.Elapsed().Seconds(), "signatures/s")
		})
	}
}
