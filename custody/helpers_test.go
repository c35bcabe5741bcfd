package custody_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/hsm"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/store"
)

func TestMain(m *testing.M) { testhw.SoftHSMMain(m) }

const (
	soPIN   = "so-pin-5521"
	userPIN = "user-pin-7734"

	appA = "app_alpha"
	appB = "app_bravo"

	// publicBase is the daemon's public URL the SDKs sign against.
	publicBase = "http://localhost"
)

// clock is the service's time, moved by the test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is a custody service on a real SoftHSM token and a real store in a
// temporary directory. When the test ends it checkpoints the audit log and
// verifies the whole chain with the token's audit key.
type env struct {
	t     testing.TB
	ctx   context.Context
	st    *store.Store
	keys  keys.Backend
	svc   *custody.Service
	clock *clock
	path  string
}

type envConfig struct {
	policy custody.PolicyEngine // nil: the store's own policies
	opts   custody.Options      // Logger defaults to the test's output
}

func newEnv(t testing.TB, cfg envConfig) *env {
	t.Helper()
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))

	b := newBackend(t, logger)
	path := filepath.Join(t.TempDir(), "cachet.db")
	st, err := store.Open(ctx, path, store.Options{Logger: logger})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("store Close: %v", err)
		}
	})

	if cfg.opts.Logger == nil {
		cfg.opts.Logger = logger
	}
	svc := custody.New(st, b, cfg.policy, cfg.opts)
	clk := &clock{t: time.Now()}
	custody.SetNow(svc, clk.Now)

	e := &env{t: t, ctx: ctx, st: st, keys: b, svc: svc, clock: clk, path: path}
	// Registered last, so it runs first: before the store and token close.
	t.Cleanup(e.verifyAudit)
	return e
}

// newBackend is a fresh SoftHSM token provisioned with a random root.
func newBackend(t testing.TB, logger *slog.Logger) keys.Backend {
	t.Helper()
	ctx := context.Background()
	label := testhw.UniqueLabel("cust")
	if err := hsm.InitToken(testhw.Module(), label, soPIN, userPIN); err != nil {
		t.Fatalf("InitToken(%q): %v", label, err)
	}
	b, err := hsm.Open(ctx, hsm.Options{Module: testhw.Module(), TokenLabel: label, PIN: userPIN, Logger: logger})
	if err != nil {
		t.Fatalf("hsm.Open(%q): %v", label, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("backend Close: %v", err)
		}
	})
	root := make([]byte, keys.RootSize)
	if _, err := rand.Read(root); err != nil {
		t.Fatal(err)
	}
	if err := b.(keys.Provisioner).Provision(ctx, root, keys.ProvisionOptions{Generation: 1}); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	keys.Zero(root)
	return b
}

// verifyAudit checkpoints the log with the token's audit key and verifies
// every record and checkpoint.
func (e *env) verifyAudit() {
	t := e.t
	e.checkWalletQuorums()
	n := e.count(`SELECT COUNT(*) FROM audit_records`)
	if _, err := audit.New(e.st, e.keys, audit.Options{}).Checkpoint(e.ctx); err != nil {
		t.Errorf("audit checkpoint: %v", err)
		return
	}
	pub, err := e.keys.AuthKey(e.ctx, keys.AuditKeyLabel)
	if err != nil {
		t.Errorf("audit key: %v", err)
		return
	}
	rep, err := audit.Verify(e.ctx, e.st.DB(), pub)
	if err != nil {
		t.Errorf("audit.Verify: %v", err)
		return
	}
	if n > 0 && (rep.Checkpoints == 0 || rep.Records != uint64(n)+1) {
		t.Errorf("audit.Verify = %+v; want %d records and a final checkpoint", rep, n+1)
	}
}

// checkWalletQuorums checks, at the end of every test, that wallet_quorums
// and wallet_policies hold exactly each wallet's owner and additional
// signers, and its policies and override policies, as its row holds them.
func (e *env) checkWalletQuorums() {
	e.t.Helper()
	list := func(q string) []string {
		rows, err := e.st.DB().QueryContext(e.ctx, q)
		if err != nil {
			e.t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var a, b string
			if err := rows.Scan(&a, &b); err != nil {
				e.t.Fatal(err)
			}
			out = append(out, a+" "+b)
		}
		return out
	}
	want := list(`SELECT owner_id, id FROM wallets WHERE owner_id IS NOT NULL
		UNION SELECT json_extract(j.value, '$.signer_id'), w.id FROM wallets w, json_each(w.additional_signers) j
		ORDER BY 1, 2`)
	got := list(`SELECT quorum_id, wallet_id FROM wallet_quorums ORDER BY 1, 2`)
	if !slices.Equal(got, want) {
		e.t.Errorf("wallet_quorums = %v; the wallets' owners and signers are %v", got, want)
	}
	want = list(`SELECT p.value, w.id FROM wallets w, json_each(w.policy_ids) p
		UNION SELECT o.value, w.id FROM wallets w, json_each(w.additional_signers) s, json_each(s.value, '$.override_policy_ids') o
		ORDER BY 1, 2`)
	got = list(`SELECT policy_id, wallet_id FROM wallet_policies ORDER BY 1, 2`)
	if !slices.Equal(got, want) {
		e.t.Errorf("wallet_policies = %v; the wallets' policies are %v", got, want)
	}
}

// count runs a query returning one integer.
func (e *env) count(q string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.st.DB().QueryRowContext(e.ctx, q, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// audits counts audit records of an action, with a decision ("" for any).
func (e *env) audits(action, decision string) int {
	e.t.Helper()
	if decision == "" {
		return e.count(`SELECT COUNT(*) FROM audit_records WHERE action = ?`, action)
	}
	return e.count(`SELECT COUNT(*) FROM audit_records WHERE action = ? AND decision = ?`, action, decision)
}

// tables are the tables a custody request may change.
var tables = []string{"key_quorums", "key_quorum_members", "wallets", "idempotency_keys", "replay_digests", "audit_records", "meta", "users", "user_keys",
	"embedded_wallets", "share_releases"}

// snapshot dumps every row of the custody tables.
func (e *env) snapshot() map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for _, tbl := range tables {
		order := "rowid"
		if tbl == "replay_digests" { // WITHOUT ROWID
			order = "digest"
		}
		rows, err := e.st.DB().QueryContext(e.ctx, `SELECT * FROM `+tbl+` ORDER BY `+order)
		if err != nil {
			e.t.Fatalf("snapshot %s: %v", tbl, err)
		}
		cols, _ := rows.Columns()
		var b strings.Builder
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				e.t.Fatalf("snapshot %s: %v", tbl, err)
			}
			fmt.Fprintf(&b, "%v\n", vals)
		}
		if err := rows.Err(); err != nil {
			e.t.Fatalf("snapshot %s: %v", tbl, err)
		}
		rows.Close()
		out[tbl] = b.String()
	}
	return out
}

// unchanged fails the test if a table differs from before.
func (e *env) unchanged(t testing.TB, before map[string]string) {
	t.Helper()
	after := e.snapshot()
	var changed []string
	for _, tbl := range tables {
		if before[tbl] != after[tbl] {
			changed = append(changed, tbl)
		}
	}
	if len(changed) > 0 {
		t.Errorf("a refused request changed the store: tables %v", changed)
	}
}

// refused runs fn, checks its error is a *custody.Error of kind want and
// that nothing in the store changed. It returns the error.
func (e *env) refused(t testing.TB, want custody.Kind, fn func() error) *custody.Error {
	t.Helper()
	before := e.snapshot()
	err := fn()
	ce := wantKind(t, err, want)
	e.unchanged(t, before)
	return ce
}

var kindNames = map[custody.Kind]string{
	custody.Invalid: "Invalid", custody.Unauthorized: "Unauthorized", custody.Forbidden: "Forbidden",
	custody.NotFound: "NotFound", custody.Conflict: "Conflict", custody.PolicyViolation: "PolicyViolation",
	custody.Unavailable: "Unavailable", custody.TooManyRequests: "TooManyRequests",
}

func kindName(k custody.Kind) string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// wantKind checks that err is a *custody.Error of kind want (want 0: no
// error).
func wantKind(t testing.TB, err error, want custody.Kind) *custody.Error {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return nil
	}
	var ce *custody.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error = %v (%T), want a *custody.Error of kind %s", err, err, kindName(want))
	}
	if ce.Kind != want {
		t.Fatalf("error kind = %s (%q), want %s", kindName(ce.Kind), ce.Message, kindName(want))
	}
	return ce
}

// authKey is a P-256 authorization key and its public form.
type authKey struct {
	priv *ecdsa.PrivateKey
	pub  string // base64 DER SPKI
}

func newAuthKey(t testing.TB) authKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := keys.PublicKeySPKI(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return authKey{priv: k, pub: pub}
}

// request is one API request as the daemon's edge sees it.
type request struct {
	app     string // appA when empty
	method  string
	path    string
	body    []byte
	signers []authKey
	idem    string
	expiry  time.Time // privy-request-expiry when not zero
}

// call builds the custody.Call the daemon's edge (daemon/api.go) builds:
// the request hash, and for a signed request the canonical payload signed
// by each key with client.Sign, parsed back as the edge parses the header.
func (e *env) call(r request) custody.Call {
	e.t.Helper()
	if r.app == "" {
		r.app = appA
	}
	c := custody.Call{
		App:            r.app,
		Actor:          "uid=1000 app=" + r.app,
		IdempotencyKey: r.idem,
		RequestHash:    custody.RequestHash(r.method, r.path, r.body),
	}
	if len(r.signers) == 0 {
		return c
	}
	h := http.Header{}
	h.Set(quorum.HeaderAppID, r.app)
	if r.idem != "" {
		h.Set(quorum.HeaderIdempotencyKey, r.idem)
	}
	if !r.expiry.IsZero() {
		h.Set(quorum.HeaderRequestExpiry, strconv.FormatInt(r.expiry.UnixMilli(), 10))
	}
	qr := quorum.Request{Method: r.method, URL: publicBase + r.path, Body: r.body, Headers: h}
	privs := make([]*ecdsa.PrivateKey, len(r.signers))
	for i, k := range r.signers {
		privs[i] = k.priv
	}
	header, err := client.Sign(qr, privs)
	if err != nil {
		e.t.Fatalf("client.Sign: %v", err)
	}
	sigs, err := quorum.ParseSignatures(header)
	if err != nil {
		e.t.Fatalf("ParseSignatures: %v", err)
	}
	payload, err := quorum.Payload(qr)
	if err != nil {
		e.t.Fatalf("quorum.Payload: %v", err)
	}
	c.Signed = &custody.Signed{Payload: payload, Sigs: sigs, Expiry: r.expiry}
	return c
}

func keysOf(ks ...authKey) []authKey { return ks }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---- operations, as the daemon's handlers call them ----

func (e *env) createQuorumErr(app string, body string) (custody.KeyQuorum, error) {
	e.t.Helper()
	var in custody.QuorumInput
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		e.t.Fatalf("quorum body %s: %v", body, err)
	}
	out, err := e.svc.CreateQuorum(e.ctx, e.call(request{app: app, method: "POST", path: "/v1/key_quorums", body: []byte(body)}), in)
	if err != nil {
		return custody.KeyQuorum{}, err
	}
	var q custody.KeyQuorum
	if err := json.Unmarshal(out, &q); err != nil {
		e.t.Fatalf("quorum response %s: %v", out, err)
	}
	return q, nil
}

func (e *env) createQuorum(app string, body string) custody.KeyQuorum {
	e.t.Helper()
	q, err := e.createQuorumErr(app, body)
	if err != nil {
		e.t.Fatalf("CreateQuorum(%s): %v", body, err)
	}
	return q
}

// quorumOf creates a quorum of keys (and child quorums) with a threshold.
func (e *env) quorumOf(app string, threshold int, ks []authKey, children ...string) custody.KeyQuorum {
	e.t.Helper()
	pubs := []string{}
	for _, k := range ks {
		pubs = append(pubs, k.pub)
	}
	in := map[string]any{"public_keys": pubs, "authorization_threshold": threshold}
	if len(children) > 0 {
		in["key_quorum_ids"] = children
	}
	return e.createQuorum(app, string(mustJSON(e.t, in)))
}

func (e *env) updateQuorum(r request, id string) (custody.KeyQuorum, error) {
	e.t.Helper()
	var in custody.QuorumInput
	if err := json.Unmarshal(r.body, &in); err != nil {
		e.t.Fatalf("quorum body %s: %v", r.body, err)
	}
	r.method, r.path = "PATCH", "/v1/key_quorums/"+id
	out, err := e.svc.UpdateQuorum(e.ctx, e.call(r), id, in)
	if err != nil {
		return custody.KeyQuorum{}, err
	}
	var q custody.KeyQuorum
	if err := json.Unmarshal(out, &q); err != nil {
		e.t.Fatalf("quorum response %s: %v", out, err)
	}
	return q, nil
}

func (e *env) deleteQuorum(r request, id string) error {
	e.t.Helper()
	r.method, r.path = "DELETE", "/v1/key_quorums/"+id
	out, err := e.svc.DeleteQuorum(e.ctx, e.call(r), id)
	if err == nil && string(out) != `{"success":true}` {
		e.t.Fatalf("DeleteQuorum response %s", out)
	}
	return err
}

func decodeWallet(t testing.TB, out []byte) custody.Wallet {
	t.Helper()
	var w custody.Wallet
	if err := json.Unmarshal(out, &w); err != nil {
		t.Fatalf("wallet response %s: %v", out, err)
	}
	return w
}

// createWalletReq runs POST /v1/wallets as the daemon does: strict parse,
// then CreateWallet.
func (e *env) createWalletReq(r request) (custody.Wallet, error) {
	e.t.Helper()
	r.method, r.path = "POST", "/v1/wallets"
	in, err := custody.ParseWalletInput(r.body, true)
	if err != nil {
		return custody.Wallet{}, err
	}
	out, err := e.svc.CreateWallet(e.ctx, e.call(r), in)
	if err != nil {
		return custody.Wallet{}, err
	}
	return decodeWallet(e.t, out), nil
}

func (e *env) createWallet(app, body string) custody.Wallet {
	e.t.Helper()
	w, err := e.createWalletReq(request{app: app, body: []byte(body)})
	if err != nil {
		e.t.Fatalf("CreateWallet(%s): %v", body, err)
	}
	return w
}

// ownedWallet creates a wallet of appA owned by the quorum id, with
// additional signers.
func (e *env) ownedWallet(owner string, signers ...string) custody.Wallet {
	e.t.Helper()
	in := map[string]any{"chain_type": "ethereum"}
	if owner != "" {
		in["owner_id"] = owner
	}
	if len(signers) > 0 {
		var ss []map[string]any
		for _, s := range signers {
			ss = append(ss, map[string]any{"signer_id": s})
		}
		in["additional_signers"] = ss
	}
	return e.createWallet(appA, string(mustJSON(e.t, in)))
}

func (e *env) updateWallet(r request, id string) (custody.Wallet, error) {
	e.t.Helper()
	r.method, r.path = "PATCH", "/v1/wallets/"+id
	in, err := custody.ParseWalletInput(r.body, false)
	if err != nil {
		return custody.Wallet{}, err
	}
	out, err := e.svc.UpdateWallet(e.ctx, e.call(r), id, in)
	if err != nil {
		return custody.Wallet{}, err
	}
	return decodeWallet(e.t, out), nil
}

func (e *env) archiveWallet(r request, id string) (custody.Wallet, error) {
	e.t.Helper()
	r.method, r.path = "POST", "/v1/wallets/"+id+"/archive"
	out, err := e.svc.ArchiveWallet(e.ctx, e.call(r), id)
	if err != nil {
		return custody.Wallet{}, err
	}
	return decodeWallet(e.t, out), nil
}

func (e *env) rpcCall(r request, id string) custody.Call {
	r.method, r.path = "POST", "/v1/wallets/"+id+"/rpc"
	return e.call(r)
}

func (e *env) rpc(r request, id string) (json.RawMessage, error) {
	e.t.Helper()
	return e.svc.RPC(e.ctx, e.rpcCall(r, id), id, r.body, false)
}

// txNonce counts nonces so that every signing request in a process differs.
var txNonce struct {
	sync.Mutex
	n int
}

// signTxBody is a complete eth_signTransaction body (nothing to fill), with
// a nonce of its own so that no two bodies are equal.
func signTxBody() []byte {
	txNonce.Lock()
	txNonce.n++
	n := txNonce.n
	txNonce.Unlock()
	return fmt.Appendf(nil, `{"method":"eth_signTransaction","caip2":"eip155:1","params":{"transaction":{"type":2,"chain_id":1,`+
		`"to":"0x000000000000000000000000000000000000dEaD","value":"0x1","nonce":%d,"gas_limit":21000,`+
		`"max_fee_per_gas":"0x77359400","max_priority_fee_per_gas":"0x3b9aca00"}}}`, n)
}

// signed checks that out is an eth_signTransaction response.
func signedTx(t testing.TB, out []byte) string {
	t.Helper()
	var resp struct {
		Method string `json:"method"`
		Data   struct {
			SignedTransaction string `json:"signed_transaction"`
			Encoding          string `json:"encoding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("rpc response %s: %v", out, err)
	}
	if resp.Method != "eth_signTransaction" || resp.Data.Encoding != "rlp" || !strings.HasPrefix(resp.Data.SignedTransaction, "0x02") {
		t.Fatalf("rpc response %s is not a signed type 2 transaction", out)
	}
	return resp.Data.SignedTransaction
}

// walletIDs lists ids in order.
func walletIDs(ws []custody.Wallet) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.ID
	}
	return out
}

func sorted(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}
