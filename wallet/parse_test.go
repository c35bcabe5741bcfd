package wallet

import (
	"errors"
	"math/big"
	"strings"
	"testing"
)

const to = `"to":"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"`

func txBody(fields string) string {
	return `{"method":"eth_signTransaction","params":{"transaction":{` + fields + `}}}`
}

func TestParseRPCErrors(t *testing.T) {
	big64 := `"0x1` + strings.Repeat("0", 16) + `"` // 2^64
	tests := []struct {
		name  string
		body  string
		field string
	}{
		// body
		{"not JSON", `{"method":`, "body"},
		{"array body", `[1]`, "body"},
		{"trailing data", `{"method":"personal_sign","params":{"message":"a"}} {}`, "body"},
		{"duplicate top-level key", `{"method":"personal_sign","method":"secp256k1_sign","params":{"message":"a"}}`, "method"},
		{"duplicate nested key", txBody(to + `,"value":1,"value":2`), "params.transaction.value"},
		{"too deep", `{"method":"personal_sign","params":` + strings.Repeat(`{"a":`, 70) + `1` + strings.Repeat(`}`, 70) + `}`, "params.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a"},
		// top level
		{"no method", `{"params":{}}`, "method"},
		{"method not a string", `{"method":1}`, "method"},
		{"unknown method", `{"method":"eth_signUserOperation","params":{}}`, "method"},
		{"raw_sign on rpc", `{"method":"raw_sign","params":{"hash":"0x00"}}`, "method"},
		{"wrong chain_type", `{"method":"personal_sign","chain_type":"solana","params":{"message":"a"}}`, "chain_type"},
		{"bad address", `{"method":"personal_sign","address":"0x12","params":{"message":"a"}}`, "address"},
		{"sponsor", `{"method":"eth_sendTransaction","caip2":"eip155:1","sponsor":true,"params":{"transaction":{` + to + `}}}`, "sponsor"},
		{"erc1271", `{"method":"personal_sign","signature_options":{"type":"erc1271"},"params":{"message":"a"}}`, "signature_options.type"},
		{"caip2 namespace", `{"method":"eth_sendTransaction","caip2":"solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp","params":{"transaction":{` + to + `}}}`, "caip2"},
		{"caip2 hex", `{"method":"eth_sendTransaction","caip2":"eip155:0x1","params":{"transaction":{` + to + `}}}`, "caip2"},
		{"caip2 zero", `{"method":"eth_sendTransaction","caip2":"eip155:0","params":{"transaction":{` + to + `}}}`, "caip2"},
		{"caip2 missing for send", `{"method":"eth_sendTransaction","params":{"transaction":{` + to + `}}}`, "caip2"},
		{"caip2 differs from chain_id", `{"method":"eth_sendTransaction","caip2":"eip155:1","params":{"transaction":{"chain_id":5,` + to + `}}}`, "params.transaction.chain_id"},
		{"reference_id too long", `{"method":"personal_sign","reference_id":"` + strings.Repeat("r", 257) + `","params":{"message":"a"}}`, "reference_id"},
		// params
		{"no params", `{"method":"personal_sign"}`, "params"},
		{"params not object", `{"method":"personal_sign","params":["a"]}`, "params"},
		{"unknown params key", `{"method":"eth_signTransaction","params":{"transaction":{},"tx":{}}}`, "params.tx"},
		{"no transaction", `{"method":"eth_signTransaction","params":{}}`, "params.transaction"},
		// transaction quantities
		{"negative nonce", txBody(to + `,"nonce":-1`), "params.transaction.nonce"},
		{"fractional value", txBody(to + `,"value":1.5`), "params.transaction.value"},
		{"exponent value", txBody(to + `,"value":1e18`), "params.transaction.value"},
		{"decimal string", txBody(to + `,"value":"1000"`), "params.transaction.value"},
		{"hex without 0x", txBody(to + `,"value":"ff"`), "params.transaction.value"},
		{"empty hex", txBody(to + `,"value":"0x"`), "params.transaction.value"},
		{"bad hex digit", txBody(to + `,"value":"0xfg"`), "params.transaction.value"},
		{"signed hex", txBody(to + `,"value":"0x-1"`), "params.transaction.value"},
		{"value over 256 bits", txBody(to + `,"value":"0x1` + strings.Repeat("0", 64) + `"`), "params.transaction.value"},
		{"value huge integer", txBody(to + `,"value":1` + strings.Repeat("0", 120)), "params.transaction.value"},
		{"nonce over 64 bits", txBody(to + `,"nonce":` + big64), "params.transaction.nonce"},
		{"nonce 2^64-1", txBody(to + `,"nonce":18446744073709551615`), "params.transaction.nonce"},
		{"gas_limit boolean", txBody(to + `,"gas_limit":true`), "params.transaction.gas_limit"},
		{"chain_id zero", txBody(to + `,"chain_id":0`), "params.transaction.chain_id"},
		{"chain_id over 64 bits", txBody(to + `,"chain_id":` + big64), "params.transaction.chain_id"},
		// transaction fields
		{"unknown field camelCase", txBody(to + `,"chainId":1`), "params.transaction.chainId"},
		{"unknown field gas", txBody(to + `,"gas":21000`), "params.transaction.gas"},
		{"type 3", txBody(to + `,"type":3`), "params.transaction.type"},
		{"type 5", txBody(to + `,"type":5`), "params.transaction.type"},
		{"type 256", txBody(to + `,"type":256`), "params.transaction.type"},
		{"to short", txBody(`"to":"0x1234"`), "params.transaction.to"},
		{"to without 0x", txBody(`"to":"f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"`), "params.transaction.to"},
		{"to bad checksum", txBody(`"to":"0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266"`), "params.transaction.to"},
		{"to number", txBody(`"to":1`), "params.transaction.to"},
		{"data without 0x", txBody(to + `,"data":"abcd"`), "params.transaction.data"},
		{"data odd", txBody(to + `,"data":"0xabc"`), "params.transaction.data"},
		{"data too big", txBody(to + `,"data":"0x` + strings.Repeat("00", MaxHexBytes+1) + `"`), "params.transaction.data"},
		{"gas_price with max fee", txBody(to + `,"gas_price":1,"max_fee_per_gas":2`), "params.transaction.gas_price"},
		{"type 0 with max fee", txBody(to + `,"type":0,"max_fee_per_gas":2`), "params.transaction.max_fee_per_gas"},
		{"type 2 with gas_price", txBody(to + `,"type":2,"gas_price":2`), "params.transaction.gas_price"},
		{"tip above max fee", txBody(to + `,"max_fee_per_gas":1,"max_priority_fee_per_gas":2`), "params.transaction.max_priority_fee_per_gas"},
		{"type 0 access list", txBody(to + `,"type":0,"access_list":[]`), "params.transaction.access_list"},
		{"access list not array", txBody(to + `,"access_list":{}`), "params.transaction.access_list"},
		{"access list no address", txBody(to + `,"access_list":[{"storage_keys":[]}]`), "params.transaction.access_list[0].address"},
		{"access list short key", txBody(to + `,"access_list":[{"address":"0x00000000000000000000000000000000000000aa","storage_keys":["0x01"]}]`), "params.transaction.access_list[0].storage_keys[0]"},
		{"access list camelCase", txBody(to + `,"access_list":[{"address":"0x00000000000000000000000000000000000000aa","storageKeys":[]}]`), "params.transaction.access_list[0].storageKeys"},
		{"auth list on type 2", txBody(to + `,"type":2,"authorization_list":[]`), "params.transaction.authorization_list"},
		{"type 4 empty auth list", txBody(to + `,"type":4,"authorization_list":[]`), "params.transaction.authorization_list"},
		{"type 4 no to", txBody(`"type":4,"authorization_list":[{"contract":"0x00000000000000000000000000000000000000aa","chain_id":1,"nonce":0,"r":"0x1","s":"0x1","y_parity":0}]`), "params.transaction.to"},
		{"auth y_parity 2", txBody(to + `,"authorization_list":[{"contract":"0x00000000000000000000000000000000000000aa","chain_id":1,"nonce":0,"r":"0x1","s":"0x1","y_parity":2}]`), "params.transaction.authorization_list[0].y_parity"},
		{"auth missing r", txBody(to + `,"authorization_list":[{"contract":"0x00000000000000000000000000000000000000aa","chain_id":1,"nonce":0,"s":"0x1","y_parity":0}]`), "params.transaction.authorization_list[0].r"},
		{"auth contract and address", txBody(to + `,"authorization_list":[{"contract":"0x00000000000000000000000000000000000000aa","address":"0x00000000000000000000000000000000000000aa","chain_id":1,"nonce":0,"r":"0x1","s":"0x1","y_parity":0}]`), "params.transaction.authorization_list[0].address"},
		// personal_sign
		{"message missing", `{"method":"personal_sign","params":{}}`, "params.message"},
		{"message number", `{"method":"personal_sign","params":{"message":1}}`, "params.message"},
		{"message bad encoding", `{"method":"personal_sign","params":{"message":"a","encoding":"base64"}}`, "params.encoding"},
		{"message bad hex", `{"method":"personal_sign","params":{"message":"0xzz","encoding":"hex"}}`, "params.message"},
		{"message odd hex", `{"method":"personal_sign","params":{"message":"abc","encoding":"hex"}}`, "params.message"},
		{"message too long", `{"method":"personal_sign","params":{"message":"` + strings.Repeat("a", MaxHexBytes+1) + `"}}`, "params.message"},
		// secp256k1_sign
		{"hash missing", `{"method":"secp256k1_sign","params":{}}`, "params.hash"},
		{"hash short", `{"method":"secp256k1_sign","params":{"hash":"0x1234"}}`, "params.hash"},
		{"hash long", `{"method":"secp256k1_sign","params":{"hash":"0x` + strings.Repeat("00", 33) + `"}}`, "params.hash"},
		{"hash without 0x", `{"method":"secp256k1_sign","params":{"hash":"` + strings.Repeat("00", 32) + `"}}`, "params.hash"},
		// eth_sign7702Authorization
		{"7702 no contract", `{"method":"eth_sign7702Authorization","params":{"chain_id":1}}`, "params.contract"},
		{"7702 no chain", `{"method":"eth_sign7702Authorization","params":{"contract":"0x00000000000000000000000000000000000000aa"}}`, "params.chain_id"},
		{"7702 executor", `{"method":"eth_sign7702Authorization","params":{"contract":"0x00000000000000000000000000000000000000aa","chain_id":1,"executor":"relayer"}}`, "params.executor"},
		{"7702 nonce max", `{"method":"eth_sign7702Authorization","params":{"contract":"0x00000000000000000000000000000000000000aa","chain_id":1,"nonce":"0xffffffffffffffff"}}`, "params.nonce"},
		// eth_signTypedData_v4
		{"typed_data missing", `{"method":"eth_signTypedData_v4","params":{}}`, "params.typed_data"},
		{"typed primary type missing", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8"}]},"message":{"x":1}`), "params.typed_data.primary_type"},
		{"typed primary types differ", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8"}]},"primary_type":"A","primaryType":"B","message":{"x":1}`), "params.typed_data.primaryType"},
		{"typed unknown primary type", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8"}]},"primary_type":"B","message":{"x":1}`), "params.typed_data.primary_type"},
		{"typed EIP712Domain primary", typed(`"domain":{"chainId":1},"types":{"EIP712Domain":[{"name":"chainId","type":"uint256"}]},"primary_type":"EIP712Domain","message":{}`), "params.typed_data.primary_type"},
		{"typed unknown domain key", typed(`"domain":{"chainId":1,"httpOrigin":"x"},"types":{"A":[{"name":"x","type":"uint8"}]},"primary_type":"A","message":{"x":1}`), "params.typed_data.domain.httpOrigin"},
		{"typed empty domain", typed(`"domain":{},"types":{"A":[{"name":"x","type":"uint8"}]},"primary_type":"A","message":{"x":1}`), "params.typed_data.domain"},
		{"typed domain type mismatch", typed(`"domain":{"chainId":1,"name":"n"},"types":{"EIP712Domain":[{"name":"chainId","type":"uint256"}],"A":[{"name":"x","type":"uint8"}]},"primary_type":"A","message":{"x":1}`), "params.typed_data.types.EIP712Domain"},
		{"typed domain field wrong type", typed(`"domain":{"chainId":1},"types":{"EIP712Domain":[{"name":"chainId","type":"uint64"}],"A":[{"name":"x","type":"uint8"}]},"primary_type":"A","message":{"x":1}`), "params.typed_data.types.EIP712Domain[0]"},
		// EIP-712 hashes only the types the primary type reaches; an unused
		// one would only change which policy rules apply.
		{"typed unused type", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8"}],"Unused":[{"name":"y","type":"uint8"}]},"primary_type":"A","message":{"x":1}`), "params.typed_data.types.Unused"},
		{"typed type used only by an unused type", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8"}],"B":[{"name":"c","type":"C[]"}],"C":[{"name":"y","type":"uint8"}]},"primary_type":"A","message":{"x":1}`), "params.typed_data.types.B"},
		{"typed missing field", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8"},{"name":"y","type":"string"}]},"primary_type":"A","message":{"x":1}`), "params.typed_data.message.y"},
		{"typed extra field", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8"}]},"primary_type":"A","message":{"x":1,"z":2}`), "params.typed_data.message.z"},
		{"typed null value", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"string[]"}]},"primary_type":"A","message":{"x":["a",null]}`), "params.typed_data.message.x[1]"},
		{"typed fractional", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint256"}]},"primary_type":"A","message":{"x":1.5}`), "params.typed_data.message.x"},
		{"typed fixed array length", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8[3]"}]},"primary_type":"A","message":{"x":[1,2]}`), "params.typed_data.message.x"},
		{"typed overflow", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8"}]},"primary_type":"A","message":{"x":256}`), "params.typed_data"},
		{"typed bad address", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"address"}]},"primary_type":"A","message":{"x":"0x12"}`), "params.typed_data.message.x"},
		{"typed undefined type", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"B"}]},"primary_type":"A","message":{"x":{}}`), "params.typed_data"},
		{"typed bool as string", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"bool"}]},"primary_type":"A","message":{"x":"true"}`), "params.typed_data.message.x"},
		{"typed bytes32 short", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"bytes32"}]},"primary_type":"A","message":{"x":"0x01"}`), "params.typed_data"},
		{"typed duplicate member", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8"},{"name":"x","type":"uint8"}]},"primary_type":"A","message":{"x":1}`), "params.typed_data.types.A[1].name"},
		{"typed camelCase wrapper", `{"method":"eth_signTypedData_v4","params":{"typedData":{}}}`, "params.typedData"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRPC([]byte(tt.body))
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v, want *InputError", err)
			}
			if ie.Field != tt.field {
				t.Fatalf("field %q (%v), want %q", ie.Field, err, tt.field)
			}
		})
	}
}

func typed(inner string) string {
	return `{"method":"eth_signTypedData_v4","params":{"typed_data":{` + inner + `}}}`
}

func TestParseRawSignErrors(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		field string
	}{
		{"no params", `{}`, "params"},
		{"empty params", `{"params":{}}`, "params"},
		{"hash and bytes", `{"params":{"hash":"0x` + strings.Repeat("00", 32) + `","bytes":"a"}}`, "params.bytes"},
		{"hash short", `{"params":{"hash":"0x00"}}`, "params.hash"},
		{"bytes no encoding", `{"params":{"bytes":"a","hash_function":"sha256"}}`, "params.encoding"},
		{"bytes no hash function", `{"params":{"bytes":"a","encoding":"utf-8"}}`, "params.hash_function"},
		{"blake2b256", `{"params":{"bytes":"a","encoding":"utf-8","hash_function":"blake2b256"}}`, "params.hash_function"},
		{"unknown hash function", `{"params":{"bytes":"a","encoding":"utf-8","hash_function":"md5"}}`, "params.hash_function"},
		{"bad base64", `{"params":{"bytes":"!!","encoding":"base64","hash_function":"sha256"}}`, "params.bytes"},
		{"bad hex", `{"params":{"bytes":"0xzz","encoding":"hex","hash_function":"sha256"}}`, "params.bytes"},
		{"bytes too long", `{"params":{"bytes":"` + strings.Repeat("a", MaxRawSignBytesChars+1) + `","encoding":"utf-8","hash_function":"sha256"}}`, "params.bytes"},
		{"unknown key", `{"params":{"hash":"0x00","hashFunction":"sha256"}}`, "params.hashFunction"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRawSign([]byte(tt.body))
			var ie *InputError
			if !errors.As(err, &ie) || ie.Field != tt.field {
				t.Fatalf("error %v, want *InputError on %q", err, tt.field)
			}
		})
	}
	// The limit is inclusive.
	if _, err := ParseRawSign([]byte(`{"params":{"bytes":"` + strings.Repeat("a", MaxRawSignBytesChars) + `","encoding":"utf-8","hash_function":"sha256"}}`)); err != nil {
		t.Fatal(err)
	}
}

// TestErrorsDoNotEcho sends large hostile values and checks that no error
// repeats them.
func TestErrorsDoNotEcho(t *testing.T) {
	junk := strings.Repeat("Z", 5000)
	bodies := []string{
		txBody(`"to":"` + junk + `"`),
		txBody(to + `,"value":"` + junk + `"`),
		txBody(to + `,"` + junk + `":1`),
		`{"method":"` + junk + `"}`,
		`{"method":"personal_sign","params":{"message":"` + junk + `","encoding":"hex"}}`,
		typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"string"}]},"primary_type":"A","message":{"x":"a","` + junk + `":1}`),
		typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"` + junk + `"}]},"primary_type":"A","message":{"x":"a"}}`),
		typed(`"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8"}]},"primary_type":"` + junk + `","message":{"x":1}`),
	}
	for i, b := range bodies {
		_, err := ParseRPC([]byte(b))
		if err == nil {
			t.Fatalf("body %d accepted", i)
		}
		if strings.Contains(err.Error(), "ZZZZZZZZ") || len(err.Error()) > 400 {
			t.Fatalf("body %d: error echoes input (%d bytes)", i, len(err.Error()))
		}
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		check func(*Request) bool
	}{
		{"null means absent", txBody(to + `,"nonce":null,"value":null`), func(r *Request) bool { return r.Tx.Nonce == nil && r.Tx.Value.Sign() == 0 }},
		{"empty to is creation", txBody(`"to":""`), func(r *Request) bool { return r.Tx.To == nil }},
		{"lowercase address", txBody(`"to":"0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"`), func(r *Request) bool { return r.Tx.To.Hex() == testAddr }},
		{"uppercase address", txBody(`"to":"0xF39FD6E51AAD88F6F4CE6AB8827279CFFFB92266"`), func(r *Request) bool { return r.Tx.To.Hex() == testAddr }},
		{"leading zero hex", txBody(to + `,"nonce":"0x01"`), func(r *Request) bool { return *r.Tx.Nonce == 1 }},
		{"max uint256 value", txBody(to + `,"value":"0x` + strings.Repeat("f", 64) + `"`), func(r *Request) bool { return r.Tx.Value.BitLen() == 256 }},
		{"exact big integer", txBody(to + `,"value":123123123123123123123`), func(r *Request) bool {
			v, _ := new(big.Int).SetString("123123123123123123123", 10)
			return r.Tx.Value.Cmp(v) == 0
		}},
		{"type 2 by default", txBody(to), func(r *Request) bool { return r.Tx.Type == 2 && !r.Tx.TypeGiven }},
		{"unknown top-level key ignored", `{"method":"personal_sign","wallet_id":"w","sponsor":false,"params":{"message":"a"}}`, func(r *Request) bool { return string(r.Message) == "a" }},
		{"ecdsa signature option", `{"method":"personal_sign","signature_options":{"type":"ecdsa"},"params":{"message":"a"}}`, func(r *Request) bool { return true }},
		{"typed data both spellings agree", typed(`"domain":{"chainId":"0x1"},"types":{"A":[{"name":"x","type":"uint8"}]},"primary_type":"A","primaryType":"A","message":{"x":"7"}`), func(r *Request) bool {
			return r.DomainTypeDerived && r.TypedData.Message["x"].(*big.Int).Int64() == 7
		}},
		{"typed data types reached through arrays", typed(`"domain":{"chainId":1},"types":{"A":[{"name":"b","type":"B[2]"}],"B":[{"name":"c","type":"C[]"}],"C":[{"name":"y","type":"uint8"}]},"primary_type":"A","message":{"b":[{"c":[]},{"c":[{"y":1}]}]}`), func(r *Request) bool {
			return len(r.TypedData.Types) == 4 // A, B, C and the derived EIP712Domain
		}},
		{"7702 executor self", `{"method":"eth_sign7702Authorization","params":{"contract":"0x00000000000000000000000000000000000000aa","chain_id":"0x1","executor":"self"}}`, func(r *Request) bool {
			return r.Auth.Executor == "self" && r.Auth.Nonce == nil && r.ChainID().Int64() == 1
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRPC([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(r) {
				t.Fatalf("unexpected parse: %+v", r)
			}
		})
	}
}

// Several undeclared message keys are reported deterministically: the first
// in sorted order.
func TestUndeclaredKeysDeterministic(t *testing.T) {
	body := `{"method":"eth_signTypedData_v4","params":{"typed_data":{"domain":{"name":"x"},"primary_type":"M",` +
		`"types":{"M":[{"name":"a","type":"uint256"}]},"message":{"a":1,"q":2,"b":3,"z":4}}}}`
	for i := 0; i < 20; i++ {
		_, err := ParseRPC([]byte(body))
		var ie *InputError
		if !errors.As(err, &ie) || ie.Field != "params.typed_data.message.b" {
			t.Fatalf("run %d: %v, want the undeclared key b", i, err)
		}
	}
}
