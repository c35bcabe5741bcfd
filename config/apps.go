package config

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/cachet-custody/cachet/jwtauth"
)

// App is a client application allowed to use the /v1 API. Its secret is
// stored only as a SHA-256 hash: app secrets are 256-bit random values, so a
// fast hash is enough and a slow password hash would only cost latency.
type App struct {
	ID         string `toml:"id"`
	Name       string `toml:"name"`
	SecretHash string `toml:"secret_hash"`
	// JWT configures how the app's user JWTs (from its own identity
	// provider) are verified; nil means the app exchanges none.
	JWT *AppJWT `toml:"jwt"`
}

// AppJWT is an app's [apps.jwt] table: where the identity provider's
// verification keys come from and what a token must say. Package jwtauth
// documents each setting and supplies the defaults of those left out.
type AppJWT struct {
	JWKSFile      string   `toml:"jwks_file"`
	JWKSURL       string   `toml:"jwks_url"`
	PublicKeyFile string   `toml:"public_key_file"`
	JWKSRefresh   Duration `toml:"jwks_refresh"`
	Algorithms    []string `toml:"algorithms"`
	Issuer        string   `toml:"issuer"`
	Audience      string   `toml:"audience"`
	ClockSkew     Duration `toml:"clock_skew"`
	UserIDClaim   string   `toml:"user_id_claim"`
}

// Settings returns the table as jwtauth takes it.
func (j AppJWT) Settings() jwtauth.Config {
	return jwtauth.Config{
		JWKSFile: j.JWKSFile, JWKSURL: j.JWKSURL, PublicKeyFile: j.PublicKeyFile,
		JWKSRefresh: j.JWKSRefresh.Duration, Algorithms: j.Algorithms,
		Issuer: j.Issuer, Audience: j.Audience, ClockSkew: j.ClockSkew.Duration, UserIDClaim: j.UserIDClaim,
	}
}

const secretHashPrefix = "sha256:"

// HashAppSecret returns the secret_hash value for secret.
func HashAppSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return secretHashPrefix + hex.EncodeToString(sum[:])
}

func checkSecretHash(h string) error {
	hexPart, ok := strings.CutPrefix(h, secretHashPrefix)
	if !ok {
		return fmt.Errorf("must start with %q (the output of `cachet app create`)", secretHashPrefix)
	}
	if b, err := hex.DecodeString(hexPart); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("must be %q followed by 64 hex digits", secretHashPrefix)
	}
	return nil
}

// CheckSecret reports, in constant time, whether secret is the app's secret.
func (a App) CheckSecret(secret string) bool {
	want := HashAppSecret(secret)
	return subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(a.SecretHash))) == 1
}

// NewApp makes a new app id and secret. The secret is returned once and never
// stored; the App carries only its hash.
func NewApp(name string) (App, string, error) {
	id := make([]byte, 12)
	sec := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return App{}, "", err
	}
	if _, err := rand.Read(sec); err != nil {
		return App{}, "", err
	}
	secret := "cachet_secret_" + hex.EncodeToString(sec)
	clear(sec)
	return App{ID: "app_" + hex.EncodeToString(id), Name: name, SecretHash: HashAppSecret(secret)}, secret, nil
}
