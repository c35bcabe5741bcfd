package policy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/wallet"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

// TestTypedDataDenyNotEvadedByUnusedType: a typed-data rule applies only to
// requests whose types equal its own (Privy's rule), so a type the request
// declares but never uses would make a DENY on a permit's spender not
// apply, while EIP-712 hashes only the types the primary type reaches: the
// signature released would be the very one the DENY refuses. Such a request
// must not reach the policy as allowed: the request parser refuses it.
func TestTypedDataDenyNotEvadedByUnusedType(t *testing.T) {
	rules := `[{"name":"no router","method":"eth_signTypedData_v4","action":"DENY","conditions":[
		{"field_source":"ethereum_typed_data_message","field":"spender","operator":"eq","value":"` + router + `","typed_data":{"types":` + permitTypes + `,"primary_type":"Permit"}}]},
		{"name":"typed data","method":"eth_signTypedData_v4","action":"ALLOW","conditions":[]}]`
	c := mustCompile(t, policyJSON(rules), nil)

	plain := permitBody("1")
	if d := c.Evaluate(mustParseRPC(t, plain), testEnv()); d.Allowed {
		t.Fatalf("the permit to the router itself is allowed: %s", d.Trace)
	}
	padded := strings.Replace(plain, `"types":{`, `"types":{"Unused":[{"name":"x","type":"uint256"}],`, 1)
	if padded == plain {
		t.Fatal("the test body did not change")
	}
	req, err := wallet.ParseRPC([]byte(padded))
	if err != nil {
		if !strings.Contains(err.Error(), "params.typed_data.types.Unused") {
			t.Fatalf("refused, but not for the unused type: %v", err)
		}
		return
	}
	// Accepted: it must at least be decided as the permit it signs.
	base := mustParseRPC(t, plain)
	h1, _, _ := apitypes.TypedDataAndHash(*base.TypedData)
	h2, _, _ := apitypes.TypedDataAndHash(*req.TypedData)
	if d := c.Evaluate(req, testEnv()); d.Allowed {
		t.Fatalf("an unused type let the denied permit through (same EIP-712 hash: %v)\n%s", bytes.Equal(h1, h2), d.Trace)
	}
}
