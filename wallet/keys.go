package wallet

import (
	"crypto/ecdsa"
	"crypto/rand"
	"fmt"
	"math/big"
	"strings"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/cosmos/go-bip39"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// EntropySize is the size of the entropy NewEntropy creates: 128 bits, a
// 12-word BIP-39 mnemonic, which is what Privy's export returns for wallets it
// generated.
const EntropySize = 16

// bip44Ethereum is the hardened prefix of m/44'/60'/0'/0 (BIP-44 purpose,
// SLIP-44 coin type 60, account 0, external chain); the address index follows.
var bip44Ethereum = []uint32{
	hdkeychain.HardenedKeyStart + 44,
	hdkeychain.HardenedKeyStart + 60,
	hdkeychain.HardenedKeyStart + 0,
	0,
}

// NewEntropy returns EntropySize bytes from crypto/rand: the wallet's root
// secret. The caller seals it and zeroes the slice.
func NewEntropy() ([]byte, error) {
	e := make([]byte, EntropySize)
	if _, err := rand.Read(e); err != nil {
		return nil, fmt.Errorf("wallet: reading entropy: %w", err)
	}
	return e, nil
}

// Mnemonic encodes entropy (16 to 32 bytes in steps of 4) as a BIP-39 English
// mnemonic, the plaintext of a seed-phrase export. The result is a Go string
// and cannot be zeroed; callers should keep it only as long as the export.
func Mnemonic(entropy []byte) (string, error) {
	if err := checkWordList(); err != nil {
		return "", err
	}
	m, err := bip39.NewMnemonic(entropy)
	if err != nil {
		return "", ErrInvalidEntropy
	}
	return m, nil
}

// EntropyFromMnemonic validates a BIP-39 English mnemonic (any run of
// whitespace between words) and returns its entropy, so that an imported HD
// wallet can be stored exactly like a generated one.
func EntropyFromMnemonic(mnemonic string) ([]byte, error) {
	if err := checkWordList(); err != nil {
		return nil, err
	}
	m := normalizeMnemonic(mnemonic)
	// go-bip39 (cosmos) checks the words and the checksum and returns the
	// mnemonic's 11-bit word indexes as one big-endian number, entropy ||
	// checksum, but has no call for the entropy alone. The checksum is the
	// low ENT/32 bits, so shifting them out leaves the entropy; turning it
	// back into words must give the phrase again, which rules out any
	// misreading of the library's padding.
	words := len(strings.Fields(m))
	ec, err := bip39.MnemonicToByteArray(m)
	if err != nil {
		// The library error may quote a word of the phrase; drop it.
		return nil, ErrInvalidMnemonic
	}
	defer clear(ec)
	entBits := words * 11 * 32 / 33 // ENT + ENT/32 = 11 * words
	n := new(big.Int).SetBytes(ec)
	n.Rsh(n, uint(words*11-entBits))
	e := n.FillBytes(make([]byte, entBits/8))
	n.SetInt64(0)
	back, err := bip39.NewMnemonic(e)
	if err != nil || back != m {
		clear(e)
		return nil, ErrInvalidMnemonic
	}
	return e, nil
}

// DeriveKey derives the wallet's signing key from its entropy: BIP-39 seed
// with the empty passphrase, then BIP-32 along m/44'/60'/0'/0/0. It returns
// the 32-byte private key, which the caller seals and zeroes, and its address.
func DeriveKey(entropy []byte) (priv []byte, address common.Address, err error) {
	return DeriveKeyAt(entropy, 0)
}

// DeriveKeyAt is DeriveKey for address index index (m/44'/60'/0'/0/index).
// index must be below 2^31 (a non-hardened index).
//
// What is zeroed: the 64-byte seed, every BIP-32 extended key on the path
// (ExtendedKey.Zero clears key, chain code and public key) and the btcec
// private key scalar.
//
// What the libraries keep and cannot be zeroed from here, left for the
// garbage collector: the mnemonic as a Go string and go-bip39's []byte copy of
// it (go-bip39 hashes words, not entropy, so the phrase must exist as text);
// PBKDF2-HMAC-SHA512 state inside bip39.NewSeed; the big.Int and HMAC
// intermediates inside hdkeychain.NewMaster and ExtendedKey.Derive. This is
// one reason the daemon derives once, at creation, and stores the derived key
// sealed instead of re-deriving per signature (BenchmarkDeriveKey shows the
// other: PBKDF2's 2048 rounds).
func DeriveKeyAt(entropy []byte, index uint32) (priv []byte, address common.Address, err error) {
	m, err := Mnemonic(entropy)
	if err != nil {
		return nil, common.Address{}, err
	}
	seed := bip39.NewSeed(m, "")
	defer clear(seed)
	return deriveFromSeed(seed, index)
}

// DeriveFromMnemonic derives the key at m/44'/60'/0'/0/index from a BIP-39
// English mnemonic with the empty passphrase, for HD wallet import. The phrase
// is checked (words and checksum) and whitespace is normalised to single
// spaces first, because BIP-39 hashes the phrase text: a stray double space or
// trailing newline would otherwise silently give another wallet.
func DeriveFromMnemonic(mnemonic string, index uint32) (priv []byte, address common.Address, err error) {
	if err := checkWordList(); err != nil {
		return nil, common.Address{}, err
	}
	m := normalizeMnemonic(mnemonic)
	seed, err := bip39.NewSeedWithErrorChecking(m, "")
	if err != nil {
		return nil, common.Address{}, ErrInvalidMnemonic
	}
	defer clear(seed)
	return deriveFromSeed(seed, index)
}

// AddressOf returns the Ethereum address of a 32-byte secp256k1 private key.
func AddressOf(priv []byte) (common.Address, error) {
	var addr common.Address
	err := withKey(priv, func(k *ecdsa.PrivateKey) error {
		addr = crypto.PubkeyToAddress(k.PublicKey)
		return nil
	})
	return addr, err
}

func deriveFromSeed(seed []byte, index uint32) ([]byte, common.Address, error) {
	if index >= hdkeychain.HardenedKeyStart {
		return nil, common.Address{}, fmt.Errorf("wallet: address index %d is not below 2^31", index)
	}
	// The network parameters only choose the version bytes of serialised
	// extended keys, which are never serialised here.
	k, err := hdkeychain.NewMaster(seed, &chaincfg.MainNetParams)
	if err != nil {
		return nil, common.Address{}, fmt.Errorf("wallet: BIP-32 master key: %w", err)
	}
	for _, i := range append(append([]uint32(nil), bip44Ethereum...), index) {
		child, err := k.Derive(i)
		k.Zero()
		if err != nil {
			// ErrInvalidChild has probability below 2^-127 per step.
			return nil, common.Address{}, fmt.Errorf("wallet: BIP-32 derivation: %w", err)
		}
		k = child
	}
	defer k.Zero()
	ec, err := k.ECPrivKey()
	if err != nil {
		return nil, common.Address{}, fmt.Errorf("wallet: BIP-32 private key: %w", err)
	}
	priv := ec.Serialize()
	ec.Zero()
	addr, err := AddressOf(priv)
	if err != nil {
		clear(priv)
		return nil, common.Address{}, err
	}
	return priv, addr, nil
}

// withKey parses priv into an ecdsa.PrivateKey for the duration of fn and
// then clears the scalar's words. go-ethereum's crypto.Sign copies the scalar
// into a padded buffer and zeroes that itself.
func withKey(priv []byte, fn func(*ecdsa.PrivateKey) error) error {
	if len(priv) != 32 {
		return ErrInvalidKey
	}
	k, err := crypto.ToECDSA(priv)
	if err != nil {
		return ErrInvalidKey
	}
	// D is deprecated for NIST curves, but go-ethereum's secp256k1 keys
	// exist only as D (crypto/ecdsa's replacement API has no secp256k1), and
	// clearing its words is the only way to wipe the scalar.
	//lint:ignore SA1019 see above
	defer clear(k.D.Bits())
	return fn(k)
}

// withScalar is withKey without the public point: go-ethereum's signing
// (crypto.Sign, types.SignTx, types.SignSetCode) reads only D and the curve.
func withScalar(priv []byte, fn func(*ecdsa.PrivateKey) error) error {
	if len(priv) != 32 {
		return ErrInvalidKey
	}
	d := new(big.Int).SetBytes(priv)
	if d.Sign() == 0 || d.Cmp(crypto.S256().Params().N) >= 0 {
		return ErrInvalidKey
	}
	defer clear(d.Bits())
	//lint:ignore SA1019 go-ethereum's secp256k1 keys exist only as D
	return fn(&ecdsa.PrivateKey{PublicKey: ecdsa.PublicKey{Curve: crypto.S256()}, D: d})
}

func normalizeMnemonic(m string) string {
	return strings.Join(strings.Fields(m), " ")
}

// checkWordList guards against another package in the binary having
// replaced bip39.WordList, which is global state: Cachet's mnemonics are
// English (go-bip39 checks the English list's CRC-32 when it loads).
func checkWordList() error {
	l := bip39.WordList
	if len(l) != 2048 || len(bip39.EnglishWordList) != 2048 || &l[0] != &bip39.EnglishWordList[0] ||
		l[0] != "abandon" || l[2047] != "zoo" {
		return fmt.Errorf("wallet: go-bip39 word list is not English (bip39.WordList was replaced)")
	}
	return nil
}
