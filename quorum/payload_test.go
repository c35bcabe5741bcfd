package quorum_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/quorum"
	"github.com/gowebpki/jcs"
)

// TestPrivyVectors is the compatibility test: from method, URL, headers and
// body alone, Payload must rebuild exactly what Privy's Node SDK signed, and
// Verify must accept the SDK's signature.
func TestPrivyVectors(t *testing.T) {
	f := loadVectors(t)
	key, err := quorum.CanonicalizePublicKey(f.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if key != f.PublicKey {
		t.Fatalf("canonical form of the SDK's key differs from the SDK's:\n got %s\nwant %s", key, f.PublicKey)
	}
	if k := vectorKey(t, f); k.spki != key {
		t.Fatal("private key of the vectors does not match their public key")
	}
	for _, v := range f.Cases {
		t.Run(v.Name, func(t *testing.T) {
			p, err := quorum.Payload(v.request())
			if err != nil {
				t.Fatalf("Payload: %v", err)
			}
			if string(p) != v.Canonical {
				t.Fatalf("payload differs from the SDK's:\n got %s\nwant %s", p, v.Canonical)
			}
			d := quorum.Digest(p)
			if got := hex.EncodeToString(d[:]); got != v.SHA256 {
				t.Fatalf("digest %s, want %s", got, v.SHA256)
			}
			sigs, err := quorum.ParseSignatures(v.Signature)
			if err != nil {
				t.Fatalf("ParseSignatures: %v", err)
			}
			a, err := quorum.Verify(p, sigs, []string{key}, nil)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			q := quorum.Quorum{ID: "kq_sdk", Keys: []string{key}, Threshold: 1}
			if !q.Satisfied(a) {
				t.Fatalf("1-of-1 quorum of the SDK key not satisfied by %v", a)
			}
		})
	}
}

// envelopeFor is the canonical payload around a canonical body, for the
// request that bodyRequest builds.
func envelopeFor(body string) string {
	return `{"body":` + body + `,"headers":{"privy-app-id":"app_1"},"method":"POST","url":"http://localhost/v1/policies","version":1}`
}

func bodyRequest(body string) quorum.Request {
	h := http.Header{}
	h.Set("privy-app-id", "app_1")
	return quorum.Request{Method: "POST", URL: "http://localhost/v1/policies", Body: []byte(body), Headers: h}
}

// TestJCSVectors sends the RFC 8785 test files as request bodies.
func TestJCSVectors(t *testing.T) {
	inputs, err := filepath.Glob("testdata/jcs/input/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) < 11 {
		t.Fatalf("found %d JCS inputs, want 11", len(inputs))
	}
	for _, in := range inputs {
		name := filepath.Base(in)
		t.Run(strings.TrimSuffix(name, ".json"), func(t *testing.T) {
			input, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("testdata/jcs/output", name))
			if err != nil {
				t.Fatal(err)
			}
			got := mustPayload(t, bodyRequest(string(input)))
			if string(got) != envelopeFor(string(want)) {
				t.Fatalf("got  %s\nwant %s", got, envelopeFor(string(want)))
			}
		})
	}
}

// TestRFC8785Numbers checks the number samples of RFC 8785 Appendix B, each
// sent both in Go's shortest form and in the expected form.
func TestRFC8785Numbers(t *testing.T) {
	raw, err := os.ReadFile("testdata/jcs/rfc8785-appendix-b.csv")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 24 {
		t.Fatalf("%d samples, want 24", len(lines))
	}
	for _, line := range lines {
		bitsHex, want, ok := strings.Cut(line, ",")
		if !ok {
			t.Fatalf("malformed line %q", line)
		}
		t.Run(bitsHex, func(t *testing.T) {
			bits, err := strconv.ParseUint(bitsHex, 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			f := math.Float64frombits(bits)
			for _, lit := range []string{strconv.FormatFloat(f, 'g', -1, 64), strconv.FormatFloat(f, 'e', 20, 64), want} {
				got := mustPayload(t, bodyRequest(`{"n":`+lit+`}`))
				if string(got) != envelopeFor(`{"n":`+want+`}`) {
					t.Errorf("literal %s: got %s, want number %s", lit, got, want)
				}
			}
		})
	}
}

func TestPayload(t *testing.T) {
	withHeaders := func(r quorum.Request, kv ...string) quorum.Request {
		r.Headers = r.Headers.Clone()
		for i := 0; i < len(kv); i += 2 {
			r.Headers.Add(kv[i], kv[i+1])
		}
		return r
	}
	del := quorum.Request{Method: "DELETE", URL: "http://localhost/v1/policies/pol_1", Headers: http.Header{"Privy-App-Id": {"app_1"}}}
	const delWant = `{"body":"","headers":{"privy-app-id":"app_1"},"method":"DELETE","url":"http://localhost/v1/policies/pol_1","version":1}`
	tests := []struct {
		name string
		req  quorum.Request
		want string // canonical payload, when no error
		err  error  // sentinel, when an error is expected
	}{
		{name: "absent body signs as empty string", req: del, want: delWant},
		{name: "whitespace body signs as empty string", req: func() quorum.Request { r := del; r.Body = []byte(" \r\n\t"); return r }(), want: delWant},
		{name: "empty object with spaces signs as empty string", req: func() quorum.Request { r := del; r.Body = []byte("{ \n }"); return r }(), want: delWant},
		{name: "empty array stays an array", req: bodyRequest(`[ ]`), want: envelopeFor(`[]`)},
		{name: "null body stays null", req: bodyRequest(`null`), want: envelopeFor(`null`)},
		{name: "string body", req: bodyRequest(`"x"`), want: envelopeFor(`"x"`)},
		{name: "nested empty object kept", req: bodyRequest(`{"a":{}}`), want: envelopeFor(`{"a":{}}`)},
		{name: "HTML characters and U+2028 unescaped", req: bodyRequest(`{"a":"<&>\u2028"}`), want: envelopeFor("{\"a\":\"<&>\u2028\"}")},
		{name: "integer beyond 2^53 that a double holds exactly", req: bodyRequest(`{"a":9007199254740992,"b":123456789012345680000,"c":10000000000000000000000}`),
			want: envelopeFor(`{"a":9007199254740992,"b":123456789012345680000,"c":1e+22}`)},
		{name: "negative zero and exponent forms", req: bodyRequest(`[-0,1E21,1.0,1e-7,0.000001,2e-3]`), want: envelopeFor(`[0,1e+21,1,1e-7,0.000001,0.002]`)},
		{name: "non-shortest fraction follows RFC 8785", req: bodyRequest(`[333333333.33333329,0.1000000000000000055511151231257827]`), want: envelopeFor(`[333333333.3333333,0.1]`)},
		{name: "numbers inside strings are not checked", req: bodyRequest(`{"a":"9007199254740993","9007199254740993":1}`), want: envelopeFor(`{"9007199254740993":1,"a":"9007199254740993"}`)},
		{name: "other headers are not signed", req: withHeaders(bodyRequest(`{}`), "Authorization", "Basic eA==", "privy-authorization-signature", "MEUC", "privy-client", "node:0.35.0", "Content-Type", "application/json"),
			want: envelopeFor(`""`)},
		{name: "header names matched case-insensitively", req: quorum.Request{Method: "POST", URL: "http://localhost/v1/policies",
			Headers: http.Header{"privy-app-id": {"app_1"}, "PRIVY-IDEMPOTENCY-KEY": {"k1"}}},
			want: `{"body":"","headers":{"privy-app-id":"app_1","privy-idempotency-key":"k1"},"method":"POST","url":"http://localhost/v1/policies","version":1}`},
		{name: "empty optional header omitted", req: withHeaders(bodyRequest(``), "privy-idempotency-key", "", "privy-request-expiry", ""), want: envelopeFor(`""`)},

		{name: "invalid JSON", req: bodyRequest(`{"a":}`), err: quorum.ErrInvalidBody},
		{name: "trailing data", req: bodyRequest(`{} {}`), err: quorum.ErrInvalidBody},
		{name: "duplicate key", req: bodyRequest(`{"a":1,"a":2}`), err: quorum.ErrInvalidBody},
		{name: "lone surrogate", req: bodyRequest(`{"a":"\ud800"}`), err: quorum.ErrInvalidBody},
		{name: "invalid UTF-8", req: bodyRequest("{\"a\":\"\xff\"}"), err: quorum.ErrInvalidBody},
		{name: "number overflows a double", req: bodyRequest(`{"a":1e400}`), err: quorum.ErrInvalidBody},
		{name: "leading zero", req: bodyRequest(`{"a":01}`), err: quorum.ErrInvalidBody},
		{name: "integer not exactly a double", req: bodyRequest(`{"value":9007199254740993}`), err: quorum.ErrInexactNumber},
		{name: "uint64 max", req: bodyRequest(`[18446744073709551615]`), err: quorum.ErrInexactNumber},
		{name: "negative inexact integer", req: bodyRequest(`[-9007199254740993]`), err: quorum.ErrInexactNumber},
		{name: "missing app id", req: quorum.Request{Method: "POST", URL: "http://localhost/v1/policies", Headers: http.Header{}}, err: quorum.ErrMissingHeader},
		{name: "empty app id", req: quorum.Request{Method: "POST", URL: "http://localhost/v1/policies", Headers: http.Header{"Privy-App-Id": {""}}}, err: quorum.ErrMissingHeader},
		{name: "app id twice", req: withHeaders(bodyRequest(`{}`), "privy-app-id", "app_2"), err: quorum.ErrInvalidRequest},
		{name: "idempotency key twice", req: withHeaders(bodyRequest(`{}`), "privy-idempotency-key", "a", "privy-idempotency-key", "b"), err: quorum.ErrInvalidRequest},
		{name: "header not UTF-8", req: withHeaders(bodyRequest(`{}`), "privy-idempotency-key", "\xff"), err: quorum.ErrInvalidRequest},
		{name: "empty method", req: func() quorum.Request { r := bodyRequest(`{}`); r.Method = ""; return r }(), err: quorum.ErrInvalidRequest},
		{name: "empty URL", req: func() quorum.Request { r := bodyRequest(`{}`); r.URL = ""; return r }(), err: quorum.ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := quorum.Payload(tt.req)
			if tt.err != nil {
				var ie *quorum.InputError
				if !errors.As(err, &ie) || !errors.Is(err, tt.err) {
					t.Fatalf("got %s, %v; want an *InputError wrapping %v", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Payload: %v", err)
			}
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestPayloadDeterministic: the same request always gives the same bytes,
// whatever the order or spacing of the body.
func TestPayloadDeterministic(t *testing.T) {
	a := mustPayload(t, bodyRequest(`{"b":[1,{"y":2,"x":1}],"a":"s"}`))
	b := mustPayload(t, bodyRequest("{ \"a\" : \"s\",\n\"b\" : [ 1 , { \"x\":1, \"y\":2 } ] }"))
	if !bytes.Equal(a, b) {
		t.Fatalf("%s != %s", a, b)
	}
}

// TestPayloadIsCanonical: Payload writes the envelope itself; whatever the
// strings hold, the result must be its own RFC 8785 form.
func TestPayloadIsCanonical(t *testing.T) {
	var all strings.Builder
	for c := rune(0); c < 0x80; c++ {
		all.WriteRune(c)
	}
	all.WriteString("\u0080\u00e9\u2028\u2029\ufeff\U0001F600<>&")
	odd := all.String()
	reqs := map[string]quorum.Request{
		"odd header values": {Method: "POST", URL: "http://localhost/v1/x", Headers: http.Header{
			"Privy-App-Id": {odd}, "Privy-Idempotency-Key": {odd}, "Privy-Request-Expiry": {odd}}},
		"odd URL and method": {Method: odd, URL: "http://localhost/v1/" + odd, Headers: http.Header{"Privy-App-Id": {"a"}}},
		"only expiry":        {Method: "POST", URL: "u", Headers: http.Header{"Privy-App-Id": {"a"}, "Privy-Request-Expiry": {"1"}}},
		"only idempotency":   {Method: "POST", URL: "u", Headers: http.Header{"Privy-App-Id": {"a"}, "Privy-Idempotency-Key": {"k"}}},
		"typical":            typicalRequest(),
	}
	for _, v := range loadVectors(t).Cases {
		reqs["vector "+v.Name] = v.request()
	}
	for name, r := range reqs {
		t.Run(name, func(t *testing.T) {
			p := mustPayload(t, r)
			c, err := jcs.Transform(p)
			if err != nil {
				t.Fatalf("payload is not JSON: %v\n%q", err, p)
			}
			if !bytes.Equal(c, p) {
				t.Fatalf("payload is not canonical:\n got %q\nwant %q", p, c)
			}
		})
	}
}
