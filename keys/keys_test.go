package keys

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 5869 appendix A.1 (test case 1): the PRK is 32 bytes, and with L = 32
// HKDF-Expand's output is the first block T(1) of the published OKM.
func TestExpandRFC5869(t *testing.T) {
	prk := unhex(t, "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
	info := unhex(t, "f0f1f2f3f4f5f6f7f8f9")
	want := unhex(t, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
	got, err := Expand(prk, info)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Expand = %x, %v; want %x", got, err, want)
	}
	if _, err := Expand(prk[:31], info); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("short root: %v", err)
	}
}

func TestDerivationLabelsAreDistinct(t *testing.T) {
	root := make([]byte, RootSize)
	rand.Read(root)
	seen := map[string]string{}
	infos := map[string][]byte{
		"kek wallet":   KEKInfo(PurposeWallet),
		"kek recovery": KEKInfo(PurposeRecovery),
		"fingerprint":  FingerprintInfo(),
		"p256 audit":   P256Info(AuditKeyLabel, 0),
		"p256 audit#1": P256Info(AuditKeyLabel, 1),
		"p256 auth/a":  P256Info(AuthKeyPrefix+"a", 0),
	}
	for name, info := range infos {
		out, err := Expand(root, info)
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := seen[string(out)]; dup {
			t.Fatalf("%s and %s derive the same key", name, other)
		}
		seen[string(out)] = name
	}
	fp1, _ := Fingerprint(root)
	fp2, _ := Fingerprint(root)
	if fp1 != fp2 || len(fp1) != 32 {
		t.Fatalf("fingerprint %q not stable or not 16 bytes", fp1)
	}
}

func TestDeriveP256RejectionSampling(t *testing.T) {
	// An expand that first returns N (not a valid scalar) must make
	// DeriveP256 try the next attempt label.
	n := elliptic.P256().Params().N.FillBytes(make([]byte, 32))
	var infos []string
	k, err := DeriveP256("auth/x", func(info []byte) ([]byte, error) {
		infos = append(infos, string(info))
		if len(infos) == 1 {
			return bytes.Clone(n), nil
		}
		return bytes.Repeat([]byte{7}, 32), nil
	})
	if err != nil || k == nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0] != "cachet/v1/p256/auth/x" || infos[1] != "cachet/v1/p256/auth/x#1" {
		t.Fatalf("attempts %q", infos)
	}
	if _, err := DeriveP256("Bad Label", nil); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("bad label: %v", err)
	}
}

func TestValidLabel(t *testing.T) {
	for label, ok := range map[string]bool{
		"audit": true, "auth/k1": true, "auth/bot-1.v2": true,
		"": false, "/auth": false, "Auth": false, "auth/../audit": false, "a b": false,
		string(make([]byte, 101)): false,
	} {
		if err := ValidLabel(label); (err == nil) != ok {
			t.Errorf("ValidLabel(%q) = %v, want ok=%v", label, err, ok)
		}
	}
}

func TestEnvelope(t *testing.T) {
	env, err := NewEnvelope(PurposeWallet, 7)
	if err != nil {
		t.Fatal(err)
	}
	env2, _ := NewEnvelope(PurposeWallet, 7)
	if bytes.Equal(env.IV, env2.IV) || len(env.IV) != IVSize {
		t.Fatal("IVs repeat or have the wrong size")
	}
	env.Ciphertext = bytes.Repeat([]byte{0xAA}, 20)
	blob := env.Encode()
	got, err := ParseEnvelope(PurposeWallet, blob)
	if err != nil || got.Generation != 7 || !bytes.Equal(got.IV, env.IV) || !bytes.Equal(got.Ciphertext, env.Ciphertext) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if !bytes.Equal(got.AAD([]byte("x")), env.AAD([]byte("x"))) || !bytes.HasSuffix(got.AAD([]byte("x")), []byte("x")) {
		t.Fatal("AAD differs between sealer and opener")
	}
	if g, _ := BlobGeneration(blob); g != 7 {
		t.Fatalf("BlobGeneration = %d", g)
	}
	for name, bad := range map[string][]byte{
		"other purpose": append([]byte{'C', 1, 2}, blob[3:]...),
		"other version": append([]byte{'C', 2}, blob[2:]...),
		"not a blob":    append([]byte{'X'}, blob[1:]...),
		"generation 0":  append([]byte{'C', 1, 1, 0, 0, 0, 0}, blob[7:]...),
		"too short":     blob[:BlobOverhead-1],
	} {
		if _, err := ParseEnvelope(PurposeWallet, bad); !errors.Is(err, ErrAuthFailed) {
			t.Errorf("%s: %v, want ErrAuthFailed", name, err)
		}
	}
	if _, err := NewEnvelope("nope", 1); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("unknown purpose: %v", err)
	}
	if CheckPlaintextSize(MaxPlaintext) != nil || !errors.Is(CheckPlaintextSize(MaxPlaintext+1), ErrInvalidInput) {
		t.Fatal("CheckPlaintextSize boundary")
	}
}

func TestLowS(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := make([]byte, 32)
	n := elliptic.P256().Params().N
	for i := 0; i < 64; i++ {
		rand.Read(digest)
		r, s, _ := ecdsa.Sign(rand.Reader, k, digest)
		// Whatever S the signer chose, build the high-S form of the same
		// signature.
		var high []byte
		if s.Cmp(new(big.Int).Rsh(n, 1)) > 0 {
			high, _ = asn1.Marshal(ecdsaSig{r, s})
		} else {
			high, _ = asn1.Marshal(ecdsaSig{r, new(big.Int).Sub(n, s)})
		}
		if IsLowS(high) {
			t.Fatal("IsLowS true for a high-S signature")
		}
		low, err := LowS(high)
		if err != nil || !IsLowS(low) || !ecdsa.VerifyASN1(&k.PublicKey, digest, low) {
			t.Fatalf("LowS: %v", err)
		}
		raw := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
		der, err := RawToDER(raw)
		if err != nil || !IsLowS(der) || !ecdsa.VerifyASN1(&k.PublicKey, digest, der) {
			t.Fatalf("RawToDER: %v", err)
		}
	}
	if _, err := RawToDER(make([]byte, 63)); err == nil {
		t.Fatal("RawToDER accepted 63 bytes")
	}
	if _, err := RawToDER(make([]byte, 64)); err == nil {
		t.Fatal("RawToDER accepted r = s = 0")
	}
}
