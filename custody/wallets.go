package custody

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"unicode/utf8"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/wallet"
)

// Signer is an additional signer of a wallet.
type Signer struct {
	SignerID          string   `json:"signer_id"`
	OverridePolicyIDs []string `json:"override_policy_ids"`
}

// Wallet is a wallet as the API shows it.
type Wallet struct {
	ID                string   `json:"id"`
	Address           string   `json:"address"`
	ChainType         string   `json:"chain_type"`
	PublicKey         string   `json:"public_key"`
	OwnerID           *string  `json:"owner_id"`
	PolicyIDs         []string `json:"policy_ids"`
	AdditionalSigners []Signer `json:"additional_signers"`
	DisplayName       *string  `json:"display_name"`
	ExternalID        *string  `json:"external_id"`
	CreatedAt         int64    `json:"created_at"`
	ArchivedAt        *int64   `json:"archived_at"`
	ExportedAt        *int64   `json:"exported_at"`
	ImportedAt        *int64   `json:"imported_at"`
}

// Owner is the "owner" field: a key or a user, or null to remove.
type Owner struct {
	PublicKey *string `json:"public_key"`
	UserID    *string `json:"user_id"`
}

// WalletInput is the body of POST /v1/wallets and PATCH /v1/wallets/{id}.
// Presence matters on PATCH: an absent field is left alone, a null one
// cleared; presence flags record which were sent.
type WalletInput struct {
	ChainType         string
	Owner             *Owner // nil with OwnerSet: remove the owner
	OwnerSet          bool
	OwnerID           *string
	OwnerIDSet        bool
	PolicyIDs         *[]string
	AdditionalSigners *[]Signer
	DisplayName       *string
	DisplayNameSet    bool
	ExternalID        *string
}

var externalIDRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// ParseWalletInput decodes a wallet body strictly: unknown fields and wrong
// types are refused with the field's name.
func ParseWalletInput(body []byte, create bool) (WalletInput, error) {
	raw, err := rawObject(body)
	if err != nil {
		return WalletInput{}, err
	}
	in, err := parseWalletFields(raw, create, create)
	if err == nil && create && in.ChainType != "ethereum" {
		return in, errorf(Invalid, "chain_type: %q is not supported; Cachet holds ethereum wallets.", clip.To(in.ChainType, 32))
	}
	return in, err
}

// rawObject decodes a body as one JSON object with no repeated key, its
// values left raw.
func rawObject(body []byte) (map[string]json.RawMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if err := checkBody(body); err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := decodeAt(body, "", &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// parseWalletFields reads the wallet fields of a body: those PATCH may
// change, plus external_id on creation (create) and chain_type where the
// body carries it (chain).
func parseWalletFields(raw map[string]json.RawMessage, create, chain bool) (WalletInput, error) {
	var in WalletInput
	allowed := map[string]bool{"owner": true, "owner_id": true, "policy_ids": true, "additional_signers": true, "display_name": true}
	allowed["external_id"], allowed["chain_type"] = create, chain
	for k, v := range raw {
		if !allowed[k] {
			return in, errorf(Invalid, "%s: unknown field.", k)
		}
		isNull := string(bytes.TrimSpace(v)) == "null"
		var err error
		switch k {
		case "chain_type":
			err = decodeAt(v, k, &in.ChainType)
		case "owner":
			in.OwnerSet = true
			if !isNull {
				in.Owner = &Owner{}
				err = decodeAt(v, k, in.Owner)
			}
		case "owner_id":
			in.OwnerIDSet = true
			err = decodeAt(v, k, &in.OwnerID)
		case "policy_ids":
			err = decodeAt(v, k, &in.PolicyIDs)
			if isNull {
				in.PolicyIDs = &[]string{} // null clears, as for the other fields
			}
		case "additional_signers":
			var ss []Signer
			err = decodeAt(v, k, &ss)
			if ss == nil {
				ss = []Signer{} // null clears; stored and shown as [], never null
			}
			in.AdditionalSigners = &ss
		case "display_name":
			in.DisplayNameSet = true
			err = decodeAt(v, k, &in.DisplayName)
		case "external_id":
			err = decodeAt(v, k, &in.ExternalID)
		}
		if err != nil {
			return in, err
		}
	}
	if in.OwnerSet && in.OwnerIDSet && (in.Owner != nil || in.OwnerID != nil) {
		return in, errorf(Invalid, "owner and owner_id are mutually exclusive.")
	}
	if in.Owner != nil && (in.Owner.PublicKey == nil) == (in.Owner.UserID == nil) {
		return in, errorf(Invalid, "owner: give exactly one of public_key and user_id.")
	}
	if in.DisplayName != nil && utf8.RuneCountInString(*in.DisplayName) > maxWalletNameChars {
		return in, errorf(Invalid, "display_name: at most %d characters.", maxWalletNameChars)
	}
	if in.ExternalID != nil && !externalIDRE.MatchString(*in.ExternalID) {
		return in, errorf(Invalid, "external_id: 1 to 64 of [a-zA-Z0-9_-].")
	}
	if in.PolicyIDs != nil && len(*in.PolicyIDs) > 1 {
		return in, errorf(Invalid, "policy_ids: at most one policy per wallet.")
	}
	if in.AdditionalSigners != nil && len(*in.AdditionalSigners) > MaxAdditionalSigners {
		return in, errorf(Invalid, "additional_signers: at most %d signers per wallet.", MaxAdditionalSigners)
	}
	if in.AdditionalSigners != nil {
		seen := map[string]bool{}
		for i, sg := range *in.AdditionalSigners {
			if sg.SignerID == "" {
				return in, errorf(Invalid, "additional_signers[%d].signer_id: required.", i)
			}
			if seen[sg.SignerID] {
				return in, errorf(Invalid, "additional_signers[%d].signer_id: %q is listed twice.", i, sg.SignerID)
			}
			seen[sg.SignerID] = true
			if len(sg.OverridePolicyIDs) > 1 {
				return in, errorf(Invalid, "additional_signers[%d].override_policy_ids: at most one policy.", i)
			}
			if sg.OverridePolicyIDs == nil {
				(*in.AdditionalSigners)[i].OverridePolicyIDs = []string{}
			}
		}
	}
	return in, nil
}

// resolveOwner turns owner / owner_id into a quorum id, creating the
// implicit one-member quorum of a single key. "" means no owner. Wallets,
// policies, condition sets and aggregations are owned the same way.
func (s *Service) resolveOwner(ctx context.Context, tx *store.Tx, app string, owner *Owner, ownerID *string) (string, error) {
	switch {
	case owner != nil && owner.UserID != nil:
		if err := userValid(ctx, txq{tx}, app, "owner.user_id", *owner.UserID); err != nil {
			return "", err
		}
		id := newID()
		spec := quorumSpec{users: []string{*owner.UserID}, threshold: 1}
		return id, writeQuorum(tx, app, id, spec, true, s.nowMS())
	case owner != nil && owner.PublicKey != nil:
		pub, err := quorum.ParsePublicKey(*owner.PublicKey)
		if err != nil {
			return "", errorf(Invalid, "owner.public_key: %v", err)
		}
		id := newID()
		spec := quorumSpec{keys: []string{quorum.CanonicalPublicKey(pub)}, keyNames: []*string{nil}, threshold: 1}
		return id, writeQuorum(tx, app, id, spec, true, s.nowMS())
	case ownerID != nil:
		if _, err := s.loadQuorum(ctx, txq{tx}, app, *ownerID); err != nil {
			return "", errorf(Invalid, "owner_id: %s", err.Error())
		}
		return *ownerID, nil
	}
	return "", nil
}

// checkRefs checks that policies and signers named by a wallet input exist.
func (s *Service) checkRefs(ctx context.Context, tx *store.Tx, app string, in WalletInput) error {
	if in.PolicyIDs != nil {
		if err := s.policy.Exist(ctx, app, *in.PolicyIDs); err != nil {
			return errorf(Invalid, "policy_ids: %v", err)
		}
	}
	if in.AdditionalSigners != nil {
		for i, sg := range *in.AdditionalSigners {
			if _, err := s.loadQuorum(ctx, txq{tx}, app, sg.SignerID); err != nil {
				return errorf(Invalid, "additional_signers[%d].signer_id: %s", i, err.Error())
			}
			if err := s.policy.Exist(ctx, app, sg.OverridePolicyIDs); err != nil {
				return errorf(Invalid, "additional_signers[%d].override_policy_ids: %v", i, err)
			}
		}
	}
	return nil
}

func aadFor(walletID, part string) []byte { return []byte("cachet/wallet/" + walletID + "/" + part) }

// CreateWallet is POST /v1/wallets: the app's credentials alone. It
// generates 128 bits of BIP-39 entropy, derives m/44'/60'/0'/0/0 and seals
// both through the hardware before anything is written.
func (s *Service) CreateWallet(ctx context.Context, c Call, in WalletInput) (json.RawMessage, error) {
	if out, ok, err := s.Replayed(ctx, c); err != nil || ok {
		return out, err
	}
	entropy, err := wallet.NewEntropy()
	if err != nil {
		return nil, err
	}
	defer keys.Zero(entropy)
	priv, addr, err := wallet.DeriveKey(entropy)
	if err != nil {
		return nil, err
	}
	defer keys.Zero(priv)
	nw, err := s.sealWallet(ctx, newID(), entropy, priv, addr)
	if err != nil {
		return nil, err
	}
	return s.commit(ctx, action{
		call: c, name: "wallet.create", target: nw.id,
		detail: map[string]any{"address": addr.Hex(), "key_uses": []string{"seal wallet entropy", "seal wallet key"}},
		response: func(tx *store.Tx) (any, error) {
			return s.insertWallet(ctx, tx, c, in, nw)
		},
	})
}

// sealedWallet is a new wallet's key material, sealed and ready to store.
type sealedWallet struct {
	id, address, publicKey string
	sealedEntropy          []byte // empty for an imported private key
	sealedKey              []byte
	generation             uint32
	entropyType            string
	hdIndex                uint32
	imported               bool
}

// sealWallet seals a new wallet's entropy (nil for a private key without
// one) and key through the hardware, each under its own AAD.
func (s *Service) sealWallet(ctx context.Context, id string, entropy, priv []byte, addr common.Address) (sealedWallet, error) {
	nw := sealedWallet{id: id, address: addr.Hex(), sealedEntropy: []byte{}, entropyType: "hd"}
	var err error
	if nw.publicKey, err = compressedPublicKey(priv); err != nil {
		return nw, err
	}
	if entropy == nil {
		nw.entropyType = "private-key"
	} else if nw.sealedEntropy, err = s.keys.Seal(ctx, keys.PurposeWallet, entropy, aadFor(id, "entropy")); err != nil {
		return nw, fmt.Errorf("seal wallet %s: %w", id, err)
	}
	if nw.sealedKey, err = s.keys.Seal(ctx, keys.PurposeWallet, priv, aadFor(id, "key")); err != nil {
		return nw, fmt.Errorf("seal wallet %s: %w", id, err)
	}
	if nw.generation, err = keys.BlobGeneration(nw.sealedKey); err != nil {
		return nw, err
	}
	return nw, nil
}

// insertWallet stores a sealed wallet with the owner, policies and signers
// of its input, inside the creating transaction.
func (s *Service) insertWallet(ctx context.Context, tx *store.Tx, c Call, in WalletInput, nw sealedWallet) (Wallet, error) {
	if err := s.checkRefs(ctx, tx, c.App, in); err != nil {
		return Wallet{}, err
	}
	owner, err := s.resolveOwner(ctx, tx, c.App, in.Owner, in.OwnerID)
	if err != nil {
		return Wallet{}, err
	}
	policies, signers := []string{}, []Signer{}
	if in.PolicyIDs != nil {
		policies = *in.PolicyIDs
	}
	if in.AdditionalSigners != nil {
		signers = *in.AdditionalSigners
	}
	pj, _ := json.Marshal(policies)
	sj, _ := json.Marshal(signers)
	now := s.nowMS()
	var imported any
	if nw.imported {
		imported = now
	}
	_, err = tx.Exec(`INSERT INTO wallets(id, app_id, chain_type, address, public_key, owner_id, policy_ids, additional_signers,
		display_name, external_id, sealed_entropy, sealed_key, key_generation, created_at, imported_at, entropy_type, hd_index)
		VALUES (?, ?, 'ethereum', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		nw.id, c.App, nw.address, nw.publicKey, nullable(owner), string(pj), string(sj), in.DisplayName, in.ExternalID,
		nw.sealedEntropy, nw.sealedKey, nw.generation, now, imported, nw.entropyType, nw.hdIndex)
	if store.IsConstraint(err) && in.ExternalID != nil {
		return Wallet{}, errorf(Conflict, "A wallet with external_id %q already exists.", *in.ExternalID)
	}
	if err != nil {
		return Wallet{}, fmt.Errorf("insert wallet: %w", err)
	}
	if err := linkWallet(tx, nw.id, owner, policies, signers); err != nil {
		return Wallet{}, err
	}
	return loadWallet(ctx, txq{tx}, c.App, nw.id)
}

// relinkWallet makes wallet_quorums and wallet_policies hold exactly the
// wallet's owner and additional signers, and its policies and the signers'
// override policies, as its row now has them; every update of owner_id,
// policy_ids or additional_signers calls it in the same transaction. They
// let a user's wallets and a quorum's or policy's users be found by index
// inside the writer, where a scan of every wallet would hold every commit.
func relinkWallet(tx *store.Tx, walletID string) error {
	var owner sql.NullString
	var policies, signers string
	if err := tx.QueryRow(`SELECT owner_id, policy_ids, additional_signers FROM wallets WHERE id = ?`, walletID).Scan(&owner, &policies, &signers); err != nil {
		return fmt.Errorf("link wallet %s: %w", walletID, err)
	}
	var ps []string
	var ss []Signer
	if err := json.Unmarshal([]byte(policies), &ps); err != nil {
		return fmt.Errorf("link wallet %s: policy ids: %w", walletID, err)
	}
	if err := json.Unmarshal([]byte(signers), &ss); err != nil {
		return fmt.Errorf("link wallet %s: additional signers: %w", walletID, err)
	}
	for _, table := range []string{"wallet_quorums", "wallet_policies"} {
		if _, err := tx.Exec(`DELETE FROM `+table+` WHERE wallet_id = ?`, walletID); err != nil {
			return fmt.Errorf("link wallet %s: %w", walletID, err)
		}
	}
	return linkWallet(tx, walletID, owner.String, ps, ss)
}

// linkWallet adds a wallet's owner (if any), policies and signers to the
// link tables, which hold none of its links yet.
func linkWallet(tx *store.Tx, walletID, owner string, policies []string, signers []Signer) error {
	qs := make([]string, 0, len(signers)+1)
	if owner != "" {
		qs = append(qs, owner)
	}
	ps := slices.Clone(policies)
	for _, sg := range signers {
		qs = append(qs, sg.SignerID)
		ps = append(ps, sg.OverridePolicyIDs...)
	}
	for _, l := range []struct {
		table, column string
		ids           []string
	}{{"wallet_quorums", "quorum_id", qs}, {"wallet_policies", "policy_id", ps}} {
		for _, id := range l.ids {
			if _, err := tx.Exec(`INSERT INTO `+l.table+`(`+l.column+`, wallet_id) VALUES (?, ?) ON CONFLICT DO NOTHING`, id, walletID); err != nil {
				return fmt.Errorf("link wallet %s: %w", walletID, err)
			}
		}
	}
	return nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func compressedPublicKey(priv []byte) (string, error) {
	k, err := crypto.ToECDSA(priv)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("0x%x", crypto.CompressPubkey(&k.PublicKey)), nil
}

// storedWallet carries what the API does not show.
type storedWallet struct {
	Wallet
	sealedKey     []byte
	sealedEntropy []byte // empty for a wallet imported from a private key
	entropyType   string // "hd" or "private-key"
	hdIndex       uint32 // m/44'/60'/0'/0/hdIndex
	// version is the row's version as read with it: a signature released
	// under this wallet's authorization commits only if it is unchanged.
	version int64
}

const walletColumns = `id, address, chain_type, public_key, owner_id, policy_ids, additional_signers, display_name, external_id,
	created_at, archived_at, exported_at, imported_at, sealed_key, sealed_entropy, entropy_type, hd_index, version`

func scanWallet(row interface{ Scan(...any) error }) (*storedWallet, error) {
	var w storedWallet
	var owner, name, ext sql.NullString
	var archived, exported, imported sql.NullInt64
	var pj, sj string
	if err := row.Scan(&w.ID, &w.Address, &w.ChainType, &w.PublicKey, &owner, &pj, &sj, &name, &ext,
		&w.CreatedAt, &archived, &exported, &imported, &w.sealedKey, &w.sealedEntropy, &w.entropyType, &w.hdIndex, &w.version); err != nil {
		return nil, err
	}
	if owner.Valid {
		w.OwnerID = &owner.String
	}
	if name.Valid {
		w.DisplayName = &name.String
	}
	if ext.Valid {
		w.ExternalID = &ext.String
	}
	for _, p := range []struct {
		n *sql.NullInt64
		t **int64
	}{{&archived, &w.ArchivedAt}, {&exported, &w.ExportedAt}, {&imported, &w.ImportedAt}} {
		if p.n.Valid {
			v := p.n.Int64
			*p.t = &v
		}
	}
	if err := json.Unmarshal([]byte(pj), &w.PolicyIDs); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(sj), &w.AdditionalSigners); err != nil {
		return nil, err
	}
	return &w, nil
}

func loadStoredWallet(ctx context.Context, q querier, app, id string) (*storedWallet, error) {
	w, err := scanWallet(q.QueryRowContext(ctx, `SELECT `+walletColumns+` FROM wallets WHERE id = ? AND app_id = ?`, id, app))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(NotFound, "Wallet %q not found.", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read wallet %s: %w", id, err)
	}
	return w, nil
}

func loadWallet(ctx context.Context, q querier, app, id string) (Wallet, error) {
	w, err := loadStoredWallet(ctx, q, app, id)
	if err != nil {
		return Wallet{}, err
	}
	return w.Wallet, nil
}

// GetWallet is GET /v1/wallets/{id}.
func (s *Service) GetWallet(ctx context.Context, app, id string) (Wallet, error) {
	return loadWallet(ctx, s.st, app, id)
}

// WalletPage is a page of GET /v1/wallets.
type WalletPage struct {
	Data       []Wallet `json:"data"`
	NextCursor *string  `json:"next_cursor"`
}

// ListWallets is GET /v1/wallets: the app's wallets in the order they were
// created (SQLite's rowid, which ties within a millisecond cannot reorder),
// archived ones left out; cursor is the id of the last wallet of the
// previous page.
func (s *Service) ListWallets(ctx context.Context, app, cursor string, limit int, chainType string) (WalletPage, error) {
	size := pageSize(limit)
	after, err := pageStart(ctx, s.st, "wallets", "app_id", app, cursor, "a wallet of this app")
	if err != nil {
		return WalletPage{}, err
	}
	args := []any{app, after}
	q := `SELECT ` + walletColumns + ` FROM wallets WHERE app_id = ? AND archived_at IS NULL AND rowid > ?`
	if chainType != "" {
		q += ` AND chain_type = ?`
		args = append(args, chainType)
	}
	rows, err := s.st.QueryContext(ctx, q+` ORDER BY rowid LIMIT ?`, append(args, size+1)...)
	if err != nil {
		return WalletPage{}, err
	}
	defer rows.Close()
	page := WalletPage{Data: []Wallet{}}
	for rows.Next() {
		w, err := scanWallet(rows)
		if err != nil {
			return WalletPage{}, err
		}
		page.Data = append(page.Data, w.Wallet)
	}
	page.Data, page.NextCursor = pageEnd(page.Data, size, func(w Wallet) string { return w.ID })
	return page, rows.Err()
}

// UpdateWallet is PATCH /v1/wallets/{id}: the current owner's threshold
// (app credentials alone for a wallet without owner), including a change of
// owner.
func (s *Service) UpdateWallet(ctx context.Context, c Call, id string, in WalletInput) (json.RawMessage, error) {
	if _, err := s.ownedWallet(ctx, s.st, c, id, "update"); err != nil {
		return nil, err
	}
	return s.commit(ctx, action{
		call: c, name: "wallet.update", target: id, replay: true,
		response: func(tx *store.Tx) (any, error) {
			if _, err := s.ownedWallet(ctx, txq{tx}, c, id, "update"); err != nil {
				return nil, err
			}
			if err := s.checkRefs(ctx, tx, c.App, in); err != nil {
				return nil, err
			}
			if in.OwnerSet || in.OwnerIDSet {
				owner, err := s.resolveOwner(ctx, tx, c.App, in.Owner, in.OwnerID)
				if err != nil {
					return nil, err
				}
				if _, err := tx.Exec(`UPDATE wallets SET owner_id = ?, version = version + 1 WHERE id = ?`, nullable(owner), id); err != nil {
					return nil, err
				}
			}
			if in.PolicyIDs != nil {
				pj, _ := json.Marshal(*in.PolicyIDs)
				if _, err := tx.Exec(`UPDATE wallets SET policy_ids = ?, version = version + 1 WHERE id = ?`, string(pj), id); err != nil {
					return nil, err
				}
			}
			if in.AdditionalSigners != nil {
				sj, _ := json.Marshal(*in.AdditionalSigners)
				if _, err := tx.Exec(`UPDATE wallets SET additional_signers = ?, version = version + 1 WHERE id = ?`, string(sj), id); err != nil {
					return nil, err
				}
			}
			if in.DisplayNameSet {
				if _, err := tx.Exec(`UPDATE wallets SET display_name = ? WHERE id = ?`, in.DisplayName, id); err != nil {
					return nil, err
				}
			}
			if in.OwnerSet || in.OwnerIDSet || in.PolicyIDs != nil || in.AdditionalSigners != nil {
				if err := relinkWallet(tx, id); err != nil {
					return nil, err
				}
			}
			return loadWallet(ctx, txq{tx}, c.App, id)
		},
	})
}

// ArchiveWallet is POST /v1/wallets/{id}/archive: the owner's threshold.
func (s *Service) ArchiveWallet(ctx context.Context, c Call, id string) (json.RawMessage, error) {
	if _, err := s.ownedWallet(ctx, s.st, c, id, "archive"); err != nil {
		return nil, err
	}
	return s.commit(ctx, action{
		call: c, name: "wallet.archive", target: id, replay: true,
		response: func(tx *store.Tx) (any, error) {
			if _, err := s.ownedWallet(ctx, txq{tx}, c, id, "archive"); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`UPDATE wallets SET archived_at = ?, version = version + 1 WHERE id = ?`, s.nowMS(), id); err != nil {
				return nil, err
			}
			return loadWallet(ctx, txq{tx}, c.App, id)
		},
	})
}

// ownedWallet loads a live wallet and checks the request carries its
// owner's approval. An additional signer's approval is not enough: signers
// may only sign.
//
// Called first with the reader pool, it verifies the signatures outside the
// writer; called again in the write transaction, it checks only that the
// owner and its approval are unchanged (see authorizeOwner).
func (s *Service) ownedWallet(ctx context.Context, q querier, c Call, id, verb string) (*storedWallet, error) {
	w, err := loadStoredWallet(ctx, q, c.App, id)
	if err != nil {
		return nil, err
	}
	if w.ArchivedAt != nil {
		return nil, errorf(NotFound, "Wallet %q is archived.", id)
	}
	owner := ""
	if w.OwnerID != nil {
		owner = *w.OwnerID
	}
	err = s.authorizeOwner(ctx, q, c.App, owner, c.Signed, "wallet "+id)
	var ce *Error
	if _, inWriter := q.(txq); err != nil && !inWriter && owner != "" && c.Signed != nil && errors.As(err, &ce) && ce.Kind == Unauthorized {
		if principal, perr := s.signingPrincipal(ctx, q, c.App, w, c.Signed); perr == nil && principal.signer != nil {
			return nil, errorf(Forbidden, "Additional signers may only sign; to %s wallet %s the owner must approve.", verb, id)
		}
	}
	return w, err
}
