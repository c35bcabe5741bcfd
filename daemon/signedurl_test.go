package daemon

import (
	"crypto/ecdsa"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/quorum"
)

// TestSignatureBindsTheServedRequest: an authorization signature is over
// the method and the URL as the client sent them. A signature the owner
// made for one request does not serve another that reaches another wallet,
// another route or the same route under another spelling (percent-encoded
// path, scheme, host, trailing slash, method), even when the owner is the
// same; each such attempt is refused with Privy's shape and changes nothing.
func TestSignatureBindsTheServedRequest(t *testing.T) {
	r := newRig(t)
	q := r.must("POST", "/v1/key_quorums", `{"public_keys":["`+r.pub+`"],"authorization_threshold":1}`)
	walletA := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum","owner_id":"`+q["id"].(string)+`"}`)["id"].(string)
	walletB := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum","owner_id":"`+q["id"].(string)+`"}`)["id"].(string)
	rpcA := "/v1/wallets/" + walletA + "/rpc"
	body := []byte(`{"method":"personal_sign","params":{"message":"pay alice","encoding":"utf-8"}}`)
	// The first character of the id, percent-encoded: the same wallet to
	// the router, another URL to the signature.
	encodedA := "/v1/wallets/" + fmt.Sprintf("%%%02X", walletA[0]) + walletA[1:] + "/rpc"

	hdr := http.Header{}
	hdr.Set("privy-request-expiry", fmt.Sprint(time.Now().Add(r.expiry).UnixMilli()))
	signOver := func(method, url string) http.Header {
		h := hdr.Clone()
		h.Set("privy-app-id", "app_1")
		sig, err := client.Sign(quorum.Request{Method: method, URL: url, Body: body, Headers: h}, []*ecdsa.PrivateKey{r.owner})
		if err != nil {
			t.Fatal(err)
		}
		out := hdr.Clone()
		out.Set("privy-authorization-signature", sig)
		return out
	}
	good := signOver("POST", "http://localhost"+rpcA)

	before := r.fingerprint()
	for _, tc := range []struct {
		name, path string
		h          http.Header
	}{
		{"wallet A's signature on wallet B", "/v1/wallets/" + walletB + "/rpc", good},
		{"signed over the plain path, sent percent-encoded", encodedA, good},
		{"signed percent-encoded, sent plain", rpcA, signOver("POST", "http://localhost"+encodedA)},
		{"signed with a trailing slash", rpcA, signOver("POST", "http://localhost"+rpcA+"/")},
		{"signed over https", rpcA, signOver("POST", "https://localhost"+rpcA)},
		{"signed over another host", rpcA, signOver("POST", "http://127.0.0.1"+rpcA)},
		{"signed with a query string", rpcA, signOver("POST", "http://localhost"+rpcA+"?x=1")},
		{"signed as PUT", rpcA, signOver("PUT", "http://localhost"+rpcA)},
		{"signed as post", rpcA, signOver("post", "http://localhost"+rpcA)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, m := r.sendRaw("POST", tc.path, body, tc.h)
			if code != http.StatusUnauthorized || m["code"] != "unauthorized" || !strings.Contains(fmt.Sprint(m["error"]), "ignature") {
				t.Fatalf("%d %v, want 401 unauthorized", code, m)
			}
		})
	}
	if r.fingerprint() != before {
		t.Fatal("a refused request changed the store")
	}
	if code, m := r.sendRaw("POST", rpcA, body, good); code != http.StatusOK {
		t.Fatalf("the request as signed: %d %v", code, m)
	}
}
