package quorum_test

import (
	"fmt"
	"net/http"

	"github.com/cachet-custody/cachet/quorum"
)

// A DELETE without a body signs "body" as the empty string, as Privy's SDKs
// do; keys are sorted and whitespace is dropped (RFC 8785).
func ExamplePayload() {
	h := http.Header{}
	h.Set("privy-app-id", "app_1")
	h.Set("privy-authorization-signature", "MEUCIQ...") // never part of the payload
	p, err := quorum.Payload(quorum.Request{
		Method:  "DELETE",
		URL:     "http://localhost/v1/policies/pol_1",
		Headers: h,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(p))
	// Output: {"body":"","headers":{"privy-app-id":"app_1"},"method":"DELETE","url":"http://localhost/v1/policies/pol_1","version":1}
}

// A parent 2-of-2 whose members are key A and a child 2-of-2 of keys B and
// C: the child, once its own threshold is met, is one approval.
func ExampleQuorum_Satisfied() {
	const A, B, C = "key-A", "key-B", "key-C" // canonical SPKI strings in real use
	q := quorum.Quorum{ID: "kq_parent", Keys: []string{A}, Threshold: 2, Children: []quorum.Quorum{
		{ID: "kq_child", Keys: []string{B, C}, Threshold: 2},
	}}
	signedBy := func(keys ...string) quorum.Approvals {
		a := quorum.Approvals{Keys: map[string]bool{}}
		for _, k := range keys {
			a.Keys[k] = true
		}
		return a
	}
	fmt.Println(q.Satisfied(signedBy(A, B)))
	fmt.Println(q.Satisfied(signedBy(B, C)))
	fmt.Println(q.Satisfied(signedBy(A, B, C)))
	// Output:
	// false
	// false
	// true
}
