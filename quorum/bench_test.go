package quorum_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/cachet-custody/cachet/quorum"
)

// typicalRequest is an eth_signTransaction call as Privy's SDKs send it.
func typicalRequest() quorum.Request {
	h := http.Header{}
	h.Set("privy-app-id", "cm4x2n5ab00c1l70vnm7q9s3t")
	h.Set("privy-idempotency-key", "5b7a1f0e-2c7d-4b0e-9b7e-2f4c1a9d8e01")
	h.Set("privy-request-expiry", "1893456000000")
	body := `{"method":"eth_signTransaction","caip2":"eip155:8453","chain_type":"ethereum","params":{"transaction":{` +
		`"to":"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913","value":"0x0","chain_id":8453,"type":2,"nonce":17,` +
		`"gas_limit":"0x186a0","max_fee_per_gas":"0x3b9aca00","max_priority_fee_per_gas":"0x59682f00",` +
		`"data":"0xa9059cbb000000000000000000000000d8da6bf26964af9d7eed9e03e53415d37aa960450000000000000000000000000000000000000000000000000000000005f5e100"}}}`
	return quorum.Request{Method: "POST", URL: "http://localhost/v1/wallets/wlt_abc/rpc", Body: []byte(body), Headers: h}
}

// BenchmarkVerify measures the authorization work of one signing request.
// The signing keys come last among the candidates (the worst order).
// "verify" is Verify alone; "request" adds Payload, ParseSignatures and
// Satisfied, all a signed request costs in this package.
func BenchmarkVerify(b *testing.B) {
	req := typicalRequest()
	payload := mustPayload(b, req)
	cases := []struct {
		name      string
		members   int
		threshold int
		signers   int
	}{
		{"1-of-1", 1, 1, 1},
		{"2-of-3/1-sig", 3, 2, 1},
		{"2-of-3/2-sigs", 3, 2, 2},
	}
	for _, c := range cases {
		keys := make([]*signer, c.members)
		q := quorum.Quorum{ID: "kq_bench", Threshold: c.threshold}
		for i := range keys {
			keys[i] = newSigner(b)
			q.Keys = append(q.Keys, keys[i].spki)
		}
		var sigs [][]byte
		var header []string
		for _, s := range keys[c.members-c.signers:] {
			sig := s.sign(b, payload)
			sigs = append(sigs, sig)
			header = append(header, b64(sig))
		}
		candidates := q.Candidates()
		b.Run(c.name+"/verify", func(b *testing.B) {
			for b.Loop() {
				if _, err := quorum.Verify(payload, sigs, candidates, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/request", func(b *testing.B) {
			h := strings.Join(header, ",")
			for b.Loop() {
				p, err := quorum.Payload(req)
				if err != nil {
					b.Fatal(err)
				}
				s, err := quorum.ParseSignatures(h)
				if err != nil {
					b.Fatal(err)
				}
				a, err := quorum.Verify(p, s, q.Candidates(), nil)
				if err != nil {
					b.Fatal(err)
				}
				if q.Satisfied(a) != (c.signers >= c.threshold) {
					b.Fatal("unexpected outcome")
				}
			}
		})
	}
}

// manySigners returns n P-256 key pairs, generated once per process and
// shared by the benchmarks and tests (2048 keys take a noticeable moment).
var manySigners = func() func(tb testing.TB, n int) []*signer {
	var mu sync.Mutex
	var all []*signer
	return func(tb testing.TB, n int) []*signer {
		mu.Lock()
		defer mu.Unlock()
		for len(all) < n {
			all = append(all, newSigner(tb))
		}
		return all[:n]
	}
}()

// BenchmarkVerifyRefused measures the refusals that cost the most: a
// request against a large candidate set.
//
// "16-foreign": 16 signatures (MaxSignatures), all by keys outside the
// candidates. "15-members+1-foreign": 15 valid signatures by the
// last-listed candidates, then one foreign one; a matcher that tries every
// candidate pays for each signature before it reaches the refusal.
func BenchmarkVerifyRefused(b *testing.B) {
	payload := mustPayload(b, typicalRequest())
	foreign := make([]*signer, quorum.MaxSignatures)
	for i := range foreign {
		foreign[i] = newSigner(b)
	}
	for _, n := range []int{1, 50, 300, 2048} {
		members := manySigners(b, n)
		candidates := make([]string, n)
		for i, s := range members {
			candidates[i] = s.spki
		}
		allForeign := make([][]byte, len(foreign))
		for i, s := range foreign {
			allForeign[i] = s.sign(b, payload)
		}
		var mixed [][]byte
		for _, s := range members[max(0, n-(quorum.MaxSignatures-1)):] {
			mixed = append(mixed, s.sign(b, payload))
		}
		mixed = append(mixed, allForeign[0])
		for _, c := range []struct {
			name string
			sigs [][]byte
		}{
			{"16-foreign", allForeign},
			{fmt.Sprintf("%d-members+1-foreign", len(mixed)-1), mixed},
		} {
			b.Run(fmt.Sprintf("%d-candidates/%s", n, c.name), func(b *testing.B) {
				for b.Loop() {
					if _, err := quorum.Verify(payload, c.sigs, candidates, nil); err == nil {
						b.Fatal("refused request accepted")
					}
				}
			})
		}
	}
}

// BenchmarkPayload measures building the canonical payload of a typical
// eth_signTransaction request.
func BenchmarkPayload(b *testing.B) {
	req := typicalRequest()
	for b.Loop() {
		if _, err := quorum.Payload(req); err != nil {
			b.Fatal(err)
		}
	}
}
