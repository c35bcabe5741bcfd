package quorum_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"testing"

	"github.com/cachet-custody/cachet/quorum"
)

// vectorFile is testdata/privy-authorization-vectors.json.
type vectorFile struct {
	Generator  string   `json:"generator"`
	PublicKey  string   `json:"public_key_spki_b64"`
	PrivateKey string   `json:"private_key_pkcs8_b64"`
	Cases      []vector `json:"cases"`
}

type vector struct {
	Name      string            `json:"name"`
	Method    string            `json:"method"`
	URL       string            `json:"url"`
	Body      string            `json:"request_body_json"`
	Headers   map[string]string `json:"headers"`
	Canonical string            `json:"canonical_payload"`
	SHA256    string            `json:"canonical_payload_sha256_hex"`
	Signature string            `json:"signature_b64"`
}

// request is the HTTP request of a vector, its headers set as net/http
// would (canonical header names).
func (v vector) request() quorum.Request {
	h := http.Header{}
	for k, val := range v.Headers {
		h.Set(k, val)
	}
	return quorum.Request{Method: v.Method, URL: v.URL, Body: []byte(v.Body), Headers: h}
}

// loadVectors reads the Privy SDK vectors strictly: an unknown field fails.
func loadVectors(tb testing.TB) vectorFile {
	tb.Helper()
	raw, err := os.ReadFile("testdata/privy-authorization-vectors.json")
	if err != nil {
		tb.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var f vectorFile
	if err := dec.Decode(&f); err != nil {
		tb.Fatalf("parse vectors: %v", err)
	}
	if len(f.Cases) == 0 {
		tb.Fatal("no vectors")
	}
	return f
}

// vectorKey returns the SDK vectors' private key.
func vectorKey(tb testing.TB, f vectorFile) *signer {
	tb.Helper()
	der, err := base64.StdEncoding.DecodeString(f.PrivateKey)
	if err != nil {
		tb.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		tb.Fatal(err)
	}
	priv := k.(*ecdsa.PrivateKey)
	return &signer{priv: priv, spki: quorum.CanonicalPublicKey(&priv.PublicKey)}
}

// signer is a P-256 key pair with its canonical public key.
type signer struct {
	priv *ecdsa.PrivateKey
	spki string
}

func newSigner(tb testing.TB) *signer {
	tb.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return &signer{priv: priv, spki: quorum.CanonicalPublicKey(&priv.PublicKey)}
}

// sign signs payload as the SDKs do: ECDSA over SHA-256, DER.
func (s *signer) sign(tb testing.TB, payload []byte) []byte {
	tb.Helper()
	d := quorum.Digest(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, s.priv, d[:])
	if err != nil {
		tb.Fatal(err)
	}
	return sig
}

func mustPayload(tb testing.TB, r quorum.Request) []byte {
	tb.Helper()
	p, err := quorum.Payload(r)
	if err != nil {
		tb.Fatalf("Payload: %v", err)
	}
	return p
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
