package custody

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/internal/clip"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/recovery"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/wallet"
)

// EmbeddedOptions configures embedded wallets: how many shares may be
// released in a window, and how long a challenge lives.
type EmbeddedOptions struct {
	// RecoverPerUser and RecoverPerWallet bound recoveries (auth and
	// recovery share released to a new device) per user and per wallet in
	// Window.
	RecoverPerUser   int
	RecoverPerWallet int
	// AuthSharePerWallet bounds releases of the auth share alone (a device
	// that holds its device share, signing) per wallet in Window.
	AuthSharePerWallet int
	Window             time.Duration
	// ChallengeLifetime is how long a challenge for a change of recovery
	// method waits for its answer.
	ChallengeLifetime time.Duration
	// MaxChallenges bounds the open challenges of one app,
	// MaxChallengesPerUser those of one user and MaxChallengesPerWallet
	// those of one wallet, so that no user can use up another's.
	MaxChallenges, MaxChallengesPerUser, MaxChallengesPerWallet int
}

func (o EmbeddedOptions) withDefaults() EmbeddedOptions {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.RecoverPerUser, 10)
	def(&o.RecoverPerWallet, 5)
	def(&o.AuthSharePerWallet, 120)
	def(&o.MaxChallenges, 1000)
	def(&o.MaxChallengesPerUser, 10)
	def(&o.MaxChallengesPerWallet, 3)
	if o.Window <= 0 {
		o.Window = time.Hour
	}
	if o.ChallengeLifetime <= 0 {
		o.ChallengeLifetime = 5 * time.Minute
	}
	return o
}

// Embedded wallet states.
const (
	embeddedActive          = "active"
	embeddedRecoveryPending = "recovery_pending"
)

// Kinds of share release, counted for the rate limits.
const (
	releaseRecover   = "recover"
	releaseAuthShare = "auth_share"
)

// ShareIndexes are the Shamir x coordinates of an embedded wallet's three
// shares. They are not secret; a device needs them to derive one share from
// two others.
type ShareIndexes struct {
	Device   int `json:"device"`
	Auth     int `json:"auth"`
	Recovery int `json:"recovery"`
}

// EmbeddedWallet is an embedded wallet as the API shows it.
type EmbeddedWallet struct {
	ID             string       `json:"id"`
	Address        string       `json:"address"`
	ChainType      string       `json:"chain_type"`
	UserID         string       `json:"user_id"`
	RecoveryMethod string       `json:"recovery_method"`
	Status         string       `json:"status"`
	ShareIndexes   ShareIndexes `json:"share_indexes"`
	CreatedAt      int64        `json:"created_at"`
	UpdatedAt      int64        `json:"updated_at"`
}

// EmbeddedRelease is an embedded wallet with the shares released to a
// device, each HPKE-encrypted to the device's key.
type EmbeddedRelease struct {
	EmbeddedWallet
	// DeviceShare is released once, at creation.
	DeviceShare *hpkebox.Box `json:"device_share,omitempty"`
	// AuthShare is released on recovery and to a device that signs.
	AuthShare *hpkebox.Box `json:"auth_share,omitempty"`
	// RecoveryShare is the plaintext recovery share: at creation for
	// password or cloud recovery (the device encrypts and uploads it), on
	// automatic recovery (unsealed by the hardware).
	RecoveryShare *hpkebox.Box `json:"recovery_share,omitempty"`
	// EncryptedRecoveryShare is the device's own encryption of the
	// recovery share (password or cloud), still HPKE-wrapped so that the
	// relay cannot try passwords against it; RecoveryKDF goes with it.
	EncryptedRecoveryShare *hpkebox.Box  `json:"encrypted_recovery_share,omitempty"`
	RecoveryKDF            *recovery.KDF `json:"recovery_kdf,omitempty"`
}

// storedEmbedded is an embedded wallet as stored.
type storedEmbedded struct {
	EmbeddedWallet
	sealedAuth, sealedRecovery, deviceRecovery []byte
	kdf                                        sql.NullString
	version                                    int64
}

const embeddedColumns = `id, address, user_id, recovery_method, status, device_index, auth_index, recovery_index,
	created_at, updated_at, sealed_auth_share, sealed_recovery_share, device_recovery_share, recovery_kdf, version`

func scanEmbedded(row interface{ Scan(...any) error }) (*storedEmbedded, error) {
	var w storedEmbedded
	err := row.Scan(&w.ID, &w.Address, &w.UserID, &w.RecoveryMethod, &w.Status, &w.ShareIndexes.Device, &w.ShareIndexes.Auth,
		&w.ShareIndexes.Recovery, &w.CreatedAt, &w.UpdatedAt, &w.sealedAuth, &w.sealedRecovery, &w.deviceRecovery, &w.kdf, &w.version)
	w.ChainType = "ethereum"
	return &w, err
}

func loadEmbedded(ctx context.Context, q querier, app, id string) (*storedEmbedded, error) {
	w, err := scanEmbedded(q.QueryRowContext(ctx, `SELECT `+embeddedColumns+` FROM embedded_wallets WHERE id = ? AND app_id = ?`, id, app))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(NotFound, "Embedded wallet %q not found.", clip.To(id, 64))
	}
	if err != nil {
		return nil, fmt.Errorf("read embedded wallet %s: %w", id, err)
	}
	return w, nil
}

func embeddedAAD(id, part string) []byte { return []byte("cachet/embedded/" + id + "/" + part) }

// GetEmbeddedWallet is GET /v1/embedded_wallets/{id}: the app's view, no
// share.
func (s *Service) GetEmbeddedWallet(ctx context.Context, app, id string) (EmbeddedWallet, error) {
	w, err := loadEmbedded(ctx, s.st, app, id)
	if err != nil {
		return EmbeddedWallet{}, err
	}
	return w.EmbeddedWallet, nil
}

// deviceInput is what every device request carries: the user's JWT and the
// device's fresh HPKE key.
type deviceInput struct {
	UserJWT         string `json:"user_jwt"`
	DevicePublicKey string `json:"device_public_key"`
}

// usersEmbedded verifies the JWT and loads the wallet, which must be that
// user's: to anyone else it does not exist.
func (s *Service) usersEmbedded(ctx context.Context, c Call, id, token string) (User, *storedEmbedded, error) {
	_, user, err := s.VerifyUserJWT(ctx, c.App, token)
	if err != nil {
		return User{}, nil, err
	}
	w, err := loadEmbedded(ctx, s.st, c.App, id)
	if err != nil {
		return User{}, nil, err
	}
	if w.UserID != user.ID {
		return User{}, nil, errorf(NotFound, "Embedded wallet %q not found.", clip.To(id, 64))
	}
	return user, w, nil
}

// deviceRequest reads a device request on a wallet: the device's key, and
// the user of the JWT with the wallet, which must be that user's.
func (s *Service) deviceRequest(ctx context.Context, c Call, id string, body []byte) (*ecdh.PublicKey, User, *storedEmbedded, error) {
	var in deviceInput
	if err := DecodeBody(body, &in); err != nil {
		return nil, User{}, nil, err
	}
	dev, err := recipientKey("device_public_key", in.DevicePublicKey)
	if err != nil {
		return nil, User{}, nil, err
	}
	user, w, err := s.usersEmbedded(ctx, c, id, in.UserJWT)
	return dev, user, w, err
}

// seal seals a share through the hardware and names a failure without the
// share.
func (s *Service) sealShare(ctx context.Context, purpose keys.Purpose, share []byte, id, part string) ([]byte, error) {
	b, err := s.keys.Seal(ctx, purpose, share, embeddedAAD(id, part))
	if err != nil {
		return nil, fmt.Errorf("seal %s share of embedded wallet %s: %w", part, id, err)
	}
	return b, nil
}

// unsealShare opens a stored share. A blob that fails authentication was
// sealed under another root (a store moved to an appliance initialised
// with a different one) or damaged: that is said plainly, and nothing is
// released.
func (s *Service) unsealShare(ctx context.Context, purpose keys.Purpose, sealed []byte, id, part string) (recovery.Share, error) {
	b, err := s.keys.Unseal(ctx, purpose, sealed, embeddedAAD(id, part))
	if errors.Is(err, keys.ErrAuthFailed) || errors.Is(err, keys.ErrUnknownGeneration) {
		s.opts.Logger.Error("embedded wallet share does not unseal", "wallet", id, "share", part, "error", err)
		return nil, errorf(Unavailable, "The %s share of embedded wallet %s does not unseal with this appliance's hardware key: it was sealed under another root, or damaged. Nothing was released.", part, id)
	}
	if err != nil {
		return nil, fmt.Errorf("unseal %s share of embedded wallet %s: %w", part, id, err)
	}
	return recovery.Share(b), nil
}

// shareFor unseals a stored share and encrypts it to the device, clearing
// the plaintext.
func (s *Service) shareFor(ctx context.Context, dev *ecdh.PublicKey, purpose keys.Purpose, sealed []byte, id, part string) (*hpkebox.Box, error) {
	share, err := s.unsealShare(ctx, purpose, sealed, id, part)
	if err != nil {
		return nil, err
	}
	defer zeroShares(share)
	return boxFor(dev, share)
}

// boxFor encrypts a share (or other device-bound bytes) to the device.
func boxFor(dev *ecdh.PublicKey, b []byte) (*hpkebox.Box, error) {
	box, err := hpkebox.SealBox(dev, b)
	if err != nil {
		return nil, fmt.Errorf("encrypt to device: %w", err)
	}
	return &box, nil
}

func zeroShares(ss ...recovery.Share) {
	for _, s := range ss {
		clear(s)
	}
}

// deviceFingerprint names a device key in the audit record.
func deviceFingerprint(dev *ecdh.PublicKey) string { return recipientFingerprint(dev) }

// CreateEmbeddedWallet is POST /v1/embedded_wallets: for the user of a
// valid JWT, Cachet makes the entropy, splits it 2-of-3, seals the auth
// share (and, for automatic recovery, the recovery share) through the
// hardware, and returns the address and the device share encrypted to the
// device. For password or cloud recovery the recovery share goes to the
// device too, and the wallet stays recovery_pending until the device
// uploads its own encryption of it.
func (s *Service) CreateEmbeddedWallet(ctx context.Context, c Call, body []byte) (json.RawMessage, error) {
	var in struct {
		deviceInput
		ChainType *string `json:"chain_type"`
		Recovery  *struct {
			Method string `json:"method"`
		} `json:"recovery"`
	}
	if err := DecodeBody(body, &in); err != nil {
		return nil, err
	}
	if in.ChainType != nil && *in.ChainType != "ethereum" {
		return nil, errorf(Invalid, "chain_type: %q is not supported; Cachet holds ethereum wallets.", clip.To(*in.ChainType, 32))
	}
	method := recovery.MethodAutomatic // Privy's default
	if in.Recovery != nil {
		method = in.Recovery.Method
	}
	if !recovery.ValidMethod(method) {
		return nil, errorf(Invalid, "recovery.method: must be \"automatic\", \"password\" or \"cloud\".")
	}
	dev, err := recipientKey("device_public_key", in.DevicePublicKey)
	if err != nil {
		return nil, err
	}
	_, user, err := s.VerifyUserJWT(ctx, c.App, in.UserJWT)
	if err != nil {
		return nil, err
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
	keys.Zero(priv)
	device, auth, rec, err := recovery.Split(entropy)
	if err != nil {
		return nil, fmt.Errorf("split embedded wallet entropy: %w", err)
	}
	defer zeroShares(device, auth, rec)

	id := newID()
	w := EmbeddedWallet{ID: id, Address: addr.Hex(), ChainType: "ethereum", UserID: user.ID, RecoveryMethod: method, Status: embeddedActive,
		ShareIndexes: ShareIndexes{Device: int(device.Index()), Auth: int(auth.Index()), Recovery: int(rec.Index())}}
	sealedAuth, err := s.sealShare(ctx, keys.PurposeWallet, auth, id, "auth")
	if err != nil {
		return nil, err
	}
	gen, err := keys.BlobGeneration(sealedAuth)
	if err != nil {
		return nil, err
	}
	out := EmbeddedRelease{}
	if out.DeviceShare, err = boxFor(dev, device); err != nil {
		return nil, err
	}
	released := []string{"device"}
	var sealedRec []byte
	if method == recovery.MethodAutomatic {
		if sealedRec, err = s.sealShare(ctx, keys.PurposeRecovery, rec, id, "recovery"); err != nil {
			return nil, err
		}
	} else {
		w.Status = embeddedRecoveryPending
		if out.RecoveryShare, err = boxFor(dev, rec); err != nil {
			return nil, err
		}
		released = append(released, "recovery")
	}
	return s.commit(ctx, action{
		call: c, name: "embedded_wallet.create", target: id,
		detail: map[string]any{"user_id": user.ID, "address": w.Address, "method": method, "device_key": deviceFingerprint(dev),
			"released": released, "key_uses": []string{"seal auth share", "seal recovery share (automatic)"}},
		response: func(tx *store.Tx) (any, error) {
			if _, err := loadUser(ctx, txq{tx}, c.App, user.ID); err != nil {
				return nil, err
			}
			now := s.nowMS()
			w.CreatedAt, w.UpdatedAt = now, now
			if _, err := tx.Exec(`INSERT INTO embedded_wallets(id, app_id, user_id, address, recovery_method, status, device_index, auth_index,
				recovery_index, sealed_auth_share, sealed_recovery_share, key_generation, created_at, updated_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				id, c.App, user.ID, w.Address, method, w.Status, w.ShareIndexes.Device, w.ShareIndexes.Auth, w.ShareIndexes.Recovery,
				sealedAuth, sealedRec, gen, now, now); err != nil {
				return nil, fmt.Errorf("insert embedded wallet: %w", err)
			}
			out.EmbeddedWallet = w
			return out, nil
		},
	})
}

// releaseLimit is one rate limit on share releases.
type releaseLimit struct {
	column, value, kind string
	max                 int
	what                string
}

// checkReleases refuses a release that would exceed a limit in the window.
// It runs once before the hardware is asked (so a flood costs no unseal)
// and again inside the releasing transaction (so concurrent requests cannot
// together exceed it).
func (s *Service) checkReleases(ctx context.Context, q querier, limits []releaseLimit) error {
	since := s.now().Add(-s.opts.Embedded.Window).UnixMilli()
	for _, l := range limits {
		var n int
		var oldest sql.NullInt64
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*), MIN(at) FROM share_releases WHERE `+l.column+` = ? AND kind = ? AND at > ?`,
			l.value, l.kind, since).Scan(&n, &oldest); err != nil {
			return fmt.Errorf("count share releases: %w", err)
		}
		if n >= l.max {
			retry := time.UnixMilli(oldest.Int64).Add(s.opts.Embedded.Window).Sub(s.now()).Round(time.Second)
			return errorf(TooManyRequests, "Too many %s for this %s: at most %d in %s; try again in %s.", l.what, strings.TrimSuffix(l.column, "_id"), l.max, s.opts.Embedded.Window, retry)
		}
	}
	return nil
}

// release commits a release of shares to a device: the rate limits are
// checked again inside the transaction, the release is counted and audited,
// and only then does the response leave.
func (s *Service) release(ctx context.Context, c Call, w *storedEmbedded, kind string, limits []releaseLimit, dev *ecdh.PublicKey, shares []string, out EmbeddedRelease) (json.RawMessage, error) {
	return s.commit(ctx, action{
		call: c, name: "embedded_wallet." + kind, target: w.ID,
		detail: map[string]any{"user_id": w.UserID, "method": w.RecoveryMethod, "device_key": deviceFingerprint(dev), "released": shares},
		response: func(tx *store.Tx) (any, error) {
			cur, err := loadEmbedded(ctx, txq{tx}, c.App, w.ID)
			if err != nil {
				return nil, err
			}
			if cur.version != w.version {
				return nil, errorf(Conflict, "Embedded wallet %s changed while its shares were being prepared; nothing was released. Send the request again.", w.ID)
			}
			if err := s.checkReleases(ctx, txq{tx}, limits); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`INSERT INTO share_releases(app_id, user_id, wallet_id, kind, at) VALUES (?, ?, ?, ?, ?)`,
				c.App, w.UserID, w.ID, kind, s.nowMS()); err != nil {
				return nil, err
			}
			out.EmbeddedWallet = cur.EmbeddedWallet
			return out, nil
		},
	})
}

// RecoverEmbeddedWallet is POST /v1/embedded_wallets/{id}/recover: the
// wallet's own user, on a new device. Automatic: the auth share and the
// recovery share (unsealed by the hardware) come back encrypted to the
// device. Password or cloud: the auth share and the device's stored
// encryption of the recovery share with its KDF parameters, all encrypted
// to the device.
func (s *Service) RecoverEmbeddedWallet(ctx context.Context, c Call, id string, body []byte) (json.RawMessage, error) {
	dev, user, w, err := s.deviceRequest(ctx, c, id, body)
	if err != nil {
		return nil, err
	}
	if w.Status != embeddedActive {
		return nil, errorf(Conflict, "Embedded wallet %s has no recovery set up yet (%s): its device has not uploaded its encrypted recovery share.", id, w.Status)
	}
	limits := []releaseLimit{
		{"user_id", user.ID, releaseRecover, s.opts.Embedded.RecoverPerUser, "recoveries"},
		{"wallet_id", w.ID, releaseRecover, s.opts.Embedded.RecoverPerWallet, "recoveries"},
	}
	if err := s.checkReleases(ctx, s.st, limits); err != nil {
		return nil, err
	}
	var out EmbeddedRelease
	if out.AuthShare, err = s.shareFor(ctx, dev, keys.PurposeWallet, w.sealedAuth, id, "auth"); err != nil {
		return nil, err
	}
	shares := []string{"auth"}
	switch w.RecoveryMethod {
	case recovery.MethodAutomatic:
		if out.RecoveryShare, err = s.shareFor(ctx, dev, keys.PurposeRecovery, w.sealedRecovery, id, "recovery"); err != nil {
			return nil, err
		}
		shares = append(shares, "recovery")
	default:
		if out.EncryptedRecoveryShare, err = boxFor(dev, w.deviceRecovery); err != nil {
			return nil, err
		}
		if w.kdf.Valid {
			var kdf recovery.KDF
			if err := json.Unmarshal([]byte(w.kdf.String), &kdf); err != nil {
				return nil, fmt.Errorf("embedded wallet %s kdf: %w", id, err)
			}
			out.RecoveryKDF = &kdf
		}
		shares = append(shares, "recovery (encrypted by the device)")
	}
	return s.release(ctx, c, w, releaseRecover, limits, dev, shares, out)
}

// EmbeddedAuthShare is POST /v1/embedded_wallets/{id}/auth_share: the auth
// share alone, to the user's device that holds its device share and needs
// the key for a signature (Privy's devices fetch it the same way on
// login). Rate limited per wallet.
func (s *Service) EmbeddedAuthShare(ctx context.Context, c Call, id string, body []byte) (json.RawMessage, error) {
	dev, _, w, err := s.deviceRequest(ctx, c, id, body)
	if err != nil {
		return nil, err
	}
	limits := []releaseLimit{{"wallet_id", w.ID, releaseAuthShare, s.opts.Embedded.AuthSharePerWallet, "auth share releases"}}
	if err := s.checkReleases(ctx, s.st, limits); err != nil {
		return nil, err
	}
	var out EmbeddedRelease
	if out.AuthShare, err = s.shareFor(ctx, dev, keys.PurposeWallet, w.sealedAuth, id, "auth"); err != nil {
		return nil, err
	}
	return s.release(ctx, c, w, releaseAuthShare, limits, dev, []string{"auth"}, out)
}

// pendingChallenge is an open challenge for a change of recovery method:
// the wallet, its user, and the one-time HPKE key the device encrypts its
// payload to.
type pendingChallenge struct {
	walletID, userID string
	priv             *ecdh.PrivateKey
}

// ChallengeResponse is the answer of POST /v1/embedded_wallets/{id}/challenge.
type ChallengeResponse struct {
	Challenge           string `json:"challenge"`
	ExpiresAt           int64  `json:"expires_at"` // Unix ms
	EncryptionType      string `json:"encryption_type"`
	EncryptionPublicKey string `json:"encryption_public_key"` // base64 raw uncompressed P-256 point
}

// EmbeddedChallenge is POST /v1/embedded_wallets/{id}/challenge: a fresh,
// one-time challenge for the wallet's user, and a one-time key to encrypt
// the new recovery payload to.
func (s *Service) EmbeddedChallenge(ctx context.Context, c Call, id string, body []byte) (json.RawMessage, error) {
	var in struct {
		UserJWT string `json:"user_jwt"`
	}
	if err := DecodeBody(body, &in); err != nil {
		return nil, err
	}
	_, w, err := s.usersEmbedded(ctx, c, id, in.UserJWT)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	priv, err := hpkebox.GenerateKey()
	if err != nil {
		return nil, err
	}
	now := s.now()
	resp := ChallengeResponse{
		Challenge: hex.EncodeToString(nonce), ExpiresAt: now.Add(s.opts.Embedded.ChallengeLifetime).UnixMilli(),
		EncryptionType: hpkebox.EncryptionType, EncryptionPublicKey: base64.StdEncoding.EncodeToString(priv.PublicKey().Bytes()),
	}
	out, err := s.commit(ctx, action{
		call: c, name: "embedded_wallet.challenge", target: id,
		detail:   map[string]any{"user_id": w.UserID, "expires_at": resp.ExpiresAt},
		response: func(*store.Tx) (any, error) { return resp, nil },
	})
	if err != nil {
		return nil, err
	}
	o := s.opts.Embedded
	limits := []limit{{"app " + c.App, o.MaxChallenges}, {"user " + w.UserID, o.MaxChallengesPerUser}, {"wallet " + id, o.MaxChallengesPerWallet}}
	if full := s.challenges.put(resp.Challenge, pendingChallenge{walletID: id, userID: w.UserID, priv: priv},
		time.UnixMilli(resp.ExpiresAt), now, limits...); full != nil {
		return nil, errorf(TooManyRequests, "The %s has %d open challenges; answer or let them expire first.", strings.SplitN(full.scope, " ", 2)[0], full.max)
	}
	return out, nil
}

// setRecoveryInput is the body of PUT /v1/embedded_wallets/{id}/recovery.
type setRecoveryInput struct {
	UserJWT   string `json:"user_jwt"`
	Challenge string `json:"challenge"`
	// Signature is the wallet key's eth_signTypedData_v4 signature over
	// recovery.ChallengeTypedData(id, challenge, sha256(payload ciphertext)).
	Signature string `json:"signature"`
	// Payload is a recovery.Payload, HPKE-encrypted to the challenge's key.
	Payload *struct {
		EncryptionType  string `json:"encryption_type"`
		EncapsulatedKey string `json:"encapsulated_key"`
		Ciphertext      string `json:"ciphertext"`
	} `json:"payload"`
}

// SetEmbeddedRecovery is PUT /v1/embedded_wallets/{id}/recovery: the user's
// JWT, and an EIP-712 signature by the wallet's own key over a fresh
// challenge and the exact payload (recovery.ChallengeTypedData), so that only a device holding the key can change how
// the recovery share is protected. Automatic: the device hands Cachet the
// recovery share (encrypted to the challenge key), which must combine with
// the auth share into the wallet's key, and Cachet seals it under the
// recovery KMS key. Password or cloud: the device uploads its own
// encryption of the share (and, for a password, the Argon2id parameters);
// Cachet never sees the password or the cloud secret.
func (s *Service) SetEmbeddedRecovery(ctx context.Context, c Call, id string, body []byte) (json.RawMessage, error) {
	var in setRecoveryInput
	if err := DecodeBody(body, &in); err != nil {
		return nil, err
	}
	if err := required("challenge", in.Challenge); err != nil {
		return nil, err
	}
	if in.Payload == nil {
		return nil, errorf(Invalid, "payload: required.")
	}
	if err := checkEncryptionType(in.Payload.EncryptionType); err != nil {
		return nil, err
	}
	enc, err1 := base64.StdEncoding.DecodeString(in.Payload.EncapsulatedKey)
	ct, err2 := base64.StdEncoding.DecodeString(in.Payload.Ciphertext)
	if err1 != nil || err2 != nil || len(enc) == 0 || len(ct) == 0 {
		return nil, errorf(Invalid, "payload: encapsulated_key and ciphertext must be standard base64.")
	}
	sig, err := hexutil.Decode(in.Signature)
	if err != nil {
		return nil, errorf(Invalid, "signature: must be 0x-prefixed hex.")
	}
	_, w, err := s.usersEmbedded(ctx, c, id, in.UserJWT)
	if err != nil {
		return nil, err
	}
	// The challenge is spent whatever happens next.
	pc, ok := s.challenges.take(in.Challenge, s.now())
	if !ok || pc.walletID != id || pc.userID != w.UserID {
		return nil, errorf(Invalid, "challenge: unknown, already used or expired; ask for a new one.")
	}
	digest := sha256.Sum256(ct)
	cd, err := recovery.ChallengeDigest(id, in.Challenge, digest)
	if err != nil {
		return nil, errorf(Invalid, "challenge: not a valid challenge.")
	}
	signer, err := wallet.DigestSigner(cd, sig)
	if err != nil {
		return nil, inputError(err)
	}
	if signer != common.HexToAddress(w.Address) {
		return nil, errorf(Unauthorized, "signature: not made by embedded wallet %s's key over this challenge and payload.", id)
	}
	plain, err := hpkebox.Open(pc.priv, enc, ct)
	if err != nil {
		return nil, errorf(Invalid, "payload: does not decrypt with this challenge's key.")
	}
	defer clear(plain)
	var p recovery.Payload
	// The plaintext was never seen by the edge: checked here as a body.
	if err := checkBody(plain); err != nil {
		return nil, errorf(Invalid, "payload: %s", err.Error())
	}
	if err := decodeAt(plain, "payload", &p); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, errorf(Invalid, "payload: %v", err)
	}

	var sealedRec, devRec []byte
	var kdf any
	detail := map[string]any{"user_id": w.UserID, "from": w.RecoveryMethod, "to": p.Method}
	switch p.Method {
	case recovery.MethodAutomatic:
		share, err := base64.StdEncoding.DecodeString(p.RecoveryShare)
		if err != nil {
			return nil, errorf(Invalid, "payload.recovery_share: not standard base64.")
		}
		defer clear(share)
		if err := s.checkRecoveryShare(ctx, w, recovery.Share(share)); err != nil {
			return nil, err
		}
		if sealedRec, err = s.sealShare(ctx, keys.PurposeRecovery, share, id, "recovery"); err != nil {
			return nil, err
		}
		detail["key_uses"] = []string{"unseal auth share (check)", "seal recovery share"}
	default:
		if devRec, err = base64.StdEncoding.DecodeString(p.EncryptedRecoveryShare); err != nil {
			return nil, errorf(Invalid, "payload.encrypted_recovery_share: not standard base64.")
		}
		if p.KDF != nil {
			b, _ := json.Marshal(p.KDF)
			kdf = string(b)
		}
	}
	return s.commit(ctx, action{
		call: c, name: "embedded_wallet.set_recovery", target: id, detail: detail,
		response: func(tx *store.Tx) (any, error) {
			res, err := tx.Exec(`UPDATE embedded_wallets SET recovery_method = ?, status = 'active', sealed_recovery_share = ?,
				device_recovery_share = ?, recovery_kdf = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ?`,
				p.Method, sealedRec, devRec, kdf, s.nowMS(), id, w.version)
			if err != nil {
				return nil, err
			}
			if n, _ := res.RowsAffected(); n != 1 {
				return nil, errorf(Conflict, "Embedded wallet %s changed meanwhile; nothing was changed. Ask for a new challenge.", id)
			}
			cur, err := loadEmbedded(ctx, txq{tx}, c.App, id)
			if err != nil {
				return nil, err
			}
			return cur.EmbeddedWallet, nil
		},
	})
}

// checkRecoveryShare checks that a recovery share a device hands over for
// automatic recovery is this wallet's: at the recovery index, and combining
// with the auth share into the key of the wallet's address. Otherwise a
// device (or a relay) could make Cachet seal something that recovers
// nothing.
func (s *Service) checkRecoveryShare(ctx context.Context, w *storedEmbedded, share recovery.Share) error {
	if err := share.Valid(wallet.EntropySize); err != nil || int(share.Index()) != w.ShareIndexes.Recovery {
		return errorf(Invalid, "payload.recovery_share: not this wallet's recovery share (index %d).", w.ShareIndexes.Recovery)
	}
	auth, err := s.unsealShare(ctx, keys.PurposeWallet, w.sealedAuth, w.ID, "auth")
	if err != nil {
		return err
	}
	defer zeroShares(auth)
	entropy, err := recovery.Combine(auth, share)
	if err != nil {
		return errorf(Invalid, "payload.recovery_share: does not combine with this wallet's auth share.")
	}
	defer keys.Zero(entropy)
	priv, addr, err := wallet.DeriveKey(entropy)
	if err != nil {
		return errorf(Invalid, "payload.recovery_share: does not combine into a wallet key.")
	}
	keys.Zero(priv)
	if addr.Hex() != w.Address {
		return errorf(Invalid, "payload.recovery_share: combines into another wallet's key, not %s's.", w.ID)
	}
	return nil
}
