package jwtauth

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// TestVerifyValid accepts a valid token for each algorithm from each key
// source.
func TestVerifyValid(t *testing.T) {
	k := keys()
	algs := []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}
	pemFor := map[jose.SignatureAlgorithm][]byte{
		jose.RS256: spki(t, pub(k.rsa)),
		jose.ES256: spki(t, pub(k.ec)),
		jose.EdDSA: spki(t, pub(k.ed)),
	}
	sources := []struct {
		name string
		cfg  func(t *testing.T, alg jose.SignatureAlgorithm) Config
	}{
		{"jwks_file", func(t *testing.T, _ jose.SignatureAlgorithm) Config {
			c := baseConfig()
			c.JWKSFile = writeJWKSFile(t, standardJWKS()...)
			return c
		}},
		{"jwks_url", func(t *testing.T, _ jose.SignatureAlgorithm) Config {
			c := baseConfig()
			c.JWKSURL = newJWKSServer(t, standardJWKS()...).URL + "/.well-known/jwks.json"
			return c
		}},
		{"public_key_file", func(t *testing.T, alg jose.SignatureAlgorithm) Config {
			c := baseConfig()
			c.PublicKeyFile = writePEMFile(t, pemFor[alg])
			return c
		}},
	}
	for _, src := range sources {
		for _, alg := range algs {
			t.Run(src.name+"/"+string(alg), func(t *testing.T) {
				v := mustNew(t, src.cfg(t, alg), Options{Now: func() time.Time { return t0 }})
				id, err := v.Verify(context.Background(), signAs(t, alg, claims()))
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				want := Identity{UserID: "user-1", Issuer: testIssuer, Expiry: t0.Add(time.Hour), IssuedAt: t0.Add(-time.Minute)}
				if id != want {
					t.Errorf("identity = %+v, want %+v", id, want)
				}
			})
		}
	}
}

// TestVerifyRejections runs every rejection (and the accepted near misses)
// against a JWKS file, asserting the failed check, the reason, and that
// neither the error nor the log quotes the token.
func TestVerifyRejections(t *testing.T) {
	k := keys()
	long := strings.Repeat("x", MaxUserIDBytes+1)
	valid := func(t *testing.T) string { return signAs(t, jose.ES256, claims()) }
	es := func(cl map[string]any) func(t *testing.T) string {
		return func(t *testing.T) string { return signAs(t, jose.ES256, cl) }
	}
	tests := []struct {
		name   string
		cfg    func(*Config)
		keys   []jose.JSONWebKey // key set, if not standardJWKS()
		token  func(t *testing.T) string
		check  Check  // "" means accepted
		reason string // substring of Reason; for accepted tokens, the expected UserID
	}{
		// format
		{name: "empty", token: func(*testing.T) string { return "" }, check: CheckFormat, reason: "empty token"},
		{name: "not a JWT", token: func(*testing.T) string { return "not-a-jwt" }, check: CheckFormat, reason: "1 dot-separated parts"},
		{name: "two parts", token: func(t *testing.T) string {
			p := strings.Split(valid(t), ".")
			return p[0] + "." + p[1]
		}, check: CheckFormat, reason: "2 dot-separated parts"},
		{name: "JWE", token: func(*testing.T) string { return "a.b.c.d.e" }, check: CheckFormat, reason: "encrypted token"},
		{name: "bad base64", token: func(t *testing.T) string {
			p := strings.Split(valid(t), ".")
			return p[0] + ".!!" + p[1] + "." + p[2]
		}, check: CheckFormat, reason: "base64url"},
		{name: "header not JSON", token: func(t *testing.T) string {
			p := strings.Split(valid(t), ".")
			return b64("this is not json at all") + "." + p[1] + "." + p[2]
		}, check: CheckFormat, reason: "header is not valid"},
		{name: "kid not a string", token: func(t *testing.T) string {
			p := strings.Split(valid(t), ".")
			return b64(`{"alg":"ES256","kid":42}`) + "." + p[1] + "." + p[2]
		}, check: CheckFormat, reason: "header is not valid"},
		{name: "oversize", token: func(t *testing.T) string {
			return signAs(t, jose.ES256, with(claims(), "pad", strings.Repeat("a", MaxTokenBytes)))
		}, check: CheckFormat, reason: "over the 16384-byte limit"},
		{name: "crit header", token: func(t *testing.T) string {
			return sign(t, jose.ES256, k.ec, kidEC, claims(), map[string]any{"crit": []string{"exp"}, "exp": 1})
		}, check: CheckFormat, reason: `"crit"`},

		// algorithm
		{name: "alg none", token: unsignedTokenT, check: CheckAlgorithm, reason: `"none"`},
		{name: "HS256", token: func(t *testing.T) string {
			return sign(t, jose.HS256, []byte(strings.Repeat("k", 32)), kidEC, claims(), nil)
		}, check: CheckAlgorithm, reason: "HMAC algorithm"},
		{name: "HS256 keyed with the public key", token: func(t *testing.T) string {
			// The classic confusion attack: HMAC keyed with public key bytes.
			der, _ := x509.MarshalPKIXPublicKey(pub(k.rsa))
			return sign(t, jose.HS256, der, kidRSA, claims(), nil)
		}, check: CheckAlgorithm, reason: "never accepted"},
		{name: "alg not configured", cfg: func(c *Config) { c.Algorithms = []string{"ES256"} },
			token: func(t *testing.T) string { return signAs(t, jose.RS256, claims()) },
			check: CheckAlgorithm, reason: `algorithm "RS256" is not allowed (allowed: [ES256])`},
		{name: "alg unsupported", token: func(t *testing.T) string { return sign(t, jose.PS256, k.rsa, kidRSA, claims(), nil) },
			check: CheckAlgorithm, reason: `"PS256" is not allowed`},

		// key
		{name: "unknown kid", token: func(t *testing.T) string { return sign(t, jose.ES256, k.ec, "nope-7", claims(), nil) },
			check: CheckKey, reason: `no key with kid "nope-7" in the key set`},
		{name: "kid of an enc key", token: func(t *testing.T) string { return sign(t, jose.ES256, k.ec2, kidEnc, claims(), nil) },
			check: CheckKey, reason: `is for use "enc"`},
		{name: "kid of a weak RSA key", token: func(t *testing.T) string { return sign(t, jose.RS256, k.rsaWeak, kidWeak, claims(), nil) },
			check: CheckKey, reason: "below the 2048-bit minimum"},
		{name: "key type does not fit alg", token: func(t *testing.T) string { return sign(t, jose.ES256, k.ec, kidRSA, claims(), nil) },
			check: CheckKey, reason: `kid "rsa-1" (RSA-2048) cannot verify ES256`},
		{name: "long kid is cut", token: func(t *testing.T) string {
			return sign(t, jose.ES256, k.ec, strings.Repeat("k", 500), claims(), nil)
		}, check: CheckKey, reason: "… (500 bytes)"},

		{name: "no kid, no key fits the alg", keys: []jose.JSONWebKey{jwk(pub(k.ec), kidEC, "", "")},
			token: func(t *testing.T) string { return sign(t, jose.EdDSA, k.ed, "", claims(), nil) },
			check: CheckKey, reason: "the token has no kid and no key in the key set can verify EdDSA"},

		// signature
		{name: "signed by a key not in the set", token: func(t *testing.T) string { return sign(t, jose.ES256, k.ec2, kidEC, claims(), nil) },
			check: CheckSignature, reason: `with the key with kid "ec-1"`},
		{name: "no kid, signed by a key not in the set", token: func(t *testing.T) string { return sign(t, jose.ES256, k.ec2, "", claims(), nil) },
			check: CheckSignature, reason: "any of the 1 keys that can verify ES256"},
		{name: "payload swapped", token: func(t *testing.T) string {
			p := strings.Split(valid(t), ".")
			body, _ := json.Marshal(with(claims(), "sub", "admin"))
			return p[0] + "." + b64(string(body)) + "." + p[2]
		}, check: CheckSignature, reason: "does not verify"},
		{name: "claims of an unverified token are not evaluated", token: func(t *testing.T) string {
			// Expired and wrong issuer too, but the signature check comes first.
			return sign(t, jose.ES256, k.ec2, kidEC, with(claims(), "iss", "evil", "exp", 1), nil)
		}, check: CheckSignature, reason: "does not verify"},

		// issuer
		{name: "wrong issuer", token: es(with(claims(), "iss", "https://evil.example.com")), check: CheckIssuer,
			reason: `issuer "https://evil.example.com" is not the configured issuer "https://idp.example.com"`},
		{name: "issuer differs by a slash", token: es(with(claims(), "iss", testIssuer+"/")), check: CheckIssuer, reason: "not the configured issuer"},
		{name: "missing issuer", token: es(with(claims(), "iss", nil)), check: CheckIssuer, reason: "no iss claim"},
		{name: "numeric issuer", token: es(with(claims(), "iss", 7)), check: CheckIssuer, reason: "not a string"},

		// audience
		{name: "wrong audience", token: es(with(claims(), "aud", "other-app")), check: CheckAudience, reason: `audience ["other-app"] does not contain`},
		{name: "audience array without ours", token: es(with(claims(), "aud", []string{"a", "b", "c", "d"})), check: CheckAudience, reason: "… (4 values)"},
		{name: "missing audience", token: es(with(claims(), "aud", nil)), check: CheckAudience, reason: "no aud claim"},
		{name: "audience not a string", token: es(with(claims(), "aud", 3)), check: CheckAudience, reason: "not a string or an array"},
		{name: "audience array containing ours", token: es(with(claims(), "aud", []string{"other", testAudience})), reason: "user-1"},

		// expiry
		{name: "expired", token: es(with(claims(), "exp", t0.Add(-5*time.Minute).Unix())), check: CheckExpiry,
			reason: "expired at 2026-11-21T09:55:00Z, now 2026-11-21T10:00:00Z, clock skew 30s"},
		{name: "expired just beyond skew", token: es(with(claims(), "exp", t0.Add(-30*time.Second).Unix())), check: CheckExpiry, reason: "expired at"},
		{name: "expired within skew", token: es(with(claims(), "exp", t0.Add(-29*time.Second).Unix())), reason: "user-1"},
		{name: "expired within a configured skew", cfg: func(c *Config) { c.ClockSkew = 5 * time.Minute },
			token: es(with(claims(), "exp", t0.Add(-4*time.Minute).Unix())), reason: "user-1"},
		{name: "missing exp", token: es(with(claims(), "exp", nil)), check: CheckExpiry, reason: "the token has no exp claim"},
		{name: "exp not a number", token: es(with(claims(), "exp", "tomorrow")), check: CheckExpiry, reason: "not a NumericDate"},
		{name: "fractional exp", token: es(with(claims(), "exp", float64(t0.Add(time.Hour).Unix())+0.5)), reason: "user-1"},

		// not before
		{name: "nbf in the future", token: es(with(claims(), "nbf", t0.Add(5*time.Minute).Unix())), check: CheckNotBefore,
			reason: "not valid before 2026-11-21T10:05:00Z"},
		{name: "nbf within skew", token: es(with(claims(), "nbf", t0.Add(20*time.Second).Unix())), reason: "user-1"},
		{name: "nbf not a number", token: es(with(claims(), "nbf", true)), check: CheckNotBefore, reason: "not a NumericDate"},

		// issued at
		{name: "iat in the future", token: es(with(claims(), "iat", t0.Add(5*time.Minute).Unix())), check: CheckIssuedAt,
			reason: "issued at 2026-11-21T10:05:00Z, in the future"},
		{name: "iat within skew", token: es(with(claims(), "iat", t0.Add(20*time.Second).Unix())), reason: "user-1"},
		{name: "iat not a number", token: es(with(claims(), "iat", "now")), check: CheckIssuedAt, reason: "not a NumericDate"},
		{name: "no iat", token: es(with(claims(), "iat", nil)), reason: "user-1"},

		// user id claim
		{name: "missing sub", token: es(with(claims(), "sub", nil)), check: CheckClaim, reason: `no "sub" claim`},
		{name: "numeric sub", token: es(with(claims(), "sub", 12345)), check: CheckClaim, reason: "is a number; it must be a string"},
		{name: "empty sub", token: es(with(claims(), "sub", "")), check: CheckClaim, reason: "is empty"},
		{name: "null sub", token: func(t *testing.T) string {
			c := claims()
			c["sub"] = nil // with() would delete it; this marshals as null
			return signAs(t, jose.ES256, c)
		}, check: CheckClaim, reason: "is null"},
		{name: "object sub", token: es(with(claims(), "sub", map[string]any{"id": "x"})), check: CheckClaim, reason: "object or array"},
		{name: "sub over 256 bytes", token: es(with(claims(), "sub", long)), check: CheckClaim, reason: "257 bytes, over the 256-byte limit"},
		{name: "sub of 256 bytes", token: es(with(claims(), "sub", long[:256])), reason: long[:256]},
		{name: "custom user claim", cfg: func(c *Config) { c.UserIDClaim = "user_id" },
			token: es(with(claims(), "user_id", "did:privy:abc", "sub", "ignored")), reason: "did:privy:abc"},
		{name: "custom user claim missing", cfg: func(c *Config) { c.UserIDClaim = "user_id" },
			token: es(claims()), check: CheckClaim, reason: `no "user_id" claim`},
		{name: "custom user claim numeric", cfg: func(c *Config) { c.UserIDClaim = "user_id" },
			token: es(with(claims(), "user_id", 99)), check: CheckClaim, reason: "is a number"},

		// key selection without kid
		{name: "no kid, any fitting key", token: func(t *testing.T) string { return sign(t, jose.EdDSA, k.ed, "", claims(), nil) }, reason: "user-1"},
	}
	jwksPath := writeJWKSFile(t, standardJWKS()...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.JWKSFile = jwksPath
			if tt.keys != nil {
				cfg.JWKSFile = writeJWKSFile(t, tt.keys...)
			}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			log, logs := newLogger()
			v := mustNew(t, cfg, Options{Now: func() time.Time { return t0 }, Logger: log})
			token := tt.token(t)
			id, err := v.Verify(context.Background(), token)
			if tt.check == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if id.UserID != tt.reason {
					t.Errorf("user id = %q, want %q", id.UserID, tt.reason)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify accepted the token (%+v), want %s rejection", id, tt.check)
			}
			rejection(t, err, tt.check, tt.reason)
			if id != (Identity{}) {
				t.Errorf("rejected token returned identity %+v", id)
			}
			assertNoTokenLeak(t, err.Error(), token)
			assertNoTokenLeak(t, logs.String(), token)
		})
	}
}

func unsignedTokenT(t *testing.T) string { return unsignedToken(t) }

// TestErrorMessage pins the message format the daemon logs.
func TestErrorMessage(t *testing.T) {
	cfg := baseConfig()
	cfg.JWKSFile = writeJWKSFile(t, standardJWKS()...)
	now := time.Date(2026, 11, 21, 10, 5, 0, 0, time.UTC)
	v := mustNew(t, cfg, Options{Now: func() time.Time { return now }})
	token := signAs(t, jose.ES256, with(claims(), "exp", time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC).Unix()))
	_, err := v.Verify(context.Background(), token)
	const want = "JWT rejected (expiry): expired at 2026-11-21T10:00:00Z, now 2026-11-21T10:05:00Z, clock skew 30s"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

// TestJWKSKeyPolicy checks which JWKS entries are used: weak, encryption,
// private, symmetric and unknown keys are skipped with a warning, and the
// others still load.
func TestJWKSKeyPolicy(t *testing.T) {
	k := keys()
	privJWK, err := json.Marshal(jose.JSONWebKey{Key: k.ec2, KeyID: "priv-1"})
	if err != nil {
		t.Fatal(err)
	}
	var entries []string
	for _, e := range standardJWKS() {
		entries = append(entries, mustJSON(t, e))
	}
	entries = append(entries,
		string(privJWK),
		`{"kty":"oct","kid":"hmac-1","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}`,
		`{"kty":"OKP","crv":"X25519","kid":"x25519-1","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}`,
		`{"kty":"EC","crv":"P-256","kid":"bad-ec-1","x":"AAAA","y":"AAAA"}`,
		mustJSON(t, jwk(pub(k.ecP384), "p384-1", "", "")),
		mustJSON(t, jwk(pub(k.ec2), "pinned-1", "ES384", "")),
		`{"kty":"RSA","kid":"no-n"}`,
	)
	doc := `{"keys":[` + strings.Join(entries, ",") + `]}`
	log, logs := newLogger()
	set, err := parseJWKS([]byte(doc), supportedAlgorithms, log, "test")
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, e := range set.keys {
		kids = append(kids, e.kid)
	}
	if got := strings.Join(kids, ","); got != "rsa-1,ec-1,ed-1" {
		t.Errorf("usable keys = %s, want rsa-1,ec-1,ed-1", got)
	}
	skipped := map[string]string{
		kidEnc:     `use "enc"`,
		kidWeak:    "RSA key of 1024 bits is below the 2048-bit minimum",
		"priv-1":   "private key material",
		"hmac-1":   "symmetric (oct) key",
		"x25519-1": "cannot parse",
		"bad-ec-1": "cannot parse",
		"p384-1":   "EC P-384 key fits none",
		"pinned-1": `with alg "ES384" fits none`,
		"no-n":     "cannot parse",
	}
	for kid, want := range skipped {
		if got := set.skipped[kid]; !strings.Contains(got, want) {
			t.Errorf("skipped[%q] = %q, want it to contain %q", kid, got, want)
		}
		if !strings.Contains(logs.String(), "kid="+kid+" ") {
			t.Errorf("no warning logged for kid %q", kid)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != len(skipped) {
		t.Errorf("%d warnings, want %d:\n%s", n, len(skipped), logs)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestConcurrentVerify hammers one verifier per key source from many
// goroutines (run with -race), mixing good and bad tokens, with the clock
// moving and JWKS refreshes happening underneath.
func TestConcurrentVerify(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, standardJWKS()...)
	clock := newClock(t0)
	configs := map[string]Config{}
	c := baseConfig()
	c.JWKSURL = srv.URL
	c.JWKSRefresh = 10 * time.Second
	configs["url"] = c
	c = baseConfig()
	c.JWKSFile = writeJWKSFile(t, standardJWKS()...)
	configs["file"] = c

	type tokenCase struct {
		token string
		check Check
	}
	cases := []tokenCase{
		{signAs(t, jose.RS256, claims()), ""},
		{signAs(t, jose.ES256, claims()), ""},
		{signAs(t, jose.EdDSA, claims()), ""},
		{sign(t, jose.EdDSA, k.ed, "", claims(), nil), ""},
		{signAs(t, jose.ES256, with(claims(), "exp", t0.Add(-time.Hour).Unix())), CheckExpiry},
		{sign(t, jose.ES256, k.ec, "rotated-9", claims(), nil), CheckKey},
		{sign(t, jose.ES256, k.ec2, kidEC, claims(), nil), CheckSignature},
		{unsignedToken(t), CheckAlgorithm},
	}
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			v := mustNew(t, cfg, Options{Now: clock.Now})
			const goroutines, perGoroutine = 8, 50
			var wg sync.WaitGroup
			errs := make(chan error, goroutines*perGoroutine)
			for g := range goroutines {
				wg.Go(func() {
					for i := range perGoroutine {
						if i%10 == 0 {
							clock.Advance(time.Second)
						}
						tc := cases[(g+i)%len(cases)]
						_, err := v.Verify(context.Background(), tc.token)
						var e *Error
						switch {
						case tc.check == "" && err != nil:
							errs <- fmt.Errorf("valid token rejected: %v", err)
						case tc.check != "" && (!errors.As(err, &e) || e.Check != tc.check):
							errs <- fmt.Errorf("want %s rejection, got %v", tc.check, err)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
