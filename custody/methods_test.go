package custody_test

import (
	"crypto/sha256"
	"encoding/json"
	"testing"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/cachet-custody/cachet/custody"
)

// TestSigningMethods: each method signs with the wallet's own key, through
// /rpc and /raw_sign, for the owner.
func TestSigningMethods(t *testing.T) {
	e := newEnv(t, envConfig{})
	k := newAuthKey(t)
	w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"public_key":"`+k.pub+`"}}`)
	other := e.ownedWallet("")
	hash := crypto.Keccak256([]byte("cachet"))
	sha := sha256.Sum256([]byte("hello"))

	for _, tc := range []struct {
		name   string
		raw    bool
		body   string
		method string
		digest []byte
	}{
		{"personal_sign", false, `{"method":"personal_sign","params":{"message":"hello cachet","encoding":"utf-8"}}`, "personal_sign", accounts.TextHash([]byte("hello cachet"))},
		{"secp256k1_sign", false, `{"method":"secp256k1_sign","params":{"hash":"` + hexutil.Encode(hash) + `"}}`, "secp256k1_sign", hash},
		{"raw_sign of a hash", true, `{"params":{"hash":"` + hexutil.Encode(hash) + `"}}`, "raw_sign", hash},
		{"raw_sign of bytes with sha256", true, `{"params":{"bytes":"hello","encoding":"utf-8","hash_function":"sha256"}}`, "raw_sign", sha[:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/wallets/" + w.ID + "/rpc"
			if tc.raw {
				path = "/v1/wallets/" + w.ID + "/raw_sign"
			}
			c := e.call(request{method: "POST", path: path, body: []byte(tc.body), signers: keysOf(k)})
			out, err := e.svc.RPC(e.ctx, c, w.ID, []byte(tc.body), tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			var resp struct {
				Method string `json:"method"`
				Data   struct {
					Signature string `json:"signature"`
					Encoding  string `json:"encoding"`
				} `json:"data"`
			}
			if err := json.Unmarshal(out, &resp); err != nil {
				t.Fatal(err)
			}
			sig, err := hexutil.Decode(resp.Data.Signature)
			if resp.Method != tc.method || resp.Data.Encoding != "hex" || err != nil || len(sig) != 65 || sig[64] < 27 {
				t.Fatalf("response %s", out)
			}
			sig[64] -= 27
			pub, err := crypto.SigToPub(tc.digest, sig)
			if err != nil {
				t.Fatal(err)
			}
			if got := crypto.PubkeyToAddress(*pub).Hex(); got != w.Address {
				t.Errorf("signed by %s, want the wallet %s", got, w.Address)
			}
		})
	}
	for _, tc := range []struct {
		name string
		raw  bool
		body string
	}{
		{"unknown method", false, `{"method":"eth_mine","params":{}}`},
		{"another wallet's address", false, `{"method":"personal_sign","address":"` + other.Address + `","params":{"message":"x"}}`},
		{"transaction from another wallet", false, `{"method":"eth_signTransaction","params":{"transaction":{"from":"` + other.Address + `","type":2,"chain_id":1,"to":"0x000000000000000000000000000000000000dEaD","nonce":1,"gas_limit":21000,"max_fee_per_gas":2,"max_priority_fee_per_gas":1}}}`},
		{"transaction with fields missing and no node", false, `{"method":"eth_signTransaction","params":{"transaction":{"chain_id":1,"to":"0x000000000000000000000000000000000000dEaD"}}}`},
		{"raw_sign of a short hash", true, `{"params":{"hash":"0x1234"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/wallets/" + w.ID + "/rpc"
			if tc.raw {
				path = "/v1/wallets/" + w.ID + "/raw_sign"
			}
			e.refused(t, custody.Invalid, func() error {
				_, err := e.svc.RPC(e.ctx, e.call(request{method: "POST", path: path, body: []byte(tc.body), signers: keysOf(k)}), w.ID, []byte(tc.body), tc.raw)
				return err
			})
		})
	}
}
