package daemon

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/authkeys"
	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/hsm"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/jwtauth"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/wallet"
)

func TestMain(m *testing.M) { testhw.SoftHSMMain(m) }

const (
	rigIssuer   = "https://idp.example.test/"
	rigAudience = "cachet-integrity"
)

// rig is the whole API in process: the daemon's handler over the real
// custody and authorization-key services, a real store and a SoftHSM
// token, an app whose users sign in with a test identity provider.
type rig struct {
	t   testing.TB
	srv *Server
	svc *custody.Service
	// expiry is how far ahead send sets privy-request-expiry.
	expiry time.Duration
	db     *sql.DB
	idp    *ecdsa.PrivateKey
	owner  *ecdsa.PrivateKey // owns every owned resource of the rig
	pub    string            // owner's SPKI
}

func newRig(t testing.TB) *rig { return newRigWith(t, 0) }

// newRigWith is newRig with api.max_request_expiry set to horizon (0: the
// default).
func newRigWith(t testing.TB, horizon time.Duration) *rig {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("CACHET_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	label := testhw.UniqueLabel("integrity")
	if err := hsm.InitToken(testhw.Module(), label, "so-1234", "1234"); err != nil {
		t.Fatal(err)
	}
	b, err := hsm.Open(ctx, hsm.Options{Module: testhw.Module(), TokenLabel: label, PIN: "1234", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	root := make([]byte, keys.RootSize)
	rand.Read(root)
	if err := b.(keys.Provisioner).Provision(ctx, root, keys.ProvisionOptions{Generation: 1}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cachet.db")
	st, err := store.Open(ctx, path, store.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	idp, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&idp.PublicKey)
	pemPath := filepath.Join(t.TempDir(), "idp.pem")
	os.WriteFile(pemPath, []byte("-----BEGIN PUBLIC KEY-----\n"+base64.StdEncoding.EncodeToString(der)+"\n-----END PUBLIC KEY-----\n"), 0o600)
	v, err := jwtauth.New(jwtauth.Config{PublicKeyFile: pemPath, Issuer: rigIssuer, Audience: rigAudience}, jwtauth.Options{})
	if err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	// app_2 is another tenant (tenancy_test.go), trusting the same
	// identity provider.
	cfg.Apps = []config.App{{ID: "app_1", SecretHash: config.HashAppSecret(testSecret)}, {ID: "app_2", SecretHash: config.HashAppSecret(testSecret2)}}
	if horizon > 0 {
		cfg.API.MaxRequestExpiry.Duration = horizon
	}
	alog := audit.New(st, b, audit.Options{})
	svc := custody.New(st, b, nil, custody.Options{Logger: log, MaxRequestExpiry: cfg.API.MaxRequestExpiry.Duration,
		JWT: func(app string) (custody.JWTVerifier, bool) { return v, app == "app_1" || app == "app_2" }})
	ak := authkeys.New(st, b, authkeys.Options{PublicBase: cfg.Server.PublicBase(), MaxRequestExpiry: cfg.API.MaxRequestExpiry.Duration})
	srv := New(Deps{Config: &cfg, Backend: audit.Backend(b, alog), Store: st, Audit: alog, Custody: svc, AuthKeys: ak, Logger: log})

	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	owner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := keys.PublicKeySPKI(&owner.PublicKey)
	return &rig{t: t, srv: srv, svc: svc, expiry: cfg.API.MaxRequestExpiry.Duration / 2, db: db, idp: idp, owner: owner, pub: pub}
}

// token is a JWT of the rig's identity provider for subject.
func (r *rig) token(subject string) string {
	sig, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: r.idp}, nil)
	now := time.Now()
	tok, err := jwt.Signed(sig).Claims(map[string]any{"iss": rigIssuer, "aud": rigAudience, "sub": subject,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}).Serialize()
	if err != nil {
		r.t.Fatal(err)
	}
	return tok
}

// send sends one request as a local administrator with the app's
// credentials, signed by signers (over exactly the bytes sent).
func (r *rig) send(method, path string, body []byte, signers ...*ecdsa.PrivateKey) (int, map[string]any) {
	r.t.Helper()
	h := http.Header{}
	h.Set("privy-request-expiry", fmt.Sprint(time.Now().Add(r.expiry).UnixMilli()))
	if len(signers) > 0 {
		sig, err := r.sign(method, path, body, h, signers...)
		if err != nil {
			r.t.Fatal(err)
		}
		h.Set("privy-authorization-signature", sig)
	}
	return r.sendRaw(method, path, body, h)
}

// sign is the privy-authorization-signature of a request with headers h
// (the app's privy-app-id is added).
func (r *rig) sign(method, path string, body []byte, h http.Header, signers ...*ecdsa.PrivateKey) (string, error) {
	h = h.Clone()
	h.Set("privy-app-id", "app_1")
	return client.Sign(quorum.Request{Method: method, URL: "http://localhost" + path, Body: body, Headers: h}, signers)
}

// sendRaw sends a request with exactly the privy- headers in h.
func (r *rig) sendRaw(method, path string, body []byte, h http.Header) (int, map[string]any) {
	r.t.Helper()
	req := httptest.NewRequest(method, "http://localhost"+path, bytes.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", basicAuthHeader("app_1", testSecret))
	req.Header.Set("privy-app-id", "app_1")
	req = req.WithContext(context.WithValue(req.Context(), peerKey{}, Peer{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}))
	w := httptest.NewRecorder()
	r.srv.ServeHTTP(w, req)
	var m map[string]any
	json.Unmarshal(w.Body.Bytes(), &m)
	return w.Code, m
}

// must sends a request that must succeed and returns its JSON.
func (r *rig) must(method, path, body string, signers ...*ecdsa.PrivateKey) map[string]any {
	r.t.Helper()
	code, m := r.send(method, path, []byte(body), signers...)
	if code != http.StatusOK {
		r.t.Fatalf("%s %s: %d %v", method, path, code, m)
	}
	return m
}

// fingerprint digests everything a request may change: every table, the
// audit log without the records of refusals.
func (r *rig) fingerprint() string {
	r.t.Helper()
	tables, err := r.db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		r.t.Fatal(err)
	}
	var names []string
	for tables.Next() {
		var n string
		tables.Scan(&n)
		names = append(names, n)
	}
	tables.Close()
	h := sha256.New()
	for _, n := range names {
		q := `SELECT * FROM ` + n
		if n == "audit_records" {
			q += ` WHERE action != 'api.refused'`
		}
		rows, err := r.db.Query(q + ` ORDER BY 1`)
		if err != nil {
			r.t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			rows.Scan(ptrs...)
			fmt.Fprintf(h, "%s %v\n", n, vals)
		}
		rows.Close()
	}
	return hex.EncodeToString(h.Sum(nil))
}

// keyVariants are the spellings of key that Go's encoding/json would have
// matched to it but RFC 8785 and every JavaScript reader keep apart:
// upper case, first letter upper, and the Unicode case folds of s (U+017F)
// and k (U+212A).
func keyVariants(key string) []string {
	var out []string
	add := func(v string) {
		if v != key && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	add(strings.ToUpper(key))
	if key != "" {
		rs := []rune(key)
		rs[0] = unicode.ToUpper(rs[0])
		add(string(rs))
	}
	if strings.ContainsRune(key, 's') {
		add(strings.Replace(key, "s", "ſ", 1))
	}
	if strings.ContainsRune(key, 'k') {
		add(strings.Replace(key, "k", "K", 1))
	}
	return out
}

// mutation is a body with one key replaced by a variant, or a variant added
// beside it (the attack: approvers read one member, Go would read the other).
type mutation struct {
	name, variant string
	body          []byte
}

// mutations lists, for every object key of body at any depth outside the
// free-form paths, each variant replacing the key and added beside it.
func mutations(t *testing.T, body string, freeForm []string) []mutation {
	t.Helper()
	var v any
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("base body %s: %v", body, err)
	}
	var out []mutation
	var walk func(path string, node any, rebuild func(any) any)
	walk = func(path string, node any, rebuild func(any) any) {
		switch n := node.(type) {
		case map[string]any:
			if slices.Contains(freeForm, path) {
				return
			}
			for k, child := range n {
				kp := strings.TrimPrefix(path+"."+k, ".")
				for _, variant := range keyVariants(k) {
					replaced := maps(n)
					delete(replaced, k)
					replaced[variant] = child
					both := maps(n)
					both[variant] = child
					for mode, m := range map[string]map[string]any{"replaced by": replaced, "beside": both} {
						b, _ := json.Marshal(rebuild(m))
						out = append(out, mutation{name: fmt.Sprintf("%s %s %q", kp, mode, variant), variant: variant, body: b})
					}
				}
				walk(kp, child, func(c any) any { m := maps(n); m[k] = c; return rebuild(m) })
			}
		case []any:
			for i, child := range n {
				walk(fmt.Sprintf("%s[%d]", path, i), child, func(c any) any {
					s := slices.Clone(n)
					s[i] = c
					return rebuild(s)
				})
			}
		}
	}
	walk("", v, func(x any) any { return x })
	return out
}

func maps(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func spki(t *testing.T, k *ecdh.PrivateKey) string {
	der, err := x509.MarshalPKIXPublicKey(k.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

// Every route that takes a body reads it one way: exact, case-sensitive
// member names, and any member the route's schema does not have refused.
// For every top-level and nested key of a valid body, its upper-case,
// capitalized and Unicode-fold (ſ, K) variants, replacing the key or added
// beside it, are refused with invalid_data naming the variant, and nothing
// in the store changes. Each variant body is signed by the owner, so the
// key is the only reason for the refusal; the valid body itself is then
// accepted.
func TestCaseVariantKeysRefusedOnEveryRoute(t *testing.T) {
	r := newRig(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherPub, _ := keys.PublicKeySPKI(&other.PublicKey)
	str := func(m map[string]any, k string) string { return m[k].(string) }

	q := r.must("POST", "/v1/key_quorums", `{"public_keys":["`+r.pub+`"],"authorization_threshold":1}`)
	signerQ := r.must("POST", "/v1/key_quorums", `{"public_keys":["`+otherPub+`"],"authorization_threshold":1}`)
	w := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum","owner_id":"`+str(q, "id")+`"}`)
	wid := str(w, "id")
	r.must("POST", "/v1/users", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"alice"}]}`)
	device, _ := hpkebox.GenerateKey()
	ew := r.must("POST", "/v1/embedded_wallets", `{"user_jwt":"`+r.token("alice")+`","device_public_key":"`+spki(t, device)+`","recovery":{"method":"automatic"}}`)
	ewid := str(ew, "id")
	cs := r.must("POST", "/v1/condition_sets", `{"name":"payees","owner":{"public_key":"`+r.pub+`"}}`)
	csid := str(cs, "id")
	pol := r.must("POST", "/v1/policies", `{"version":"1.0","name":"p","chain_type":"ethereum","owner":{"public_key":"`+r.pub+`"},
		"rules":[{"name":"r","method":"eth_signTransaction","action":"ALLOW","conditions":[{"field_source":"ethereum_transaction","field":"value","operator":"lte","value":"1000"}]}]}`)
	pid := str(pol, "id")
	rid := str(pol["rules"].([]any)[0].(map[string]any), "id")
	code, ak := r.send("POST", "/v1/authorization_keys", []byte(`{"allowed_callers":{"uids":[`+fmt.Sprint(os.Getuid())+`]}}`))
	if code != 200 {
		t.Fatalf("authorization key: %d %v", code, ak)
	}
	akid := str(ak, "id")
	importKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader) // only its address is used
	_ = importKey
	recipient, _ := hpkebox.GenerateKey()
	erc20 := `[{"type":"function","name":"transfer","inputs":[{"name":"to","type":"address"},{"name":"value","type":"uint256"}],"outputs":[{"name":"","type":"bool"}],"stateMutability":"nonpayable"}]`
	tx := `{"to":"0x000000000000000000000000000000000000dEaD","value":"0x1","chain_id":1,"nonce":%d,"gas_limit":21000,"max_fee_per_gas":"0x3b9aca00","max_priority_fee_per_gas":"0x1","type":2}`
	typed := `{"domain":{"name":"Mail","version":"1","chainId":1,"verifyingContract":"0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},
		"types":{"Person":[{"name":"name","type":"string"},{"name":"wallet","type":"address"}],"Mail":[{"name":"from","type":"Person"},{"name":"contents","type":"string"}]},
		"primary_type":"Mail","message":{"from":{"name":"Cow","wallet":"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},"contents":"Hello"}}`

	type route struct {
		name, method, path, body string
		signed                   bool
		freeForm                 []string // paths whose keys are data, not schema
		noBase                   bool     // the base body is not sent (single-use, or needs a device signature)
	}
	routes := []route{
		{name: "create key quorum", method: "POST", path: "/v1/key_quorums", body: `{"public_keys":["` + otherPub + `"],"authorization_threshold":1,"display_name":"q","key_quorum_ids":[],"user_ids":[]}`},
		{name: "update key quorum", method: "PATCH", path: "/v1/key_quorums/" + str(q, "id"), body: `{"public_keys":["` + r.pub + `"],"authorization_threshold":1,"display_name":"q2"}`, signed: true},
		{name: "create wallet", method: "POST", path: "/v1/wallets", body: `{"chain_type":"ethereum","owner":{"public_key":"` + r.pub + `"},"display_name":"w","external_id":"ext-1","policy_ids":[],"additional_signers":[{"signer_id":"` + str(signerQ, "id") + `","override_policy_ids":[]}]}`},
		{name: "update wallet", method: "PATCH", path: "/v1/wallets/" + wid, body: `{"display_name":"x","policy_ids":[],"additional_signers":[{"signer_id":"` + str(signerQ, "id") + `","override_policy_ids":[]}]}`, signed: true},
		{name: "rpc eth_signTransaction", method: "POST", path: "/v1/wallets/" + wid + "/rpc", body: `{"method":"eth_signTransaction","caip2":"eip155:1","chain_type":"ethereum","params":{"transaction":` + fmt.Sprintf(tx, 1) + `}}`, signed: true},
		{name: "rpc personal_sign", method: "POST", path: "/v1/wallets/" + wid + "/rpc", body: `{"method":"personal_sign","params":{"message":"log in","encoding":"utf-8"},"signature_options":{"type":"ecdsa"}}`, signed: true},
		{name: "rpc eth_signTypedData_v4", method: "POST", path: "/v1/wallets/" + wid + "/rpc", body: `{"method":"eth_signTypedData_v4","params":{"typed_data":` + typed + `}}`, signed: true,
			freeForm: []string{"params.typed_data.types"}},
		{name: "rpc eth_sign7702Authorization", method: "POST", path: "/v1/wallets/" + wid + "/rpc", body: `{"method":"eth_sign7702Authorization","params":{"contract":"0x000000000000000000000000000000000000dEaD","chain_id":1,"nonce":0}}`, signed: true},
		{name: "raw_sign hash", method: "POST", path: "/v1/wallets/" + wid + "/raw_sign", body: `{"params":{"hash":"0x` + strings.Repeat("ab", 32) + `"}}`, signed: true},
		{name: "raw_sign bytes", method: "POST", path: "/v1/wallets/" + wid + "/raw_sign", body: `{"params":{"bytes":"hello","encoding":"utf-8","hash_function":"keccak256"}}`, signed: true},
		{name: "export", method: "POST", path: "/v1/wallets/" + wid + "/export", body: `{"encryption_type":"HPKE","recipient_public_key":"` + spki(t, recipient) + `","export_seed_phrase":false}`, signed: true},
		{name: "import init", method: "POST", path: "/v1/wallets/import/init", body: `{"address":"0x000000000000000000000000000000000000bEEF","chain_type":"ethereum","entropy_type":"private-key","encryption_type":"HPKE"}`},
		{name: "import submit", method: "POST", path: "/v1/wallets/import/submit", body: `{"wallet":{"address":"0x000000000000000000000000000000000000bEEF","chain_type":"ethereum","entropy_type":"private-key","encryption_type":"HPKE","ciphertext":"AAAA","encapsulated_key":"AAAA","hpke_config":{"aead_algorithm":"CHACHA20_POLY1305"}},"owner":{"public_key":"` + r.pub + `"}}`, noBase: true},
		{name: "authenticate", method: "POST", path: "/v1/wallets/authenticate", body: `{"user_jwt":"` + r.token("alice") + `","encryption_type":"HPKE","recipient_public_key":"` + spki(t, recipient) + `"}`},
		{name: "create user", method: "POST", path: "/v1/users", body: `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"bob"}],"custom_metadata":{"team":"ops"}}`, freeForm: []string{"custom_metadata"}},
		{name: "user by custom id", method: "POST", path: "/v1/users/custom_auth/id", body: `{"custom_user_id":"alice"}`},
		{name: "create embedded wallet", method: "POST", path: "/v1/embedded_wallets", body: `{"user_jwt":"` + r.token("carol") + `","device_public_key":"` + spki(t, device) + `","chain_type":"ethereum","recovery":{"method":"automatic"}}`, noBase: true},
		{name: "recover embedded wallet", method: "POST", path: "/v1/embedded_wallets/" + ewid + "/recover", body: `{"user_jwt":"` + r.token("alice") + `","device_public_key":"` + spki(t, device) + `"}`},
		{name: "auth share", method: "POST", path: "/v1/embedded_wallets/" + ewid + "/auth_share", body: `{"user_jwt":"` + r.token("alice") + `","device_public_key":"` + spki(t, device) + `"}`},
		{name: "challenge", method: "POST", path: "/v1/embedded_wallets/" + ewid + "/challenge", body: `{"user_jwt":"` + r.token("alice") + `"}`},
		{name: "set recovery", method: "PUT", path: "/v1/embedded_wallets/" + ewid + "/recovery", body: `{"user_jwt":"` + r.token("alice") + `","challenge":"c","signature":"0x00","payload":{"encryption_type":"HPKE","encapsulated_key":"AAAA","ciphertext":"AAAA"}}`, noBase: true},
		{name: "create policy", method: "POST", path: "/v1/policies", body: `{"version":"1.0","name":"p2","chain_type":"ethereum","owner":{"public_key":"` + r.pub + `"},"rules":[{"name":"erc20","method":"eth_signTransaction","action":"ALLOW","conditions":[{"field_source":"ethereum_calldata","field":"transfer.value","operator":"lte","value":"5","abi":` + erc20 + `}]}]}`},
		{name: "update rule", method: "PATCH", path: "/v1/policies/" + pid + "/rules/" + rid, body: `{"name":"r1","method":"eth_signTransaction","action":"ALLOW","conditions":[{"field_source":"ethereum_transaction","field":"value","operator":"lte","value":"10"}]}`, signed: true},
		{name: "update policy", method: "PATCH", path: "/v1/policies/" + pid, body: `{"name":"renamed","rules":[{"name":"r2","method":"eth_signTransaction","action":"ALLOW","conditions":[{"field_source":"ethereum_transaction","field":"value","operator":"lte","value":"1000"}]}]}`, signed: true},
		{name: "add rule", method: "POST", path: "/v1/policies/" + pid + "/rules", body: `{"name":"r3","method":"personal_sign","action":"DENY","conditions":[]}`, signed: true},
		{name: "evaluate policy", method: "POST", path: "/v1/policies/" + pid + "/evaluate", body: `{"method":"eth_signTransaction","wallet_id":"` + wid + `","params":{"transaction":` + fmt.Sprintf(tx, 2) + `}}`},
		{name: "create aggregation", method: "POST", path: "/v1/aggregations", body: `{"name":"ETH per day","method":"eth_signTransaction","metric":{"field_source":"ethereum_transaction","field":"value","function":"sum"},"window":{"type":"rolling","seconds":86400}}`},
		{name: "create condition set", method: "POST", path: "/v1/condition_sets", body: `{"name":"set","owner":{"public_key":"` + r.pub + `"}}`},
		{name: "update condition set", method: "PATCH", path: "/v1/condition_sets/" + csid, body: `{"name":"set2"}`, signed: true},
		{name: "append items", method: "POST", path: "/v1/condition_sets/" + csid + "/condition_set_items", body: `[{"value":"0x000000000000000000000000000000000000dead"}]`, signed: true},
		{name: "replace items (wrapped)", method: "PUT", path: "/v1/condition_sets/" + csid + "/condition_set_items", body: `{"items":[{"value":"0x000000000000000000000000000000000000beef"}]}`, signed: true},
		{name: "create authorization key", method: "POST", path: "/v1/authorization_keys", body: `{"display_name":"bot","allowed_callers":{"uids":[1000],"gids":[]},"allowed_requests":["POST /v1/wallets/*/rpc"]}`},
		{name: "sign with authorization key", method: "POST", path: "/v1/authorization_keys/" + akid + "/sign", body: `{"method":"POST","url":"http://localhost/v1/wallets/` + wid + `/rpc","body":{"method":"personal_sign","params":{"message":"hi","encoding":"utf-8"}},"headers":{"privy-app-id":"app_1","privy-request-expiry":"` + fmt.Sprint(time.Now().Add(time.Hour).UnixMilli()) + `"}}`,
			freeForm: []string{"body", "headers"}},
	}
	total := 0
	for _, rt := range routes {
		t.Run(rt.name, func(t *testing.T) {
			muts := mutations(t, rt.body, rt.freeForm)
			if len(muts) == 0 {
				t.Fatal("no keys to vary")
			}
			for _, m := range muts {
				var signers []*ecdsa.PrivateKey
				if rt.signed {
					signers = append(signers, r.owner)
				}
				before := r.fingerprint()
				code, resp := r.send(rt.method, rt.path, m.body, signers...)
				msg, _ := resp["error"].(string)
				if code != http.StatusBadRequest || resp["code"] != CodeInvalidData || !strings.Contains(msg, m.variant) {
					t.Errorf("%s: %d %v; want 400 invalid_data naming %q\nbody %s", m.name, code, resp, m.variant, m.body)
				}
				if r.fingerprint() != before {
					t.Errorf("%s: the refused request changed the store", m.name)
				}
				total++
			}
			if rt.noBase {
				return
			}
			var signers []*ecdsa.PrivateKey
			if rt.signed {
				signers = append(signers, r.owner)
			}
			if code, resp := r.send(rt.method, rt.path, []byte(rt.body), signers...); code != http.StatusOK {
				t.Fatalf("the valid body: %d %v", code, resp)
			}
		})
	}
	t.Logf("%d variant bodies over %d routes refused", total, len(routes))
	_ = wallet.MethodRawSign
}

// A signed request is accepted once for the lifetime of the store: sent
// again after the horizon (api.max_request_expiry, here 1 s) has passed and
// the purge has run, a request without privy-request-expiry is still
// refused, and one with an expiry is refused as expired. An authorization
// key signs only requests that expire, so what it signs is never
// replayable; its signed request is refused after its expiry too.
func TestReplayAfterTheHorizon(t *testing.T) {
	const horizon = time.Second
	r := newRigWith(t, horizon)
	q := r.must("POST", "/v1/key_quorums", `{"public_keys":["`+r.pub+`"],"authorization_threshold":1}`)
	w := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum","owner_id":"`+q["id"].(string)+`"}`)
	wid := w["id"].(string)
	path := "/v1/wallets/" + wid
	rpc := path + "/rpc"

	// An owner's PATCH and an rpc, both signed without an expiry.
	patch := []byte(`{"policy_ids":[]}`)
	sign := []byte(`{"method":"personal_sign","params":{"message":"no expiry","encoding":"utf-8"}}`)
	noExpiry := func(method, p string, body []byte) http.Header {
		sig, err := r.sign(method, p, body, http.Header{}, r.owner)
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Privy-Authorization-Signature": {sig}}
	}
	patchHdr, signHdr := noExpiry("PATCH", path, patch), noExpiry("POST", rpc, sign)
	for _, c := range []struct {
		method, path string
		body         []byte
		h            http.Header
	}{{"PATCH", path, patch, patchHdr}, {"POST", rpc, sign, signHdr}} {
		if code, m := r.sendRaw(c.method, c.path, c.body, c.h); code != 200 {
			t.Fatalf("%s %s: %d %v", c.method, c.path, code, m)
		}
	}

	// An rpc signed by the appliance's own authorization key, which must
	// carry an expiry within the horizon.
	code, ak := r.send("POST", "/v1/authorization_keys", []byte(`{"allowed_callers":{"uids":[`+fmt.Sprint(os.Getuid())+`]}}`))
	if code != 200 {
		t.Fatalf("authorization key: %d %v", code, ak)
	}
	r.must("PATCH", "/v1/key_quorums/"+q["id"].(string), `{"public_keys":["`+r.pub+`","`+ak["public_key"].(string)+`"]}`, r.owner)
	akSign := func(headers map[string]string) (int, map[string]any) {
		body, _ := json.Marshal(map[string]any{"method": "POST", "url": "http://localhost" + rpc,
			"body": json.RawMessage(`{"method":"personal_sign","params":{"message":"bot","encoding":"utf-8"}}`), "headers": headers})
		return r.send("POST", "/v1/authorization_keys/"+ak["id"].(string)+"/sign", body)
	}
	if code, m := akSign(map[string]string{"privy-app-id": "app_1"}); code != 400 || !strings.Contains(m["error"].(string), "privy-request-expiry") {
		t.Fatalf("an authorization key signed a request without an expiry: %d %v", code, m)
	}
	expiry := fmt.Sprint(time.Now().Add(horizon / 2).UnixMilli())
	code, sig := akSign(map[string]string{"privy-app-id": "app_1", "privy-request-expiry": expiry})
	if code != 200 {
		t.Fatalf("sign: %d %v", code, sig)
	}
	botBody := []byte(`{"method":"personal_sign","params":{"message":"bot","encoding":"utf-8"}}`)
	botHdr := http.Header{"Privy-Authorization-Signature": {sig["signature"].(string)}, "Privy-Request-Expiry": {expiry}}
	if code, m := r.sendRaw("POST", rpc, botBody, botHdr); code != 200 {
		t.Fatalf("the request the key signed: %d %v", code, m)
	}

	time.Sleep(2 * horizon)
	if err := r.svc.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, method, path string
		body               []byte
		h                  http.Header
	}{
		{"owner PATCH without expiry", "PATCH", path, patch, patchHdr},
		{"rpc without expiry", "POST", rpc, sign, signHdr},
		{"rpc signed by the authorization key", "POST", rpc, botBody, botHdr},
	} {
		before := r.fingerprint()
		code, m := r.sendRaw(c.method, c.path, c.body, c.h)
		if code != http.StatusUnauthorized {
			t.Errorf("%s replayed after the horizon: %d %v", c.name, code, m)
		}
		if r.fingerprint() != before {
			t.Errorf("%s replayed after the horizon changed the store", c.name)
		}
	}
}

// A client that half-closes its socket right after its request cancels
// the request's context on the server; the records of refusals and policy
// denials do not depend on it. 100 refused requests leave 100 refusal
// records, and 20 policy denials 20 denial records, each answered 403.
func TestRefusalsRecordedWhenTheClientHalfCloses(t *testing.T) {
	r := newRig(t)
	pol := r.must("POST", "/v1/policies", `{"version":"1.0","name":"small","chain_type":"ethereum",
		"rules":[{"name":"small payments","method":"eth_signTransaction","action":"ALLOW","conditions":[{"field_source":"ethereum_transaction","field":"value","operator":"lte","value":"10"}]}]}`)
	w := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum","owner":{"public_key":"`+r.pub+`"},"policy_ids":["`+pol["id"].(string)+`"]}`)
	rpc := "/v1/wallets/" + w["id"].(string) + "/rpc"

	sock, hs := listenRig(t, r)

	// halfClosed writes one request, closes its side at once, and reads
	// the answer's status line.
	halfClosed := func(body []byte, h http.Header) string {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var b bytes.Buffer
		fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", rpc, len(body))
		fmt.Fprintf(&b, "Authorization: %s\r\nPrivy-App-Id: app_1\r\n", basicAuthHeader("app_1", testSecret))
		for k, v := range h {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v[0])
		}
		b.WriteString("\r\n")
		b.Write(body)
		c.Write(b.Bytes())
		c.(*net.UnixConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	count := func(action, decision string) int {
		var n int
		if err := r.db.QueryRow(`SELECT COUNT(*) FROM audit_records WHERE action = ? AND decision = ?`, action, decision).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	refusedBefore, deniedBefore := count("api.refused", "deny"), count("wallet.rpc", "deny")
	for i := range 100 {
		// Unsigned: the wallet has an owner, so 401.
		body := []byte(fmt.Sprintf(`{"method":"personal_sign","params":{"message":"unsigned %d","encoding":"utf-8"}}`, i))
		halfClosed(body, http.Header{})
	}
	statuses := map[string]int{}
	for i := range 20 {
		body := []byte(fmt.Sprintf(`{"method":"eth_signTransaction","params":{"transaction":{"to":"0x000000000000000000000000000000000000dEaD","value":"0x3e8","chain_id":1,"nonce":%d,"gas_limit":21000,"max_fee_per_gas":"0x1","max_priority_fee_per_gas":"0x1","type":2}}}`, i))
		h := http.Header{"Privy-Request-Expiry": {fmt.Sprint(time.Now().Add(time.Minute).UnixMilli())}}
		sig, err := r.sign("POST", rpc, body, h, r.owner)
		if err != nil {
			t.Fatal(err)
		}
		h.Set("Privy-Authorization-Signature", sig)
		statuses[strings.TrimSpace(halfClosed(body, h))]++
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count("api.refused", "deny") - refusedBefore; n != 100 {
		t.Errorf("%d refusal records for 100 refused requests from half-closed sockets", n)
	}
	if n := count("wallet.rpc", "deny") - deniedBefore; n != 20 {
		t.Errorf("%d denial records for 20 policy denials from half-closed sockets", n)
	}
	if statuses["HTTP/1.1 403 Forbidden"] != 20 {
		t.Errorf("policy denials answered %v, want 20 × 403", statuses)
	}
}

// shortTempDir is a temporary directory with a path short enough for a
// Unix socket.
func shortTempDir(t *testing.T) string {
	d, err := os.MkdirTemp("/tmp", "cachet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// The edge refuses, for every body and before any route reads it, what
// would let two readers disagree: invalid UTF-8 (Go would store U+FFFD),
// a repeated member, and a second privy-authorization-signature line (a
// signature nobody checked riding along with one that was), or any other
// repeated privy- header.
func TestEdgeRefusesAmbiguousRequests(t *testing.T) {
	r := newRig(t)
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	w := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum","owner":{"public_key":"`+r.pub+`"}}`)
	rpc := "/v1/wallets/" + w["id"].(string) + "/rpc"
	body := []byte(`{"method":"personal_sign","params":{"message":"hi","encoding":"utf-8"}}`)
	expiry := fmt.Sprint(time.Now().Add(time.Minute).UnixMilli())
	h := http.Header{"Privy-Request-Expiry": {expiry}}
	good, _ := r.sign("POST", rpc, body, h, r.owner)
	bad, _ := r.sign("POST", rpc, body, h, stranger)

	for _, tc := range []struct {
		name, method, path string
		body               []byte
		h                  http.Header
	}{
		{"invalid UTF-8 in an unsigned body", "POST", "/v1/wallets", []byte("{\"chain_type\":\"ethereum\",\"display_name\":\"caf\xe9\"}"), http.Header{}},
		{"a lone surrogate escape", "POST", "/v1/wallets", []byte(`{"chain_type":"ethereum","display_name":"\udc00"}`), http.Header{}},
		{"a repeated member", "POST", "/v1/wallets", []byte(`{"chain_type":"ethereum","display_name":"a","display_name":"b"}`), http.Header{}},
		{"an inexact integer in an unsigned body", "POST", "/v1/key_quorums", []byte(`{"public_keys":["` + r.pub + `"],"authorization_threshold":9007199254740993}`), http.Header{}},
		{"a second signature header line", "POST", rpc, body, http.Header{"Privy-Request-Expiry": {expiry}, "Privy-Authorization-Signature": {good, bad}}},
		{"a second expiry line", "POST", rpc, body, http.Header{"Privy-Request-Expiry": {expiry, expiry}, "Privy-Authorization-Signature": {good}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.fingerprint()
			code, m := r.sendRaw(tc.method, tc.path, tc.body, tc.h)
			if code != http.StatusBadRequest || m["code"] != CodeInvalidData {
				t.Fatalf("%d %v, want 400 invalid_data", code, m)
			}
			if r.fingerprint() != before {
				t.Fatal("the refused request changed the store")
			}
		})
	}
	// A request that takes no body refuses one with members: the approvers
	// would sign members Cachet ignores.
	q := r.must("POST", "/v1/key_quorums", `{"public_keys":["`+r.pub+`"],"authorization_threshold":1}`)
	ak := r.must("POST", "/v1/authorization_keys", `{"allowed_callers":{"uids":[`+fmt.Sprint(os.Getuid())+`]}}`)
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/wallets/" + w["id"].(string) + "/archive"},
		{"DELETE", "/v1/key_quorums/" + q["id"].(string)},
		{"DELETE", "/v1/authorization_keys/" + ak["id"].(string)},
	} {
		before := r.fingerprint()
		if code, m := r.send(c.method, c.path, []byte(`{"force":true}`), r.owner); code != http.StatusBadRequest {
			t.Fatalf("%s %s with a body: %d %v", c.method, c.path, code, m)
		}
		if r.fingerprint() != before {
			t.Fatalf("%s %s with a body changed the store", c.method, c.path)
		}
	}
	if code, m := r.send("DELETE", "/v1/key_quorums/"+q["id"].(string), []byte(`{}`), r.owner); code != http.StatusOK {
		t.Fatalf("DELETE with {}: %d %v", code, m)
	}
	// One line with both signatures: the stranger's refuses it (401), as
	// Privy does; the owner's alone signs.
	if code, m := r.sendRaw("POST", rpc, body, http.Header{"Privy-Request-Expiry": {expiry}, "Privy-Authorization-Signature": {good + "," + bad}}); code != http.StatusUnauthorized {
		t.Fatalf("a stranger's signature beside the owner's: %d %v", code, m)
	}
	if code, m := r.sendRaw("POST", rpc, body, http.Header{"Privy-Request-Expiry": {expiry}, "Privy-Authorization-Signature": {good}}); code != http.StatusOK {
		t.Fatalf("the owner's signature: %d %v", code, m)
	}
}
