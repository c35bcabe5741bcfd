package quorum

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"reflect"
	"sync"
	"testing"
)

// Signatures checked against several candidate sets give what Verify gives
// for each, and each signature's cryptography runs once: one recovery per
// distinct signature, one confirmation per signature and key, however many
// sets it is checked against.
func TestSignaturesCheckOnce(t *testing.T) {
	payload := []byte(`{"body":{},"headers":{"privy-app-id":"app"},"method":"POST","url":"http://localhost/x","version":1}`)
	d := Digest(payload)
	var keys []string
	var privs []*ecdsa.PrivateKey
	for range 12 {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		privs = append(privs, k)
		keys = append(keys, CanonicalPublicKey(&k.PublicKey))
	}
	sign := func(k *ecdsa.PrivateKey) []byte {
		sig, err := ecdsa.SignASN1(rand.Reader, k, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	sigs := [][]byte{sign(privs[0]), sign(privs[5]), sign(privs[0])}
	sets := []struct {
		cands []string
		users map[string]string
	}{
		{keys[:4], nil},  // signature 2 unknown
		{keys[4:8], nil}, // signature 1 unknown
		{keys[:8], nil},  // both
		{keys[1:7], map[string]string{keys[0]: "u1"}}, // one as a user key
		{keys[8:], nil}, // none
	}
	s := NewSignatures(payload, sigs)
	for round := range 2 {
		for i, set := range sets {
			want, werr := Verify(payload, sigs, set.cands, set.users)
			got, gerr := s.Verify(set.cands, set.users)
			if !reflect.DeepEqual(got, want) || (werr == nil) != (gerr == nil) || (werr != nil && !errors.Is(gerr, ErrUnknownSigner)) {
				t.Fatalf("round %d set %d: got %v, %v; want %v, %v", round, i, got, gerr, want, werr)
			}
		}
	}
	// Three distinct signatures (ECDSA is randomized: the first key's two
	// differ), each recovered once and confirmed once with its key.
	if n := len(s.recovered); n != 3 {
		t.Errorf("%d recoveries for 3 distinct signatures", n)
	}
	if n := len(s.confirmed); n != 3 {
		t.Errorf("%d confirmations for 3 distinct signatures", n)
	}
}

// One Signatures checked from several goroutines at once (the same request
// run concurrently) gives each the answer Verify gives; under -race this
// also shows its memos are guarded.
func TestSignaturesConcurrentUse(t *testing.T) {
	payload := []byte(`{"body":{},"headers":{"privy-app-id":"app"},"method":"POST","url":"http://localhost/x","version":1}`)
	d := Digest(payload)
	var keys []string
	var sigs [][]byte
	for range 3 {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		keys = append(keys, CanonicalPublicKey(&k.PublicKey))
		sig, err := ecdsa.SignASN1(rand.Reader, k, d[:])
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, sig)
	}
	want, err := Verify(payload, sigs, keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSignatures(payload, sigs)
	got := make([]Approvals, 8)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			got[i], errs[i] = s.Verify(keys, nil)
			if !s.SignedBy(keys[i%3]) {
				errs[i] = errors.New("SignedBy missed a signer")
			}
		})
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || !reflect.DeepEqual(got[i], want) {
			t.Errorf("goroutine %d: %v, %v; want %v", i, got[i], errs[i], want)
		}
	}
}
