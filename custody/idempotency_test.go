package custody_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/store"
)

// privyReuseMessage is Privy's message for an idempotency key reused with
// another body (reference §7); clients may match on it.
const privyReuseMessage = "Idempotency key was reused for a request with a new body. Please create a new idempotency key for the request."

func TestIdempotentCreateWallet(t *testing.T) {
	const ttl = time.Hour
	e := newEnv(t, envConfig{opts: custody.Options{IdempotencyTTL: ttl}})
	body := []byte(`{"chain_type":"ethereum","display_name":"treasury"}`)

	first, err := e.createWalletReq(request{body: body, idem: "key-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("same key and body gives the same wallet", func(t *testing.T) {
		again, err := e.createWalletReq(request{body: body, idem: "key-1"})
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != first.ID || again.Address != first.Address {
			t.Errorf("retry created wallet %s (%s), want %s (%s)", again.ID, again.Address, first.ID, first.Address)
		}
		if n := e.count(`SELECT COUNT(*) FROM wallets`); n != 1 {
			t.Errorf("%d wallet rows, want 1", n)
		}
		if n := e.audits("wallet.create", ""); n != 1 {
			t.Errorf("%d wallet.create records, want 1", n)
		}
	})
	t.Run("same key with another body is refused", func(t *testing.T) {
		ce := e.refused(t, custody.Invalid, func() error {
			_, err := e.createWalletReq(request{body: []byte(`{"chain_type":"ethereum","display_name":"other"}`), idem: "key-1"})
			return err
		})
		if ce.Message != privyReuseMessage {
			t.Errorf("message = %q, want Privy's %q", ce.Message, privyReuseMessage)
		}
	})
	t.Run("concurrent retries get one wallet", func(t *testing.T) {
		const n = 8
		body := []byte(`{"chain_type":"ethereum","display_name":"concurrent"}`)
		ids := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				in, err := custody.ParseWalletInput(body, true)
				if err != nil {
					errs[i] = err
					return
				}
				c := custody.Call{App: appA, Actor: "uid=1000 app=" + appA, IdempotencyKey: "key-c", RequestHash: custody.RequestHash("POST", "/v1/wallets", body)}
				out, err := e.svc.CreateWallet(e.ctx, c, in)
				if err == nil {
					var w custody.Wallet
					err = json.Unmarshal(out, &w)
					ids[i] = w.ID
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("retry %d: %v", i, errs[i])
			}
			if ids[i] != ids[0] {
				t.Errorf("retry %d got wallet %s, retry 0 got %s", i, ids[i], ids[0])
			}
		}
		if c := e.count(`SELECT COUNT(*) FROM wallets WHERE display_name = 'concurrent'`); c != 1 {
			t.Errorf("%d wallets for one idempotency key", c)
		}
	})
	t.Run("the key belongs to its app", func(t *testing.T) {
		w, err := e.createWalletReq(request{app: appB, body: body, idem: "key-1"})
		if err != nil {
			t.Fatal(err)
		}
		if w.ID == first.ID {
			t.Errorf("app %s got app %s's wallet through a shared idempotency key", appB, appA)
		}
	})
	t.Run("the key expires after the TTL", func(t *testing.T) {
		e.clock.Advance(ttl + time.Millisecond)
		again, err := e.createWalletReq(request{body: body, idem: "key-1"})
		if err != nil {
			t.Fatal(err)
		}
		if again.ID == first.ID {
			t.Errorf("an idempotency key older than its TTL still returned wallet %s", first.ID)
		}
		if n := e.count(`SELECT COUNT(*) FROM wallets WHERE app_id = ? AND display_name = ?`, appA, "treasury"); n != 2 {
			t.Errorf("%d treasury wallets of %s, want 2", n, appA)
		}
		// The key now names the new request; another body is refused again.
		e.refused(t, custody.Invalid, func() error {
			_, err := e.createWalletReq(request{body: []byte(`{"chain_type":"ethereum"}`), idem: "key-1"})
			return err
		})
	})
	t.Run("an expired key with another body is a new request", func(t *testing.T) {
		if _, err := e.createWalletReq(request{body: body, idem: "key-2"}); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(ttl + time.Millisecond)
		if _, err := e.createWalletReq(request{body: []byte(`{"chain_type":"ethereum","display_name":"new"}`), idem: "key-2"}); err != nil {
			t.Fatalf("expired key reused with another body: %v", err)
		}
	})
	t.Run("Purge drops keys past the TTL only", func(t *testing.T) {
		e.clock.Advance(ttl / 2)
		if _, err := e.createWalletReq(request{body: body, idem: "key-3"}); err != nil {
			t.Fatal(err)
		}
		if n := e.count(`SELECT COUNT(*) FROM idempotency_keys`); n != 5 {
			t.Fatalf("%d idempotency keys before Purge, want 5", n)
		}
		if err := e.svc.Purge(e.ctx); err != nil {
			t.Fatal(err)
		}
		var left []string
		rows, err := e.st.DB().QueryContext(e.ctx, `SELECT app_id || '/' || key FROM idempotency_keys ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var k string
			rows.Scan(&k)
			left = append(left, k)
		}
		// Ages now: appB's key-1 and key-c over 2.5 TTL, appA's key-1 1.5
		// TTL (stored again after its first expiry), key-2 half a TTL
		// (stored again after its expiry), key-3 zero.
		want := []string{appA + "/key-2", appA + "/key-3"}
		if len(left) != len(want) || left[0] != want[0] || left[1] != want[1] {
			t.Errorf("idempotency keys after Purge = %v, want %v", left, want)
		}
	})
}

func TestIdempotentRPC(t *testing.T) {
	e := newEnv(t, envConfig{})
	k := newAuthKey(t)
	w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"public_key":"`+k.pub+`"}}`)
	body := signTxBody()
	first, err := e.rpc(request{body: body, signers: keysOf(k), idem: "rpc-1"}, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	signedTx(t, first)

	for _, tc := range []struct {
		name string
		r    request
		want custody.Kind
	}{
		{"retry with the same signature header", request{body: body, signers: keysOf(k), idem: "rpc-1"}, 0},
		// An SDK retry re-signs: ECDSA signatures differ, the payload does not.
		{"retry re-signed", request{body: body, signers: keysOf(k), idem: "rpc-1"}, 0},
		{"same key with another body", request{body: signTxBody(), signers: keysOf(k), idem: "rpc-1"}, custody.Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want != 0 {
				ce := e.refused(t, tc.want, func() error { _, err := e.rpc(tc.r, w.ID); return err })
				if ce.Message != privyReuseMessage {
					t.Errorf("message = %q, want Privy's", ce.Message)
				}
				return
			}
			before := e.snapshot()
			out, err := e.rpc(tc.r, w.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, first) {
				t.Errorf("retry answered\n%s\nwant the stored\n%s", out, first)
			}
			e.unchanged(t, before)
		})
	}
	if n := e.audits("wallet.rpc", ""); n != 1 {
		t.Errorf("%d wallet.rpc records after retries, want 1", n)
	}
}

// TestReplay: a signed request runs once; its digest is kept until the
// request's expiry (plus a margin for clock steps) and then purged, or
// forever for a request without an expiry.
func TestReplay(t *testing.T) {
	const maxExpiry = time.Hour
	e := newEnv(t, envConfig{opts: custody.Options{MaxRequestExpiry: maxExpiry}})
	k := newAuthKey(t)
	w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"public_key":"`+k.pub+`"}}`)
	expiry := e.clock.Now().Add(10 * time.Minute)

	bodyWithExpiry, bodyNoExpiry := signTxBody(), signTxBody()
	rpcWithExpiry := e.rpcCall(request{body: bodyWithExpiry, signers: keysOf(k), expiry: expiry}, w.ID)
	rpcNoExpiry := e.rpcCall(request{body: bodyNoExpiry, signers: keysOf(k)}, w.ID)
	if _, err := e.svc.RPC(e.ctx, rpcWithExpiry, w.ID, bodyWithExpiry, false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RPC(e.ctx, rpcNoExpiry, w.ID, bodyNoExpiry, false); err != nil {
		t.Fatal(err)
	}
	update := request{body: []byte(`{"display_name":"once"}`), signers: keysOf(k)}
	if _, err := e.updateWallet(update, w.ID); err != nil {
		t.Fatal(err)
	}
	rpcs := e.audits("wallet.rpc", "")

	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"rpc with expiry", func() error {
			_, err := e.svc.RPC(e.ctx, rpcWithExpiry, w.ID, bodyWithExpiry, false)
			return err
		}},
		{"rpc without expiry", func() error {
			_, err := e.svc.RPC(e.ctx, rpcNoExpiry, w.ID, bodyNoExpiry, false)
			return err
		}},
		{"update re-signed", func() error { _, err := e.updateWallet(update, w.ID); return err }},
	} {
		t.Run("replayed "+tc.name, func(t *testing.T) {
			e.refused(t, custody.Unauthorized, tc.run)
		})
	}
	if n := e.audits("wallet.rpc", ""); n != rpcs {
		t.Errorf("wallet.rpc records = %d after replays, want %d", n, rpcs)
	}

	t.Run("concurrent copies run once", func(t *testing.T) {
		const n = 8
		body := signTxBody()
		c := e.rpcCall(request{body: body, signers: keysOf(k)}, w.ID)
		before := e.audits("wallet.rpc", "")
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { _, errs[i] = e.svc.RPC(e.ctx, c, w.ID, body, false) })
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
				continue
			}
			wantKind(t, err, custody.Unauthorized)
		}
		if ok != 1 || e.audits("wallet.rpc", "") != before+1 {
			t.Errorf("%d of %d copies signed, %d recorded; want 1 and 1", ok, n, e.audits("wallet.rpc", "")-before)
		}
	})

	// Digests with their expiry; -1 stands for NULL, kept forever.
	digests := func() []int64 {
		rows, err := e.st.DB().QueryContext(e.ctx, `SELECT coalesce(expires_at, -1) FROM replay_digests ORDER BY expires_at`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []int64
		for rows.Next() {
			var v int64
			rows.Scan(&v)
			out = append(out, v)
		}
		return out
	}
	kept := expiry.Add(15 * time.Minute).UnixMilli()
	want := []int64{-1, -1, -1, kept} // NULLs sort first
	if got := digests(); !slices.Equal(got, want) {
		t.Fatalf("replay digests expire at %v, want %v", got, want)
	}

	t.Run("Purge keeps digests that are not expired", func(t *testing.T) {
		if err := e.svc.Purge(e.ctx); err != nil {
			t.Fatal(err)
		}
		if got := digests(); !slices.Equal(got, want) {
			t.Errorf("digests after an early Purge = %v, want %v", got, want)
		}
	})
	t.Run("Purge drops a digest after the request's expiry and the margin", func(t *testing.T) {
		e.clock.Advance(25*time.Minute + time.Millisecond)
		if err := e.svc.Purge(e.ctx); err != nil {
			t.Fatal(err)
		}
		if got := digests(); !slices.Equal(got, want[:3]) {
			t.Errorf("digests after the expiry = %v, want %v", got, want[:3])
		}
	})
	t.Run("requests without expiry are refused long after MaxRequestExpiry", func(t *testing.T) {
		e.clock.Advance(100 * maxExpiry)
		if err := e.svc.Purge(e.ctx); err != nil {
			t.Fatal(err)
		}
		if got := digests(); !slices.Equal(got, want[:3]) {
			t.Errorf("digests after 100 horizons = %v, want %v", got, want[:3])
		}
		e.refused(t, custody.Unauthorized, func() error {
			_, err := e.svc.RPC(e.ctx, rpcNoExpiry, w.ID, bodyNoExpiry, false)
			return err
		})
		e.refused(t, custody.Unauthorized, func() error { _, err := e.updateWallet(update, w.ID); return err })
		if n := e.audits("wallet.rpc", ""); n != rpcs+1 {
			t.Errorf("wallet.rpc records = %d after late replays, want %d", n, rpcs+1)
		}
	})
}

// TestIdempotentUpdate: the service honours an idempotency key on any
// change, not only where Privy documents one.
func TestIdempotentUpdate(t *testing.T) {
	e := newEnv(t, envConfig{})
	k := newAuthKey(t)
	w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"public_key":"`+k.pub+`"}}`)
	body := []byte(`{"display_name":"first"}`)
	first, err := e.svc.UpdateWallet(e.ctx, e.call(request{method: "PATCH", path: "/v1/wallets/" + w.ID, body: body, signers: keysOf(k), idem: "upd-1"}),
		w.ID, mustParse(t, body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.updateWallet(request{body: []byte(`{"display_name":"second"}`), signers: keysOf(k)}, w.ID); err != nil {
		t.Fatal(err)
	}
	t.Run("retry answers the stored response", func(t *testing.T) {
		before := e.snapshot()
		again, err := e.svc.UpdateWallet(e.ctx, e.call(request{method: "PATCH", path: "/v1/wallets/" + w.ID, body: body, signers: keysOf(k), idem: "upd-1"}),
			w.ID, mustParse(t, body))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, first) {
			t.Errorf("retry answered %s, want the stored %s", again, first)
		}
		e.unchanged(t, before)
	})
	t.Run("same key with another body", func(t *testing.T) {
		other := []byte(`{"display_name":"third"}`)
		ce := e.refused(t, custody.Invalid, func() error {
			_, err := e.svc.UpdateWallet(e.ctx, e.call(request{method: "PATCH", path: "/v1/wallets/" + w.ID, body: other, signers: keysOf(k), idem: "upd-1"}),
				w.ID, mustParse(t, other))
			return err
		})
		if ce.Message != privyReuseMessage {
			t.Errorf("message = %q, want Privy's", ce.Message)
		}
	})
}

func mustParse(t testing.TB, body []byte) custody.WalletInput {
	t.Helper()
	in, err := custody.ParseWalletInput(body, false)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// Purge keeps what can still count: aggregation contributions inside the
// longest window stay, older ones go.
func TestPurgeAggregationEvents(t *testing.T) {
	e := newEnv(t, envConfig{})
	now := e.clock.Now()
	if err := e.st.Write(e.ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`INSERT INTO aggregations(id, app_id, name, definition, created_at) VALUES ('agg', 'app', 'n', '{}', 0)`); err != nil {
			return err
		}
		for i, age := range []time.Duration{73 * time.Hour, 71 * time.Hour, time.Hour} {
			if _, err := tx.Exec(`INSERT INTO aggregation_events(aggregation_id, wallet_id, group_key, amount, running, at) VALUES ('agg', 'w', '', '1', ?, ?)`,
				i+1, now.Add(-age).UnixMilli()); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO aggregation_events_legacy(aggregation_id, wallet_id, group_key, amount, at) VALUES ('agg', 'w', '', '1', ?)`,
				now.Add(-age).UnixMilli()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Purge(e.ctx); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"aggregation_events", "aggregation_events_legacy"} {
		if n := e.count(`SELECT COUNT(*) FROM ` + table); n != 2 {
			t.Fatalf("%d contributions in %s after purge, want the 2 inside 72 h", n, table)
		}
	}
}

// An idempotent retry is answered from the store only after it passes the
// same authorization as the original: the app's credentials and the
// idempotency key alone (without the owner's signatures, or with another
// key's) do not fetch a stored signature or export.
func TestIdempotentRetryIsAuthorized(t *testing.T) {
	e := newEnv(t, envConfig{})
	owner, stranger := newAuthKey(t), newAuthKey(t)
	w := e.createWallet(appA, `{"chain_type":"ethereum","owner":{"public_key":"`+owner.pub+`"}}`)
	body := signTxBody()
	first, err := e.rpc(request{body: body, signers: keysOf(owner), idem: "retry-1"}, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		signers []authKey
	}{
		{"unsigned retry", nil},
		{"retry signed by a stranger", keysOf(stranger)},
		{"retry with a stranger's signature added", keysOf(owner, stranger)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.refused(t, custody.Unauthorized, func() error {
				_, err := e.rpc(request{body: body, signers: tc.signers, idem: "retry-1"}, w.ID)
				return err
			})
		})
	}
	again, err := e.rpc(request{body: body, signers: keysOf(owner), idem: "retry-1"}, w.ID)
	if err != nil || string(again) != string(first) {
		t.Fatalf("the owner's retry: %s, %v; want the stored response", again, err)
	}

	// The same for an export: the stored response is the key encrypted to
	// the original recipient, but even that is not released unapproved.
	recipient := mustJSON(t, map[string]any{"encryption_type": "HPKE", "recipient_public_key": func() string { _, s := newRecipient(t); return s }()})
	exp := func(signers ...authKey) error {
		r := request{method: "POST", path: "/v1/wallets/" + w.ID + "/export", body: recipient, signers: signers, idem: "export-1"}
		_, err := e.svc.Export(e.ctx, e.call(r), w.ID, recipient)
		return err
	}
	if err := exp(owner); err != nil {
		t.Fatal(err)
	}
	e.refused(t, custody.Unauthorized, func() error { return exp() })
	e.refused(t, custody.Unauthorized, func() error { return exp(stranger) })
}
