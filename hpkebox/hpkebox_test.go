package hpkebox

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/hex"
	"errors"
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

// RFC 9180 appendix A.5.1 (DHKEM(P-256, HKDF-SHA256), HKDF-SHA256,
// ChaCha20Poly1305, base mode), A.5.1.1 sequence number 0: the recipient
// side of the suite this package fixes must open the RFC's ciphertext.
func TestRFC9180A51(t *testing.T) {
	skRm := unhex(t, "a4d1c55836aa30f9b3fbb6ac98d338c877c2867dd3a77396d13f68d3ab150d3b")
	pkRm := unhex(t, "04a697bffde9405c992883c5c439d6cc358170b51af72812333b015621dc0f40bad9bb726f68a5c013806a790ec716ab8669f84f6b694596c2987cf35baba2a006")
	enc := unhex(t, "04c07836a0206e04e31d8ae99bfd549380b072a1b1b82e563c935c095827824fc1559eac6fb9e3c70cd3193968994e7fe9781aa103f5b50e934b5b2f387e381291")
	info := unhex(t, "4f6465206f6e2061204772656369616e2055726e")
	pt := unhex(t, "4265617574792069732074727574682c20747275746820626561757479")
	aad := unhex(t, "436f756e742d30")
	ct := unhex(t, "6469c41c5c81d3aa85432531ecf6460ec945bde1eb428cb2fedf7a29f5a685b4ccb0d057f03ea2952a27bb458b")

	priv, err := ecdh.P256().NewPrivateKey(skRm)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(priv.PublicKey().Bytes(), pkRm) {
		t.Fatal("skRm does not give pkRm")
	}
	got, err := open(priv, enc, info, aad, ct)
	if err != nil {
		t.Fatalf("open RFC 9180 A.5.1.1 seq 0: %v", err)
	}
	if !bytes.Equal(got, pt) {
		t.Fatalf("plaintext %x, want %x", got, pt)
	}
	// The same ciphertext must not open with the wrong AAD or info: the
	// suite really binds them.
	if _, err := open(priv, enc, info, []byte("Count-1"), ct); !errors.Is(err, ErrOpen) {
		t.Fatalf("wrong aad: %v, want ErrOpen", err)
	}
	if _, err := open(priv, enc, nil, aad, ct); !errors.Is(err, ErrOpen) {
		t.Fatalf("wrong info: %v, want ErrOpen", err)
	}
}

func TestSuiteIDs(t *testing.T) {
	if kem().ID() != KEMID || hpke.HKDFSHA256().ID() != KDFID || hpke.ChaCha20Poly1305().ID() != AEADID {
		t.Fatalf("suite ids %#x %#x %#x", kem().ID(), hpke.HKDFSHA256().ID(), hpke.ChaCha20Poly1305().ID())
	}
}

func TestRoundTripAndRefusals(t *testing.T) {
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := GenerateKey()
	msg := []byte("0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
	box, err := SealBox(priv.PublicKey(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if box.EncryptionType != "HPKE" {
		t.Fatalf("encryption_type %q", box.EncryptionType)
	}
	got, err := OpenBox(priv, box.EncapsulatedKey, box.Ciphertext)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("open: %q, %v", got, err)
	}
	enc, ct, _ := Seal(priv.PublicKey(), msg)
	if len(enc) != 65 || enc[0] != 4 {
		t.Fatalf("encapsulated key is %d bytes, want the 65-byte uncompressed point", len(enc))
	}
	damaged := bytes.Clone(ct)
	damaged[0] ^= 1
	badEnc := bytes.Clone(enc)
	badEnc[10] ^= 1
	for name, tc := range map[string]struct {
		priv    *ecdh.PrivateKey
		enc, ct []byte
	}{
		"wrong key":          {other, enc, ct},
		"damaged ciphertext": {priv, enc, damaged},
		"damaged enc":        {priv, badEnc, ct},
		"short enc":          {priv, enc[:33], ct},
		"empty":              {priv, nil, nil},
		"oversize":           {priv, enc, make([]byte, MaxPlaintext+17)},
	} {
		if _, err := Open(tc.priv, tc.enc, tc.ct); !errors.Is(err, ErrOpen) {
			t.Errorf("%s: %v, want ErrOpen", name, err)
		}
	}
	if _, err := OpenBox(priv, "!!", box.Ciphertext); err == nil || errors.Is(err, ErrOpen) {
		t.Errorf("bad base64 enc: %v", err)
	}
	if _, _, err := Seal(priv.PublicKey(), make([]byte, MaxPlaintext+1)); err == nil {
		t.Error("oversize plaintext sealed")
	}
	x, _ := ecdh.X25519().GenerateKey(nil)
	if _, _, err := Seal(x.PublicKey(), msg); err == nil {
		t.Error("sealed to an X25519 key")
	}
}

func TestParseRawPublicKey(t *testing.T) {
	priv, _ := GenerateKey()
	raw := priv.PublicKey().Bytes()
	pub, err := ParseRawPublicKey(raw)
	if err != nil || !pub.Equal(priv.PublicKey()) {
		t.Fatalf("parse: %v", err)
	}
	for name, b := range map[string][]byte{
		"compressed": append([]byte{2}, raw[1:33]...),
		"short":      raw[:64],
		"prefix":     append([]byte{5}, raw[1:]...),
		"off curve":  append(bytes.Clone(raw[:64]), raw[64]^1),
	} {
		if _, err := ParseRawPublicKey(b); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
