package custody_test

import (
	"encoding/json"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/store"
)

// BenchmarkRPC measures one eth_signTransaction through Service.RPC on a
// wallet owned by one P-256 key, on SoftHSM: idempotency lookup, wallet
// read, request parsing, signature verification against the owner quorum,
// policy (none), unseal of the wallet key in the token, secp256k1 signing,
// and the durable commit of the audit record, replay digest and idempotency
// record (synchronous=FULL). Requests and their authorization signatures
// are made before the timer starts. writes/commit is the store's grouping
// of concurrent commits.
func BenchmarkRPC(b *testing.B) {
	run := func(b *testing.B, parallelism int) {
		e := newEnv(b, envConfig{})
		k := newAuthKey(b)
		w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"public_key":"`+k.pub+`"}}`)
		calls := make([]custody.Call, b.N)
		bodies := make([][]byte, b.N)
		for i := range calls {
			bodies[i] = signTxBody()
			calls[i] = e.rpcCall(request{body: bodies[i], signers: keysOf(k), idem: "bench-" + strconv.Itoa(i)}, w.ID)
		}
		commits0, writes0 := e.st.WriterStats()
		b.ReportAllocs()
		b.ResetTimer()
		if parallelism > 0 {
			b.SetParallelism(parallelism)
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1) - 1
					if _, err := e.svc.RPC(e.ctx, calls[i], w.ID, bodies[i], false); err != nil {
						b.Error(err)
						return
					}
				}
			})
		} else {
			for i := 0; i < b.N; i++ {
				if _, err := e.svc.RPC(e.ctx, calls[i], w.ID, bodies[i], false); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		commits, writes := e.st.WriterStats()
		if c := commits - commits0; c > 0 {
			b.ReportMetric(float64(writes-writes0)/float64(c), "writes/commit")
		}
	}
	b.Run("serial", func(b *testing.B) { run(b, 0) })
	// GOMAXPROCS goroutines.
	b.Run("parallel", func(b *testing.B) { run(b, 1) })
	// 8 × GOMAXPROCS goroutines: many clients, whose commits group.
	b.Run("parallel-x8", func(b *testing.B) { run(b, 8) })
}

// BenchmarkAuthenticate measures POST /v1/wallets/authenticate through
// Service.Authenticate: JWT verification (ES256, PEM key), a new P-256 user
// key, HPKE to the caller's key, and the durable commit of the key's
// public half and audit record. Tokens are made before the timer starts.
func BenchmarkAuthenticate(b *testing.B) {
	e, p := newUserEnv(b, custody.Options{MaxUserKeys: 1000})
	e.createUser("bench")
	_, spki := newRecipient(b)
	bodies := make([][]byte, b.N)
	for i := range bodies {
		bodies[i] = mustJSON(b, map[string]string{"user_jwt": p.token("bench", time.Hour, map[string]any{"jti": strconv.Itoa(i)}),
			"encryption_type": "HPKE", "recipient_public_key": spki})
	}
	c := e.call(request{method: "POST", path: "/v1/wallets/authenticate"})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.svc.Authenticate(e.ctx, c, bodies[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkRPCUserKey is BenchmarkRPC's serial case for a wallet owned by a
// user, signed with a user key: the user's live keys are read and tried as
// candidates besides the quorum's own.
func BenchmarkRPCUserKey(b *testing.B) {
	e, p := newUserEnv(b, custody.Options{})
	u := e.createUser("bench")
	w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"user_id":"`+u.ID+`"}}`)
	k, _ := e.authenticate(p.token("bench", time.Hour, nil))
	calls := make([]custody.Call, b.N)
	bodies := make([][]byte, b.N)
	for i := range calls {
		bodies[i] = signTxBody()
		calls[i] = e.rpcCall(request{body: bodies[i], signers: keysOf(k)}, w.ID)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.svc.RPC(e.ctx, calls[i], w.ID, bodies[i], false); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// limitsWallet is a wallet at every documented limit: an owner quorum of 50
// keys with 5 nested quorums of 50 keys, and MaxAdditionalSigners signers
// each the same. The last signer's quorum needs all its 50 keys.
func limitsWallet(b *testing.B, e *env) (custody.Wallet, []authKey) {
	b.Helper()
	bigQuorum := func(threshold int) (custody.KeyQuorum, []authKey) {
		var all []authKey
		var children []string
		for range 5 {
			ks := make([]authKey, 50)
			for i := range ks {
				ks[i] = newAuthKey(b)
			}
			all = append(all, ks...)
			children = append(children, e.quorumOf(appA, 50, ks).ID)
		}
		ks := make([]authKey, 50)
		for i := range ks {
			ks[i] = newAuthKey(b)
		}
		all = append(all, ks...)
		return e.quorumOf(appA, threshold, ks, children...), all
	}
	owner, _ := bigQuorum(1)
	var signers []map[string]any
	var last []authKey
	for i := range custody.MaxAdditionalSigners {
		q, ks := bigQuorum(1)
		if i == custody.MaxAdditionalSigners-1 {
			q, ks = bigQuorum(55) // every member: 50 keys and 5 children
		}
		signers = append(signers, map[string]any{"signer_id": q.ID})
		last = ks
	}
	w := e.createWallet(appA, string(mustJSON(b, map[string]any{"chain_type": "ethereum", "owner_id": owner.ID, "additional_signers": signers})))
	return w, last
}

// BenchmarkRefusedAtTheLimits measures the worst refused signing request the
// limits allow: a wallet at every limit (owner and 16 signers, each a quorum
// of 50 keys with 5 nested quorums of 50: 5,100 candidate keys), and 16
// signatures (the most one request may carry), all valid keys of the last
// signer, whose threshold they do not meet. Every quorum is loaded and
// checked; each signature is recovered once and confirmed once.
func BenchmarkRefusedAtTheLimits(b *testing.B) {
	e := newEnv(b, envConfig{})
	w, last := limitsWallet(b, e)
	calls := make([]custody.Call, b.N)
	bodies := make([][]byte, b.N)
	for i := range calls {
		bodies[i] = signTxBody()
		calls[i] = e.rpcCall(request{body: bodies[i], signers: last[:16]}, w.ID)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.svc.RPC(e.ctx, calls[i], w.ID, bodies[i], false); err == nil {
			b.Fatal("a request under the threshold was signed")
		}
	}
}

// BenchmarkSignWhileRefusalsArrive measures one eth_signTransaction on a
// 1-of-1 wallet, serially, on a quiet service and while another goroutine
// sends BenchmarkRefusedAtTheLimits's worst refused request without pause.
// Verification runs outside the single writer, so the refusals take CPU but
// never hold the signing request's commit.
func BenchmarkSignWhileRefusalsArrive(b *testing.B) {
	for _, load := range []bool{false, true} {
		name := "quiet"
		if load {
			name = "under-refusals"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, envConfig{})
			k := newAuthKey(b)
			w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"public_key":"`+k.pub+`"}}`)
			calls := make([]custody.Call, b.N)
			bodies := make([][]byte, b.N)
			for i := range calls {
				bodies[i] = signTxBody()
				calls[i] = e.rpcCall(request{body: bodies[i], signers: keysOf(k)}, w.ID)
			}
			stop := make(chan struct{})
			done := make(chan int)
			if load {
				big, last := limitsWallet(b, e)
				go func() {
					n := 0
					for {
						select {
						case <-stop:
							done <- n
							return
						default:
						}
						body := signTxBody()
						e.svc.RPC(e.ctx, e.rpcCall(request{body: body, signers: last[:16]}, big.ID), big.ID, body, false)
						n++
					}
				}()
			}
			lat := make([]time.Duration, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, err := e.svc.RPC(e.ctx, calls[i], w.ID, bodies[i], false); err != nil {
					b.Fatal(err)
				}
				lat[i] = time.Since(t0)
			}
			b.StopTimer()
			if load {
				close(stop)
				b.ReportMetric(float64(<-done)/b.Elapsed().Seconds(), "refusals/s")
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkAggregationWindow measures one eth_signTransaction under a policy
// with a 24 h value limit (an aggregation) on a wallet that already has
// N contributions in the window: the limit is read as two running totals,
// so the cost should not grow with N. Contributions are seeded directly in
// the store with their running totals ("running"), or in the table of
// contributions recorded before running totals, which is summed row by row
// as every contribution was before ("row-by-row", for comparison).
func BenchmarkAggregationWindow(b *testing.B) {
	for _, c := range []struct {
		mode string
		n    int
	}{{"running", 10_000}, {"running", 100_000}, {"row-by-row", 10_000}, {"row-by-row", 100_000}} {
		n := c.n
		b.Run(c.mode+"/"+strconv.Itoa(n), func(b *testing.B) {
			e := newEnv(b, envConfig{})
			k := newAuthKey(b)
			aggBody := []byte(`{"name":"value per day","method":"eth_signTransaction","metric":{"field_source":"ethereum_transaction","field":"value","function":"sum"},"window":{"type":"rolling","seconds":86400}}`)
			out, err := e.svc.CreateAggregation(e.ctx, e.call(request{method: "POST", path: "/v1/aggregations", body: aggBody}), aggBody)
			if err != nil {
				b.Fatal(err)
			}
			var agg struct{ ID string }
			json.Unmarshal(out, &agg)
			pid := e.createPolicy(`{"version":"1.0","name":"limit","chain_type":"ethereum","rules":[
				{"name":"daily limit","method":"eth_signTransaction","action":"DENY","conditions":[{"field_source":"reference","field":"aggregation.` + agg.ID + `","operator":"gt","value":"1000000000000000000000000"}]},
				{"name":"all","method":"eth_signTransaction","action":"ALLOW","conditions":[]}]}`)
			w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"public_key":"`+k.pub+`"},"policy_ids":["`+pid+`"]}`)
			now := e.clock.Now().UnixMilli()
			if err := e.st.Write(e.ctx, func(tx *store.Tx) error {
				for i := range n {
					at := now - 86_000_000 + int64(i)*86_000_000/int64(n)
					var err error
					if c.mode == "running" {
						_, err = tx.Exec(`INSERT INTO aggregation_events(aggregation_id, wallet_id, group_key, amount, running, at) VALUES (?, ?, '', '1', ?, ?)`,
							agg.ID, w.ID, strconv.Itoa(i+1), at)
					} else {
						_, err = tx.Exec(`INSERT INTO aggregation_events_legacy(aggregation_id, wallet_id, group_key, amount, at) VALUES (?, ?, '', '1', ?)`,
							agg.ID, w.ID, at)
					}
					if err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			calls := make([]custody.Call, b.N)
			bodies := make([][]byte, b.N)
			for i := range calls {
				bodies[i] = signTxBody()
				calls[i] = e.rpcCall(request{body: bodies[i], signers: keysOf(k)}, w.ID)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := e.svc.RPC(e.ctx, calls[i], w.ID, bodies[i], false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
