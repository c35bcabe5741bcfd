package signer

import (
	"encoding/json"
	"strings"
	"testing"
)

// convertTx maps the JSON-RPC transaction object member by member, with
// exact names, and refuses what the wallet API would not sign.
func TestConvertTx(t *testing.T) {
	from := `"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"`
	tests := []struct {
		name    string
		in      string
		want    string // the converted object, "" for an error
		wantErr string
	}{
		{"geth dynamic fee", `{"from":` + from + `,"to":"0x000000000000000000000000000000000000dead","gas":"0x5208","maxFeePerGas":"0x2","maxPriorityFeePerGas":"0x1","value":"0x0","nonce":"0x7","input":"0x","chainId":"0x539","accessList":[]}`,
			`{"access_list":[],"chain_id":"0x539","data":"0x","from":` + from + `,"gas_limit":"0x5208","max_fee_per_gas":"0x2","max_priority_fee_per_gas":"0x1","nonce":"0x7","to":"0x000000000000000000000000000000000000dead","value":"0x0"}`, ""},
		{"geth legacy, null to", `{"from":` + from + `,"to":null,"gas":"0x5208","gasPrice":"0x1","value":"0x0","nonce":"0x0","input":"0x00"}`,
			`{"data":"0x00","from":` + from + `,"gas_limit":"0x5208","gas_price":"0x1","nonce":"0x0","value":"0x0"}`, ""},
		{"access list renamed", `{"from":` + from + `,"accessList":[{"address":"0x000000000000000000000000000000000000dead","storageKeys":["0x0000000000000000000000000000000000000000000000000000000000000001"]}]}`,
			`{"access_list":[{"address":"0x000000000000000000000000000000000000dead","storage_keys":["0x0000000000000000000000000000000000000000000000000000000000000001"]}],"from":` + from + `}`, ""},
		{"data and input agree", `{"from":` + from + `,"data":"0x01","input":"0x01"}`, `{"data":"0x01","from":` + from + `}`, ""},
		{"data and input differ", `{"from":` + from + `,"data":"0x01","input":"0x02"}`, "", "data and input differ"},
		{"no from", `{"to":"0x000000000000000000000000000000000000dead"}`, "", "transaction.from: required"},
		{"case variant", `{"from":` + from + `,"GasPrice":"0x1"}`, "", "transaction.GasPrice: not a transaction member"},
		{"storage keys case", `{"from":` + from + `,"accessList":[{"address":"0x000000000000000000000000000000000000dead","StorageKeys":[]}]}`, "", "accessList[0]"},
		{"blob", `{"from":` + from + `,"blobVersionedHashes":["0x01"]}`, "", "blob transactions"},
		{"7702", `{"from":` + from + `,"authorizationList":[{}]}`, "", "EIP-7702"},
		{"not an object", `[1]`, "", "must be a JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := convertTx(json.RawMessage(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(got)
			if string(b) != tc.want {
				t.Fatalf("got  %s\nwant %s", b, tc.want)
			}
		})
	}
}

// Requests are read with exact member names and the JSON-RPC 2.0 shape.
func TestParseRequest(t *testing.T) {
	tests := []struct {
		in       string
		wantCode int // 0: valid
		notify   bool
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"eth_accounts"}`, 0, false},
		{`{"jsonrpc":"2.0","id":"x","method":"eth_accounts","params":[]}`, 0, false},
		{`{"jsonrpc":"2.0","method":"eth_accounts"}`, 0, true},
		{`{"jsonrpc":"2.0","id":1,"Method":"eth_accounts"}`, codeInvalidRequest, false},
		{`{"jsonrpc":"1.0","id":1,"method":"eth_accounts"}`, codeInvalidRequest, false},
		{`{"jsonrpc":"2.0","id":{},"method":"eth_accounts"}`, codeInvalidRequest, false},
		{`{"jsonrpc":"2.0","id":1,"method":""}`, codeInvalidRequest, false},
		{`{"jsonrpc":"2.0","id":1,"method":"eth_sign","params":{"a":1}}`, codeInvalidParams, false},
		{`"eth_accounts"`, codeInvalidRequest, false},
	}
	for _, tc := range tests {
		r, err := parseRequest(json.RawMessage(tc.in))
		switch {
		case tc.wantCode == 0 && err != nil:
			t.Errorf("%s: %v", tc.in, err)
		case tc.wantCode != 0 && (err == nil || err.Code != tc.wantCode):
			t.Errorf("%s: error %v, want code %d", tc.in, err, tc.wantCode)
		case tc.wantCode == 0 && (r.ID == nil) != tc.notify:
			t.Errorf("%s: notification %v", tc.in, r.ID == nil)
		}
	}
}

// Messages back to back (as ethers writes them) or one a line are read
// one by one; one larger than the limit stops the connection.
func TestMessageReader(t *testing.T) {
	in := `{"a":1}{"b":2}` + "\n" + `[{"c":3}]` + "\n"
	m := newMessageReader(&boundedReader{r: strings.NewReader(in), max: 64})
	for _, want := range []string{`{"a":1}`, `{"b":2}`, `[{"c":3}]`} {
		got, err := m.next()
		if err != nil || string(got) != want {
			t.Fatalf("got %s %v, want %s", got, err, want)
		}
	}
	big := `{"a":"` + strings.Repeat("x", 10000) + `"}`
	m = newMessageReader(&boundedReader{r: strings.NewReader(big), max: 1024})
	if _, err := m.next(); err == nil || !strings.Contains(err.Error(), "larger than 1024 bytes") {
		t.Fatalf("oversized message: %v", err)
	}
	m = newMessageReader(&boundedReader{r: strings.NewReader(`{"a":}`), max: 1024})
	if _, err := m.next(); err == nil || !strings.Contains(err.Error(), "not valid JSON") {
		t.Fatalf("invalid JSON: %v", err)
	}
}
