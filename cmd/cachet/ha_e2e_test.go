package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/internal/testpg"
	"github.com/cachet-custody/cachet/quorum"
)

// haPG is the PostgreSQL server of this package's HA tests, started by the
// first of them and stopped by TestMain.
var haPG struct {
	once sync.Once
	srv  *testpg.Server
	err  error
}

func pgServer(t testing.TB) *testpg.Server {
	t.Helper()
	haPG.once.Do(func() { haPG.srv, haPG.err = testpg.Start() })
	if haPG.err != nil {
		t.Fatal(haPG.err)
	}
	return haPG.srv
}

// stopPG stops the HA tests' server, if one started.
func stopPG() {
	if haPG.srv != nil {
		haPG.srv.Close()
	}
}

// haCluster is two appliances on one PostgreSQL database: a SoftHSM one that
// ran `cachet init`, and a swtpm one restored from its operators' shares.
type haCluster struct {
	a, b *testAppliance
	dsn  string
}

func storeSection(dsn, name string) string {
	return fmt.Sprintf("[store]\nkind = \"postgres\"\ndsn = %q\nappliance = %q\n", dsn, name)
}

func newHACluster(t *testing.T) *haCluster {
	t.Helper()
	return newHAClusterOn(t, pgServer(t))
}

func newHAClusterOn(t *testing.T, srv *testpg.Server) *haCluster {
	t.Helper()
	c := &haCluster{dsn: srv.NewDatabase(t)}
	c.a = newAppliance(t, config.KindPKCS11)
	c.a.cfg = c.a.writeConfigWith("ha.toml", c.a.backendSection(""), "", storeSection(c.dsn, "hsm-1"))
	c.b = newAppliance(t, config.KindTPM)
	c.b.appID, c.b.appSecret, c.b.ops = c.a.appID, c.a.appSecret, c.a.ops
	c.b.cfg = c.b.writeConfigWith("ha.toml", c.b.backendSection(""), "", storeSection(c.dsn, "tpm-1"))
	fp := c.a.init()
	r := c.b.e.ok("restore", "--config", c.b.cfg, "--share", c.a.share(1), "--share", c.a.share(3),
		"--identity", c.a.ops[0].keyFile, "--identity", c.a.ops[2].keyFile)
	if !strings.Contains(r.stdout, "restored root "+fp) {
		t.Fatalf("restore of the second appliance: %s", r)
	}
	return c
}

// Two appliances, SoftHSM and swtpm with the same root, on one database:
// wallets made on one sign on the other, an aggregation limit holds exactly
// under 64 concurrent requests spread over both, a signed request accepted
// by one is refused by the other, and the audit chain verifies from both.
func TestHATwoAppliances(t *testing.T) {
	c := newHACluster(t)
	da, db := c.a.serve(c.a.cfg), c.b.serve(c.b.cfg)
	ctx := context.Background()
	ca, cb := c.a.client(), c.b.client()

	// Wallets made on one sign on the other.
	wa, wb := c.a.wallet(t), c.b.wallet(t)
	for _, tc := range []struct {
		on     *client.Client
		wallet string
	}{{cb, wa}, {ca, wb}} {
		if _, err := tc.on.Do(ctx, signRequest(tc.wallet)(1)); err != nil {
			t.Fatalf("wallet %s signing on the other appliance: %v", tc.wallet, err)
		}
	}

	// One idempotency key sent to both at once: the key is checked and
	// stored under the cluster's write lock, so one wallet, the same answer.
	var ids [2]string
	var idemErr [2]error
	var iwg sync.WaitGroup
	for i, cl := range []*client.Client{ca, cb} {
		iwg.Add(1)
		go func() {
			defer iwg.Done()
			resp, err := cl.Do(ctx, client.Request{Method: "POST", Path: "/v1/wallets", Body: map[string]any{"chain_type": "ethereum"}, IdempotencyKey: "ha-once"})
			if idemErr[i] = err; err == nil {
				var w struct{ ID string }
				json.Unmarshal(resp.Body, &w)
				ids[i] = w.ID
			}
		}()
	}
	iwg.Wait()
	if idemErr[0] != nil || idemErr[1] != nil || ids[0] == "" || ids[0] != ids[1] {
		t.Fatalf("one idempotency key on both appliances: wallets %q, errors %v", ids, idemErr)
	}

	// An aggregation limit under 64 concurrent requests over both.
	e := &policyEnv{t: t, ctx: ctx, cl: ca}
	e.user, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.server, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wid := e.budgetWallet()
	const clients, each = 64, 100
	signedBy, refused := spendConcurrently(t, clients, each, func(i int, body any) error {
		cl := []*client.Client{ca, cb}[i%2]
		_, err := cl.Do(ctx, client.Request{Method: "POST", Path: "/v1/wallets/" + wid + "/rpc", Body: body, Keys: []*ecdsa.PrivateKey{e.server}})
		return err
	})
	perAppliance := [2]int{}
	for _, i := range signedBy {
		perAppliance[i%2]++
	}
	if signed := len(signedBy); signed != 25 || refused != clients-25 {
		t.Fatalf("%d signed (%d tokens; %d by the HSM appliance, %d by the TPM one), %d refused; want exactly 25 signed (2500 tokens)", signed, signed*each, perAppliance[0], perAppliance[1], refused)
	}
	t.Logf("aggregation: %d signed by the HSM appliance, %d by the TPM one", perAppliance[0], perAppliance[1])

	// A signed request accepted by one appliance is refused by the other.
	path := "/v1/wallets/" + wid + "/rpc"
	body, _ := json.Marshal(txBody(5000, token, transferData(t, "transfer", 0), "0x0"))
	h := http.Header{}
	h.Set("Authorization", basicAuth(c.a.appID, c.a.appSecret))
	h.Set("privy-app-id", c.a.appID)
	h.Set("Content-Type", "application/json")
	h.Set("privy-request-expiry", strconv.FormatInt(time.Now().Add(10*time.Minute).UnixMilli(), 10))
	sig, err := client.Sign(quorum.Request{Method: "POST", URL: "http://localhost" + path, Body: body, Headers: h}, []*ecdsa.PrivateKey{e.server})
	if err != nil {
		t.Fatal(err)
	}
	h.Set("privy-authorization-signature", sig)
	if code, m := rawRequest(t, c.a.socket, "POST", path, body, h); code != 200 {
		t.Fatalf("signed request on the HSM appliance: %d %v", code, m)
	}
	if code, m := rawRequest(t, c.b.socket, "POST", path, body, h); code != 401 || !strings.Contains(fmt.Sprint(m["error"]), "already accepted") {
		t.Fatalf("the same request replayed to the TPM appliance: %d %v", code, m)
	}

	// Both appliances report the cluster.
	for _, ap := range []*testAppliance{c.a, c.b} {
		code, raw, _ := get(ap.socket, "/v1/status", ap.appHeaders())
		var st struct {
			Store struct {
				Kind       string `json:"kind"`
				Connected  bool   `json:"connected"`
				Appliances []struct {
					Name string `json:"name"`
				} `json:"appliances"`
			} `json:"store"`
		}
		json.Unmarshal(raw, &st)
		if code != 200 || st.Store.Kind != "postgres" || !st.Store.Connected || len(st.Store.Appliances) != 2 {
			t.Fatalf("/v1/status of %s: %d %s", ap.kind, code, raw)
		}
	}

	da.stop()
	db.stop()
	for _, ap := range []*testAppliance{c.a, c.b} {
		if r := ap.e.ok("audit", "verify", "--config", ap.cfg); !strings.HasPrefix(r.stdout, "ok:") {
			t.Fatalf("audit verify on the %s appliance: %s", ap.kind, r)
		}
	}
}

// An appliance whose hardware holds another root refuses to serve a
// database initialized with the cluster's root.
func TestHARootMismatchRefused(t *testing.T) {
	c := &haCluster{dsn: pgServer(t).NewDatabase(t)}
	c.a = newAppliance(t, config.KindPKCS11)
	c.a.cfg = c.a.writeConfigWith("ha.toml", c.a.backendSection(""), "", storeSection(c.dsn, "hsm-1"))
	c.a.init()
	other := newAppliance(t, config.KindPKCS11)
	other.init() // its own root, in its own SQLite store
	cfg := other.writeConfigWith("ha.toml", other.backendSection(""), "", storeSection(c.dsn, "hsm-2"))
	r := other.e.run("restore", "--config", cfg, "--share", other.share(1), "--share", other.share(2),
		"--identity", other.ops[0].keyFile, "--identity", other.ops[1].keyFile)
	if r.code == 0 {
		t.Fatalf("shares of another root restored onto the cluster's database: %s", r)
	}
	// Hardware provisioned with another root, pointed at the cluster.
	b, err := os.ReadFile(other.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg = writeFile(t, filepath.Join(other.dir, "ha-other.toml"), strings.Replace(string(b), "[[apps]]", storeSection(c.dsn, "hsm-2")+"[[apps]]", 1), 0o600)
	r = other.e.run("serve", "--config", cfg)
	if r.code == 0 || !strings.Contains(r.stderr, "wrong hardware or wrong store") {
		t.Fatalf("serve with another root: %s", r)
	}
}
