package custody_test

import (
	"strconv"
	"sync/atomic"
	"testing"

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
