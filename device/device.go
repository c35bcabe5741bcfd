// Package device is the device's part of embedded wallets, as a reference
// for app developers and for tests.
//
// An embedded wallet's seed is split 2-of-3 (package recovery): the device
// keeps the device share, Cachet keeps the auth share sealed by its
// hardware, and the recovery share is either sealed by Cachet too
// ("automatic") or sealed by the device under the user's password or a
// secret in the user's cloud account and stored by Cachet unopened. The
// device never reaches Cachet's socket itself: the app's server relays its
// requests under the app's credentials (a *client.Client here), so every
// share Cachet releases is HPKE-encrypted to a fresh P-256 key the device
// makes for that one request, and the relay sees only ciphertext.
//
// The functions here are the device's whole protocol:
//
//   - Create makes a wallet and, for password or cloud recovery, uploads the
//     sealed recovery share straight away;
//   - Recover puts a wallet on a new device from the auth share and the
//     recovery share, and derives that device's own device share;
//   - SetRecovery changes how the recovery share is protected;
//   - SignMessage fetches the auth share and signs with personal_sign.
//
// Every function checks that the shares give the wallet's address before it
// uses the key, clears shares, entropy and keys when done, and returns
// errors that never hold secret bytes. A wrong password or cloud secret is
// found on the device (an error wrapping recovery.ErrWrongSecret), and
// nothing is sent to the server after it.
//
// What the checks cannot catch: the boxes are HPKE base mode, which does
// not authenticate the sender, and the relay knows each device key it
// relays. A relay that forges a whole consistent answer (its own wallet,
// address and shares) is trusted as the device trusts its app for the
// server's identity; the checks catch inconsistent or damaged answers.
//
// What cannot be cleared: Go strings (the base64 share inside a
// recovery.Payload before it is encrypted, the device share in a State),
// and what libraries keep (see wallet.DeriveKeyAt).
package device

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/ethereum/go-ethereum/common"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/recovery"
	"github.com/cachet-custody/cachet/wallet"
)

// Wallet statuses.
const (
	StatusActive          = "active"
	StatusRecoveryPending = "recovery_pending"
)

// ErrWrongWallet is returned when shares do not combine into the key of the
// wallet's address: a damaged device file, or a server (or relay) handing
// out another wallet's shares. Nothing is signed or uploaded with that key.
var ErrWrongWallet = errors.New("device: the shares do not give the wallet's address")

// ErrSecretRequired is returned when a wallet's recovery method needs a
// password or a cloud secret that the caller did not give. It comes before
// any share is released.
var ErrSecretRequired = errors.New("device: the recovery method needs the user's secret")

// Secret is what only the user has: the password of password recovery, the
// secret kept in the user's cloud account for cloud recovery. It is never
// sent anywhere; the caller owns the slices and clears them.
type Secret struct {
	Password    []byte
	CloudSecret []byte
}

// need checks that s has what method needs; what names the wallet.
func (s Secret) need(method, what string) error {
	switch method {
	case recovery.MethodPassword:
		if len(s.Password) == 0 {
			return fmt.Errorf("%w: %s uses password recovery, and no password was given", ErrSecretRequired, what)
		}
	case recovery.MethodCloud:
		if len(s.CloudSecret) != recovery.CloudSecretSize {
			return fmt.Errorf("%w: %s uses cloud recovery, and no %d-byte cloud secret was given", ErrSecretRequired, what, recovery.CloudSecretSize)
		}
	}
	return nil
}

// Indexes are the Shamir x coordinates of a wallet's three shares. They are
// not secret.
type Indexes struct {
	Device   int `json:"device"`
	Auth     int `json:"auth"`
	Recovery int `json:"recovery"`
}

func (ix Indexes) valid() error {
	for _, i := range []int{ix.Device, ix.Auth, ix.Recovery} {
		if i < 1 || i > 255 {
			return fmt.Errorf("share index %d is outside 1..255", i)
		}
	}
	if ix.Device == ix.Auth || ix.Device == ix.Recovery || ix.Auth == ix.Recovery {
		return errors.New("two shares have the same index")
	}
	return nil
}

// Wallet is an embedded wallet as the server shows it.
type Wallet struct {
	ID             string  `json:"id"`
	Address        string  `json:"address"`
	ChainType      string  `json:"chain_type"`
	UserID         string  `json:"user_id"`
	RecoveryMethod string  `json:"recovery_method"`
	Status         string  `json:"status"`
	ShareIndexes   Indexes `json:"share_indexes"`
	CreatedAt      int64   `json:"created_at"`
	UpdatedAt      int64   `json:"updated_at"`
}

// check refuses an answer the device cannot work with, before it trusts
// any field of it.
func (w *Wallet) check() error {
	if err := checkWalletID(w.ID); err != nil {
		return fmt.Errorf("device: the server's answer: %w", err)
	}
	if !common.IsHexAddress(w.Address) {
		return fmt.Errorf("device: the server's answer: wallet %s: address %q is not an Ethereum address", w.ID, w.Address)
	}
	if !recovery.ValidMethod(w.RecoveryMethod) {
		return fmt.Errorf("device: the server's answer: wallet %s: unknown recovery method %q", w.ID, w.RecoveryMethod)
	}
	if w.Status != StatusActive && w.Status != StatusRecoveryPending {
		return fmt.Errorf("device: the server's answer: wallet %s: unknown status %q", w.ID, w.Status)
	}
	if err := w.ShareIndexes.valid(); err != nil {
		return fmt.Errorf("device: the server's answer: wallet %s: %w", w.ID, err)
	}
	return nil
}

// release is the server's answer to a device request: the wallet and the
// shares encrypted to the device's key.
type release struct {
	Wallet
	DeviceShare            *hpkebox.Box  `json:"device_share"`
	AuthShare              *hpkebox.Box  `json:"auth_share"`
	RecoveryShare          *hpkebox.Box  `json:"recovery_share"`
	EncryptedRecoveryShare *hpkebox.Box  `json:"encrypted_recovery_share"`
	RecoveryKDF            *recovery.KDF `json:"recovery_kdf"`
}

// Lookup is GET /v1/embedded_wallets/{id}: the app's view of a wallet, no
// share. Recover uses it to learn the recovery method (and so which secret
// it needs) before any share is released.
func Lookup(ctx context.Context, c *client.Client, walletID string) (*Wallet, error) {
	if err := checkWalletID(walletID); err != nil {
		return nil, err
	}
	var w Wallet
	if err := call(ctx, c, http.MethodGet, walletPath(walletID, ""), nil, &w); err != nil {
		return nil, err
	}
	if err := w.check(); err != nil {
		return nil, err
	}
	if w.ID != walletID {
		return nil, fmt.Errorf("device: asked for wallet %s, the server answered with %s", walletID, w.ID)
	}
	return &w, nil
}

// Create makes a new embedded wallet for the user of jwt, with recovery
// method "automatic", "password" (s.Password) or "cloud" (s.CloudSecret).
// The device keeps the device share, in the returned State. For password or
// cloud the server also releases the recovery share, which Create seals
// under the secret and uploads at once (challenge and PUT, signed with the
// key from the device and recovery shares), making the wallet active.
//
// When the wallet was made but a later step failed, Create returns the
// State together with the error: the caller must keep it, because its
// device share exists nowhere else, and can finish the upload with
// SetRecovery. A nil State means no wallet is known to exist.
//
// With automatic recovery the device holds a single share after Create, so
// nothing can check it against the address until the first SignMessage or
// SetRecovery combines it with the auth share.
func Create(ctx context.Context, c *client.Client, jwt, method string, s Secret) (*State, error) {
	if !recovery.ValidMethod(method) {
		return nil, fmt.Errorf("device: recovery method %q is not %q, %q or %q", method, recovery.MethodAutomatic, recovery.MethodPassword, recovery.MethodCloud)
	}
	if err := s.need(method, "the new wallet"); err != nil {
		return nil, err
	}
	var r release
	priv, err := deviceRequest(ctx, c, "/v1/embedded_wallets", jwt, map[string]any{"recovery": map[string]string{"method": method}}, &r)
	if err != nil {
		return nil, err
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	if r.RecoveryMethod != method {
		return nil, fmt.Errorf("device: asked for %s recovery, the server made wallet %s with %s", method, r.ID, r.RecoveryMethod)
	}
	dev, err := openShare(priv, r.DeviceShare, "device", r.ShareIndexes.Device)
	if err != nil {
		return nil, fmt.Errorf("device: wallet %s: %w", r.ID, err)
	}
	defer clear(dev)
	st := newState(&r.Wallet, dev)
	if method == recovery.MethodAutomatic {
		return st, nil
	}

	// Password or cloud: seal the recovery share and upload it, which
	// needs the wallet's key (device + recovery share) for the signature.
	rec, err := openShare(priv, r.RecoveryShare, "recovery", r.ShareIndexes.Recovery)
	if err != nil {
		return st, fmt.Errorf("device: wallet %s was created, but %w; run SetRecovery", r.ID, err)
	}
	defer clear(rec)
	if err := uploadRecovery(ctx, c, st, jwt, method, s, dev, rec); err != nil {
		return st, fmt.Errorf("device: wallet %s was created, but its recovery share was not uploaded (the wallet stays %s until SetRecovery succeeds): %w",
			r.ID, StatusRecoveryPending, err)
	}
	return st, nil
}

// Recover puts wallet walletID on this (new) device for the user of jwt:
// the server releases the auth share and the recovery share (automatic) or
// the device's own sealed recovery share (password, cloud), which Recover
// opens with s. It combines the two, checks the address against the
// server's, and derives this device's device share with recovery.ShareAt.
// A wrong password or cloud secret gives an error wrapping
// recovery.ErrWrongSecret, and nothing more is sent.
func Recover(ctx context.Context, c *client.Client, walletID, jwt string, s Secret) (*State, error) {
	w, err := Lookup(ctx, c, walletID)
	if err != nil {
		return nil, err
	}
	// A missing secret is found before the server counts a release.
	if err := s.need(w.RecoveryMethod, "wallet "+walletID); err != nil {
		return nil, err
	}
	var r release
	priv, err := deviceRequest(ctx, c, walletPath(walletID, "/recover"), jwt, nil, &r)
	if err != nil {
		return nil, err
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	if r.ID != walletID || !sameAddress(r.Address, w.Address) {
		return nil, fmt.Errorf("device: asked to recover wallet %s (%s), the server answered with %s (%s)", walletID, w.Address, r.ID, r.Address)
	}
	auth, err := openShare(priv, r.AuthShare, "auth", r.ShareIndexes.Auth)
	if err != nil {
		return nil, fmt.Errorf("device: wallet %s: %w", walletID, err)
	}
	defer clear(auth)
	rec, err := recoveryShare(priv, &r, s)
	if err != nil {
		return nil, err
	}
	defer clear(rec)
	key, err := keyFrom(auth, rec, &r.Wallet)
	if err != nil {
		return nil, err
	}
	clear(key)
	dev, err := recovery.ShareAt(auth, rec, byte(r.ShareIndexes.Device))
	if err != nil {
		return nil, fmt.Errorf("device: wallet %s: derive the device share: %w", walletID, err)
	}
	defer clear(dev)
	return newState(&r.Wallet, dev), nil
}

// recoveryShare returns the plaintext recovery share of a recover answer:
// opened from its HPKE box (automatic), or also unsealed with the user's
// password or cloud secret.
func recoveryShare(priv *ecdh.PrivateKey, r *release, s Secret) (recovery.Share, error) {
	id := r.ID
	if r.RecoveryMethod == recovery.MethodAutomatic {
		share, err := openShare(priv, r.RecoveryShare, "recovery", r.ShareIndexes.Recovery)
		if err != nil {
			return nil, fmt.Errorf("device: wallet %s: %w", id, err)
		}
		return share, nil
	}
	// The method may have changed since Lookup.
	if err := s.need(r.RecoveryMethod, "wallet "+id); err != nil {
		return nil, err
	}
	if r.EncryptedRecoveryShare == nil {
		return nil, fmt.Errorf("device: wallet %s: the server's answer has no encrypted_recovery_share", id)
	}
	sealed, err := hpkebox.OpenBox(priv, r.EncryptedRecoveryShare.EncapsulatedKey, r.EncryptedRecoveryShare.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("device: wallet %s: open the encrypted recovery share: %w", id, err)
	}
	var share recovery.Share
	var what string
	if r.RecoveryMethod == recovery.MethodPassword {
		if r.RecoveryKDF == nil {
			return nil, fmt.Errorf("device: wallet %s: the server's answer has no recovery_kdf", id)
		}
		what = "password"
		share, err = recovery.OpenWithPassword(sealed, s.Password, *r.RecoveryKDF, id)
	} else {
		what = "cloud secret"
		share, err = recovery.OpenWithSecret(sealed, s.CloudSecret, id)
	}
	if errors.Is(err, recovery.ErrWrongSecret) {
		return nil, fmt.Errorf("device: wrong %s for wallet %s: %w", what, id, err)
	}
	if err != nil {
		return nil, fmt.Errorf("device: wallet %s: open the recovery share: %w", id, err)
	}
	if int(share.Index()) != r.ShareIndexes.Recovery {
		clear(share)
		return nil, fmt.Errorf("device: wallet %s: the recovery share has index %d, not %d", id, share.Index(), r.ShareIndexes.Recovery)
	}
	return share, nil
}

// SetRecovery changes how the recovery share of st's wallet is protected,
// to method ("automatic", "password" with s.Password, "cloud" with
// s.CloudSecret): it fetches the auth share, derives the key and the
// recovery share from it and the device share, and uploads the new payload
// signed by the wallet's key. It also finishes a Create whose upload failed.
// On success st.RecoveryMethod and st.Status are the server's new values;
// the caller saves st.
func SetRecovery(ctx context.Context, c *client.Client, st *State, jwt, method string, s Secret) error {
	if err := st.check(); err != nil {
		return err
	}
	if !recovery.ValidMethod(method) {
		return fmt.Errorf("device: recovery method %q is not %q, %q or %q", method, recovery.MethodAutomatic, recovery.MethodPassword, recovery.MethodCloud)
	}
	if err := s.need(method, "wallet "+st.WalletID); err != nil {
		return err
	}
	dev, auth, err := st.authShare(ctx, c, jwt)
	if err != nil {
		return err
	}
	defer clear(dev)
	defer clear(auth)
	return uploadRecovery(ctx, c, st, jwt, method, s, dev, auth)
}

// SignMessage signs msg with personal_sign (EIP-191) with st's wallet key:
// it fetches the auth share, combines it with the device share, checks the
// address, signs, and clears the key. It returns the 0x-hex 65-byte
// signature. (No personal_sign can stand for the EIP-712 signature that
// authorizes a change of recovery, so any message may be signed.)
func SignMessage(ctx context.Context, c *client.Client, st *State, jwt string, msg []byte) (string, error) {
	if err := st.check(); err != nil {
		return "", err
	}
	dev, auth, err := st.authShare(ctx, c, jwt)
	if err != nil {
		return "", err
	}
	defer clear(dev)
	defer clear(auth)
	w := st.wallet()
	key, err := keyFrom(dev, auth, &w)
	if err != nil {
		return "", err
	}
	defer clear(key)
	return sign(key, &wallet.Request{Method: wallet.MethodPersonalSign, Message: msg, MessageEncoding: "utf-8"})
}

// authShare fetches the auth share for st's wallet and returns it with the
// device share, both checked.
func (st *State) authShare(ctx context.Context, c *client.Client, jwt string) (dev, auth recovery.Share, err error) {
	var r release
	priv, err := deviceRequest(ctx, c, walletPath(st.WalletID, "/auth_share"), jwt, nil, &r)
	if err != nil {
		return nil, nil, err
	}
	if err := r.check(); err != nil {
		return nil, nil, err
	}
	if r.ID != st.WalletID || !sameAddress(r.Address, st.Address) || r.ShareIndexes != st.ShareIndexes {
		return nil, nil, fmt.Errorf("device: the server's answer for wallet %s (%s) describes another wallet: %s (%s)", st.WalletID, st.Address, r.ID, r.Address)
	}
	auth, err = openShare(priv, r.AuthShare, "auth", r.ShareIndexes.Auth)
	if err != nil {
		return nil, nil, fmt.Errorf("device: wallet %s: %w", st.WalletID, err)
	}
	if dev, err = st.deviceShare(); err != nil {
		clear(auth)
		return nil, nil, err
	}
	return dev, auth, nil
}

// uploadRecovery derives the wallet key from shares a and b (any two of
// the wallet's three), builds the payload of method from the recovery share
// and uploads it: challenge, then PUT signed by the key. It updates st.
func uploadRecovery(ctx context.Context, c *client.Client, st *State, jwt, method string, s Secret, a, b recovery.Share) error {
	w := st.wallet()
	key, err := keyFrom(a, b, &w)
	if err != nil {
		return err
	}
	defer clear(key)
	rec, err := recovery.ShareAt(a, b, byte(st.ShareIndexes.Recovery))
	if err != nil {
		return fmt.Errorf("device: wallet %s: derive the recovery share: %w", st.WalletID, err)
	}
	defer clear(rec)
	p, err := newPayload(method, rec, s, st.WalletID)
	if err != nil {
		return err
	}
	out, err := upload(ctx, c, st.WalletID, jwt, key, p)
	if err != nil {
		return err
	}
	if out.ID != st.WalletID || !sameAddress(out.Address, st.Address) || out.RecoveryMethod != method || out.Status != StatusActive {
		return fmt.Errorf("device: the server accepted the upload for wallet %s but answered %s, %s, %s", st.WalletID, out.ID, out.RecoveryMethod, out.Status)
	}
	st.RecoveryMethod, st.Status = out.RecoveryMethod, out.Status
	return nil
}

// newPayload builds the recovery payload of method: the plaintext share
// for automatic (the server seals it), the share sealed under a fresh
// Argon2id key from the password, or under the cloud secret.
func newPayload(method string, rec recovery.Share, s Secret, walletID string) (recovery.Payload, error) {
	p := recovery.Payload{Method: method}
	switch method {
	case recovery.MethodAutomatic:
		p.RecoveryShare = base64.StdEncoding.EncodeToString(rec)
	case recovery.MethodPassword:
		kdf, err := recovery.NewKDF()
		if err != nil {
			return p, err
		}
		sealed, err := recovery.SealWithPassword(rec, s.Password, kdf, walletID)
		if err != nil {
			return p, fmt.Errorf("device: wallet %s: seal the recovery share: %w", walletID, err)
		}
		p.EncryptedRecoveryShare, p.KDF = base64.StdEncoding.EncodeToString(sealed), &kdf
	case recovery.MethodCloud:
		sealed, err := recovery.SealWithSecret(rec, s.CloudSecret, walletID)
		if err != nil {
			return p, fmt.Errorf("device: wallet %s: seal the recovery share: %w", walletID, err)
		}
		p.EncryptedRecoveryShare = base64.StdEncoding.EncodeToString(sealed)
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("device: wallet %s: payload: %w", walletID, err)
	}
	return p, nil
}

// challengeResponse is the answer of POST .../challenge.
type challengeResponse struct {
	Challenge           string `json:"challenge"`
	ExpiresAt           int64  `json:"expires_at"`
	EncryptionType      string `json:"encryption_type"`
	EncryptionPublicKey string `json:"encryption_public_key"`
}

// upload runs challenge + PUT .../recovery: p is HPKE-encrypted to the
// challenge's one-time key, and the wallet's key signs the challenge
// message over the SHA-256 of the exact ciphertext.
func upload(ctx context.Context, c *client.Client, walletID, jwt string, key []byte, p recovery.Payload) (*Wallet, error) {
	var ch challengeResponse
	if err := call(ctx, c, http.MethodPost, walletPath(walletID, "/challenge"), map[string]string{"user_jwt": jwt}, &ch); err != nil {
		return nil, err
	}
	if ch.EncryptionType != hpkebox.EncryptionType {
		return nil, fmt.Errorf("device: challenge: encryption_type %q is not %q", ch.EncryptionType, hpkebox.EncryptionType)
	}
	if err := checkChallenge(ch.Challenge); err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(ch.EncryptionPublicKey)
	if err != nil {
		return nil, errors.New("device: challenge: encryption_public_key is not standard base64")
	}
	pub, err := hpkebox.ParseRawPublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("device: challenge: encryption_public_key: %w", err)
	}
	plain, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	box, err := hpkebox.SealBox(pub, plain)
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("device: encrypt the recovery payload: %w", err)
	}
	ct, err := base64.StdEncoding.DecodeString(box.Ciphertext)
	if err != nil {
		return nil, err
	}
	td := recovery.ChallengeTypedData(walletID, ch.Challenge, sha256.Sum256(ct))
	sig, err := sign(key, &wallet.Request{Method: wallet.MethodSignTypedData, TypedData: &td})
	if err != nil {
		return nil, err
	}
	var w Wallet
	body := map[string]any{"user_jwt": jwt, "challenge": ch.Challenge, "signature": sig, "payload": box}
	if err := call(ctx, c, http.MethodPut, walletPath(walletID, "/recovery"), body, &w); err != nil {
		return nil, err
	}
	if err := w.check(); err != nil {
		return nil, err
	}
	return &w, nil
}

// checkChallenge accepts only what the server's challenges are (hex), so
// that a relay cannot slip a line of its own into the signed message.
func checkChallenge(ch string) error {
	if len(ch) < 16 || len(ch) > 128 {
		return fmt.Errorf("device: challenge: %d characters, want 16..128 hex digits", len(ch))
	}
	for i := 0; i < len(ch); i++ {
		if c := ch[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return errors.New("device: challenge: not lower-case hex")
		}
	}
	return nil
}

// sign signs a personal_sign or typed-data request with the 32-byte
// secp256k1 key and returns the 0x-hex signature.
func sign(key []byte, r *wallet.Request) (string, error) {
	resp, err := r.Sign(key)
	if err != nil {
		return "", fmt.Errorf("device: %s: %w", r.Method, err)
	}
	sd, ok := resp.Data.(*wallet.SignatureData)
	if !ok {
		return "", fmt.Errorf("device: %s returned %T", r.Method, resp.Data)
	}
	return sd.Signature, nil
}

// keyFrom combines two shares into the wallet's entropy, derives the key
// and returns it only if its address is w's. The caller clears the key.
func keyFrom(a, b recovery.Share, w *Wallet) ([]byte, error) {
	entropy, err := recovery.Combine(a, b)
	if err != nil {
		return nil, fmt.Errorf("device: wallet %s: %w", w.ID, err)
	}
	defer clear(entropy)
	key, addr, err := wallet.DeriveKey(entropy)
	if err != nil {
		return nil, fmt.Errorf("device: wallet %s: derive the key: %w", w.ID, err)
	}
	if !sameAddress(addr.Hex(), w.Address) {
		clear(key)
		return nil, fmt.Errorf("%w: wallet %s is %s, the shares give %s", ErrWrongWallet, w.ID, w.Address, addr.Hex())
	}
	return key, nil
}

// openShare opens a share released to the device and checks its form and
// index.
func openShare(priv *ecdh.PrivateKey, box *hpkebox.Box, role string, index int) (recovery.Share, error) {
	if box == nil {
		return nil, fmt.Errorf("the server's answer has no %s share", role)
	}
	b, err := hpkebox.OpenBox(priv, box.EncapsulatedKey, box.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("open the %s share: %w", role, err)
	}
	if err := checkShare(b, index); err != nil {
		clear(b)
		return nil, fmt.Errorf("the %s share: %w", role, err)
	}
	return recovery.Share(b), nil
}

// checkShare checks that b is a share of 16..32 bytes of entropy at index.
func checkShare(b []byte, index int) error {
	if len(b) < recovery.EntropySize+1 || len(b) > recovery.MaxEntropySize+1 {
		return fmt.Errorf("%d bytes, a share is %d..%d", len(b), recovery.EntropySize+1, recovery.MaxEntropySize+1)
	}
	if s := recovery.Share(b); int(s.Index()) != index {
		return fmt.Errorf("index %d, not %d", s.Index(), index)
	}
	return nil
}

// deviceRequest posts a device request: the user's JWT, a fresh HPKE key
// made for this one request, and fields. It decodes the answer into out and
// returns the key that opens its boxes.
func deviceRequest(ctx context.Context, c *client.Client, path, jwt string, fields map[string]any, out any) (*ecdh.PrivateKey, error) {
	if jwt == "" {
		return nil, errors.New("device: a user JWT is required")
	}
	priv, err := hpkebox.GenerateKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(priv.PublicKey())
	if err != nil {
		return nil, err
	}
	body := map[string]any{"user_jwt": jwt, "device_public_key": base64.StdEncoding.EncodeToString(der)}
	for k, v := range fields {
		body[k] = v
	}
	if err := call(ctx, c, http.MethodPost, path, body, out); err != nil {
		return nil, err
	}
	return priv, nil
}

// call sends one request and decodes the answer. API errors come back as
// *client.Error.
func call(ctx context.Context, c *client.Client, method, path string, body, out any) error {
	resp, err := c.Do(ctx, client.Request{Method: method, Path: path, Body: body})
	if err != nil {
		return err
	}
	if err := json.Unmarshal(resp.Body, out); err != nil {
		return fmt.Errorf("device: %s %s: the answer is not the expected JSON: %w", method, path, err)
	}
	return nil
}

func walletPath(id, suffix string) string {
	return "/v1/embedded_wallets/" + url.PathEscape(id) + suffix
}

func sameAddress(a, b string) bool {
	return common.IsHexAddress(a) && common.IsHexAddress(b) && common.HexToAddress(a) == common.HexToAddress(b)
}

// checkWalletID accepts what recovery accepts as a wallet id (it goes into
// the sealed share's associated data and the challenge message).
func checkWalletID(id string) error {
	if err := recovery.CheckWalletID(id); err != nil {
		return fmt.Errorf("device: %w", err)
	}
	return nil
}
