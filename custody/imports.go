package custody

import (
	"context"
	"crypto/ecdh"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ethereum/go-ethereum/common"

	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/wallet"
)

// Entropy types of an import.
const (
	entropyHD         = "hd"
	entropyPrivateKey = "private-key"
)

// pendingImport is the one-time HPKE key of an import between its init and
// its submit (held in a oneTime).
type pendingImport struct {
	priv        *ecdh.PrivateKey
	entropyType string
	index       uint32
}

// importKey is the key of a pending import: the app and lower-case
// address, since Privy's SDK does not send an import id with its submit
// and the address is what ties the two requests together.
func importKey(app string, addr common.Address) string {
	return app + "\x00" + strings.ToLower(addr.Hex())
}

// importInitInput is the body of POST /v1/wallets/import/init.
type importInitInput struct {
	Address        string `json:"address"`
	ChainType      string `json:"chain_type"`
	EntropyType    string `json:"entropy_type"`
	EncryptionType string `json:"encryption_type"`
	Index          *int64 `json:"index"`
}

// importWalletInput is the "wallet" object of /v1/wallets/import/submit.
type importWalletInput struct {
	Address         string          `json:"address"`
	ChainType       string          `json:"chain_type"`
	EntropyType     string          `json:"entropy_type"`
	EncryptionType  string          `json:"encryption_type"`
	Ciphertext      string          `json:"ciphertext"`
	EncapsulatedKey string          `json:"encapsulated_key"`
	Index           *int64          `json:"index"`
	HPKEConfig      json.RawMessage `json:"hpke_config"`
}

// ImportInitResponse is the answer of import init.
type ImportInitResponse struct {
	EncryptionType string `json:"encryption_type"`
	// EncryptionPublicKey is base64 of the raw uncompressed point, not
	// SPKI: Privy's SDK deserializes it directly as a KEM public key.
	EncryptionPublicKey string `json:"encryption_public_key"`
}

// checkImportTarget checks the fields init and submit share and returns the
// address and index.
func checkImportTarget(prefix, address, chainType, entropyType, encryptionType string, index *int64) (common.Address, uint32, error) {
	if chainType != "ethereum" {
		return common.Address{}, 0, errorf(Invalid, "%schain_type: %q is not supported; Cachet holds ethereum wallets.", prefix, clip.To(chainType, 32))
	}
	if err := checkEncryptionType(encryptionType); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Message = prefix + e.Message
		}
		return common.Address{}, 0, err
	}
	addr, err := parseAddress(prefix+"address", address)
	if err != nil {
		return common.Address{}, 0, err
	}
	switch entropyType {
	case entropyHD:
		if index == nil {
			return addr, 0, errorf(Invalid, "%sindex: required for an hd import (the address index of m/44'/60'/0'/0/index).", prefix)
		}
		if *index < 0 || *index >= 1<<31 {
			return addr, 0, errorf(Invalid, "%sindex: %d is outside 0..2147483647.", prefix, *index)
		}
		return addr, uint32(*index), nil
	case entropyPrivateKey:
		if index != nil {
			return addr, 0, errorf(Invalid, "%sindex: only an hd import has an index.", prefix)
		}
		return addr, 0, nil
	}
	return addr, 0, errorf(Invalid, "%sentropy_type: must be \"hd\" or \"private-key\".", prefix)
}

// parseAddress accepts a 0x-prefixed 20-byte hex address; one in mixed
// case must carry a valid EIP-55 checksum, since a mixed-case address with
// a wrong one is a typo.
func parseAddress(field, s string) (common.Address, error) {
	if !strings.HasPrefix(s, "0x") || !common.IsHexAddress(s) {
		return common.Address{}, errorf(Invalid, "%s: not a 0x-prefixed 20-byte hex address.", field)
	}
	addr := common.HexToAddress(s)
	body := s[2:]
	if body != strings.ToLower(body) && body != strings.ToUpper(body) && s != addr.Hex() {
		return common.Address{}, errorf(Invalid, "%s: the mixed-case address fails its EIP-55 checksum.", field)
	}
	return addr, nil
}

// liveWalletAt refuses a second live wallet for an address the app already
// holds: two wallets with one key would each have their own owner and
// policies, and either could sign for the other.
func liveWalletAt(ctx context.Context, q querier, app string, addr common.Address) error {
	var id string
	err := q.QueryRowContext(ctx, `SELECT id FROM wallets WHERE app_id = ? AND address = ? AND archived_at IS NULL`, app, addr.Hex()).Scan(&id)
	if err == nil {
		return errorf(Conflict, "This app already holds address %s as wallet %s.", addr.Hex(), id)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	return nil
}

// ImportInit is POST /v1/wallets/import/init: a one-time HPKE key pair for
// one address, valid for ImportKeyLifetime and one submit.
func (s *Service) ImportInit(ctx context.Context, c Call, body []byte) (json.RawMessage, error) {
	var in importInitInput
	if err := DecodeBody(body, &in); err != nil {
		return nil, err
	}
	addr, index, err := checkImportTarget("", in.Address, in.ChainType, in.EntropyType, in.EncryptionType, in.Index)
	if err != nil {
		return nil, err
	}
	if err := liveWalletAt(ctx, s.st, c.App, addr); err != nil {
		return nil, err
	}
	priv, err := hpkebox.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("import key: %w", err)
	}
	now := s.now()
	expires := now.Add(s.opts.ImportKeyLifetime)
	p := pendingImport{priv: priv, entropyType: in.EntropyType, index: index}
	resp := ImportInitResponse{EncryptionType: hpkebox.EncryptionType, EncryptionPublicKey: base64.StdEncoding.EncodeToString(priv.PublicKey().Bytes())}
	out, err := s.commit(ctx, action{
		call: c, name: "wallet.import_init", target: addr.Hex(),
		detail:   map[string]any{"entropy_type": in.EntropyType, "index": index, "expires_at": expires.UnixMilli()},
		response: func(*store.Tx) (any, error) { return resp, nil },
	})
	if err != nil {
		return nil, err
	}
	if s.imports.put(importKey(c.App, addr), p, expires, now, limit{c.App, s.opts.MaxPendingImports}) != nil {
		return nil, errorf(Conflict, "This app already has %d wallet imports waiting for their submit; submit or let them expire first.", s.opts.MaxPendingImports)
	}
	return out, nil
}

// ImportSubmit is POST /v1/wallets/import/submit: it opens the key with the
// address's one-time import key, checks that it is the key of that address,
// seals it through the hardware and stores the wallet with its owner,
// policies and signers as a created one. Nothing is stored unless every
// check passes.
func (s *Service) ImportSubmit(ctx context.Context, c Call, body []byte) (json.RawMessage, error) {
	raw, err := rawObject(body)
	if err != nil {
		return nil, err
	}
	wraw, ok := raw["wallet"]
	delete(raw, "wallet")
	// The other members first, so that a misspelt "wallet" is named as an
	// unknown member rather than reported missing.
	in, err := parseWalletFields(raw, true, false)
	if err != nil {
		return nil, err
	}
	if !ok || string(wraw) == "null" {
		return nil, errorf(Invalid, "wallet: required.")
	}
	var wi importWalletInput
	if err := decodeAt(wraw, "wallet", &wi); err != nil {
		return nil, err
	}
	addr, index, err := checkImportTarget("wallet.", wi.Address, wi.ChainType, wi.EntropyType, wi.EncryptionType, wi.Index)
	if err != nil {
		return nil, err
	}
	if err := checkHPKEConfig(wi.HPKEConfig); err != nil {
		return nil, err
	}
	enc, err := base64.StdEncoding.DecodeString(wi.EncapsulatedKey)
	if err != nil || len(enc) == 0 {
		return nil, errorf(Invalid, "wallet.encapsulated_key: not standard base64.")
	}
	ct, err := base64.StdEncoding.DecodeString(wi.Ciphertext)
	if err != nil || len(ct) == 0 {
		return nil, errorf(Invalid, "wallet.ciphertext: not standard base64.")
	}
	p, ok := s.imports.take(importKey(c.App, addr), s.now())
	if !ok {
		return nil, errorf(Invalid, "wallet.address: no import is waiting for %s. Call /v1/wallets/import/init first; its key lasts %s and serves one submit.", addr.Hex(), s.opts.ImportKeyLifetime)
	}
	if p.entropyType != wi.EntropyType || p.index != index {
		return nil, errorf(Invalid, "wallet.entropy_type: the import of %s was initialized as %s (index %d); nothing was stored. Start again with import/init.", addr.Hex(), p.entropyType, p.index)
	}
	plain, err := hpkebox.Open(p.priv, enc, ct)
	if err != nil {
		return nil, errorf(Invalid, "wallet.ciphertext: does not decrypt with the key import/init issued for %s; nothing was stored. Start again with import/init.", addr.Hex())
	}
	defer keys.Zero(plain)

	var entropy, priv []byte
	var got common.Address
	switch wi.EntropyType {
	case entropyPrivateKey:
		if len(plain) != 32 {
			return nil, errorf(Invalid, "wallet.ciphertext: a private-key import carries the 32-byte secp256k1 key, not %d bytes.", len(plain))
		}
		priv = append([]byte(nil), plain...)
		if got, err = wallet.AddressOf(priv); err != nil {
			keys.Zero(priv)
			return nil, errorf(Invalid, "wallet.ciphertext: not a valid secp256k1 private key.")
		}
	case entropyHD:
		// The mnemonic arrives as bytes; go-bip39 needs it as a string,
		// which cannot be cleared afterwards (see wallet.DeriveKeyAt).
		if entropy, err = wallet.EntropyFromMnemonic(string(plain)); err != nil {
			return nil, errorf(Invalid, "wallet.ciphertext: not a valid BIP-39 English mnemonic.")
		}
		if priv, got, err = wallet.DeriveKeyAt(entropy, index); err != nil {
			keys.Zero(entropy)
			return nil, fmt.Errorf("derive imported wallet: %w", err)
		}
	}
	defer keys.Zero(priv)
	defer keys.Zero(entropy)
	if got != addr {
		return nil, errorf(Invalid, "wallet.address: the imported key is the key of another address; nothing was stored.")
	}
	nw, err := s.sealWallet(ctx, newID(), entropy, priv, addr)
	if err != nil {
		return nil, err
	}
	nw.imported, nw.hdIndex = true, index
	return s.commit(ctx, action{
		call: c, name: "wallet.import", target: nw.id,
		detail: map[string]any{"address": addr.Hex(), "entropy_type": wi.EntropyType, "index": index,
			"key_uses": []string{"seal wallet entropy", "seal wallet key"}},
		response: func(tx *store.Tx) (any, error) {
			if err := liveWalletAt(ctx, txq{tx}, c.App, addr); err != nil {
				return nil, err
			}
			return s.insertWallet(ctx, tx, c, in, nw)
		},
	})
}

// checkHPKEConfig accepts only the suite Cachet opens: Privy lets importers
// name other AEADs, info and AAD for keys encrypted by other providers.
func checkHPKEConfig(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var cfg struct {
		AEADAlgorithm *string `json:"aead_algorithm"`
		Info          *string `json:"info"`
		AAD           *string `json:"aad"`
	}
	if err := decodeAt(raw, "wallet.hpke_config", &cfg); err != nil {
		return err
	}
	if cfg.AEADAlgorithm != nil && *cfg.AEADAlgorithm != "CHACHA20_POLY1305" {
		return errorf(Invalid, "wallet.hpke_config.aead_algorithm: Cachet opens imports with CHACHA20_POLY1305 only.")
	}
	if (cfg.Info != nil && *cfg.Info != "") || (cfg.AAD != nil && *cfg.AAD != "") {
		return errorf(Invalid, "wallet.hpke_config: Cachet opens imports with empty info and aad only.")
	}
	return nil
}
