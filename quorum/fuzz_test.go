package quorum_test

import (
	"bytes"
	"errors"
	"net/http"
	"testing"

	"github.com/cachet-custody/cachet/quorum"
	"github.com/gowebpki/jcs"
)

// FuzzPayload: for any body, Payload either refuses it with an
// *InputError or returns a payload that is its own canonical form, whose
// body is what gowebpki/jcs (the oracle; Payload canonicalizes with
// jsontext) makes of the request's body.
func FuzzPayload(f *testing.F) {
	for _, v := range loadVectors(f).Cases {
		f.Add([]byte(v.Body), "k")
	}
	f.Add([]byte(`[9007199254740993, "x\u0000", {"a":{}}]`), "")
	f.Add([]byte(" {} "), "\x01")
	f.Add([]byte(`{"\u20ac":1,"\r":2,"1":3,"\ud83d\ude00":4,"\u00f6":5,"a":[1E30,4.50,2e-3,-0,0.000001,1e21,1e-7,333333333.33333329,1e-400,5e-324]}`), "")
	f.Fuzz(func(t *testing.T, body []byte, idem string) {
		h := http.Header{"Privy-App-Id": {"app_1"}, "Privy-Idempotency-Key": {idem}}
		p, err := quorum.Payload(quorum.Request{Method: "POST", URL: "http://localhost/v1/x", Body: body, Headers: h})
		if err != nil {
			var ie *quorum.InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		c, err := jcs.Transform(p)
		if err != nil || !bytes.Equal(c, p) {
			t.Fatalf("payload not canonical (%v):\n%q", err, p)
		}
		want := []byte(`""`) // an empty body, and {}, sign as ""
		if len(bytes.Trim(body, " \t\r\n")) > 0 {
			if want, err = jcs.Transform(body); err != nil {
				t.Fatalf("Payload accepted a body jcs refuses (%v): %q", err, body)
			}
			if string(want) == "{}" {
				want = []byte(`""`)
			}
		}
		if !bytes.Contains(p, append(append([]byte(`{"body":`), want...), `,"headers":`...)) {
			t.Fatalf("payload %q does not hold jcs's form of the body %q", p, want)
		}
	})
}

// FuzzParseSignatures: the header parser never panics, and what it accepts
// is at most MaxSignatures signatures.
func FuzzParseSignatures(f *testing.F) {
	for _, v := range loadVectors(f).Cases {
		f.Add(v.Signature + " , " + v.Signature)
	}
	f.Add(",,,")
	f.Fuzz(func(t *testing.T, header string) {
		sigs, err := quorum.ParseSignatures(header)
		if err != nil {
			var ae *quorum.AuthError
			if !errors.As(err, &ae) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if len(sigs) > quorum.MaxSignatures {
			t.Fatalf("%d signatures accepted", len(sigs))
		}
	})
}
