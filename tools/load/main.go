// Command load measures a running Cachet end to end over its Unix socket,
// scenario by scenario, at several client concurrencies: throughput,
// p50/p99/p999 latency and errors, beside the bound from the cryptography
// each request needs, measured in the same run on all cores, and the ratio
// of the two. Each level also reports where the CPU went: the appliance's
// CPU time per request (the process behind the socket, found by its peer
// credentials, read from /proc/PID/stat), the clients' (this process), and
// the machine's idle and stolen time (/proc/stat), so that a run on a
// shared VM says how much of its spread the hypervisor took.
//
// Scenarios:
//   - plain: eth_signTransaction on a wallet owned by one P-256 key;
//   - quorum: the same, owned by a 2-of-3 quorum whose members are a key, a
//     nested 1-of-2 quorum and a user (two signatures per request);
//   - policy: an ERC-20 transfer under a 20-rule policy with calldata
//     conditions and a 24 h aggregation limit, on a wallet with --seed past
//     contributions in the window (sent through the API first);
//   - userkey: eth_signTransaction on a user-owned wallet, signed with a user
//     key got from the user's JWT (--jwt-file; `cachet dev token` makes one);
//   - create: wallet creation (the app's credentials alone).
//
// Every signing request is signed before the timed phase, each with its own
// nonce (a signed request runs once), so the client's own P-256 signing
// does not compete with the daemon for the CPU.
//
//	go run ./tools/load --app-file .cachet/dev-pkcs11/app.json --scenarios plain,policy --json out.json
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum/crypto"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/wallet"
)

func main() {
	o := options{}
	flag.StringVar(&o.appFile, "app-file", "", "app.json of the appliance (cachet dev writes one)")
	flag.StringVar(&o.scenarios, "scenarios", "plain", "scenarios to run, comma-separated: plain, quorum, policy, userkey, create")
	flag.StringVar(&o.levels, "concurrency", "1,8,64", "concurrent clients, comma-separated")
	flag.IntVar(&o.perLevel, "requests", 4000, "requests per concurrency level")
	flag.DurationVar(&o.boundFor, "bound-time", 3*time.Second, "how long to measure each crypto bound")
	flag.IntVar(&o.seed, "seed", 100_000, "policy scenario: past contributions sent before the timed phase")
	flag.StringVar(&o.jwtFile, "jwt-file", "", "userkey scenario: a JWT of the app's identity provider")
	flag.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&o.sockets, "also-sockets", "", "more appliances' sockets (comma-separated) sharing one PostgreSQL store: the timed requests' connections go round-robin over all")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

type options struct {
	appFile, scenarios, levels, jwtFile, jsonOut, sockets string
	perLevel, seed                                        int
	boundFor                                              time.Duration
}

// result is one scenario at one concurrency, as printed and as JSON.
type result struct {
	Scenario   string  `json:"scenario"`
	Clients    int     `json:"clients"`
	Requests   int     `json:"requests"`
	Throughput float64 `json:"throughput_per_s"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	P999ms     float64 `json:"p999_ms"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Bound      float64 `json:"crypto_bound_per_s"`
	Ratio      float64 `json:"ratio_to_bound"`
	cpuUse
}

// load is what a scenario sends: request i, made before the timed phase,
// and a check of its answer.
type load struct {
	describe string
	request  func(i int) (method, path string, body []byte, hdr http.Header, err error)
	check    func(status int, body []byte) error
	// bound is the cryptography one request needs, run on every core.
	bound func(time.Duration) float64
}

type rig struct {
	app   client.AppFile
	c     *client.Client
	httpc *http.Client
	o     options
	// pids are the processes serving the sockets, whose CPU time each
	// level reports; none if they could not be found.
	pids []int
}

func run(o options) error {
	var app client.AppFile
	b, err := os.ReadFile(o.appFile)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &app); err != nil {
		return err
	}
	if app.PublicURL == "" {
		app.PublicURL = "http://localhost"
	}
	socks := []string{app.Socket}
	if o.sockets != "" {
		socks = append(socks, strings.Split(o.sockets, ",")...)
	}
	var dials atomic.Uint64
	r := &rig{app: app, c: client.New(app.Socket, app.PublicURL, app.AppID, app.AppSecret), o: o,
		httpc: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", socks[(dials.Add(1)-1)%uint64(len(socks))])
			},
			MaxIdleConnsPerHost: 512,
		}}}
	if r.pids, err = appliancePIDs(socks); err != nil {
		fmt.Fprintf(os.Stderr, "load: the appliances' CPU time will not be reported: %v\n", err)
	}
	var cs []int
	for _, s := range strings.Split(o.levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("--concurrency: %q", s)
		}
		cs = append(cs, n)
	}
	fmt.Printf("machine: %d CPUs (GOMAXPROCS %d), %s; %d requests per level\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), o.perLevel)
	var all []result
	for _, name := range strings.Split(o.scenarios, ",") {
		name = strings.TrimSpace(name)
		setup, ok := scenarios[name]
		if !ok {
			return fmt.Errorf("--scenarios: unknown scenario %q", name)
		}
		l, err := setup(r)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", name, err)
		}
		bound := l.bound(o.boundFor)
		fmt.Printf("\n### %s: %s\ncrypto bound: %.0f req/s (%d goroutines, %s)\n\n", name, l.describe, bound, runtime.GOMAXPROCS(0), o.boundFor)
		fmt.Println("| clients | requests | throughput (req/s) | p50 | p99 | p99.9 | errors | of the bound | appliance CPU/req | client CPU/req | idle | steal |")
		fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
		for _, conc := range cs {
			res, err := r.level(name, l, conc)
			if err != nil {
				return err
			}
			res.Bound, res.Ratio = bound, res.Throughput/bound
			all = append(all, res)
			fmt.Printf("| %d | %d | %.0f | %.2f ms | %.2f ms | %.2f ms | %d | %.0f %% | %s | %.0f µs | %.0f %% | %.0f %% |\n", conc, res.Requests, res.Throughput,
				res.P50ms, res.P99ms, res.P999ms, res.Errors, 100*res.Ratio, res.appliance(), res.ClientUSPerReq, res.IdlePct, res.StealPct)
			if res.FirstError != "" {
				fmt.Fprintf(os.Stderr, "first error at %d clients: %s\n", conc, res.FirstError)
			}
		}
	}
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(all, "", "  ")
		return os.WriteFile(o.jsonOut, append(b, '\n'), 0o644)
	}
	return nil
}

// level prepares perLevel requests, then sends them from conc clients.
func (r *rig) level(name string, l *load, conc int) (result, error) {
	n := r.o.perLevel
	type prepared struct {
		method, path string
		body         []byte
		hdr          http.Header
	}
	reqs := make([]prepared, n)
	for i := range reqs {
		m, p, b, h, err := l.request(i)
		if err != nil {
			return result{}, err
		}
		reqs[i] = prepared{m, p, b, h}
	}
	lat := make([]time.Duration, n)
	var next, done, errs atomic.Int64
	var firstErr atomic.Value
	stop := r.progress(fmt.Sprintf("%s, %d clients", name, conc), int64(n), &done)
	var wg sync.WaitGroup
	cpu0 := sampleCPU(r.pids)
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t0 := time.Now()
				err := r.send(reqs[i].method, reqs[i].path, reqs[i].body, reqs[i].hdr, l.check)
				lat[i] = time.Since(t0)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1 := sampleCPU(r.pids)
	stop()
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	res := result{Scenario: name, Clients: conc, Requests: n, Throughput: float64(n) / elapsed.Seconds(),
		P50ms: ms(lat[n/2]), P99ms: ms(lat[n*99/100]), P999ms: ms(lat[n*999/1000]), Errors: errs.Load(),
		cpuUse: cpuBetween(cpu0, cpu1, n)}
	if e, ok := firstErr.Load().(string); ok {
		res.FirstError = e
	}
	return res, nil
}

// progress prints "what: done/total" on stderr twice a second until stop.
func (r *rig) progress(what string, total int64, done *atomic.Int64) (stop func()) {
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				fmt.Fprintf(os.Stderr, "\r%-40s %d/%d\n", what, done.Load(), total)
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "\r%-40s %d/%d", what, done.Load(), total)
			}
		}
	}()
	return func() { close(quit); <-finished }
}

func (r *rig) send(method, path string, body []byte, hdr http.Header, check func(int, []byte) error) error {
	req, _ := http.NewRequest(method, r.app.PublicURL+path, strings.NewReader(string(body)))
	req.Header = hdr
	resp, err := r.httpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return check(resp.StatusCode, b)
}

// headers are the app's credentials, and for a signed request a fresh
// expiry and the signatures of keys.
func (r *rig) headers(method, path string, body []byte, signers ...*ecdsa.PrivateKey) (http.Header, error) {
	h := http.Header{}
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(r.app.AppID+":"+r.app.AppSecret)))
	h.Set("privy-app-id", r.app.AppID)
	h.Set("Content-Type", "application/json")
	if len(signers) == 0 {
		return h, nil
	}
	h.Set("privy-request-expiry", strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10))
	sig, err := client.Sign(quorum.Request{Method: method, URL: r.app.PublicURL + path, Body: body, Headers: h}, signers)
	if err != nil {
		return nil, err
	}
	h.Set("privy-authorization-signature", sig)
	return h, nil
}

func (r *rig) do(method, path string, body any, signers ...*ecdsa.PrivateKey) (map[string]any, error) {
	resp, err := r.c.Do(context.Background(), client.Request{Method: method, Path: path, Body: body, Keys: signers})
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(resp.Body, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func newKey() (*ecdsa.PrivateKey, string) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := keys.PublicKeySPKI(&k.PublicKey)
	return k, pub
}

var nonce atomic.Int64

// signTx is the body of an eth_signTransaction with a nonce of its own,
// to the token with data when data is not empty.
func signTx(to, data string) []byte {
	n := nonce.Add(1)
	if data == "" {
		data = "0x"
	}
	return fmt.Appendf(nil, `{"method":"eth_signTransaction","chain_type":"ethereum","params":{"transaction":{"type":2,"chain_id":11155111,"nonce":%d,"to":"%s","value":"0x1","data":"%s","gas_limit":90000,"max_fee_per_gas":"0x77359400","max_priority_fee_per_gas":"0x3b9aca00"}}}`, n, to, data)
}

func signedOK(status int, body []byte) error {
	var out struct {
		Data struct {
			Signed string `json:"signed_transaction"`
		} `json:"data"`
		Error string `json:"error"`
	}
	json.Unmarshal(body, &out)
	if status != 200 || out.Data.Signed == "" {
		return fmt.Errorf("HTTP %d: %s", status, out.Error)
	}
	return nil
}

// rpcLoad signs eth_signTransaction requests for one wallet with signers.
func (r *rig) rpcLoad(walletID, describe, to, data string, verifications int, signers ...*ecdsa.PrivateKey) *load {
	path := "/v1/wallets/" + walletID + "/rpc"
	return &load{describe: describe,
		request: func(int) (string, string, []byte, http.Header, error) {
			body := signTx(to, data)
			h, err := r.headers("POST", path, body, signers...)
			return "POST", path, body, h, err
		},
		check: signedOK,
		bound: func(d time.Duration) float64 { return signBound(d, verifications) },
	}
}

const dead = "0x000000000000000000000000000000000000dEaD"

var scenarios = map[string]func(*rig) (*load, error){
	"plain": func(r *rig) (*load, error) {
		k, pub := newKey()
		w, err := r.do("POST", "/v1/wallets", map[string]any{"chain_type": "ethereum", "owner": map[string]string{"public_key": pub}})
		if err != nil {
			return nil, err
		}
		return r.rpcLoad(w["id"].(string), "eth_signTransaction (EIP-1559), owner one P-256 key, no policy", dead, "", 1, k), nil
	},
	"quorum": func(r *rig) (*load, error) {
		k1, p1 := newKey()
		k2, p2 := newKey()
		_, p3 := newKey()
		_, p4 := newKey()
		child, err := r.do("POST", "/v1/key_quorums", map[string]any{"public_keys": []string{p2, p3}, "authorization_threshold": 1})
		if err != nil {
			return nil, err
		}
		owner, err := r.do("POST", "/v1/key_quorums", map[string]any{"public_keys": []string{p1, p4},
			"key_quorum_ids": []string{child["id"].(string)}, "authorization_threshold": 2})
		if err != nil {
			return nil, err
		}
		w, err := r.do("POST", "/v1/wallets", map[string]any{"chain_type": "ethereum", "owner_id": owner["id"]})
		if err != nil {
			return nil, err
		}
		return r.rpcLoad(w["id"].(string), "eth_signTransaction, owner a 2-of-3 quorum (two keys and a nested 1-of-2), two signatures", dead, "", 2, k1, k2), nil
	},
	"policy": func(r *rig) (*load, error) { return policyScenario(r) },
	"userkey": func(r *rig) (*load, error) {
		if r.o.jwtFile == "" {
			return nil, errors.New("--jwt-file is required (cachet dev token --dir DIR --sub bench > bench.jwt)")
		}
		jwtText, err := os.ReadFile(r.o.jwtFile)
		if err != nil {
			return nil, err
		}
		users, err := r.do("POST", "/v1/users/custom_auth/id", map[string]string{"custom_user_id": "bench"})
		if err != nil {
			if users, err = r.do("POST", "/v1/users", map[string]any{"linked_accounts": []map[string]string{{"type": "custom_auth", "custom_user_id": "bench"}}}); err != nil {
				return nil, fmt.Errorf("user bench (the JWT's subject): %w", err)
			}
		}
		w, err := r.do("POST", "/v1/wallets", map[string]any{"chain_type": "ethereum", "owner": map[string]string{"user_id": users["id"].(string)}})
		if err != nil {
			return nil, err
		}
		recipient, err := hpkebox.GenerateKey()
		if err != nil {
			return nil, err
		}
		der, _ := x509.MarshalPKIXPublicKey(recipient.PublicKey())
		auth, err := r.do("POST", "/v1/wallets/authenticate", map[string]string{"user_jwt": strings.TrimSpace(string(jwtText)),
			"encryption_type": "HPKE", "recipient_public_key": base64.StdEncoding.EncodeToString(der)})
		if err != nil {
			return nil, err
		}
		box := auth["encrypted_authorization_key"].(map[string]any)
		k, err := client.OpenUserKey(recipient, hpkebox.Box{EncapsulatedKey: box["encapsulated_key"].(string), Ciphertext: box["ciphertext"].(string)})
		if err != nil {
			return nil, err
		}
		return r.rpcLoad(w["id"].(string), "eth_signTransaction on a user-owned wallet, signed with the user's key (from its JWT)", dead, "", 1, k), nil
	},
	"create": func(r *rig) (*load, error) {
		return &load{describe: "POST /v1/wallets (app credentials; entropy, BIP-32 key, two seals in the hardware)",
			request: func(int) (string, string, []byte, http.Header, error) {
				body := []byte(`{"chain_type":"ethereum"}`)
				h, err := r.headers("POST", "/v1/wallets", body)
				return "POST", "/v1/wallets", body, h, err
			},
			check: func(status int, body []byte) error {
				if status != 200 {
					return fmt.Errorf("HTTP %d: %s", status, body)
				}
				return nil
			},
			bound: createBound,
		}, nil
	},
}

// The ERC-20 of the policy scenario, and transfer(address,uint256).
const (
	token    = "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"
	erc20ABI = `[{"type":"function","name":"transfer","inputs":[{"name":"_to","type":"address"},{"name":"_value","type":"uint256"}],"outputs":[{"name":"","type":"bool"}],"stateMutability":"nonpayable"}]`
)

func transferData(to string, amount int64) string {
	return "0xa9059cbb" + strings.Repeat("0", 24) + strings.ToLower(strings.TrimPrefix(to, "0x")) + fmt.Sprintf("%064x", amount)
}

// policyScenario: 20 rules for eth_signTransaction (18 that deny what this
// load never sends, a 24 h aggregation limit, one allow for transfers of
// the token), on a wallet with r.o.seed past contributions in the window.
func policyScenario(r *rig) (*load, error) {
	agg, err := r.do("POST", "/v1/aggregations", map[string]any{"name": "token per 24h", "method": "eth_signTransaction",
		"metric": map[string]any{"field_source": "ethereum_calldata", "field": "transfer._value", "abi": json.RawMessage(erc20ABI), "function": "sum"},
		"window": map[string]any{"type": "rolling", "seconds": 86400}})
	if err != nil {
		return nil, err
	}
	cond := func(source, field, op string, value any) map[string]any {
		c := map[string]any{"field_source": source, "field": field, "operator": op, "value": value}
		if source == "ethereum_calldata" {
			c["abi"] = json.RawMessage(erc20ABI)
		}
		return c
	}
	var rules []any
	for i := range 16 {
		blocked := fmt.Sprintf("0x%040x", 0xbad000+i)
		rules = append(rules, map[string]any{"name": fmt.Sprintf("blocked payee %d", i), "method": "eth_signTransaction", "action": "DENY",
			"conditions": []any{cond("ethereum_calldata", "transfer._to", "eq", blocked)}})
	}
	rules = append(rules,
		map[string]any{"name": "only the token", "method": "eth_signTransaction", "action": "DENY",
			"conditions": []any{cond("ethereum_transaction", "to", "neq", strings.ToLower(token))}},
		map[string]any{"name": "per-transfer limit", "method": "eth_signTransaction", "action": "DENY",
			"conditions": []any{cond("ethereum_calldata", "transfer._value", "gt", "1000000")}},
		map[string]any{"name": "daily limit", "method": "eth_signTransaction", "action": "DENY",
			"conditions": []any{cond("reference", "aggregation."+agg["id"].(string), "gt", "1000000000000000000")}},
		map[string]any{"name": "token transfers", "method": "eth_signTransaction", "action": "ALLOW",
			"conditions": []any{cond("ethereum_calldata", "transfer", "eq", "transfer")}})
	p, err := r.do("POST", "/v1/policies", map[string]any{"version": "1.0", "name": "bench", "chain_type": "ethereum", "rules": rules})
	if err != nil {
		return nil, err
	}
	k, pub := newKey()
	w, err := r.do("POST", "/v1/wallets", map[string]any{"chain_type": "ethereum", "owner": map[string]string{"public_key": pub},
		"policy_ids": []string{p["id"].(string)}})
	if err != nil {
		return nil, err
	}
	l := r.rpcLoad(w["id"].(string), fmt.Sprintf("ERC-20 transfer, 20-rule policy with calldata conditions and a 24 h limit, %d past contributions in the window", r.o.seed),
		token, transferData(dead, 7), 1, k)
	if r.o.seed > 0 {
		// The seed goes through the API, as real contributions would.
		var done atomic.Int64
		stop := r.progress("policy: seeding contributions", int64(r.o.seed), &done)
		var next atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for next.Add(1) <= int64(r.o.seed) {
					m, p, b, h, err := l.request(0)
					if err == nil {
						err = r.send(m, p, b, h, l.check)
					}
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
					}
					done.Add(1)
				}
			})
		}
		wg.Wait()
		stop()
		if e, ok := firstErr.Load().(error); ok {
			return nil, fmt.Errorf("seeding: %w", e)
		}
	}
	return l, nil
}

// signBound runs, on every core, the cryptography of one signing request:
// verifications P-256 verifications (the authorization signatures) and one
// secp256k1 signature (the transaction).
func signBound(d time.Duration, verifications int) float64 {
	authKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("payload"))
	sig, _ := ecdsa.SignASN1(rand.Reader, authKey, digest[:])
	txKey, _ := crypto.GenerateKey()
	txHash := crypto.Keccak256([]byte("tx"))
	return onAllCores(d, func() {
		for range verifications {
			if !ecdsa.VerifyASN1(&authKey.PublicKey, digest[:], sig) {
				panic("verify")
			}
		}
		if _, err := crypto.Sign(txHash, txKey); err != nil {
			panic(err)
		}
	})
}

// createBound runs the cryptography of one wallet creation that happens in
// process: 128 bits of entropy and the BIP-32 derivation of its key (the two
// seals happen in the hardware and are not counted).
func createBound(d time.Duration) float64 {
	return onAllCores(d, func() {
		e, err := wallet.NewEntropy()
		if err != nil {
			panic(err)
		}
		if _, _, err := wallet.DeriveKey(e); err != nil {
			panic(err)
		}
	})
}

func onAllCores(d time.Duration, op func()) float64 {
	var ops atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				op()
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(ops.Load()) / d.Seconds()
}
