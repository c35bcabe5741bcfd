package wallet

import (
	"encoding/json"
	"testing"
)

var benchTx = []byte(`{"method":"eth_signTransaction","caip2":"eip155:1","params":{"transaction":{"type":2,"chain_id":1,
	"nonce":"0x2a","to":"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266","value":"0xde0b6b3a7640000","data":"0xa9059cbb000000000000000000000000f39fd6e51aad88f6f4ce6ab8827279cfffb922660000000000000000000000000000000000000000000000000de0b6b3a7640000",
	"gas_limit":"0xfde8","max_fee_per_gas":"0x77359400","max_priority_fee_per_gas":"0x3b9aca00"}}}`)

// BenchmarkSignTransaction measures one eth_signTransaction of an EIP-1559
// ERC-20 transfer: parse and validate the body, sign, encode the response.
func BenchmarkSignTransaction(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		req, err := ParseRPC(benchTx)
		if err != nil {
			b.Fatal(err)
		}
		resp, err := req.Sign(testKey)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(resp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseTransaction is the parsing share of BenchmarkSignTransaction.
func BenchmarkParseTransaction(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRPC(benchTx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignTypedData measures parse + sign of the EIP-712 Mail example.
func BenchmarkSignTypedData(b *testing.B) {
	body := []byte(`{"method":"eth_signTypedData_v4","params":{"typed_data":{"domain":{"name":"Ether Mail","version":"1","chainId":1,"verifyingContract":"0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},
	"types":{"Person":[{"name":"name","type":"string"},{"name":"wallet","type":"address"}],"Mail":[{"name":"from","type":"Person"},{"name":"to","type":"Person"},{"name":"contents","type":"string"}]},
	"primary_type":"Mail","message":{"from":{"name":"Cow","wallet":"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},"to":{"name":"Bob","wallet":"0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},"contents":"Hello, Bob!"}}}}`)
	b.ReportAllocs()
	for b.Loop() {
		req, err := ParseRPC(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := req.Sign(testKey); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeriveKey measures BIP-39 seed (PBKDF2-HMAC-SHA512, 2048 rounds)
// plus BIP-32 along m/44'/60'/0'/0/0 from 16 bytes of entropy. Compare with
// BenchmarkSignTransaction: deriving per signature would cost this much on
// top of every signature, which is why the daemon derives once at wallet
// creation and stores the derived key sealed.
func BenchmarkDeriveKey(b *testing.B) {
	entropy := make([]byte, EntropySize)
	for i := range entropy {
		entropy[i] = byte(i)
	}
	b.ReportAllocs()
	for b.Loop() {
		priv, _, err := DeriveKey(entropy)
		if err != nil {
			b.Fatal(err)
		}
		clear(priv)
	}
}
