package quorum

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"math/big"
	mrand "math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"filippo.io/nistec"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// bruteForceVerify is Verify as it was before key recovery: every signature
// is tried with ecdsa.VerifyASN1 against every candidate, unused candidates
// first. It is the reference the recovering Verify must agree with.
func bruteForceVerify(payload []byte, sigs [][]byte, candidates []string, userKeys map[string]string) (Approvals, error) {
	a := Approvals{Keys: map[string]bool{}, Users: map[string]bool{}}
	if len(sigs) == 0 {
		return a, nil
	}
	if len(sigs) > MaxSignatures {
		return a, authErr(ErrTooManySignatures, fmt.Sprintf("%d authorization signatures, at most %d are accepted", len(sigs), MaxSignatures))
	}
	type cand struct {
		spki   string
		pub    *ecdsa.PublicKey
		member bool
		user   string
	}
	index := map[string]int{}
	var cands []cand
	add := func(spki string) (int, error) {
		if j, ok := index[spki]; ok {
			return j, nil
		}
		pub, err := ParsePublicKey(spki)
		if err != nil {
			return 0, fmt.Errorf("quorum: stored key %q is not a P-256 public key", abbreviate(spki))
		}
		index[spki] = len(cands)
		cands = append(cands, cand{spki: spki, pub: pub})
		return len(cands) - 1, nil
	}
	for _, k := range candidates {
		j, err := add(k)
		if err != nil {
			return a, err
		}
		cands[j].member = true
	}
	for _, k := range slices.Sorted(maps.Keys(userKeys)) {
		j, err := add(k)
		if err != nil {
			return a, err
		}
		if cands[j].user == "" {
			cands[j].user = userKeys[k]
		}
	}
	digest := Digest(payload)
	used := make([]bool, len(cands))
	seen := map[string]int{}
	for i, sig := range sigs {
		j, ok := seen[string(sig)]
		if !ok {
			j = -1
		search:
			for _, wantUsed := range []bool{false, true} {
				for k, c := range cands {
					if used[k] == wantUsed && ecdsa.VerifyASN1(c.pub, digest[:], sig) {
						j = k
						break search
					}
				}
			}
			seen[string(sig)] = j
		}
		if j < 0 {
			return Approvals{Keys: map[string]bool{}, Users: map[string]bool{}},
				authErr(ErrUnknownSigner, fmt.Sprintf("%s (signature %d)", ErrUnknownSigner, i+1))
		}
		used[j] = true
		if cands[j].member {
			a.Keys[cands[j].spki] = true
		}
		if cands[j].user != "" {
			a.Users[cands[j].user] = true
		}
	}
	return a, nil
}

type testKey struct {
	priv  *ecdsa.PrivateKey
	spki  string
	point []byte
}

func genKey(tb testing.TB) testKey {
	tb.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	pt, err := priv.PublicKey.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	return testKey{priv: priv, spki: CanonicalPublicKey(&priv.PublicKey), point: pt}
}

func (k testKey) sign(tb testing.TB, payload []byte) []byte {
	tb.Helper()
	d := Digest(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, d[:])
	if err != nil {
		tb.Fatal(err)
	}
	return sig
}

// derSig encodes r and s as an ECDSA-Sig-Value.
func derSig(tb testing.TB, r, s *big.Int) []byte {
	tb.Helper()
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(r)
		b.AddASN1BigInt(s)
	})
	out, err := b.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// twin is sig with S replaced by N-S: valid for the same key.
func twin(tb testing.TB, sig []byte) []byte {
	tb.Helper()
	r, s, ok := parseRS(sig)
	if !ok {
		tb.Fatalf("unparsable signature %x", sig)
	}
	return derSig(tb, r, new(big.Int).Sub(p256N, s))
}

// TestRecoverKeys: for many random keys and messages, the signer's key is
// among the recovered keys, and the high-S twin recovers it through the
// other point of the pair (the other parity of R), so both parities are
// exercised on every case.
func TestRecoverKeys(t *testing.T) {
	for i := range 64 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			k := genKey(t)
			payload := make([]byte, i) // 0..63 random bytes
			rand.Read(payload)
			digest := Digest(payload)
			sig := k.sign(t, payload)
			at := map[string]int{}
			for _, s := range [][]byte{sig, twin(t, sig)} {
				if !ecdsa.VerifyASN1(&k.priv.PublicKey, digest[:], s) {
					t.Fatal("test signature does not verify")
				}
				got := recoverKeys(digest[:], s)
				if len(got) < 2 || len(got)%2 != 0 || len(got) > 4 {
					t.Fatalf("%d keys recovered, want 2 or 4", len(got))
				}
				idx := slices.IndexFunc(got, func(p []byte) bool { return bytes.Equal(p, k.point) })
				if idx < 0 {
					t.Fatalf("signer's key not among %d recovered keys", len(got))
				}
				at[string(s)] = idx
			}
			if at[string(sig)]%2 == at[string(twin(t, sig))]%2 {
				t.Fatalf("signature and its twin recovered the key from the same parity of R (%v)", at)
			}
		})
	}
}

// TestRecoverKeysRPlusN: a signature whose point R has x = r+N (possible
// because P > N, for about one real signature in 2^130) is built on
// purpose: pick such an R on the curve, any s, and the key Q that makes
// (r, s) valid. ecdsa.VerifyASN1 accepts it, so recovery must find Q.
func TestRecoverKeysRPlusN(t *testing.T) {
	payload := []byte(`{"r":"plus N"}`)
	digest := Digest(payload)
	found := 0
	for off := int64(1); found < 4 && off < 64; off++ {
		x := new(big.Int).Add(p256N, big.NewInt(off))
		var enc [33]byte
		enc[0] = 0x02
		x.FillBytes(enc[1:])
		R, err := nistec.NewP256Point().SetBytes(enc[:])
		if err != nil {
			continue // not on the curve
		}
		found++
		r := big.NewInt(off)
		s, err := rand.Int(rand.Reader, new(big.Int).Sub(p256N, big.NewInt(1)))
		if err != nil {
			t.Fatal(err)
		}
		s.Add(s, big.NewInt(1))
		// Q = r^-1 (s R - e G), computed with scalars s/r and -e/r.
		rInv := new(big.Int).ModInverse(r, p256N)
		e := new(big.Int).SetBytes(digest[:])
		a := new(big.Int).Mul(s, rInv)
		a.Mod(a, p256N)
		b := new(big.Int).Mul(e, rInv)
		b.Neg(b).Mod(b, p256N)
		var ab, bb [32]byte
		a.FillBytes(ab[:])
		b.FillBytes(bb[:])
		aR, err := nistec.NewP256Point().ScalarMult(R, ab[:])
		if err != nil {
			t.Fatal(err)
		}
		bG, err := nistec.NewP256Point().ScalarBaseMult(bb[:])
		if err != nil {
			t.Fatal(err)
		}
		qb := nistec.NewP256Point().Add(aR, bG).Bytes()
		q, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), qb)
		if err != nil {
			t.Fatal(err)
		}
		sig := derSig(t, r, s)
		if !ecdsa.VerifyASN1(q, digest[:], sig) {
			t.Fatal("constructed signature does not verify: the construction is wrong")
		}
		got := recoverKeys(digest[:], sig)
		if len(got) != 2 && len(got) != 4 { // 4 when x = r is on the curve too
			t.Fatalf("r = %d < P-N: %d keys recovered, want 2 or 4", off, len(got))
		}
		if !slices.ContainsFunc(got, func(p []byte) bool { return bytes.Equal(p, qb) }) {
			t.Fatal("key of an x = r+N signature not recovered")
		}
		other := genKey(t)
		spki := CanonicalPublicKey(q)
		a2, err := Verify(payload, [][]byte{sig}, []string{other.spki, spki}, nil)
		if err != nil || !a2.Keys[spki] || len(a2.Keys) != 1 {
			t.Fatalf("Verify: %v, %v", a2, err)
		}
	}
	if found == 0 {
		t.Fatal("no x in N+1..N+63 on the curve")
	}
}

// TestRecoverKeysRefuses: what no key can have made recovers nothing.
func TestRecoverKeysRefuses(t *testing.T) {
	k := genKey(t)
	digest := Digest([]byte("x"))
	sig := k.sign(t, []byte("x"))
	r, s, _ := parseRS(sig)
	tests := []struct {
		name string
		sig  []byte
	}{
		{"empty", nil},
		{"garbage", []byte("garbage")},
		{"trailing byte", append(slices.Clone(sig), 0)},
		{"r = 0", derSig(t, big.NewInt(0), s)},
		{"s = 0", derSig(t, r, big.NewInt(0))},
		{"r = N", derSig(t, p256N, s)},
		{"s = N", derSig(t, r, p256N)},
		{"negative s", derSig(t, r, new(big.Int).Neg(s))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := recoverKeys(digest[:], tt.sig); got != nil {
				t.Fatalf("%d keys recovered", len(got))
			}
			if ecdsa.VerifyASN1(&k.priv.PublicKey, digest[:], tt.sig) {
				t.Fatal("ecdsa.VerifyASN1 accepts it: the case is wrong")
			}
		})
	}
}

// keyPool is a fixed set of keys with signatures over one payload, shared
// by the property test and the fuzz target (generated once).
type keyPool struct {
	payload []byte
	keys    []testKey
	sigs    [][]byte // sigs[i] by keys[i]
	twins   [][]byte // high/low-S twin of sigs[i]
	second  [][]byte // another signature by keys[i]
}

var pool = sync.OnceValue(func() *keyPool {
	p := &keyPool{payload: []byte(`{"method":"eth_signTransaction","params":{}}`)}
	for range 10 {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		pt, _ := priv.PublicKey.Bytes()
		k := testKey{priv: priv, spki: CanonicalPublicKey(&priv.PublicKey), point: pt}
		d := Digest(p.payload)
		s1, _ := ecdsa.SignASN1(rand.Reader, priv, d[:])
		s2, _ := ecdsa.SignASN1(rand.Reader, priv, d[:])
		r, s, _ := parseRS(s1)
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1BigInt(r)
			b.AddASN1BigInt(new(big.Int).Sub(p256N, s))
		})
		tw, _ := b.Bytes()
		p.keys = append(p.keys, k)
		p.sigs = append(p.sigs, s1)
		p.twins = append(p.twins, tw)
		p.second = append(p.second, s2)
	}
	return p
})

// caseFrom builds a Verify input from program bytes: each byte chooses a
// candidate, a user key or a signature among the pool's, a corruption, or
// a duplicate, so that random programs cover accepted and refused calls.
func caseFrom(p *keyPool, prog []byte) (sigs [][]byte, candidates []string, userKeys map[string]string) {
	userKeys = map[string]string{}
	for i, op := range prog {
		k := int(op>>4) % len(p.keys)
		switch op & 0x0f {
		case 0, 1, 2:
			candidates = append(candidates, p.keys[k].spki)
		case 3:
			userKeys[p.keys[k].spki] = fmt.Sprintf("did:privy:u%d", int(op>>4)%3)
		case 4, 5, 6:
			sigs = append(sigs, p.sigs[k])
		case 7:
			sigs = append(sigs, p.twins[k])
		case 8:
			sigs = append(sigs, p.second[k])
		case 9:
			if len(sigs) > 0 {
				sigs = append(sigs, sigs[len(sigs)-1])
			}
		case 10:
			if len(sigs) > 0 && len(sigs[len(sigs)-1]) > 0 { // flip one bit of the last signature
				c := slices.Clone(sigs[len(sigs)-1])
				pos := 0
				if i+1 < len(prog) {
					pos = int(prog[i+1])
				}
				c[pos%len(c)] ^= 1 << (op >> 5)
				sigs[len(sigs)-1] = c
			}
		case 11:
			if len(sigs) > 0 { // truncate the last signature
				last := sigs[len(sigs)-1]
				sigs[len(sigs)-1] = last[:max(0, len(last)-1-int(op>>4)%4)]
			}
		case 12: // a key spelled another way: same point, another string
			candidates = append(candidates, "-----BEGIN PUBLIC KEY-----\n"+p.keys[k].spki+"\n-----END PUBLIC KEY-----\n")
		default:
			// no-op: keeps programs of unrelated lengths comparable
		}
	}
	if len(sigs) > MaxSignatures {
		sigs = sigs[:MaxSignatures]
	}
	return sigs, candidates, userKeys
}

// sameOutcome fails unless Verify and the brute-force reference agree
// exactly: the same approvals, and the same error (type, sentinel, text).
func sameOutcome(t *testing.T, payload []byte, sigs [][]byte, candidates []string, userKeys map[string]string) (accepted bool) {
	t.Helper()
	got, gotErr := Verify(payload, sigs, candidates, userKeys)
	want, wantErr := bruteForceVerify(payload, sigs, candidates, userKeys)
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || errors.Is(gotErr, ErrUnknownSigner) != errors.Is(wantErr, ErrUnknownSigner) {
		t.Fatalf("error %v, reference %v\nsigs %x\ncandidates %q\nuser keys %v", gotErr, wantErr, sigs, candidates, userKeys)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("approvals %v, reference %v\nsigs %x\ncandidates %q\nuser keys %v", got, want, sigs, candidates, userKeys)
	}
	return gotErr == nil && len(sigs) > 0
}

// TestVerifyMatchesBruteForce is the property test: on random inputs, the
// recovering Verify gives exactly what trying every candidate gives.
func TestVerifyMatchesBruteForce(t *testing.T) {
	p := pool()
	rng := mrand.New(mrand.NewPCG(1, 2))
	accepted, refused := 0, 0
	for range 300 {
		// A program: a few candidate or user keys, then mostly signatures
		// by those keys, and random operations.
		var prog, mine []byte
		for range 1 + rng.IntN(6) {
			k := byte(rng.UintN(16))
			mine = append(mine, k)
			kind := byte(rng.UintN(5)) // ops 0-3: candidate or user key
			if kind == 4 {
				kind = 12 // the same key spelled as PEM
			}
			prog = append(prog, k<<4|kind)
		}
		for range rng.IntN(8) {
			op := byte(rng.UintN(256))
			if rng.IntN(10) < 7 { // a signature by one of those keys
				op = mine[rng.IntN(len(mine))]<<4 | byte(4+rng.UintN(5))
			}
			prog = append(prog, op)
		}
		sigs, candidates, userKeys := caseFrom(p, prog)
		if sameOutcome(t, p.payload, sigs, candidates, userKeys) {
			accepted++
		} else {
			refused++
		}
	}
	// The generator must exercise both outcomes, or the comparison is empty.
	if accepted < 20 || refused < 20 {
		t.Fatalf("%d accepted, %d refused: the generator is off", accepted, refused)
	}
}

// FuzzVerifyMatchesBruteForce: the same property with programs from the
// fuzzer, and with a signature of arbitrary bytes added.
func FuzzVerifyMatchesBruteForce(f *testing.F) {
	f.Add([]byte{0x00, 0x10, 0x04, 0x14}, []byte(nil))
	f.Add([]byte{0x00, 0x13, 0x04, 0x17, 0x09}, []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01})
	f.Add([]byte{0x00, 0x0c, 0x04, 0x08, 0x0a, 0x07}, []byte("x"))
	f.Fuzz(func(t *testing.T, prog, extra []byte) {
		if len(prog) > 64 {
			return
		}
		p := pool()
		sigs, candidates, userKeys := caseFrom(p, prog)
		if len(extra) > 0 && len(sigs) < MaxSignatures {
			sigs = append(sigs, extra)
		}
		sameOutcome(t, p.payload, sigs, candidates, userKeys)
	})
}

// BenchmarkRecoverKeys compares one key recovery with one verification,
// the unit Verify's cost is counted in.
func BenchmarkRecoverKeys(b *testing.B) {
	k := genKey(b)
	payload := []byte(`{"bench":true}`)
	digest := Digest(payload)
	sig := k.sign(b, payload)
	b.Run("recover", func(b *testing.B) {
		for b.Loop() {
			if len(recoverKeys(digest[:], sig)) == 0 {
				b.Fatal("nothing recovered")
			}
		}
	})
	b.Run("ecdsa.VerifyASN1", func(b *testing.B) {
		for b.Loop() {
			if !ecdsa.VerifyASN1(&k.priv.PublicKey, digest[:], sig) {
				b.Fatal("does not verify")
			}
		}
	})
}

// TestKeyPoint: the shortcut for canonical keys accepts exactly what
// ParsePublicKey accepts, and gives the same point.
func TestKeyPoint(t *testing.T) {
	k := genKey(t)
	der, err := base64.StdEncoding.DecodeString(k.spki)
	if err != nil {
		t.Fatal(err)
	}
	offCurve := slices.Clone(der)
	offCurve[len(offCurve)-1] ^= 1
	badPrefix := slices.Clone(der)
	badPrefix[len(spkiPrefix)-2] ^= 1 // the BIT STRING's length
	tests := []struct {
		name string
		spki string
		ok   bool
	}{
		{"canonical", k.spki, true},
		{"PEM", "-----BEGIN PUBLIC KEY-----\n" + k.spki + "\n-----END PUBLIC KEY-----\n", true},
		{"surrounding spaces", " " + k.spki + "\n", true},
		{"point off the curve", base64.StdEncoding.EncodeToString(offCurve), false},
		{"another DER header", base64.StdEncoding.EncodeToString(badPrefix), false},
		{"unpadded", strings.TrimRight(k.spki, "="), false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := keyPoint(tt.spki)
			_, perr := ParsePublicKey(tt.spki)
			if (err == nil) != tt.ok || (perr == nil) != tt.ok {
				t.Fatalf("keyPoint error %v, ParsePublicKey error %v; want ok %v", err, perr, tt.ok)
			}
			if tt.ok && !bytes.Equal(got, k.point) {
				t.Fatalf("point %x, want %x", got, k.point)
			}
		})
	}
}
