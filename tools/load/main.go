// Command load measures end-to-end eth_signTransaction over a running
// Cachet's Unix socket, for a wallet with a 1-of-1 owner, at several client
// concurrencies: throughput and p50/p99 latency. In the same run it measures
// the bound from the cryptography alone: one P-256 verification (the
// authorization signature) plus one secp256k1 signature (the transaction)
// per request, on all cores.
//
// Every request is signed by the owner before the timed phase, each with
// its own nonce (the daemon refuses a replayed request), so the client's
// own P-256 signing does not compete with the daemon for the CPU.
//
//	go run ./tools/load --app-file .cachet/dev-pkcs11/app.json
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
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
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/quorum"
)

func main() {
	appFile := flag.String("app-file", "", "app.json of the appliance (cachet dev writes one)")
	levels := flag.String("concurrency", "1,8,64", "concurrent clients, comma-separated")
	perLevel := flag.Int("requests", 4000, "requests per concurrency level")
	boundFor := flag.Duration("bound-time", 3*time.Second, "how long to measure the crypto bound")
	flag.Parse()
	if err := run(*appFile, *levels, *perLevel, *boundFor); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

type signed struct {
	body []byte
	hdr  http.Header
}

func run(appFile, levels string, perLevel int, boundFor time.Duration) error {
	var app client.AppFile
	b, err := os.ReadFile(appFile)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &app); err != nil {
		return err
	}
	if app.PublicURL == "" {
		app.PublicURL = "http://localhost"
	}
	c := client.New(app.Socket, app.PublicURL, app.AppID, app.AppSecret)
	ctx := context.Background()
	owner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := keys.PublicKeySPKI(&owner.PublicKey)
	resp, err := c.Do(ctx, client.Request{Method: "POST", Path: "/v1/wallets",
		Body: map[string]any{"chain_type": "ethereum", "owner": map[string]string{"public_key": pub}, "display_name": "load test"}})
	if err != nil {
		return fmt.Errorf("create wallet: %w", err)
	}
	var w struct{ ID string }
	json.Unmarshal(resp.Body, &w)
	path := "/v1/wallets/" + w.ID + "/rpc"

	var cs []int
	for _, s := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("--concurrency: %q", s)
		}
		cs = append(cs, n)
	}
	httpc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", app.Socket)
		},
		MaxIdleConnsPerHost: 512,
	}}
	nonce := 0
	fmt.Printf("machine: %d CPUs (GOMAXPROCS %d), %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Printf("wallet %s, owner 1-of-1 P-256 key, eth_signTransaction (EIP-1559), %d requests per level\n\n", w.ID, perLevel)
	fmt.Println("| clients | requests | throughput (req/s) | p50 | p99 | errors |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, conc := range cs {
		reqs := make([]signed, perLevel)
		for i := range reqs {
			nonce++
			body := fmt.Appendf(nil, `{"method":"eth_signTransaction","chain_type":"ethereum","params":{"transaction":{"type":2,"chain_id":11155111,"nonce":%d,"to":"0x000000000000000000000000000000000000dEaD","value":"0x1","gas_limit":21000,"max_fee_per_gas":"0x77359400","max_priority_fee_per_gas":"0x3b9aca00"}}}`, nonce)
			h := http.Header{}
			h.Set("Authorization", "Basic "+basic(app.AppID, app.AppSecret))
			h.Set("privy-app-id", app.AppID)
			h.Set("Content-Type", "application/json")
			h.Set("privy-request-expiry", strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10))
			sig, err := client.Sign(quorum.Request{Method: "POST", URL: app.PublicURL + path, Body: body, Headers: h}, []*ecdsa.PrivateKey{owner})
			if err != nil {
				return err
			}
			h.Set("privy-authorization-signature", sig)
			reqs[i] = signed{body, h}
		}
		lat := make([]time.Duration, perLevel)
		var next, errs atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		start := time.Now()
		for g := 0; g < conc; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= perLevel {
						return
					}
					t0 := time.Now()
					req, _ := http.NewRequest("POST", app.PublicURL+path, strings.NewReader(string(reqs[i].body)))
					req.Header = reqs[i].hdr
					resp, err := httpc.Do(req)
					if err == nil {
						var out struct {
							Data struct {
								Signed string `json:"signed_transaction"`
							} `json:"data"`
							Error string `json:"error"`
						}
						json.NewDecoder(resp.Body).Decode(&out)
						resp.Body.Close()
						if resp.StatusCode != 200 || out.Data.Signed == "" {
							err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, out.Error)
						}
					}
					if err != nil {
						errs.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
					lat[i] = time.Since(t0)
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		slices.Sort(lat)
		fmt.Printf("| %d | %d | %.0f | %s | %s | %d |\n", conc, perLevel, float64(perLevel)/elapsed.Seconds(),
			lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), errs.Load())
		if e := firstErr.Load(); e != nil {
			fmt.Fprintf(os.Stderr, "first error at %d clients: %v\n", conc, e)
		}
	}
	fmt.Printf("\ncrypto bound (P-256 verify + secp256k1 sign per request, %d goroutines for %s): %.0f req/s\n",
		runtime.GOMAXPROCS(0), boundFor, cryptoBound(boundFor))
	return nil
}

func basic(id, secret string) string {
	return base64.StdEncoding.EncodeToString([]byte(id + ":" + secret))
}

// cryptoBound runs, on every core, what each request costs in cryptography
// alone: verifying one P-256 DER signature and making one secp256k1
// signature.
func cryptoBound(d time.Duration) float64 {
	authKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("payload"))
	sig, _ := ecdsa.SignASN1(rand.Reader, authKey, digest[:])
	txKey, _ := crypto.GenerateKey()
	txHash := crypto.Keccak256([]byte("tx"))
	var ops atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for g := 0; g < runtime.GOMAXPROCS(0); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if !ecdsa.VerifyASN1(&authKey.PublicKey, digest[:], sig) {
					panic("verify")
				}
				if _, err := crypto.Sign(txHash, txKey); err != nil {
					panic(err)
				}
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(ops.Load()) / d.Seconds()
}
