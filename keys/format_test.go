package keys_test

import (
	"bytes"
	"crypto/aes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/cachet-custody/cachet/keys"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The test vectors of RFC 5649 section 6.
func TestKeyWrapPadRFC5649(t *testing.T) {
	kek := "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"
	for _, tc := range []struct{ name, key, wrapped string }{
		{"20 octets", "c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"7 octets", "466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := keys.WrapKeyPad(unhex(t, kek), unhex(t, tc.key))
			if err != nil || hex.EncodeToString(got) != tc.wrapped {
				t.Fatalf("WrapKeyPad = %x, %v; want %s", got, err, tc.wrapped)
			}
			back, err := keys.UnwrapKeyPad(unhex(t, kek), got)
			if err != nil || hex.EncodeToString(back) != tc.key {
				t.Fatalf("UnwrapKeyPad = %x, %v", back, err)
			}
			for i := range got {
				bad := bytes.Clone(got)
				bad[i] ^= 1
				if _, err := keys.UnwrapKeyPad(unhex(t, kek), bad); !errors.Is(err, keys.ErrAuthFailed) {
					t.Fatalf("byte %d flipped: UnwrapKeyPad = %v; want ErrAuthFailed", i, err)
				}
			}
		})
	}
	if _, err := keys.UnwrapKeyPad(make([]byte, 32), make([]byte, 12)); !errors.Is(err, keys.ErrAuthFailed) {
		t.Errorf("short input: %v", err)
	}
}

// Derive is two AES-256 blocks of the root over DeriveData, which is
// h[:15]||1||h[:15]||2; distinct labels give distinct keys and formats
// fingerprint differently.
func TestDerive(t *testing.T) {
	root := bytes.Repeat([]byte{7}, keys.RootSize)
	data := keys.DeriveData([]byte("cachet/v2/kek/wallet"))
	if len(data) != 32 || data[15] != 1 || data[31] != 2 || !bytes.Equal(data[:15], data[16:31]) {
		t.Fatalf("DeriveData = %x", data)
	}
	blk, _ := aes.NewCipher(root)
	want := make([]byte, 32)
	blk.Encrypt(want[:16], data[:16])
	blk.Encrypt(want[16:], data[16:])
	got, err := keys.Derive(root, []byte("cachet/v2/kek/wallet"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Derive = %x, %v; want %x", got, err, want)
	}
	seen := map[string]string{}
	for _, info := range [][]byte{keys.KEKInfoV2(keys.PurposeWallet), keys.KEKInfoV2(keys.PurposeRecovery), keys.WrapInfoV2(), keys.FingerprintInfoV2()} {
		k, _ := keys.Derive(root, info)
		if other, dup := seen[string(k)]; dup {
			t.Errorf("%s and %s derive the same key", info, other)
		}
		seen[string(k)] = string(info)
	}
	f1, _ := keys.FingerprintOf(keys.FormatHMAC, root)
	f2, _ := keys.FingerprintOf(keys.FormatDerive, root)
	if f1 == f2 || len(f2) != 32 {
		t.Errorf("fingerprints %s (format 1) and %s (format 2)", f1, f2)
	}
	if _, err := keys.Derive(root[:16], nil); !errors.Is(err, keys.ErrInvalidInput) {
		t.Errorf("short root: %v", err)
	}
}
