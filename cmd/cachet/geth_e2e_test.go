//go:build gethtest

// geth itself uses Cachet as its external signer. Building geth takes
// minutes on a 2-core machine, so this test has its own make target (`make
// geth-test`) and build tag rather than running in `make test`.

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
)

// gethVersion is a geth that still has --signer (Clef itself left the
// repository before it), the version go.mod pins for Cachet's own use of
// go-ethereum.
const gethVersion = "v1.17.10"

// buildGeth builds geth from the Go module proxy into a temporary GOBIN; the
// Go build cache makes later builds a link step.
func buildGeth(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "install", "github.com/ethereum/go-ethereum/cmd/geth@"+gethVersion)
	cmd.Dir = dir // outside Cachet's module: go install pkg@version builds in module mode of its own
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install geth@%s: %v\n%s", gethVersion, err, out)
	}
	t.Logf("built geth %s in %s", gethVersion, time.Since(start).Round(time.Second))
	return filepath.Join(dir, "geth")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// gethNode is a running geth answering JSON-RPC over loopback HTTP.
type gethNode struct {
	t   *testing.T
	url string
	cmd *exec.Cmd
	log *bytes.Buffer
}

// startGeth runs geth with args plus loopback-only networking: no peers,
// no discovery, no NAT, every port on 127.0.0.1.
func startGeth(t *testing.T, bin, datadir string, args ...string) *gethNode {
	t.Helper()
	port := freePort(t)
	base := []string{"--datadir", datadir, "--nodiscover", "--maxpeers", "0", "--nat", "none", "--port", fmt.Sprint(freePort(t)),
		"--netrestrict", "127.0.0.0/8", "--authrpc.addr", "127.0.0.1", "--authrpc.port", fmt.Sprint(freePort(t)),
		"--http", "--http.addr", "127.0.0.1", "--http.port", fmt.Sprint(port), "--http.api", "eth,txpool,net,web3",
		"--ipcdisable", "--verbosity", "3"}
	cmd := exec.Command(bin, append(base, args...)...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gethNode{t: t, url: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, log: &log}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("geth %s log:\n%s", datadir, log.String())
		}
	})
	for i := 0; i < 300; i++ {
		var v string
		if g.try(&v, "web3_clientVersion") == nil {
			return g
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("geth did not answer on %s:\n%s", g.url, log.String())
	return nil
}

type gethError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *gethError) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Message) }

func (g *gethNode) try(out any, method string, params ...any) error {
	if params == nil {
		params = []any{}
	}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	resp, err := http.Post(g.url, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Result json.RawMessage `json:"result"`
		Error  *gethError      `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return err
	}
	if r.Error != nil {
		return r.Error
	}
	return json.Unmarshal(r.Result, out)
}

func (g *gethNode) call(out any, method string, params ...any) {
	g.t.Helper()
	if err := g.try(out, method, params...); err != nil {
		g.t.Fatalf("geth %s: %v", method, err)
	}
}

// genesis is a throwaway post-merge network 1337 (no consensus client: it
// makes no blocks, which the test does not need) where the given accounts
// hold 100 ether each.
func genesis(funded ...common.Address) string {
	alloc := map[string]any{}
	for _, a := range funded {
		alloc[a.Hex()] = map[string]string{"balance": "0x56bc75e2d63100000"}
	}
	g := map[string]any{
		"config": map[string]any{"chainId": signerChain, "homesteadBlock": 0, "eip150Block": 0, "eip155Block": 0, "eip158Block": 0,
			"byzantiumBlock": 0, "constantinopleBlock": 0, "petersburgBlock": 0, "istanbulBlock": 0, "berlinBlock": 0,
			"londonBlock": 0, "mergeNetsplitBlock": 0, "terminalTotalDifficulty": 0, "shanghaiTime": 0, "cancunTime": 0,
			"blobSchedule": map[string]any{"cancun": map[string]any{"target": 3, "max": 6, "baseFeeUpdateFraction": 3338477}}},
		"difficulty": "0x0", "gasLimit": "0x1c9c380", "baseFeePerGas": "0x3b9aca00", "alloc": alloc,
	}
	b, _ := json.Marshal(g)
	return string(b)
}

// geth with --signer pointing at Cachet's endpoint: eth_accounts lists the
// endpoint's wallets (and not the hidden one); eth_signTransaction and
// eth_sendTransaction from a Cachet wallet return transactions whose sender
// recovers to it, and the sent one sits in geth's txpool; the same raw
// transaction sent to a second geth in --dev mode, where the wallet was
// funded, is mined. A policy denial is an error in geth's answer and a
// denial in Cachet's record.
func TestGethExternalSigner(t *testing.T) {
	bin := buildGeth(t)
	e := newSignerEnv(t, "", "")
	db := filepath.Join(e.a.dir, "data", "cachet.db")

	dir := t.TempDir()
	gen := writeFile(t, filepath.Join(dir, "genesis.json"), genesis(e.shown.addr, e.bounded.addr), 0o644)
	datadir := filepath.Join(dir, "private")
	if out, err := exec.Command(bin, "--datadir", datadir, "init", gen).CombinedOutput(); err != nil {
		t.Fatalf("geth init: %v\n%s", err, out)
	}
	g := startGeth(t, bin, datadir, "--networkid", fmt.Sprint(signerChain), "--signer", e.sock, "--syncmode", "full")

	var accounts []common.Address
	for i := 0; i < 50; i++ { // geth lists the signer's accounts once its backend is up
		g.call(&accounts, "eth_accounts")
		if len(accounts) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fmt.Sprint(accounts) != fmt.Sprint([]common.Address{e.shown.addr, e.strict.addr, e.bounded.addr}) {
		t.Fatalf("geth eth_accounts %v; want the endpoint's three wallets, not %s", accounts, e.hidden.addr)
	}

	signer := types.LatestSignerForChainID(big.NewInt(signerChain))
	to := common.HexToAddress("0x000000000000000000000000000000000000dEaD")
	tx := map[string]any{"from": e.shown.addr, "to": to, "value": "0x2386f26fc10000", "gas": "0x5208",
		"maxFeePerGas": "0x77359400", "maxPriorityFeePerGas": "0x3b9aca00", "nonce": "0x0"}
	var signed struct {
		Raw hexutil.Bytes      `json:"raw"`
		Tx  *types.Transaction `json:"tx"`
	}
	g.call(&signed, "eth_signTransaction", tx)
	var decoded types.Transaction
	if err := decoded.UnmarshalBinary(signed.Raw); err != nil {
		t.Fatal(err)
	}
	if from, err := types.Sender(signer, &decoded); err != nil || from != e.shown.addr {
		t.Fatalf("geth eth_signTransaction: sender %s %v", from, err)
	}

	// eth_sendTransaction: geth fills nonce, gas and fees, Cachet signs.
	var hash common.Hash
	g.call(&hash, "eth_sendTransaction", map[string]any{"from": e.shown.addr, "to": to, "value": "0x1"})
	var pending struct {
		From common.Address `json:"from"`
		Hash common.Hash    `json:"hash"`
	}
	g.call(&pending, "eth_getTransactionByHash", hash)
	if pending.From != e.shown.addr || pending.Hash != hash {
		t.Fatalf("sent transaction %s: %+v", hash, pending)
	}
	var pool struct {
		Pending map[common.Address]map[string]json.RawMessage `json:"pending"`
	}
	g.call(&pool, "txpool_content")
	if len(pool.Pending[e.shown.addr]) != 1 {
		t.Fatalf("txpool pending for %s: %v", e.shown.addr, pool.Pending)
	}

	// A policy denial: geth's answer carries Cachet's reason; Cachet
	// recorded the denial.
	before := countDecisions(t, db, "wallet.rpc", "deny", e.bounded.id)
	denied := map[string]any{"from": e.bounded.addr, "to": to, "value": "0x3e9", "gas": "0x5208",
		"maxFeePerGas": "0x77359400", "maxPriorityFeePerGas": "0x3b9aca00", "nonce": "0x0"}
	var ignored any
	err := g.try(&ignored, "eth_signTransaction", denied)
	if err == nil || !strings.Contains(err.Error(), "denied by policy") {
		t.Fatalf("geth eth_signTransaction over the policy: %v", err)
	}
	t.Logf("geth's answer to a denied request: %v", err)
	if err := g.try(&ignored, "eth_sendTransaction", map[string]any{"from": e.bounded.addr, "to": to, "value": "0x3e9"}); err == nil || !strings.Contains(err.Error(), "denied by policy") {
		t.Fatalf("geth eth_sendTransaction over the policy: %v", err)
	}
	if n := countDecisions(t, db, "wallet.rpc", "deny", e.bounded.id); n != before+2 {
		t.Fatalf("%d denials recorded, want 2", n-before)
	}

	// The raw transaction signed through the private geth, sent to a --dev
	// geth (chain 1337 too) after its developer account funds the wallet,
	// is mined.
	dev := startGeth(t, bin, filepath.Join(dir, "dev"), "--dev", "--dev.period", "0")
	var coinbase []common.Address
	dev.call(&coinbase, "eth_accounts")
	var fund common.Hash
	dev.call(&fund, "eth_sendTransaction", map[string]any{"from": coinbase[0], "to": e.shown.addr, "value": "0xde0b6b3a7640000"})
	waitReceipt(t, dev, fund)
	var sent common.Hash
	dev.call(&sent, "eth_sendRawTransaction", signed.Raw)
	if sent != decoded.Hash() {
		t.Fatalf("dev geth took %s, signed %s", sent, decoded.Hash())
	}
	if r := waitReceipt(t, dev, sent); r.Status != "0x1" {
		t.Fatalf("receipt of the Cachet-signed transaction: %+v", r)
	}

	// The endpoint's own eth_sendTransaction fills and broadcasts through
	// the [[chains]] node (here the --dev geth), and other methods are
	// forwarded there.
	e.d.stop()
	b, _ := os.ReadFile(e.cfg)
	writeFile(t, e.cfg, string(b)+"other_methods = \"forward\"\n\n[[chains]]\ncaip2 = \"eip155:1337\"\nrpc_url = \""+dev.url+"\"\n", 0o600)
	e.d = e.a.serve(e.cfg)
	waitSocket(t, e.sock)
	r := dialRPC(t, e.sock)
	var own common.Hash
	r.ok(&own, "eth_sendTransaction", map[string]any{"from": e.shown.addr, "to": to, "value": "0x2"})
	if rc := waitReceipt(t, dev, own); rc.Status != "0x1" {
		t.Fatalf("receipt of the endpoint's eth_sendTransaction: %+v", rc)
	}
	var mined struct {
		From  common.Address `json:"from"`
		Nonce hexutil.Uint64 `json:"nonce"`
	}
	r.ok(&mined, "eth_getTransactionByHash", own) // forwarded to the node
	if mined.From != e.shown.addr || mined.Nonce != 1 {
		t.Fatalf("forwarded eth_getTransactionByHash: %+v", mined)
	}
	e.d.stop()
	e.a.e.ok("audit", "verify", "--config", e.cfg)
}

type receipt struct {
	Status      string `json:"status"`
	BlockNumber string `json:"blockNumber"`
}

func waitReceipt(t *testing.T, g *gethNode, h common.Hash) receipt {
	t.Helper()
	for i := 0; i < 100; i++ {
		var r *receipt
		err := g.try(&r, "eth_getTransactionReceipt", h)
		switch {
		case err != nil && strings.Contains(err.Error(), "transaction indexing is in progress"):
			// A fresh --dev chain answers this until its indexer has
			// started: not yet known, ask again.
		case err != nil:
			t.Fatalf("geth eth_getTransactionReceipt: %v", err)
		case r != nil:
			return *r
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("transaction %s was not mined", h)
	return receipt{}
}
