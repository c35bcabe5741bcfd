package quorum_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/quorum"
)

func TestParseSignatures(t *testing.T) {
	f := loadVectors(t)
	s1, s2 := f.Cases[0].Signature, f.Cases[1].Signature
	der1, _ := base64.StdEncoding.DecodeString(s1)
	der2, _ := base64.StdEncoding.DecodeString(s2)
	tests := []struct {
		name   string
		header string
		want   [][]byte
		err    error
	}{
		{name: "empty", header: "", want: nil},
		{name: "blank", header: "  ", want: nil},
		{name: "one", header: s1, want: [][]byte{der1}},
		{name: "two as the SDKs join them", header: s1 + "," + s2, want: [][]byte{der1, der2}},
		{name: "spaces around commas", header: " " + s1 + " ,\t" + s2 + " ", want: [][]byte{der1, der2}},
		{name: "duplicate kept", header: s1 + "," + s1, want: [][]byte{der1, der1}},
		{name: "sixteen", header: strings.Repeat(s1+",", 15) + s1, want: func() [][]byte {
			out := make([][]byte, 16)
			for i := range out {
				out[i] = der1
			}
			return out
		}()},

		{name: "seventeen", header: strings.Repeat(s1+",", 16) + s1, err: quorum.ErrTooManySignatures},
		{name: "many empty elements", header: strings.Repeat(",", 100), err: quorum.ErrTooManySignatures},
		{name: "trailing comma", header: s1 + ",", err: quorum.ErrMalformedSignature},
		{name: "empty between commas", header: s1 + ",," + s2, err: quorum.ErrMalformedSignature},
		{name: "not base64", header: "not base64!", err: quorum.ErrMalformedSignature},
		{name: "URL-safe base64", header: strings.NewReplacer("+", "-", "/", "_").Replace(s1 + "+/"), err: quorum.ErrMalformedSignature},
		{name: "unpadded base64", header: strings.TrimRight(f.Cases[1].Signature, "="), err: quorum.ErrMalformedSignature},
		{name: "base64 of garbage", header: b64([]byte("hello world")), err: quorum.ErrMalformedSignature},
		{name: "DER with trailing byte", header: b64(append(append([]byte{}, der1...), 0)), err: quorum.ErrMalformedSignature},
		{name: "r is zero", header: b64(mustDER(t, big.NewInt(0), big.NewInt(1))), err: quorum.ErrMalformedSignature},
		{name: "s is N", header: b64(mustDER(t, big.NewInt(1), elliptic.P256().Params().N)), err: quorum.ErrMalformedSignature},
		{name: "too long", header: strings.Repeat("A", 200), err: quorum.ErrMalformedSignature},
		{name: "a public key instead", header: f.PublicKey, err: quorum.ErrMalformedSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := quorum.ParseSignatures(tt.header)
			if tt.err != nil {
				var ae *quorum.AuthError
				if !errors.As(err, &ae) || !errors.Is(err, tt.err) {
					t.Fatalf("got %d signatures, %v; want an *AuthError wrapping %v", len(got), err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSignatures: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d signatures, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if string(got[i]) != string(tt.want[i]) {
					t.Fatalf("signature %d differs", i)
				}
			}
		})
	}
}

func mustDER(tb testing.TB, r, s *big.Int) []byte {
	tb.Helper()
	der, err := asn1.Marshal(struct{ R, S *big.Int }{r, s})
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

func TestParsePublicKey(t *testing.T) {
	f := loadVectors(t)
	der, _ := base64.StdEncoding.DecodeString(f.PublicKey)
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	marshal := func(pub any) []byte {
		d, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	priv := vectorKey(t, f).priv
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(priv)
	// A P-256 SPKI with the point compressed (SEC 1 2.3.3): not the form
	// Privy uses.
	compressed := func() []byte {
		spki := struct {
			Algo      struct{ Algorithm, Parameters asn1.ObjectIdentifier }
			PublicKey asn1.BitString
		}{}
		if _, err := asn1.Unmarshal(der, &spki); err != nil {
			t.Fatal(err)
		}
		pt := elliptic.MarshalCompressed(elliptic.P256(), priv.X, priv.Y)
		spki.PublicKey = asn1.BitString{Bytes: pt, BitLength: 8 * len(pt)}
		out, err := asn1.Marshal(spki)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}()

	accept := []struct{ name, in string }{
		{"canonical", f.PublicKey},
		{"PEM", pemText},
		{"PEM with CRLF and indentation", "  " + strings.ReplaceAll(pemText, "\n", "\r\n") + "\n\n"},
		{"line breaks inside base64", f.PublicKey[:40] + "\n" + f.PublicKey[40:80] + "\r\n" + f.PublicKey[80:]},
		{"surrounding whitespace", "\n\t " + f.PublicKey + " \n"},
	}
	for _, tt := range accept {
		t.Run("accept/"+tt.name, func(t *testing.T) {
			pub, err := quorum.ParsePublicKey(tt.in)
			if err != nil {
				t.Fatalf("ParsePublicKey: %v", err)
			}
			if got := quorum.CanonicalPublicKey(pub); got != f.PublicKey {
				t.Fatalf("canonical %s, want %s", got, f.PublicKey)
			}
			if got, err := quorum.CanonicalizePublicKey(tt.in); err != nil || got != f.PublicKey {
				t.Fatalf("CanonicalizePublicKey: %s, %v", got, err)
			}
		})
	}

	refuse := []struct{ name, in string }{
		{"empty", ""},
		{"garbage", "hello"},
		{"base64 garbage", b64([]byte("not a key"))},
		{"truncated", f.PublicKey[:60]},
		{"URL-safe base64", strings.NewReplacer("+", "-", "/", "_").Replace(f.PublicKey)},
		{"trailing data", b64(append(append([]byte{}, der...), 0))},
		{"P-384", b64(marshal(&p384.PublicKey))},
		{"RSA", b64(marshal(&rsaKey.PublicKey))},
		{"Ed25519", b64(marshal(edPub))},
		{"compressed point", b64(compressed)},
		{"private key", b64(pkcs8)},
		{"private key PEM", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}))},
		{"PEM with trailing text", pemText + "more"},
		{"two PEM blocks", pemText + pemText},
		{"huge", strings.Repeat("A", 5000)},
	}
	for _, tt := range refuse {
		t.Run("refuse/"+tt.name, func(t *testing.T) {
			pub, err := quorum.ParsePublicKey(tt.in)
			var ie *quorum.InputError
			if !errors.As(err, &ie) || !errors.Is(err, quorum.ErrInvalidPublicKey) {
				t.Fatalf("got %v, %v; want an *InputError wrapping ErrInvalidPublicKey", pub, err)
			}
			if strings.Contains(err.Error(), f.PublicKey) {
				t.Fatalf("error quotes the whole key: %v", err)
			}
		})
	}
}

func TestCanonicalPublicKey(t *testing.T) {
	s := newSigner(t)
	want, err := keys.PublicKeySPKI(&s.priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if s.spki != want {
		t.Fatalf("CanonicalPublicKey %s, keys.PublicKeySPKI %s", s.spki, want)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, pub := range map[string]*ecdsa.PublicKey{"nil": nil, "P-384": &p384.PublicKey} {
		if got := quorum.CanonicalPublicKey(pub); got != "" {
			t.Errorf("%s: got %q, want empty", name, got)
		}
	}
}

// TestVerifyRefusals changes one thing of a request that Privy's SDK
// signed; the SDK's signature must then belong to nobody.
func TestVerifyRefusals(t *testing.T) {
	f := loadVectors(t)
	base := f.Cases[0] // POST rpc with idempotency key and expiry
	if base.Headers["privy-idempotency-key"] == "" || base.Headers["privy-request-expiry"] == "" {
		t.Fatal("vector 0 should carry an idempotency key and an expiry")
	}
	sdkSig, err := quorum.ParseSignatures(base.Signature)
	if err != nil {
		t.Fatal(err)
	}
	key := f.PublicKey
	if _, err := quorum.Verify(mustPayload(t, base.request()), sdkSig, []string{key}, nil); err != nil {
		t.Fatalf("unchanged request refused: %v", err)
	}
	stranger := newSigner(t)
	change := func(fn func(v *vector)) quorum.Request {
		v := base
		v.Headers = map[string]string{}
		for k, val := range base.Headers {
			v.Headers[k] = val
		}
		fn(&v)
		return v.request()
	}
	tests := []struct {
		name       string
		req        quorum.Request
		sigs       [][]byte
		candidates []string
		userKeys   map[string]string
	}{
		{name: "different URL", req: change(func(v *vector) { v.URL = "http://localhost/v1/wallets/wlt_other/rpc" })},
		{name: "different base URL", req: change(func(v *vector) { v.URL = "https://api.privy.io/v1/wallets/wlt_abc/rpc" })},
		{name: "trailing slash", req: change(func(v *vector) { v.URL += "/" })},
		{name: "different body", req: change(func(v *vector) { v.Body = strings.Replace(v.Body, `"0x1"`, `"0x2"`, 1) })},
		{name: "different method", req: change(func(v *vector) { v.Method = "PUT" })},
		{name: "idempotency key changed", req: change(func(v *vector) { v.Headers["privy-idempotency-key"] = "5b7a1f0e-2c7d-4b0e-9b7e-2f4c1a9d8e02" })},
		{name: "idempotency key removed", req: change(func(v *vector) { delete(v.Headers, "privy-idempotency-key") })},
		{name: "expiry changed", req: change(func(v *vector) { v.Headers["privy-request-expiry"] = "1893456000001" })},
		{name: "app id changed", req: change(func(v *vector) { v.Headers["privy-app-id"] = "app_2" })},
		{name: "signature by a non-member key", req: base.request(), sigs: [][]byte{stranger.sign(t, mustPayload(t, base.request()))}},
		{name: "member and non-member", req: base.request(), sigs: [][]byte{sdkSig[0], stranger.sign(t, mustPayload(t, base.request()))}},
		{name: "member key not among the candidates", req: base.request(), candidates: []string{stranger.spki}},
		{name: "corrupted signature", req: base.request(), sigs: [][]byte{func() []byte {
			c := append([]byte{}, sdkSig[0]...)
			c[len(c)-1] ^= 0x01 // still DER, another s
			return c
		}()}},
		{name: "garbage bytes", req: base.request(), sigs: [][]byte{[]byte("garbage")}},
		{name: "user key of another payload", req: change(func(v *vector) { v.Method = "PATCH" }), candidates: []string{}, userKeys: map[string]string{key: "did:privy:u1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sigs := tt.sigs
			if sigs == nil {
				sigs = sdkSig
			}
			candidates := tt.candidates
			if candidates == nil {
				candidates = []string{key}
			}
			a, err := quorum.Verify(mustPayload(t, tt.req), sigs, candidates, tt.userKeys)
			var ae *quorum.AuthError
			if !errors.As(err, &ae) || !errors.Is(err, quorum.ErrUnknownSigner) {
				t.Fatalf("got %v, %v; want an *AuthError wrapping ErrUnknownSigner", a, err)
			}
			if len(a.Keys) != 0 || len(a.Users) != 0 {
				t.Fatalf("approvals %v returned with an error", a)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	f := loadVectors(t)
	sdk := vectorKey(t, f)
	other := newSigner(t)
	payload := mustPayload(t, f.Cases[0].request())
	sdkSig, _ := quorum.ParseSignatures(f.Cases[0].Signature)
	otherSig := other.sign(t, payload)
	tooMany := make([][]byte, quorum.MaxSignatures+1)
	for i := range tooMany {
		tooMany[i] = sdkSig[0]
	}

	t.Run("no signatures", func(t *testing.T) {
		a, err := quorum.Verify(payload, nil, []string{sdk.spki}, nil)
		if err != nil || len(a.Keys) != 0 || len(a.Users) != 0 || a.Keys == nil || a.Users == nil {
			t.Fatalf("got %#v, %v; want empty non-nil maps and no error", a, err)
		}
	})
	t.Run("duplicated signature counts once", func(t *testing.T) {
		a, err := quorum.Verify(payload, [][]byte{sdkSig[0], sdkSig[0]}, []string{sdk.spki, other.spki}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Keys) != 1 || !a.Keys[sdk.spki] {
			t.Fatalf("approvals %v", a.Keys)
		}
		q := quorum.Quorum{ID: "kq", Keys: []string{sdk.spki, other.spki}, Threshold: 2}
		if q.Satisfied(a) {
			t.Fatal("one key signing twice met a 2-of-2")
		}
	})
	t.Run("two keys", func(t *testing.T) {
		a, err := quorum.Verify(payload, [][]byte{otherSig, sdkSig[0]}, []string{sdk.spki, other.spki}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Keys) != 2 {
			t.Fatalf("approvals %v", a.Keys)
		}
	})
	t.Run("too many signatures", func(t *testing.T) {
		_, err := quorum.Verify(payload, tooMany, []string{sdk.spki}, nil)
		var ae *quorum.AuthError
		if !errors.As(err, &ae) || !errors.Is(err, quorum.ErrTooManySignatures) {
			t.Fatalf("got %v, want ErrTooManySignatures", err)
		}
	})
	t.Run("user key", func(t *testing.T) {
		a, err := quorum.Verify(payload, [][]byte{otherSig}, []string{sdk.spki}, map[string]string{other.spki: "did:privy:u1"})
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Keys) != 0 || !a.Users["did:privy:u1"] || len(a.Users) != 1 {
			t.Fatalf("approvals %v", a)
		}
	})
	t.Run("key both member and user key approves for both", func(t *testing.T) {
		a, err := quorum.Verify(payload, sdkSig, []string{sdk.spki}, map[string]string{sdk.spki: "did:privy:u1"})
		if err != nil {
			t.Fatal(err)
		}
		if !a.Keys[sdk.spki] || !a.Users["did:privy:u1"] {
			t.Fatalf("approvals %v", a)
		}
	})
	t.Run("corrupt stored key is not the client's error", func(t *testing.T) {
		_, err := quorum.Verify(payload, sdkSig, []string{"not a key"}, nil)
		var ae *quorum.AuthError
		var ie *quorum.InputError
		if err == nil || errors.As(err, &ae) || errors.As(err, &ie) {
			t.Fatalf("got %v, want a plain error", err)
		}
	})
}

// TestHighS: Privy's Go SDK does not normalize S, so a signature with
// S > N/2 must verify, and counts as the same key as its low-S twin.
func TestHighS(t *testing.T) {
	f := loadVectors(t)
	for _, v := range f.Cases {
		t.Run(v.Name, func(t *testing.T) {
			der, err := base64.StdEncoding.DecodeString(v.Signature)
			if err != nil {
				t.Fatal(err)
			}
			var sig struct{ R, S *big.Int }
			if _, err := asn1.Unmarshal(der, &sig); err != nil {
				t.Fatal(err)
			}
			flipped := mustDER(t, sig.R, new(big.Int).Sub(elliptic.P256().Params().N, sig.S))
			if keys.IsLowS(der) == keys.IsLowS(flipped) {
				t.Fatal("flipping S did not change its half")
			}
			// The flipped signature goes through the header parser too.
			sigs, err := quorum.ParseSignatures(v.Signature + "," + b64(flipped))
			if err != nil {
				t.Fatal(err)
			}
			p := mustPayload(t, v.request())
			for _, one := range sigs {
				if _, err := quorum.Verify(p, [][]byte{one}, []string{f.PublicKey}, nil); err != nil {
					t.Fatalf("low-S %v: %v", keys.IsLowS(one), err)
				}
			}
			a, err := quorum.Verify(p, sigs, []string{f.PublicKey}, nil)
			if err != nil || len(a.Keys) != 1 {
				t.Fatalf("both twins: %v, %v; want one key", a.Keys, err)
			}
		})
	}
}

// TestVerifyManyCandidates runs Privy's SDK vectors and the refusals against
// large candidate sets, where Verify finds the signer by key recovery rather
// than by trying each candidate, with the signer at the start, middle and
// end of the list.
func TestVerifyManyCandidates(t *testing.T) {
	f := loadVectors(t)
	sdk := vectorKey(t, f)
	stranger, user := newSigner(t), newSigner(t)
	for _, n := range []int{2, 50, 300} {
		others := manySigners(t, n-1)
		for _, pos := range slices.Compact([]int{0, n / 2, n - 1}) {
			candidates := make([]string, 0, n)
			for _, o := range others {
				candidates = append(candidates, o.spki)
			}
			candidates = slices.Insert(candidates, pos, sdk.spki)
			name := fmt.Sprintf("%d-candidates/signer-at-%d", n, pos)
			t.Run(name+"/sdk-vectors", func(t *testing.T) {
				for _, v := range f.Cases {
					sigs, err := quorum.ParseSignatures(v.Signature)
					if err != nil {
						t.Fatal(err)
					}
					var sig struct{ R, S *big.Int }
					if _, err := asn1.Unmarshal(sigs[0], &sig); err != nil {
						t.Fatal(err)
					}
					twin := mustDER(t, sig.R, new(big.Int).Sub(elliptic.P256().Params().N, sig.S))
					p := mustPayload(t, v.request())
					for _, s := range [][][]byte{sigs, {twin}, {sigs[0], twin}} {
						a, err := quorum.Verify(p, s, candidates, nil)
						if err != nil || len(a.Keys) != 1 || !a.Keys[sdk.spki] || len(a.Users) != 0 {
							t.Fatalf("%s: %v, %v; want the SDK key alone", v.Name, a, err)
						}
					}
				}
			})
			payload := mustPayload(t, f.Cases[0].request())
			sdkSig := sdk.sign(t, payload)
			corrupted := slices.Clone(sdkSig)
			corrupted[len(corrupted)-1] ^= 0x01 // still DER, another s
			refusals := []struct {
				name string
				sigs [][]byte
			}{
				{"non-candidate", [][]byte{stranger.sign(t, payload)}},
				{"candidate then non-candidate", [][]byte{sdkSig, stranger.sign(t, payload)}},
				{"corrupted", [][]byte{corrupted}},
				{"another payload", [][]byte{sdk.sign(t, append(slices.Clone(payload), ' '))}},
				{"garbage", [][]byte{[]byte("garbage")}},
			}
			for _, r := range refusals {
				t.Run(name+"/refused/"+r.name, func(t *testing.T) {
					a, err := quorum.Verify(payload, r.sigs, candidates, nil)
					var ae *quorum.AuthError
					if !errors.As(err, &ae) || !errors.Is(err, quorum.ErrUnknownSigner) || len(a.Keys) != 0 || len(a.Users) != 0 {
						t.Fatalf("got %v, %v; want an *AuthError wrapping ErrUnknownSigner and no approvals", a, err)
					}
				})
			}
			t.Run(name+"/user-key", func(t *testing.T) {
				a, err := quorum.Verify(payload, [][]byte{user.sign(t, payload), sdkSig}, candidates, map[string]string{user.spki: "did:privy:u1"})
				if err != nil || !a.Keys[sdk.spki] || len(a.Keys) != 1 || !a.Users["did:privy:u1"] || len(a.Users) != 1 {
					t.Fatalf("got %v, %v", a, err)
				}
			})
		}
	}
}

// TestMaxCandidateKeys: Verify checks against at most MaxCandidateKeys
// distinct keys, candidates and user keys together; beyond, a plain error
// (the server's configuration, not the client's fault) names the limit.
func TestMaxCandidateKeys(t *testing.T) {
	all := manySigners(t, quorum.MaxCandidateKeys+1)
	spkis := make([]string, len(all))
	for i, s := range all {
		spkis[i] = s.spki
	}
	payload := []byte(`{"limit":true}`)
	last := all[quorum.MaxCandidateKeys-1]
	sig := [][]byte{last.sign(t, payload)}
	atLimit := spkis[:quorum.MaxCandidateKeys]
	tests := []struct {
		name       string
		candidates []string
		userKeys   map[string]string
		over       bool
	}{
		{"at the limit", atLimit, nil, false},
		{"at the limit, a user key that is also a candidate", atLimit, map[string]string{spkis[0]: "did:privy:u1"}, false},
		{"at the limit, listed twice", append(slices.Clone(atLimit), atLimit...), nil, false},
		{"one candidate over", spkis, nil, true},
		{"a user key over", atLimit, map[string]string{spkis[quorum.MaxCandidateKeys]: "did:privy:u1"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := quorum.Verify(payload, sig, tt.candidates, tt.userKeys)
			if !tt.over {
				if err != nil || !a.Keys[last.spki] {
					t.Fatalf("got %v, %v", a.Keys[last.spki], err)
				}
				return
			}
			var ae *quorum.AuthError
			var ie *quorum.InputError
			if err == nil || errors.As(err, &ae) || errors.As(err, &ie) || !strings.Contains(err.Error(), "MaxCandidateKeys") {
				t.Fatalf("got %v; want a plain error naming MaxCandidateKeys", err)
			}
			if len(a.Keys) != 0 || len(a.Users) != 0 {
				t.Fatalf("approvals %v with an error", a)
			}
		})
	}
}

// TestCandidatesOf: one Verify over the candidates of several quorums, then
// Satisfied per quorum, decides each quorum as a Verify of its own would
// when the signatures are all from that quorum, and lets a signature by
// another listed quorum's key pass without counting.
func TestCandidatesOf(t *testing.T) {
	k := make([]*signer, 4)
	for i := range k {
		k[i] = newSigner(t)
	}
	owner := quorum.Quorum{ID: "kq_owner", Keys: []string{k[0].spki, k[1].spki}, Threshold: 2}
	signer := quorum.Quorum{ID: "kq_signer", Keys: []string{k[1].spki, k[2].spki}, Threshold: 1,
		Children: []quorum.Quorum{{ID: "kq_child", Keys: []string{k[3].spki, k[0].spki}, Threshold: 1}}}
	got := quorum.CandidatesOf(owner, signer)
	want := []string{k[0].spki, k[1].spki, k[2].spki, k[3].spki}
	if !slices.Equal(got, want) {
		t.Fatalf("CandidatesOf = %q, want %q", got, want)
	}
	if c := quorum.CandidatesOf(); len(c) != 0 {
		t.Fatalf("CandidatesOf() = %q", c)
	}
	payload := []byte(`{"x":1}`)
	tests := []struct {
		name              string
		signers           []int
		owner, signerOK   bool
		ownerAloneRefuses bool // Verify against the owner's candidates alone: unknown signer
	}{
		{"owner's two keys", []int{0, 1}, true, true, false},
		{"one owner key", []int{0}, false, true, false},
		{"signer quorum key only", []int{2}, false, true, true},
		{"child key", []int{3}, false, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sigs [][]byte
			for _, i := range tt.signers {
				sigs = append(sigs, k[i].sign(t, payload))
			}
			a, err := quorum.Verify(payload, sigs, got, nil)
			if err != nil {
				t.Fatal(err)
			}
			if owner.Satisfied(a) != tt.owner || signer.Satisfied(a) != tt.signerOK {
				t.Fatalf("owner %v, signer %v; want %v, %v", owner.Satisfied(a), signer.Satisfied(a), tt.owner, tt.signerOK)
			}
			alone, err := quorum.Verify(payload, sigs, owner.Candidates(), nil)
			if tt.ownerAloneRefuses != errors.Is(err, quorum.ErrUnknownSigner) {
				t.Fatalf("owner alone: %v", err)
			}
			if err == nil && owner.Satisfied(alone) != tt.owner {
				t.Fatal("owner alone decides differently")
			}
		})
	}
}
