package wallet

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/cosmos/go-bip39"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
)

// loadJSON decodes a fixture strictly: unknown fields fail the test, so a
// typo in a fixture cannot silently skip a check.
func loadJSON(t *testing.T, name string, v any) {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	if err != nil {
		t.Fatalf("bad hex in fixture: %v", err)
	}
	return b
}

// TestBIP39Vectors checks the BIP-39 layer against Trezor's reference
// vectors: entropy ↔ mnemonic through this package, and mnemonic → seed →
// BIP-32 master key through the libraries DeriveKey builds on (the vectors
// use passphrase "TREZOR"; Cachet itself always uses the empty passphrase).
func TestBIP39Vectors(t *testing.T) {
	var fx struct {
		Source     string      `json:"source"`
		Passphrase string      `json:"passphrase"`
		Vectors    [][4]string `json:"vectors"`
	}
	loadJSON(t, "bip39-trezor.json", &fx)
	if len(fx.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range fx.Vectors {
		entropy, mnemonic, seed, xprv := mustHex(t, v[0]), v[1], v[2], v[3]
		t.Run(v[0], func(t *testing.T) {
			m, err := Mnemonic(entropy)
			if err != nil {
				t.Fatal(err)
			}
			if m != mnemonic {
				t.Errorf("Mnemonic = %q, want %q", m, mnemonic)
			}
			e, err := EntropyFromMnemonic(mnemonic)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(e, entropy) {
				t.Errorf("EntropyFromMnemonic = %x, want %x", e, entropy)
			}
			s := bip39.NewSeed(mnemonic, fx.Passphrase)
			if hex.EncodeToString(s) != seed {
				t.Errorf("seed = %x, want %s", s, seed)
			}
			master, err := hdkeychain.NewMaster(s, &chaincfg.MainNetParams)
			if err != nil {
				t.Fatal(err)
			}
			if master.String() != xprv {
				t.Errorf("master = %s, want %s", master.String(), xprv)
			}
		})
	}
}

type bip44Fixture struct {
	Source   string `json:"source"`
	Mnemonic string `json:"mnemonic"`
	Entropy  string `json:"entropy"`
	Seed     string `json:"seed"`
	Accounts []struct {
		Index      uint32 `json:"index"`
		PrivateKey string `json:"private_key"`
		Address    string `json:"address"`
	} `json:"accounts"`
}

func TestBIP44EthereumVector(t *testing.T) {
	var fx bip44Fixture
	loadJSON(t, "bip44-ethereum.json", &fx)
	entropy := mustHex(t, fx.Entropy)
	if s := bip39.NewSeed(fx.Mnemonic, ""); hex.EncodeToString(s) != fx.Seed {
		t.Fatalf("seed = %x, want %s", s, fx.Seed)
	}
	for _, a := range fx.Accounts {
		want := common.HexToAddress(a.Address)
		check := func(name string, priv []byte, addr common.Address, err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if hexutil.Encode(priv) != a.PrivateKey {
				t.Errorf("%s index %d: key %x, want %s", name, a.Index, priv, a.PrivateKey)
			}
			if addr != want || addr.Hex() != a.Address {
				t.Errorf("%s index %d: address %s, want %s", name, a.Index, addr.Hex(), a.Address)
			}
			if got, err := AddressOf(priv); err != nil || got != want {
				t.Errorf("%s: AddressOf = %s, %v", name, got.Hex(), err)
			}
		}
		priv, addr, err := DeriveKeyAt(entropy, a.Index)
		check("DeriveKeyAt", priv, addr, err)
		priv, addr, err = DeriveFromMnemonic(fx.Mnemonic, a.Index)
		check("DeriveFromMnemonic", priv, addr, err)
		// BIP-39 hashes the phrase text; whitespace must be normalised
		// or an import with a trailing newline derives another wallet.
		priv, addr, err = DeriveFromMnemonic("  "+strings.ReplaceAll(fx.Mnemonic, " ", " \t ")+"\n", a.Index)
		check("DeriveFromMnemonic (messy whitespace)", priv, addr, err)
		if a.Index == 0 {
			priv, addr, err = DeriveKey(entropy)
			check("DeriveKey", priv, addr, err)
		}
	}
}

func TestNewEntropy(t *testing.T) {
	a, err := NewEntropy()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewEntropy()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != EntropySize || len(b) != EntropySize {
		t.Fatalf("sizes %d, %d", len(a), len(b))
	}
	if bytes.Equal(a, b) {
		t.Fatal("two entropies are equal")
	}
	m, err := Mnemonic(a)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Fields(m)); n != 12 {
		t.Fatalf("mnemonic has %d words", n)
	}
	p1, a1, err := DeriveKey(a)
	if err != nil {
		t.Fatal(err)
	}
	p2, a2, err := DeriveFromMnemonic(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p1, p2) || a1 != a2 {
		t.Fatal("DeriveKey and DeriveFromMnemonic disagree")
	}
}

func TestKeyErrors(t *testing.T) {
	n := crypto.S256().Params().N.Bytes()
	tests := []struct {
		name string
		run  func() error
		want error
	}{
		{"entropy 15 bytes", func() error { _, err := Mnemonic(make([]byte, 15)); return err }, ErrInvalidEntropy},
		{"entropy 33 bytes", func() error { _, _, err := DeriveKey(make([]byte, 33)); return err }, ErrInvalidEntropy},
		{"entropy empty", func() error { _, _, err := DeriveKey(nil); return err }, ErrInvalidEntropy},
		{"mnemonic bad checksum", func() error {
			_, err := EntropyFromMnemonic(strings.Repeat("abandon ", 12))
			return err
		}, ErrInvalidMnemonic},
		{"mnemonic unknown word", func() error {
			_, _, err := DeriveFromMnemonic(strings.Repeat("abandon ", 11)+"aboutt", 0)
			return err
		}, ErrInvalidMnemonic},
		{"mnemonic uppercase", func() error {
			_, _, err := DeriveFromMnemonic(strings.ToUpper(strings.Repeat("abandon ", 11)+"about"), 0)
			return err
		}, ErrInvalidMnemonic},
		{"mnemonic 11 words", func() error {
			_, _, err := DeriveFromMnemonic(strings.Repeat("abandon ", 10)+"about", 0)
			return err
		}, ErrInvalidMnemonic},
		{"mnemonic 24 words bad checksum", func() error {
			_, err := EntropyFromMnemonic(strings.Repeat("abandon ", 24))
			return err
		}, ErrInvalidMnemonic},
		{"mnemonic 13 words", func() error {
			_, err := EntropyFromMnemonic(strings.Repeat("abandon ", 12) + "about")
			return err
		}, ErrInvalidMnemonic},
		{"key 31 bytes", func() error { _, err := AddressOf(make([]byte, 31)); return err }, ErrInvalidKey},
		{"key zero", func() error { _, err := AddressOf(make([]byte, 32)); return err }, ErrInvalidKey},
		{"key equal to N", func() error { _, err := AddressOf(n); return err }, ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), "abandon") || strings.Contains(err.Error(), "ABANDON") {
				t.Fatalf("error quotes the mnemonic: %v", err)
			}
		})
	}
	t.Run("hardened index", func(t *testing.T) {
		if _, _, err := DeriveKeyAt(make([]byte, 16), hdkeychain.HardenedKeyStart); err == nil {
			t.Fatal("index 2^31 accepted")
		}
	})
}
