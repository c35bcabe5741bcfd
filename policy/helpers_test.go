package policy

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/wallet"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/common"
)

// Addresses used across the tests, lowercase; cs() gives the EIP-55 form.
const (
	usdc      = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
	usdcBase  = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
	alice     = "0xd8da6bf26964af9d7eed9e03e53415d37aa96045"
	bob       = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
	router    = "0xe592427a0aece92de3edee1f18e0157c05861564"
	delegate  = "0x63c0c19a282a1b52b07dd5a65b58948a07dae32b"
	weth      = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
	zeroAddr  = "0x0000000000000000000000000000000000000000"
	oneCentUS = "10000000000000000" // 0.01 ETH in wei = 0x2386f26fc10000
)

func cs(a string) string { return common.HexToAddress(a).Hex() }

const erc20ABI = `[
 {"type":"function","name":"transfer","inputs":[{"name":"_to","type":"address"},{"name":"_value","type":"uint256"}],"outputs":[{"name":"","type":"bool"}],"stateMutability":"nonpayable"},
 {"type":"function","name":"approve","inputs":[{"name":"spender","type":"address"},{"name":"amount","type":"uint256"}],"outputs":[{"name":"","type":"bool"}],"stateMutability":"nonpayable"},
 {"type":"function","name":"transferFrom","inputs":[{"name":"from","type":"address"},{"name":"to","type":"address"},{"name":"value","type":"uint256"}],"outputs":[{"name":"","type":"bool"}],"stateMutability":"nonpayable"},
 {"type":"event","name":"Transfer","inputs":[{"name":"from","type":"address","indexed":true},{"name":"to","type":"address","indexed":true},{"name":"value","type":"uint256","indexed":false}],"anonymous":false}
]`

// routerABI has a Uniswap V3 style exactInput with a struct parameter, a
// batch of tuples, a multicall of bytes[], and a few odd types.
const routerABI = `[
 {"type":"function","name":"exactInput","stateMutability":"payable","inputs":[{"name":"params","type":"tuple","internalType":"struct ISwapRouter.ExactInputParams","components":[
   {"name":"path","type":"bytes"},{"name":"recipient","type":"address"},{"name":"deadline","type":"uint256"},{"name":"amountIn","type":"uint256"},{"name":"amountOutMinimum","type":"uint256"}]}],
  "outputs":[{"name":"amountOut","type":"uint256"}]},
 {"type":"function","name":"batch","stateMutability":"nonpayable","inputs":[{"name":"token","type":"address"},{"name":"transfers","type":"tuple[]","components":[
   {"name":"to","type":"address"},{"name":"amount","type":"uint256"},{"name":"legs","type":"tuple[2]","components":[{"name":"venue","type":"string"},{"name":"share","type":"uint8"}]}]}],"outputs":[]},
 {"type":"function","name":"multicall","stateMutability":"payable","inputs":[{"name":"deadline","type":"uint256"},{"name":"data","type":"bytes[]"}],"outputs":[{"name":"results","type":"bytes[]"}]},
 {"type":"function","name":"odd","stateMutability":"nonpayable","inputs":[{"name":"delta","type":"int256"},{"name":"flag","type":"bool"},{"name":"tag","type":"bytes4"},{"name":"note","type":"string"},{"name":"small","type":"uint64"}],"outputs":[]},
 {"type":"function","name":"ping","stateMutability":"nonpayable","inputs":[],"outputs":[]}
]`

func mustABI(t testing.TB, s string) abi.ABI {
	t.Helper()
	a, err := abi.JSON(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func pack(t testing.TB, abiJSON, method string, args ...any) string {
	t.Helper()
	b, err := mustABI(t, abiJSON).Pack(method, args...)
	if err != nil {
		t.Fatal(err)
	}
	return "0x" + hex.EncodeToString(b)
}

func addr(s string) common.Address { return common.HexToAddress(s) }

func big10(s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		panic(s)
	}
	return n
}

// Go values for routerABI's tuples; field names follow go-ethereum's
// ToCamelCase of the components.
type exactInputParams struct {
	Path             []byte
	Recipient        common.Address
	Deadline         *big.Int
	AmountIn         *big.Int
	AmountOutMinimum *big.Int
}

type leg struct {
	Venue string
	Share uint8
}

type transferItem struct {
	To     common.Address
	Amount *big.Int
	Legs   [2]leg
}

// txBody is an eth_signTransaction body.
func txBody(to, value, data string) string {
	fields := []string{`"chain_id":1`, `"nonce":0`, `"gas_limit":100000`, `"max_fee_per_gas":1000000000`, `"max_priority_fee_per_gas":1`}
	if to != "" {
		fields = append(fields, `"to":"`+to+`"`)
	}
	if value != "" {
		fields = append(fields, `"value":"`+value+`"`)
	}
	if data != "" {
		fields = append(fields, `"data":"`+data+`"`)
	}
	return `{"method":"eth_signTransaction","params":{"transaction":{` + strings.Join(fields, ",") + `}}}`
}

func personalSign(msg, enc string) string {
	b, _ := json.Marshal(map[string]any{"method": "personal_sign", "params": map[string]string{"message": msg, "encoding": enc}})
	return string(b)
}

// mailTypes is EIP-712's own example.
const mailTypes = `{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
 "Person":[{"name":"name","type":"string"},{"name":"wallet","type":"address"}],
 "Mail":[{"name":"from","type":"Person"},{"name":"to","type":"Person"},{"name":"contents","type":"string"}]}`

// mailTypesNoDomain is the same without EIP712Domain (what viem sends).
const mailTypesNoDomain = `{"Person":[{"name":"name","type":"string"},{"name":"wallet","type":"address"}],
 "Mail":[{"name":"from","type":"Person"},{"name":"to","type":"Person"},{"name":"contents","type":"string"}]}`

func mailBody(types, to string) string {
	return `{"method":"eth_signTypedData_v4","params":{"typed_data":{"types":` + types + `,"primary_type":"Mail",
 "domain":{"name":"Ether Mail","version":"1","chainId":1,"verifyingContract":"0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},
 "message":{"from":{"name":"Cow","wallet":"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},"to":{"name":"Bob","wallet":"` + to + `"},"contents":"Hello, Bob!"}}}}`
}

// permitBody is an ERC-2612 permit with uint256 fields and a batch of
// amounts, to exercise numbers and arrays in typed data.
func permitBody(value string) string {
	return `{"method":"eth_signTypedData_v4","params":{"typed_data":{"primary_type":"Permit",
 "types":{"Permit":[{"name":"owner","type":"address"},{"name":"spender","type":"address"},{"name":"value","type":"uint256"},{"name":"nonce","type":"uint256"},{"name":"deadline","type":"uint256"},{"name":"tags","type":"bytes4[]"},{"name":"ok","type":"bool"},{"name":"delta","type":"int256"}]},
 "domain":{"name":"USD Coin","version":"2","chainId":"0x1","verifyingContract":"` + cs(usdc) + `"},
 "message":{"owner":"` + alice + `","spender":"` + cs(router) + `","value":` + value + `,"nonce":0,"deadline":"0x6553f100","tags":["0xdeadbeef"],"ok":true,"delta":-5}}}}`
}

const permitTypes = `{"Permit":[{"name":"owner","type":"address"},{"name":"spender","type":"address"},{"name":"value","type":"uint256"},{"name":"nonce","type":"uint256"},{"name":"deadline","type":"uint256"},{"name":"tags","type":"bytes4[]"},{"name":"ok","type":"bool"},{"name":"delta","type":"int256"}]}`

func authBody(contract string) string {
	return `{"method":"eth_sign7702Authorization","params":{"contract":"` + contract + `","chain_id":1,"nonce":3}}`
}

func mustParseRPC(t testing.TB, body string) *wallet.Request {
	t.Helper()
	req, err := wallet.ParseRPC([]byte(body))
	if err != nil {
		t.Fatalf("ParseRPC: %v\n%s", err, body)
	}
	return req
}

// policyJSON wraps rules (a JSON array) in a policy body.
func policyJSON(rules string) string {
	return `{"version":"1.0","name":"test","chain_type":"ethereum","rules":` + rules + `}`
}

// mustCompile parses, validates (with refs) and compiles a policy body, and
// gives its rules ids rule_0, rule_1, ….
func mustCompile(t testing.TB, body string, refs Refs) *Compiled {
	t.Helper()
	p, err := ParsePolicy([]byte(body))
	if err != nil {
		t.Fatalf("ParsePolicy: %v\n%s", err, body)
	}
	p.ID = "pol_1"
	for i := range p.Rules {
		p.Rules[i].ID = fmt.Sprintf("rule_%d", i)
	}
	if err := Validate(p, refs); err != nil {
		t.Fatalf("Validate: %v\n%s", err, body)
	}
	c, err := Compile(p)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return c
}

func trace(t testing.TB, d Decision) Trace {
	t.Helper()
	var tr Trace
	dec := json.NewDecoder(strings.NewReader(string(d.Trace)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tr); err != nil {
		t.Fatalf("trace: %v\n%s", err, d.Trace)
	}
	return tr
}

// fakeSets is an in-memory SetResolver.
type fakeSets map[string][]string

func (f fakeSets) ConditionSet(id string) (*ConditionSet, error) {
	items, ok := f[id]
	if !ok {
		return nil, errSetNotFound
	}
	return NewConditionSet(items), nil
}

var errSetNotFound = errors.New("condition set not found")

// fakeAggs is an in-memory AggregateResolver.
type fakeAggs struct {
	aggs    map[string]*CompiledAggregation
	sums    map[string]*big.Int // "aggID|wallet|key"
	queries []SumQuery
}

func (f *fakeAggs) Aggregation(id string) (*CompiledAggregation, error) {
	a, ok := f.aggs[id]
	if !ok {
		return nil, errors.New("aggregation not found")
	}
	return a, nil
}

func (f *fakeAggs) Sum(q SumQuery) (*big.Int, error) {
	f.queries = append(f.queries, q)
	if s, ok := f.sums[q.AggregationID+"|"+q.WalletID+"|"+q.GroupKey]; ok {
		return new(big.Int).Set(s), nil
	}
	return new(big.Int), nil
}

// refs is a Refs over fixed ids.
type refs struct{ sets, aggs []string }

func (r refs) ConditionSetExists(id string) bool { return contains(r.sets, id) }
func (r refs) AggregationExists(id string) bool  { return contains(r.aggs, id) }

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testEnv() Env {
	return Env{Now: testNow, WalletID: "wallet_1", Sets: fakeSets{
		"set_allow": {cs(alice), "0xF39FD6E51AAD88F6F4CE6AB8827279CFFFB92266", "12345", "hello"},
		"set_nums":  {"0xf4240", "7"},
		"set_empty": {},
	}}
}
