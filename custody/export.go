package custody

import (
	"context"
	"crypto/ecdh"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/policy"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/wallet"
)

// exportInput is the body of POST /v1/wallets/{id}/export.
type exportInput struct {
	sealedTo
	ExportSeedPhrase *bool `json:"export_seed_phrase"`
}

// Export is POST /v1/wallets/{id}/export. Only the owner's threshold may
// export (an additional signer may only sign, and a wallet without an owner
// cannot be exported at all: the app's credentials alone must never be
// enough to take a key out); the wallet's exportPrivateKey or
// exportSeedPhrase policy rules apply. The plaintext (the 0x-hex private key
// or the BIP-39 mnemonic) exists only HPKE-encrypted to the recipient key
// outside this function, and only after the export and exported_at are
// durably recorded.
func (s *Service) Export(ctx context.Context, c Call, id string, body []byte) (json.RawMessage, error) {
	var in exportInput
	if err := DecodeBody(body, &in); err != nil {
		return nil, err
	}
	recipient, err := in.key()
	if err != nil {
		return nil, err
	}
	seed := in.ExportSeedPhrase != nil && *in.ExportSeedPhrase
	method, what := policy.MethodExportPrivateKey, "private key"
	if seed {
		method, what = policy.MethodExportSeedPhrase, "seed phrase"
	}

	w, err := loadStoredWallet(ctx, s.st, c.App, id)
	if err != nil {
		return nil, err
	}
	if w.ArchivedAt != nil {
		return nil, errorf(Invalid, "Wallet %s is archived and cannot be exported.", id)
	}
	if w.OwnerID == nil {
		return nil, errorf(Forbidden, "Wallet %s has no owner: export needs an owner's approval, never the app's credentials alone. Give the wallet an owner first.", id)
	}
	p, err := s.signingPrincipal(ctx, s.st, c.App, w, c.Signed)
	if err != nil {
		return nil, err
	}
	if !p.owner {
		return nil, errorf(Forbidden, "Additional signers may only sign; to export wallet %s its owner must approve.", id)
	}
	// A retry under an idempotency key gets the stored response only once
	// it has passed the same authorization as the original.
	if out, ok, err := s.Replayed(ctx, c); err != nil || ok {
		return out, err
	}
	if seed && w.entropyType != "hd" {
		return nil, errorf(Invalid, "export_seed_phrase: wallet %s was imported from a private key and has no seed phrase; export its private key instead.", id)
	}
	state := p.state(w)
	s.authorized()
	pin := policy.Input{AppID: c.App, WalletID: id, PolicyIDs: p.policies(w), Request: &wallet.Request{Method: method}}
	dec, err := s.policy.Evaluate(ctx, pin)
	if err != nil {
		return nil, fmt.Errorf("policy evaluation for wallet %s: %w", id, err)
	}
	if !dec.Allowed {
		return nil, s.policyDenied(ctx, c, "wallet.export", id, method, p, dec)
	}

	box, err := s.exportBox(ctx, w, seed, recipient)
	if err != nil {
		return nil, err
	}
	detail := map[string]any{
		"what": what, "principal": p.String(), "policy": dec,
		"recipient": recipientFingerprint(recipient), "key_use": "unseal wallet " + map[bool]string{true: "entropy", false: "key"}[seed],
	}
	g := &releaseGate{s: s, c: c, action: "wallet.export", walletID: id, p: p, state: state, pin: pin, detail: detail}
	out, err := s.commit(ctx, action{
		call: c, name: "wallet.export", target: id, detail: detail, replay: true,
		response: func(tx *store.Tx) (any, error) {
			if err := g.check(ctx, tx); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`UPDATE wallets SET exported_at = ? WHERE id = ?`, s.nowMS(), id); err != nil {
				return nil, err
			}
			return box, nil
		},
	})
	if err != nil {
		return nil, g.refusal(ctx, err)
	}
	s.observer().PolicyDecision(true)
	return out, nil
}

// exportBox unseals what is exported and encrypts it to the recipient,
// zeroing every plaintext copy Cachet holds.
func (s *Service) exportBox(ctx context.Context, w *storedWallet, seed bool, recipient *ecdh.PublicKey) (hpkebox.Box, error) {
	var text []byte
	if seed {
		entropy, err := s.keys.Unseal(ctx, keys.PurposeWallet, w.sealedEntropy, aadFor(w.ID, "entropy"))
		if err != nil {
			return hpkebox.Box{}, fmt.Errorf("unseal wallet %s: %w", w.ID, err)
		}
		m, err := wallet.Mnemonic(entropy)
		keys.Zero(entropy)
		if err != nil {
			return hpkebox.Box{}, fmt.Errorf("wallet %s entropy: %w", w.ID, err)
		}
		// The mnemonic is a Go string (go-bip39 builds it so) and cannot be
		// cleared; the copy sealed here can.
		text = []byte(m)
	} else {
		priv, err := s.keys.Unseal(ctx, keys.PurposeWallet, w.sealedKey, aadFor(w.ID, "key"))
		if err != nil {
			return hpkebox.Box{}, fmt.Errorf("unseal wallet %s: %w", w.ID, err)
		}
		text = make([]byte, 2+hex.EncodedLen(len(priv)))
		copy(text, "0x")
		hex.Encode(text[2:], priv)
		keys.Zero(priv)
	}
	box, err := hpkebox.SealBox(recipient, text)
	keys.Zero(text)
	if err != nil {
		return hpkebox.Box{}, fmt.Errorf("encrypt export of wallet %s: %w", w.ID, err)
	}
	return box, nil
}
