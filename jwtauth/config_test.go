package jwtauth

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // fields with problems, sorted
	}{
		{"valid jwks_file", func(c *Config) { c.JWKSFile = "/etc/cachet/jwks.json" }, nil},
		{"valid everything set", func(c *Config) {
			c.JWKSURL = "https://idp.example.com/.well-known/jwks.json"
			c.JWKSRefresh = time.Minute
			c.Algorithms = []string{"ES256", "EdDSA"}
			c.ClockSkew = 5 * time.Minute
			c.UserIDClaim = "user_id"
		}, nil},
		{"no key source", func(c *Config) {}, []string{"jwks_file"}},
		{"two key sources", func(c *Config) {
			c.JWKSFile = "/a.json"
			c.JWKSURL = "https://idp.example.com/jwks"
		}, []string{"jwks_file", "jwks_url"}},
		{"three key sources", func(c *Config) {
			c.JWKSFile = "/a.json"
			c.JWKSURL = "https://idp.example.com/jwks"
			c.PublicKeyFile = "/k.pem"
		}, []string{"jwks_file", "jwks_url", "public_key_file"}},
		{"path with whitespace", func(c *Config) { c.PublicKeyFile = "/k.pem " }, []string{"public_key_file"}},
		{"jwks_url ftp", func(c *Config) { c.JWKSURL = "ftp://idp.example.com/jwks" }, []string{"jwks_url"}},
		{"jwks_url no scheme", func(c *Config) { c.JWKSURL = "idp.example.com/jwks" }, []string{"jwks_url"}},
		{"jwks_url no host", func(c *Config) { c.JWKSURL = "https:///jwks" }, []string{"jwks_url"}},
		{"jwks_url unparsable", func(c *Config) { c.JWKSURL = "http://[::1" }, []string{"jwks_url"}},
		{"jwks_refresh negative", func(c *Config) {
			c.JWKSURL = "https://idp.example.com/jwks"
			c.JWKSRefresh = -time.Second
		}, []string{"jwks_refresh"}},
		{"jwks_refresh too short", func(c *Config) {
			c.JWKSURL = "https://idp.example.com/jwks"
			c.JWKSRefresh = time.Second
		}, []string{"jwks_refresh"}},
		{"jwks_refresh too long", func(c *Config) {
			c.JWKSURL = "https://idp.example.com/jwks"
			c.JWKSRefresh = 48 * time.Hour
		}, []string{"jwks_refresh"}},
		{"algorithm unknown", func(c *Config) { c.JWKSFile = "/a.json"; c.Algorithms = []string{"RS512"} }, []string{"algorithms"}},
		{"algorithm wrong case", func(c *Config) { c.JWKSFile = "/a.json"; c.Algorithms = []string{"rs256"} }, []string{"algorithms"}},
		{"algorithm none", func(c *Config) { c.JWKSFile = "/a.json"; c.Algorithms = []string{"ES256", "none"} }, []string{"algorithms"}},
		{"algorithm HS256", func(c *Config) { c.JWKSFile = "/a.json"; c.Algorithms = []string{"HS256"} }, []string{"algorithms"}},
		{"issuer missing", func(c *Config) { c.JWKSFile = "/a.json"; c.Issuer = "" }, []string{"issuer"}},
		{"issuer whitespace", func(c *Config) { c.JWKSFile = "/a.json"; c.Issuer = testIssuer + " " }, []string{"issuer"}},
		{"audience missing", func(c *Config) { c.JWKSFile = "/a.json"; c.Audience = "" }, []string{"audience"}},
		{"clock_skew negative", func(c *Config) { c.JWKSFile = "/a.json"; c.ClockSkew = -time.Second }, []string{"clock_skew"}},
		{"clock_skew too large", func(c *Config) { c.JWKSFile = "/a.json"; c.ClockSkew = 6 * time.Minute }, []string{"clock_skew"}},
		{"user_id_claim registered", func(c *Config) { c.JWKSFile = "/a.json"; c.UserIDClaim = "exp" }, []string{"user_id_claim"}},
		{"user_id_claim whitespace", func(c *Config) { c.JWKSFile = "/a.json"; c.UserIDClaim = " sub" }, []string{"user_id_claim"}},
		{"several problems at once", func(c *Config) {
			c.Issuer, c.Audience, c.ClockSkew = "", "", time.Hour
		}, []string{"audience", "clock_skew", "issuer", "jwks_file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig()
			tt.change(&c)
			ps := c.Validate()
			var got []string
			for _, p := range ps {
				if p.Reason == "" {
					t.Errorf("problem %q has no reason", p.Field)
				}
				got = append(got, p.Field)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("fields = %v, want %v (problems: %v)", got, tt.want, ps)
			}
			// New refuses exactly what Validate refuses.
			_, err := New(c, Options{})
			var ce *ConfigError
			if isCE := errors.As(err, &ce); isCE != (len(tt.want) > 0) {
				t.Errorf("New error = %v, want ConfigError: %v", err, len(tt.want) > 0)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	c := baseConfig()
	c.JWKSURL = "https://idp.example.com/jwks"
	s, err := newSettings(c)
	if err != nil {
		t.Fatal(err)
	}
	if s.JWKSRefresh != 5*time.Minute || s.ClockSkew != 30*time.Second || s.UserIDClaim != "sub" {
		t.Errorf("defaults = %s %s %q", s.JWKSRefresh, s.ClockSkew, s.UserIDClaim)
	}
	if !slices.Equal(s.algs, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}) {
		t.Errorf("default algorithms = %v", s.algs)
	}
	c.Algorithms = []string{"EdDSA", "ES256", "EdDSA"}
	if s, _ = newSettings(c); !slices.Equal(s.algs, []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA}) {
		t.Errorf("algorithms = %v, want canonical order without duplicates", s.algs)
	}
}

// TestNewKeyFiles covers startup failures of the file key sources: a bad
// file must stop New, not fail logins later.
func TestNewKeyFiles(t *testing.T) {
	k := keys()
	weakDER := x509.MarshalPKCS1PublicKey(&k.rsaWeak.PublicKey)
	ecPriv, err := x509.MarshalPKCS8PrivateKey(k.ec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		pem      []byte // public_key_file content, or
		jwks     []byte // jwks_file content
		algs     []string
		wantErr  string // "" means New succeeds
		notExist bool
	}{
		{name: "RSA 2048 SPKI", pem: spki(t, pub(k.rsa))},
		{name: "RSA 2048 PKCS1", pem: pemBytes(t, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey))},
		{name: "EC P-256", pem: spki(t, pub(k.ec))},
		{name: "Ed25519", pem: spki(t, pub(k.ed))},
		{name: "weak RSA 1024 SPKI refused", pem: spki(t, pub(k.rsaWeak)), wantErr: "RSA key of 1024 bits is below the 2048-bit minimum"},
		{name: "weak RSA 1024 PKCS1 refused", pem: pemBytes(t, "RSA PUBLIC KEY", weakDER), wantErr: "below the 2048-bit minimum"},
		{name: "EC P-384 refused", pem: spki(t, pub(k.ecP384)), wantErr: "EC P-384 key fits none of the allowed algorithms"},
		{name: "key type not allowed", pem: spki(t, pub(k.ec)), algs: []string{"RS256"}, wantErr: "fits none of the allowed algorithms"},
		{name: "private key refused", pem: pemBytes(t, "PRIVATE KEY", ecPriv), wantErr: "give the public key only"},
		{name: "certificate refused", pem: pemBytes(t, "CERTIFICATE", []byte{1, 2, 3}), wantErr: "not a public key"},
		{name: "not PEM", pem: []byte("hello"), wantErr: "no PEM block"},
		{name: "two PEM blocks", pem: append(spki(t, pub(k.ec)), spki(t, pub(k.ed))...), wantErr: "more than one PEM block"},
		{name: "garbage DER", pem: pemBytes(t, "PUBLIC KEY", []byte{1, 2, 3}), wantErr: "parsing PUBLIC KEY"},
		{name: "missing PEM file", notExist: true, pem: nil, wantErr: "no such file"},

		{name: "JWKS ok", jwks: jwksJSON(t, standardJWKS()...)},
		{name: "JWKS not JSON", jwks: []byte("{"), wantErr: "not a JWKS document"},
		{name: "JWKS without keys", jwks: []byte(`{"kid":"x"}`), wantErr: `no "keys" array`},
		{name: "JWKS empty", jwks: []byte(`{"keys":[]}`), wantErr: "no usable signing key"},
		{name: "JWKS only weak and enc keys", jwks: jwksJSON(t,
			jwk(pub(k.rsaWeak), kidWeak, "", ""), jwk(pub(k.ec2), kidEnc, "", "enc")), wantErr: "no usable signing key (2 keys, all skipped)"},
		{name: "JWKS keys not allowed", algs: []string{"EdDSA"}, jwks: jwksJSON(t, jwk(pub(k.ec), kidEC, "", "")), wantErr: "no usable signing key"},
		{name: "missing JWKS file", notExist: true, jwks: []byte{}, wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Algorithms = tt.algs
			path := filepath.Join(t.TempDir(), "key")
			if !tt.notExist {
				data := tt.pem
				if tt.jwks != nil {
					data = tt.jwks
				}
				writeFile(t, path, data)
			}
			if tt.jwks != nil {
				cfg.JWKSFile = path
			} else {
				cfg.PublicKeyFile = path
			}
			log, _ := newLogger()
			v, err := New(cfg, Options{Logger: log, Now: func() time.Time { return t0 }})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New succeeded (%v), want error containing %q", v, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New error = %q, want it to contain %q", err, tt.wantErr)
			}
			if tt.notExist && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("New error = %v, want it to wrap fs.ErrNotExist", err)
			}
		})
	}
}
