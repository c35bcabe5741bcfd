package recovery

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"testing"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

// The known-answer vectors below pin the sealed-share format for device
// clients in other languages. They are built here from the primitives the
// format names (x/crypto's hkdf, independent of the crypto/hkdf the package
// uses; argon2.IDKey; XChaCha20-Poly1305) with a fixed nonce.

var (
	vectorShare    = Share(mustHex("000102030405060708090a0b0c0d0e0f01"))
	vectorNonce    = mustHex("404142434445464748494a4b4c4d4e4f5051525354555657")
	vectorSecret   = mustHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	vectorPassword = []byte("correct horse battery staple")
	vectorKDF      = KDF{
		Algorithm: "argon2id",
		Salt:      base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x01}, 16)),
		Time:      1,
		MemoryKiB: 19456,
		Threads:   1,
	}
	vectorWallet = "wallet1"
)

// The expected sealed shares: 0x01 || nonce || ciphertext || tag.
const (
	vectorCloudSealed    = "01404142434445464748494a4b4c4d4e4f5051525354555657" + "6e795feb552fb7b9b05014d417e677c53fd1770a98e895ca0f8572296f44821076"
	vectorPasswordSealed = "01404142434445464748494a4b4c4d4e4f5051525354555657" + "5474d802d177a1bfbcb29e7f7851ed1d041ea3f7536db455f8cfeb52c872712525"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// referenceSeal builds a sealed share from the format's description.
func referenceSeal(t testing.TB, share, key, nonce []byte, aad string) []byte {
	t.Helper()
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte{0x01}, nonce...)
	return aead.Seal(out, nonce, share, []byte(aad))
}

func referenceCloudKey(t testing.TB, secret []byte) []byte {
	t.Helper()
	key := make([]byte, 32)
	if _, err := hkdf.New(sha256.New, secret, nil, []byte("cachet/v1/embedded/cloud")).Read(key); err != nil {
		t.Fatal(err)
	}
	return key
}

func referencePasswordKey(t testing.TB, password []byte, k KDF) []byte {
	t.Helper()
	salt, err := base64.StdEncoding.DecodeString(k.Salt)
	if err != nil {
		t.Fatal(err)
	}
	return argon2.IDKey(password, salt, k.Time, k.MemoryKiB, k.Threads, 32)
}

func TestSealedVectors(t *testing.T) {
	tests := []struct {
		name string
		key  []byte
		aad  string
		want string
		open func(sealed []byte) (Share, error)
	}{
		{"cloud", referenceCloudKey(t, vectorSecret), "cachet/v1/embedded/wallet1/recovery/cloud", vectorCloudSealed,
			func(sealed []byte) (Share, error) { return OpenWithSecret(sealed, vectorSecret, vectorWallet) }},
		{"password", referencePasswordKey(t, vectorPassword, vectorKDF), "cachet/v1/embedded/wallet1/recovery/password", vectorPasswordSealed,
			func(sealed []byte) (Share, error) {
				return OpenWithPassword(sealed, vectorPassword, vectorKDF, vectorWallet)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := mustHex(tt.want)
			if got := referenceSeal(t, vectorShare, tt.key, vectorNonce, tt.aad); !bytes.Equal(got, want) {
				t.Fatalf("reference construction gives %x, the vector says %x", got, want)
			}
			got, err := tt.open(want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, vectorShare) {
				t.Fatalf("opened %x, want %x", got, vectorShare)
			}
		})
	}
}

// TestSealMatchesReference checks that what Seal produces (with its own
// random nonce) is byte for byte the format's reference construction.
func TestSealMatchesReference(t *testing.T) {
	share := testShare(t, MaxEntropySize)
	cloud, err := SealWithSecret(share, vectorSecret, vectorWallet)
	if err != nil {
		t.Fatal(err)
	}
	want := referenceSeal(t, share, referenceCloudKey(t, vectorSecret), cloud[1:25], "cachet/v1/embedded/wallet1/recovery/cloud")
	if !bytes.Equal(cloud, want) {
		t.Errorf("SealWithSecret = %x, reference %x", cloud, want)
	}
	pw, err := SealWithPassword(share, vectorPassword, vectorKDF, vectorWallet)
	if err != nil {
		t.Fatal(err)
	}
	want = referenceSeal(t, share, referencePasswordKey(t, vectorPassword, vectorKDF), pw[1:25], "cachet/v1/embedded/wallet1/recovery/password")
	if !bytes.Equal(pw, want) {
		t.Errorf("SealWithPassword = %x, reference %x", pw, want)
	}
}
