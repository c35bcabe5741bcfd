package wallet_test

import (
	"encoding/json"
	"fmt"

	"github.com/cachet-custody/cachet/wallet"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// The request flow at the HTTP edge: parse, let the policy engine read the
// request, sign with the unsealed key, zero the key, answer Privy's shape.
func ExampleParseRPC() {
	body := []byte(`{"method":"personal_sign","chain_type":"ethereum","params":{"message":"hello world","encoding":"utf-8"}}`)
	req, err := wallet.ParseRPC(body)
	if err != nil {
		fmt.Println(err) // an *InputError: HTTP 400 invalid_data
		return
	}
	// ... policy evaluation reads req.Method, req.Message, req.Findings() ...
	priv := hexutil.MustDecode("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
	resp, err := req.Sign(priv)
	clear(priv)
	if err != nil {
		fmt.Println(err)
		return
	}
	out, _ := json.Marshal(resp)
	fmt.Println(string(out))
	// Output:
	// {"method":"personal_sign","data":{"signature":"0xa461f509887bd19e312c0c58467ce8ff8e300d3c1a90b608a760c5b80318eaf15fe57c96f9175d6cd4daad4663763baa7e78836e067d0163e9a2ccf2ff753f5b1b","encoding":"hex"}}
}

func ExampleParseRPC_inputError() {
	_, err := wallet.ParseRPC([]byte(`{"method":"eth_signTransaction","params":{"transaction":{"chainId":1}}}`))
	fmt.Println(err)
	// Output:
	// invalid params.transaction.chainId: unknown field; did you mean "chain_id"?
}
