package wallet

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/rlp"
	"github.com/holiman/uint256"
)

type txFixture struct {
	Signed []struct {
		Name            string          `json:"name"`
		Source          string          `json:"source"`
		Key             string          `json:"key"`
		Body            json.RawMessage `json:"body"`
		SigningHash     string          `json:"signing_hash"`
		TxHash          string          `json:"tx_hash"`
		SignedRLPString string          `json:"signed_rlp_string"`
		Response        json.RawMessage `json:"response"`
	} `json:"signed"`
	Presigned []struct {
		Name              string          `json:"name"`
		Source            string          `json:"source"`
		Body              json.RawMessage `json:"body"`
		SigningHash       string          `json:"signing_hash"`
		Signature         string          `json:"signature"`
		SignedTransaction string          `json:"signed_transaction"`
	} `json:"presigned"`
}

// assertJSON compares two JSON documents structurally.
func assertJSON(t *testing.T, got []byte, want json.RawMessage) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("bad JSON produced: %v", err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("bad JSON in fixture: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("response\n got %s\nwant %s", got, want)
	}
}

func TestTransactionVectors(t *testing.T) {
	var fx txFixture
	loadJSON(t, "transactions.json", &fx)
	if len(fx.Signed) == 0 || len(fx.Presigned) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range fx.Signed {
		t.Run(v.Name, func(t *testing.T) {
			key := mustHex(t, v.Key)
			addr, err := AddressOf(key)
			if err != nil {
				t.Fatal(err)
			}
			req, err := ParseRPC(v.Body)
			if err != nil {
				t.Fatal(err)
			}
			signer := types.LatestSignerForChainID(req.Tx.ChainID)
			if v.SigningHash != "" {
				tx, err := req.Tx.Unsigned()
				if err != nil {
					t.Fatal(err)
				}
				if h := signer.Hash(tx); h.Hex() != v.SigningHash {
					t.Errorf("signing hash %s, want %s", h.Hex(), v.SigningHash)
				}
			}
			resp, err := req.Sign(key)
			if err != nil {
				t.Fatal(err)
			}
			out, err := json.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			if v.Response != nil {
				assertJSON(t, out, v.Response)
			}
			raw := mustHex(t, resp.Data.(*TransactionData).SignedTransaction)
			var tx types.Transaction
			if err := tx.UnmarshalBinary(raw); err != nil {
				t.Fatal(err)
			}
			if from, err := types.Sender(signer, &tx); err != nil || from != addr {
				t.Errorf("sender %s, %v; want %s", from.Hex(), err, addr.Hex())
			}
			if v.TxHash != "" && tx.Hash().Hex() != v.TxHash {
				t.Errorf("tx hash %s, want %s", tx.Hash().Hex(), v.TxHash)
			}
			if v.SignedRLPString != "" {
				var inner []byte
				if err := rlp.DecodeBytes(mustHex(t, v.SignedRLPString), &inner); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(inner, raw) {
					t.Errorf("signed tx %x\nwant (from RLP string) %x", raw, inner)
				}
			}
		})
	}
	for _, v := range fx.Presigned {
		t.Run(v.Name, func(t *testing.T) {
			req, err := ParseRPC(v.Body)
			if err != nil {
				t.Fatal(err)
			}
			tx, err := req.Tx.Unsigned()
			if err != nil {
				t.Fatal(err)
			}
			signer := types.LatestSignerForChainID(req.Tx.ChainID)
			if h := signer.Hash(tx); h.Hex() != v.SigningHash {
				t.Errorf("signing hash %s, want %s", h.Hex(), v.SigningHash)
			}
			signed, err := tx.WithSignature(signer, mustHex(t, v.Signature))
			if err != nil {
				t.Fatal(err)
			}
			raw, err := signed.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if hexutil.Encode(raw) != v.SignedTransaction {
				t.Errorf("encoding %x\nwant %s", raw, v.SignedTransaction)
			}
		})
	}
}

type sigFixture struct {
	Vectors []struct {
		Name     string          `json:"name"`
		Source   string          `json:"source"`
		Endpoint string          `json:"endpoint"`
		Key      string          `json:"key"`
		Body     json.RawMessage `json:"body"`
		Digest   string          `json:"digest"`
		Response json.RawMessage `json:"response"`
	} `json:"vectors"`
}

func TestSignatureVectors(t *testing.T) {
	var fx sigFixture
	loadJSON(t, "signatures.json", &fx)
	if len(fx.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range fx.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			key := mustHex(t, v.Key)
			addr, err := AddressOf(key)
			if err != nil {
				t.Fatal(err)
			}
			var req *Request
			switch v.Endpoint {
			case "rpc":
				req, err = ParseRPC(v.Body)
			case "raw_sign":
				req, err = ParseRawSign(v.Body)
			default:
				t.Fatalf("bad endpoint %q in fixture", v.Endpoint)
			}
			if err != nil {
				t.Fatal(err)
			}
			digest, err := req.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if v.Digest != "" && hexutil.Encode(digest) != v.Digest {
				t.Errorf("digest %x, want %s", digest, v.Digest)
			}
			resp, err := req.Sign(key)
			if err != nil {
				t.Fatal(err)
			}
			out, err := json.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			if v.Response != nil {
				assertJSON(t, out, v.Response)
			}
			// Recover every signature to the key's address.
			switch d := resp.Data.(type) {
			case *SignatureData:
				sig := mustHex(t, d.Signature)
				if len(sig) != 65 || (sig[64] != 27 && sig[64] != 28) {
					t.Fatalf("signature %x is not r‖s‖v with v 27/28", sig)
				}
				sig[64] -= 27
				pub, err := crypto.SigToPub(digest, sig)
				if err != nil {
					t.Fatal(err)
				}
				if got := crypto.PubkeyToAddress(*pub); got != addr {
					t.Errorf("recovered %s, want %s", got.Hex(), addr.Hex())
				}
			case *AuthorizationData:
				a := d.Authorization
				auth := types.SetCodeAuthorization{
					ChainID: *uint256.MustFromBig(a.ChainID),
					Address: common.HexToAddress(a.Contract),
					Nonce:   a.Nonce,
					V:       a.YParity,
					R:       *uint256.MustFromHex(trimZeros(a.R)),
					S:       *uint256.MustFromHex(trimZeros(a.S)),
				}
				if h := auth.SigHash(); !bytes.Equal(h[:], digest) {
					t.Errorf("authorization hash %x, digest %x", h, digest)
				}
				got, err := auth.Authority()
				if err != nil {
					t.Fatal(err)
				}
				if got != addr {
					t.Errorf("authority %s, want %s", got.Hex(), addr.Hex())
				}
			default:
				t.Fatalf("unexpected data %T", resp.Data)
			}
		})
	}
}

// trimZeros turns 32-byte 0x-hex into uint256.MustFromHex's form, which
// refuses leading zeros.
func trimZeros(s string) string {
	b := bytes.TrimLeft([]byte(s[2:]), "0")
	if len(b) == 0 {
		return "0x0"
	}
	return "0x" + string(b)
}

// TestCowKey ties the EIP-712 fixture's key to its definition in the EIP's
// Example.js, keccak256("cow"), and its address to the example's "Cow".
func TestCowKey(t *testing.T) {
	k := crypto.Keccak256([]byte("cow"))
	if hexutil.Encode(k) != "0xc85ef7d79691fe79573b1a7064c19c1a9819ebdbd1faaab1a8ec92344438aaf4" {
		t.Fatalf("keccak256(cow) = %x", k)
	}
	a, err := AddressOf(k)
	if err != nil {
		t.Fatal(err)
	}
	if a.Hex() != "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826" {
		t.Fatalf("address %s", a.Hex())
	}
}

// testKey is the first Anvil/Hardhat development key, also used by the
// viem vectors.
var testKey = hexutil.MustDecode("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")

const testAddr = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"

func TestSignTransactionTypes(t *testing.T) {
	auth, err := types.SignSetCode(mustECDSA(t, testKey), types.SetCodeAuthorization{
		ChainID: *uint256.NewInt(1), Address: common.HexToAddress("0x00000000000000000000000000000000000000aa"), Nonce: 8,
	})
	if err != nil {
		t.Fatal(err)
	}
	authJSON := `{"contract":"0x00000000000000000000000000000000000000aa","chain_id":1,"nonce":8,"r":"` +
		hexutil.EncodeBig(auth.R.ToBig()) + `","s":"` + hexutil.EncodeBig(auth.S.ToBig()) + `","y_parity":` + string('0'+rune(auth.V)) + `}`
	tests := []struct {
		name     string
		tx       string
		wantType uint8
	}{
		{"legacy", `{"type":0,"chain_id":1,"nonce":0,"gas_limit":21000,"gas_price":"0x1","to":"` + testAddr + `","value":1}`, 0},
		{"access list", `{"type":1,"chain_id":1,"nonce":0,"gas_limit":30000,"gas_price":"0x1","to":"` + testAddr + `",
			"access_list":[{"address":"0x00000000000000000000000000000000000000aa","storage_keys":["0x0000000000000000000000000000000000000000000000000000000000000001"]}]}`, 1},
		{"access list by default", `{"chain_id":1,"nonce":0,"gas_limit":30000,"gas_price":"0x1","to":"` + testAddr + `",
			"access_list":[{"address":"0x00000000000000000000000000000000000000aa"}]}`, 1},
		{"dynamic fee default", `{"chain_id":1,"nonce":0,"gas_limit":21000,"max_fee_per_gas":"0x2","max_priority_fee_per_gas":"0x1","to":"` + testAddr + `","from":"` + testAddr + `"}`, 2},
		{"contract creation", `{"type":2,"chain_id":1,"nonce":0,"gas_limit":100000,"max_fee_per_gas":2,"max_priority_fee_per_gas":1,"data":"0x6000"}`, 2},
		{"set code", `{"type":4,"chain_id":1,"nonce":7,"gas_limit":100000,"max_fee_per_gas":2,"max_priority_fee_per_gas":1,"to":"` + testAddr + `","authorization_list":[` + authJSON + `]}`, 4},
		{"set code by default, address spelling", `{"chain_id":1,"nonce":7,"gas_limit":100000,"max_fee_per_gas":2,"max_priority_fee_per_gas":1,"to":"` + testAddr + `","authorization_list":[` +
			`{"address":"0x00000000000000000000000000000000000000aa","chain_id":"0x1","nonce":"0x8","r":"` + hexutil.EncodeBig(auth.R.ToBig()) + `","s":"` + hexutil.EncodeBig(auth.S.ToBig()) + `","y_parity":"` + hexutil.EncodeUint64(uint64(auth.V)) + `"}]}`, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ParseRPC([]byte(`{"method":"eth_signTransaction","address":"` + testAddr + `","params":{"transaction":` + tt.tx + `}}`))
			if err != nil {
				t.Fatal(err)
			}
			if req.Tx.Type != tt.wantType {
				t.Fatalf("type %d, want %d", req.Tx.Type, tt.wantType)
			}
			resp, err := req.Sign(testKey)
			if err != nil {
				t.Fatal(err)
			}
			var tx types.Transaction
			if err := tx.UnmarshalBinary(mustHex(t, resp.Data.(*TransactionData).SignedTransaction)); err != nil {
				t.Fatal(err)
			}
			if tx.Type() != tt.wantType {
				t.Fatalf("signed type %d", tx.Type())
			}
			from, err := types.Sender(types.LatestSignerForChainID(big.NewInt(1)), &tx)
			if err != nil || from.Hex() != testAddr {
				t.Fatalf("sender %s, %v", from.Hex(), err)
			}
			if tt.wantType == 4 {
				a, err := tx.SetCodeAuthorizations()[0].Authority()
				if err != nil || a.Hex() != testAddr {
					t.Fatalf("authority %s, %v", a.Hex(), err)
				}
			}
			if tt.wantType == 0 {
				if v, _, _ := tx.RawSignatureValues(); v.Uint64() != 37 && v.Uint64() != 38 {
					t.Fatalf("legacy v = %d, want EIP-155 37/38", v)
				}
			}
		})
	}
}

func TestSignRefusesOtherWallet(t *testing.T) {
	other := "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
	tests := []struct {
		name, body, field string
	}{
		{"address", `{"method":"personal_sign","address":"` + other + `","params":{"message":"hi"}}`, "address"},
		{"from", `{"method":"eth_signTransaction","params":{"transaction":{"chain_id":1,"nonce":0,"gas_limit":21000,"gas_price":1,"to":"` + testAddr + `","from":"` + other + `"}}}`, "params.transaction.from"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ParseRPC([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			_, err = req.Sign(testKey)
			var ie *InputError
			if !errors.As(err, &ie) || ie.Field != tt.field {
				t.Fatalf("error %v, want InputError on %s", err, tt.field)
			}
		})
	}
}

func TestSignMissingFields(t *testing.T) {
	req, err := ParseRPC([]byte(`{"method":"eth_signTransaction","params":{"transaction":{"chain_id":1,"to":"` + testAddr + `","value":"0x1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"nonce", "gas_limit", "max_fee_per_gas", "max_priority_fee_per_gas"}
	if got := req.Tx.Missing(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Missing = %v, want %v", got, want)
	}
	_, err = req.Sign(testKey)
	var ie *InputError
	if !errors.As(err, &ie) || ie.Field != "params.transaction" {
		t.Fatalf("error %v", err)
	}

	req, err = ParseRPC([]byte(`{"method":"eth_signTransaction","params":{"transaction":{"nonce":1,"gas_limit":1,"gas_price":1,"to":"` + testAddr + `"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := req.Tx.Missing(); !reflect.DeepEqual(got, []string{"chain_id"}) {
		t.Fatalf("Missing = %v", got)
	}

	req, err = ParseRPC([]byte(`{"method":"eth_sign7702Authorization","params":{"contract":"` + testAddr + `","chain_id":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err = req.Sign(testKey); !errors.As(err, &ie) || ie.Field != "params.nonce" {
		t.Fatalf("error %v", err)
	}
}

func TestSignBadKey(t *testing.T) {
	req, err := ParseRPC([]byte(`{"method":"personal_sign","params":{"message":"hi"}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range [][]byte{nil, make([]byte, 32), make([]byte, 33)} {
		if _, err := req.Sign(k); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("key %x: error %v", k, err)
		}
	}
}

func TestSendTransactionResponse(t *testing.T) {
	req, err := ParseRPC([]byte(`{"method":"eth_sendTransaction","caip2":"eip155:11155111","reference_id":"order-7",
		"params":{"transaction":{"nonce":0,"gas_limit":21000,"max_fee_per_gas":"0x2","max_priority_fee_per_gas":"0x1","to":"` + testAddr + `","value":"0x1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if req.Tx.ChainID.Uint64() != 11155111 {
		t.Fatalf("chain id from caip2: %v", req.Tx.ChainID)
	}
	resp, err := req.Sign(testKey)
	if err != nil {
		t.Fatal(err)
	}
	var tx types.Transaction
	if err := tx.UnmarshalBinary(resp.SignedTx); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(resp)
	assertJSON(t, out, json.RawMessage(`{"method":"eth_sendTransaction","data":{"hash":"`+tx.Hash().Hex()+`","caip2":"eip155:11155111","reference_id":"order-7"}}`))
}

func TestFindings(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string // fields with Warn
	}{
		{"raw hash", `{"method":"secp256k1_sign","params":{"hash":"0x` + string(bytes.Repeat([]byte("ab"), 32)) + `"}}`, []string{"params.hash"}},
		{"7702 any chain", `{"method":"eth_sign7702Authorization","params":{"contract":"` + testAddr + `","chain_id":0,"nonce":1}}`, []string{"params.chain_id", "params.contract"}},
		{"personal_sign of a hash", `{"method":"personal_sign","params":{"encoding":"hex","message":"` + string(bytes.Repeat([]byte("ab"), 32)) + `"}}`, []string{"params.message"}},
		{"typed data chain differs", `{"method":"eth_signTypedData_v4","caip2":"eip155:10","params":{"typed_data":{"domain":{"chainId":1},"types":{"A":[{"name":"x","type":"uint8"}]},"primary_type":"A","message":{"x":1}}}}`, []string{"params.typed_data.domain.chainId"}},
		{"plain message", `{"method":"personal_sign","params":{"message":"hello"}}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ParseRPC([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range req.Findings() {
				if f.Severity == Warn {
					got = append(got, f.Field)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("warnings %v, want %v", got, tt.want)
			}
		})
	}
}

func mustECDSA(t *testing.T, k []byte) *ecdsa.PrivateKey {
	t.Helper()
	key, err := crypto.ToECDSA(k)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// SignAs gives exactly what Sign gives for every method, without
// recomputing the public key.
func TestSignAsMatchesSign(t *testing.T) {
	priv, addr, err := DeriveKey(make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"tx":       `{"method":"eth_signTransaction","params":{"transaction":{"type":2,"chain_id":1,"nonce":1,"to":"0x000000000000000000000000000000000000dEaD","value":"0x1","gas_limit":21000,"max_fee_per_gas":"0x2","max_priority_fee_per_gas":"0x1"}}}`,
		"personal": `{"method":"personal_sign","params":{"message":"hi","encoding":"utf-8"}}`,
		"hash":     `{"method":"secp256k1_sign","params":{"hash":"0x` + strings.Repeat("ab", 32) + `"}}`,
		"7702":     `{"method":"eth_sign7702Authorization","params":{"contract":"0x000000000000000000000000000000000000dEaD","chain_id":1,"nonce":3}}`,
	} {
		t.Run(name, func(t *testing.T) {
			req, err := ParseRPC([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			a, err1 := req.Sign(priv)
			b, err2 := req.SignAs(priv, addr)
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if err1 != nil || err2 != nil || string(ja) != string(jb) {
				t.Fatalf("Sign = %s %v, SignAs = %s %v", ja, err1, jb, err2)
			}
		})
	}
	if _, err := (&Request{Method: MethodPersonalSign}).SignAs(make([]byte, 32), addr); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("zero key: %v", err)
	}
}

func TestPersonalSigner(t *testing.T) {
	priv := bytes.Repeat([]byte{0x42}, 32)
	addr, err := AddressOf(priv)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("Cachet: change recovery")
	resp, err := (&Request{Method: MethodPersonalSign, Message: msg, MessageEncoding: "utf-8"}).Sign(priv)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := hexutil.Decode(resp.Data.(*SignatureData).Signature)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := PersonalSigner(msg, sig); err != nil || got != addr {
		t.Fatalf("PersonalSigner = %s, %v; want %s", got.Hex(), err, addr.Hex())
	}
	zeroV := bytes.Clone(sig)
	zeroV[64] -= 27
	if got, err := PersonalSigner(msg, zeroV); err != nil || got != addr {
		t.Fatalf("v in {0,1}: %s, %v", got.Hex(), err)
	}
	if got, _ := PersonalSigner([]byte("another message"), sig); got == addr {
		t.Fatal("a signature over another message recovers the same address")
	}
	// The high-S twin of a valid signature: (r, n - s, v ^ 1).
	n := crypto.S256().Params().N
	highS := bytes.Clone(sig)
	new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:64])).FillBytes(highS[32:64])
	highS[64] = 27 + (sig[64] - 27) ^ 1
	for name, bad := range map[string][]byte{"high s": highS, "short": sig[:64], "bad v": append(bytes.Clone(sig[:64]), 30)} {
		if _, err := PersonalSigner(msg, bad); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
