package daemon

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
)

// BenchmarkSignHandler is eth_signTransaction through the whole handler
// (edge checks, authentication, the owner's signature, policy, SoftHSM
// unseal, signing, the durable commit of the record), clients in
// parallel, without the socket: what the daemon spends per signature.
// Profile it with -cpuprofile.
func BenchmarkSignHandler(b *testing.B) {
	r := newRig(b)
	q := r.must("POST", "/v1/key_quorums", `{"public_keys":["`+r.pub+`"],"authorization_threshold":1}`)
	w := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum","owner_id":"`+q["id"].(string)+`"}`)
	path := "/v1/wallets/" + w["id"].(string) + "/rpc"
	var nonce atomic.Int64
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := fmt.Sprintf(`{"method":"eth_signTransaction","caip2":"eip155:1","chain_type":"ethereum","params":{"transaction":{"to":"0x000000000000000000000000000000000000dEaD","value":"0x1","chain_id":1,"nonce":%d,"gas_limit":21000,"max_fee_per_gas":"0x3b9aca00","max_priority_fee_per_gas":"0x1","type":2}}}`, nonce.Add(1))
			if code, m := r.send("POST", path, []byte(body), r.owner); code != http.StatusOK {
				b.Fatalf("%d %v", code, m)
			}
		}
	})
}
