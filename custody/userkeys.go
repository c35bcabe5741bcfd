package custody

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/jwtauth"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/store"
)

// JWTVerifier verifies one app's user JWTs (package jwtauth).
type JWTVerifier interface {
	Verify(ctx context.Context, token string) (jwtauth.Identity, error)
}

// minUserKeyLife is the shortest life a user key is issued with: a JWT that
// expires sooner (within the verifier's clock skew) gets no key.
const minUserKeyLife = 5 * time.Second

// maxJWTBytes bounds user_jwt before it reaches the verifier.
const maxJWTBytes = 16 << 10

// sealedTo is the part of a request body that names whom the key material
// of the response is encrypted to.
type sealedTo struct {
	EncryptionType     string `json:"encryption_type"`
	RecipientPublicKey string `json:"recipient_public_key"`
}

// key checks the encryption type and parses the recipient's key.
func (r sealedTo) key() (*ecdh.PublicKey, error) {
	if err := checkEncryptionType(r.EncryptionType); err != nil {
		return nil, err
	}
	return recipientKey("recipient_public_key", r.RecipientPublicKey)
}

// authenticateInput is the body of POST /v1/wallets/authenticate.
type authenticateInput struct {
	UserJWT string `json:"user_jwt"`
	sealedTo
}

// AuthenticateResponse is the answer of POST /v1/wallets/authenticate.
type AuthenticateResponse struct {
	EncryptedAuthorizationKey hpkebox.Box `json:"encrypted_authorization_key"`
	ExpiresAt                 int64       `json:"expires_at"` // Unix ms
	Wallets                   []Wallet    `json:"wallets"`
}

// recipientKey parses a recipient_public_key: base64 DER SPKI of a P-256
// key (PEM armour tolerated), as for authorization keys.
func recipientKey(field, s string) (*ecdh.PublicKey, error) {
	if err := required(field, s); err != nil {
		return nil, err
	}
	pub, err := quorum.ParsePublicKey(s)
	if err != nil {
		var ie *quorum.InputError
		if errors.As(err, &ie) {
			return nil, errorf(Invalid, "%s: %s.", field, ie.Reason)
		}
		return nil, errorf(Invalid, "%s: not a P-256 public key.", field)
	}
	k, err := pub.ECDH()
	if err != nil {
		return nil, errorf(Invalid, "%s: not a P-256 public key.", field)
	}
	return k, nil
}

func checkEncryptionType(v string) error {
	if v != hpkebox.EncryptionType {
		return errorf(Invalid, "encryption_type: must be %q; Cachet never returns key material unencrypted.", hpkebox.EncryptionType)
	}
	return nil
}

// VerifyUserJWT verifies a user's JWT with the app's verifier and returns
// the live user it names. Every refusal says which check failed, never the
// token.
func (s *Service) VerifyUserJWT(ctx context.Context, app, token string) (jwtauth.Identity, User, error) {
	verify, ok := s.opts.JWT(app)
	if !ok {
		return jwtauth.Identity{}, User{}, errorf(Forbidden, "This app has no JWT verification configured ([apps.jwt] in the config), so it cannot exchange user JWTs.")
	}
	if err := required("user_jwt", token); err != nil {
		return jwtauth.Identity{}, User{}, err
	}
	if len(token) > maxJWTBytes {
		return jwtauth.Identity{}, User{}, errorf(Unauthorized, "Invalid user JWT (format): longer than %d bytes.", maxJWTBytes)
	}
	id, err := verify.Verify(ctx, token)
	if err != nil {
		var je *jwtauth.Error
		switch {
		case errors.As(err, &je):
			return jwtauth.Identity{}, User{}, errorf(Unauthorized, "Invalid user JWT (%s): %s.", je.Check, je.Reason)
		case errors.Is(err, jwtauth.ErrKeysUnavailable):
			s.opts.Logger.Error("user JWT verification keys unavailable", "app", app, "error", err)
			return jwtauth.Identity{}, User{}, errorf(Unavailable, "The identity provider's verification keys are unavailable; no user key was issued.")
		}
		return jwtauth.Identity{}, User{}, fmt.Errorf("verify user JWT: %w", err)
	}
	u, err := userByCustomID(ctx, s.st, app, id.UserID)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Kind == NotFound {
			e.Message += " Create the user with POST /v1/users and a custom_auth linked account first."
		}
		return jwtauth.Identity{}, User{}, err
	}
	return id, u, nil
}

// Authenticate is POST /v1/wallets/authenticate: it verifies the user's JWT
// with the app's identity provider settings, makes a fresh P-256 user key,
// records its public half, user and expiry, and returns the private half
// HPKE-encrypted to the caller's recipient key. The private key is never
// stored. Its signatures approve for the user until it expires: the
// configured lifetime, but never past the JWT's own expiry.
func (s *Service) Authenticate(ctx context.Context, c Call, body []byte) (json.RawMessage, error) {
	var in authenticateInput
	if err := DecodeBody(body, &in); err != nil {
		return nil, err
	}
	recipient, err := in.key()
	if err != nil {
		return nil, err
	}
	ident, user, err := s.VerifyUserJWT(ctx, c.App, in.UserJWT)
	if err != nil {
		return nil, err
	}
	now := s.now()
	expires := now.Add(s.opts.UserKeyLifetime)
	if ident.Expiry.Before(expires) {
		expires = ident.Expiry
	}
	if expires.Sub(now) < minUserKeyLife {
		return nil, errorf(Unauthorized, "Invalid user JWT (expiry): it expires in less than %s; get a fresh one.", minUserKeyLife)
	}

	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate user key: %w", err)
	}
	spki := quorum.CanonicalPublicKey(&priv.PublicKey)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode user key: %w", err)
	}
	// The SDK expects the UTF-8 text of the base64 PKCS#8 key; build it in
	// a slice we can clear rather than a string.
	text := make([]byte, base64.StdEncoding.EncodedLen(len(der)))
	base64.StdEncoding.Encode(text, der)
	keys.Zero(der)
	box, err := hpkebox.SealBox(recipient, text)
	keys.Zero(text)
	if err != nil {
		return nil, fmt.Errorf("encrypt user key: %w", err)
	}
	expMS := expires.UnixMilli()
	return s.commit(ctx, action{
		call: c, name: "user_key.issue", target: user.ID,
		detail: map[string]any{
			"key":        quorum.Fingerprint(spki),
			"expires_at": expMS,
			"issuer":     ident.Issuer,
			"recipient":  recipientFingerprint(recipient),
		},
		response: func(tx *store.Tx) (any, error) {
			nowMS := now.UnixMilli()
			// The user may have been deleted since the JWT was checked.
			if _, err := loadUser(ctx, txq{tx}, c.App, user.ID); err != nil {
				return nil, err
			}
			if _, err := tx.Exec(`INSERT INTO user_keys(public_key, app_id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
				spki, c.App, user.ID, nowMS, expMS); err != nil {
				return nil, fmt.Errorf("insert user key: %w", err)
			}
			// Keep at most MaxUserKeys live keys per user: every key is a
			// candidate each of the user's signatures is tried against.
			if _, err := tx.Exec(`UPDATE user_keys SET revoked_at = ? WHERE public_key IN (
				SELECT public_key FROM user_keys WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?
				ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?)`, nowMS, user.ID, nowMS, s.opts.MaxUserKeys); err != nil {
				return nil, fmt.Errorf("revoke old user keys: %w", err)
			}
			if _, err := tx.Exec(`UPDATE users SET first_verified_at = COALESCE(first_verified_at, ?), latest_verified_at = ? WHERE id = ?`,
				nowMS, nowMS, user.ID); err != nil {
				return nil, err
			}
			ws, err := userWallets(ctx, txq{tx}, c.App, user.ID)
			if err != nil {
				return nil, err
			}
			return AuthenticateResponse{EncryptedAuthorizationKey: box, ExpiresAt: expMS, Wallets: ws}, nil
		},
	})
}

// recipientFingerprint names a recipient key in the audit record.
func recipientFingerprint(k *ecdh.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "unknown"
	}
	return quorum.Fingerprint(base64.StdEncoding.EncodeToString(der))
}

// userWallets lists the live wallets a user's key may act on: those whose
// owner or additional signer is a key quorum with the user as a member,
// directly or through a nested quorum.
func userWallets(ctx context.Context, q querier, app, userID string) ([]Wallet, error) {
	rows, err := q.QueryContext(ctx, `WITH direct(qid) AS (
			SELECT m.quorum_id FROM key_quorum_members m JOIN key_quorums k ON k.id = m.quorum_id
			WHERE m.user_id = ? AND k.app_id = ? AND k.deleted_at IS NULL),
		reach(qid) AS (
			SELECT qid FROM direct
			UNION SELECT m.quorum_id FROM key_quorum_members m JOIN key_quorums k ON k.id = m.quorum_id
			WHERE m.child_id IN (SELECT qid FROM direct) AND k.deleted_at IS NULL)
		SELECT `+walletColumns+` FROM wallet_quorums wq CROSS JOIN wallets w
		WHERE wq.quorum_id IN (SELECT qid FROM reach) AND w.id = wq.wallet_id AND w.app_id = ? AND w.archived_at IS NULL
		ORDER BY w.rowid`, userID, app, app)
	if err != nil {
		return nil, fmt.Errorf("read user wallets: %w", err)
	}
	defer rows.Close()
	out := []Wallet{}
	for rows.Next() {
		w, err := scanWallet(rows)
		if err != nil {
			return nil, err
		}
		// A wallet reached through two of the user's quorums comes twice,
		// one row after the other (ORDER BY rowid).
		if n := len(out); n > 0 && out[n-1].ID == w.ID {
			continue
		}
		out = append(out, w.Wallet)
	}
	return out, rows.Err()
}
