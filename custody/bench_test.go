package custody_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/custody"
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
