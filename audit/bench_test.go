package audit

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// BenchmarkAppend measures durable audit appends (synchronous=FULL) through
// the group-commit writer with 1, 8 and 64 concurrent writers. Each writer
// waits for its own record to be durable, as a request handler does.
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			l, st, _ := newLog(b)
			e := Entry{Actor: "uid=1000 app=app_bench", Action: "bench.write", Target: "wallet_0123456789", Decision: DecisionAllow,
				RequestDigest: Digest([]byte("request")), ResultDigest: Digest([]byte("result"))}
			c0, w0 := st.WriterStats()
			var wg sync.WaitGroup
			per := (b.N + writers - 1) / writers
			b.ResetTimer()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < per; i++ {
						if _, err := l.Record(context.Background(), e); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			c1, w1 := st.WriterStats()
			b.ReportMetric(float64(per*writers)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(w1-w0)/float64(c1-c0), "records/commit")
		})
	}
}
