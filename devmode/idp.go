package devmode

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cachet-custody/cachet/config"
)

// The dev appliance's identity provider: an Ed25519 key in DIR/idp whose
// public half the app's [apps.jwt] names, so that users, user keys and
// embedded wallets can be tried without a real IdP. `cachet dev token`
// signs a JWT with it.
const (
	idpDir    = "idp"
	idpKey    = "dev-idp.key" // PKCS#8 PEM, mode 0600
	idpPub    = "dev-idp.pub" // SPKI PEM
	idpIssuer = "cachet-dev"
)

// writeIdP makes the dev IdP's key pair and returns the [apps.jwt] table
// for an app whose id is the audience.
func (e *Env) writeIdP(appID string) (string, error) {
	if err := os.MkdirAll(e.path(idpDir), 0o700); err != nil {
		return "", err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(e.path(idpDir, idpKey), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", err
	}
	if der, err = x509.MarshalPKIXPublicKey(pub); err != nil {
		return "", err
	}
	if err := os.WriteFile(e.path(idpDir, idpPub), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		return "", err
	}
	return fmt.Sprintf("\n# The dev identity provider (`cachet dev token` signs with its key).\n[apps.jwt]\npublic_key_file = %q\nissuer = %q\naudience = %q\nalgorithms = [\"EdDSA\"]\n",
		filepath.Join(idpDir, idpPub), idpIssuer, appID), nil
}

// Token signs a JWT for a user of the dev appliance in dir: issuer
// cachet-dev, audience the app's id, subject sub (the user's
// custom_user_id), valid for ttl.
func Token(dir, sub string, ttl time.Duration) (string, error) {
	if sub == "" {
		return "", errors.New("a token needs a subject (the user's custom_user_id)")
	}
	if ttl <= 0 || ttl > 24*time.Hour {
		return "", fmt.Errorf("ttl %s is outside (0, 24h]", ttl)
	}
	cfg, err := config.Load(filepath.Join(dir, "cachet.toml"))
	if err != nil {
		return "", err
	}
	if len(cfg.Apps) != 1 || cfg.Apps[0].JWT == nil {
		return "", fmt.Errorf("%s has no dev identity provider (it was set up by an older cachet dev); remove it and run cachet dev again", dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, idpDir, idpKey))
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return "", fmt.Errorf("%s: not PEM", filepath.Join(dir, idpDir, idpKey))
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return "", err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return "", fmt.Errorf("%s: not an Ed25519 key", filepath.Join(dir, idpDir, idpKey))
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	return jwt.Signed(sig).Claims(jwt.Claims{
		Issuer: idpIssuer, Audience: jwt.Audience{cfg.Apps[0].ID}, Subject: sub,
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(ttl)),
	}).Serialize()
}
