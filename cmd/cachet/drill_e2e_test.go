package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/device"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/wallet"
)

// drillWallet is a wallet the drill made, and the keys its owner needs.
type drillWallet struct {
	id, address string
	keys        []*ecdsa.PrivateKey
}

// personalSign asks w for a personal_sign of msg and checks that the
// signature recovers w's address.
func personalSign(ctx context.Context, cl *client.Client, w drillWallet, msg string) error {
	resp, err := cl.Do(ctx, client.Request{Method: "POST", Path: "/v1/wallets/" + w.id + "/rpc", Keys: w.keys,
		Body: map[string]any{"method": "personal_sign", "params": map[string]string{"message": msg, "encoding": "utf-8"}}})
	if err != nil {
		return err
	}
	var out struct {
		Data struct{ Signature string } `json:"data"`
	}
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		return err
	}
	raw, err := hexutil.Decode(out.Data.Signature)
	if err != nil {
		return fmt.Errorf("signature %q: %w", out.Data.Signature, err)
	}
	addr, err := wallet.PersonalSigner([]byte(msg), raw)
	if err != nil || addr != common.HexToAddress(w.address) {
		return fmt.Errorf("wallet %s: signature recovers %s (%v), want %s", w.id, addr.Hex(), err, w.address)
	}
	return nil
}

// TestDisasterRecoveryDrill is the README's drill: an appliance with
// wallets (app-owned, key-owned, owned by a 2-of-2 key quorum, under a
// policy), authorization keys and an embedded wallet signs a few thousand messages; `cachet backup`
// runs while it serves under signing load; the machine is wiped (store and
// hardware); `cachet restore --backup` with 2 of the 3 shares brings a new
// machine with new, empty hardware back. Every wallet then signs with its old
// address, the policy still allows and denies, every authorization key keeps
// its public key and signs, automatic
// recovery of the embedded wallet works, and `audit verify` passes. A
// corrupted backup and a restore over an existing store are refused before
// the hardware is touched, and the backup holds none of the test's secrets.
func TestDisasterRecoveryDrill(t *testing.T) {
	for _, kind := range []string{config.KindPKCS11, config.KindTPM} {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			a := newAppliance(t, kind)
			idp := newTestIdP(t, a.dir)
			appendFile(t, a.cfg, idp.jwtSection())
			fp := a.init()
			d := a.serve(a.cfg)
			cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)

			must := func(req client.Request, out any) {
				t.Helper()
				resp, err := cl.Do(ctx, req)
				if err != nil {
					t.Fatalf("%s %s: %v", req.Method, req.Path, err)
				}
				if out != nil {
					if err := json.Unmarshal(resp.Body, out); err != nil {
						t.Fatalf("%s %s: %s: %v", req.Method, req.Path, resp.Body, err)
					}
				}
			}
			newKey := func() *ecdsa.PrivateKey {
				k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				return k
			}
			var wallets []drillWallet
			create := func(body map[string]any, keys ...*ecdsa.PrivateKey) {
				t.Helper()
				var w struct{ ID, Address string }
				body["chain_type"] = "ethereum"
				must(client.Request{Method: "POST", Path: "/v1/wallets", Body: body}, &w)
				wallets = append(wallets, drillWallet{id: w.ID, address: w.Address, keys: keys})
			}
			for range 6 {
				create(map[string]any{})
			}
			for range 3 {
				k := newKey()
				create(map[string]any{"owner": map[string]string{"public_key": pubOf(t, k)}}, k)
			}
			k1, k2 := newKey(), newKey()
			var q struct{ ID string }
			must(client.Request{Method: "POST", Path: "/v1/key_quorums", Body: map[string]any{
				"public_keys": []string{pubOf(t, k1), pubOf(t, k2)}, "authorization_threshold": 2}}, &q)
			for range 3 {
				create(map[string]any{"owner_id": q.ID}, k1, k2)
			}
			// A wallet under a policy: transactions of at most 1 ether.
			pk := newKey()
			var pol struct{ ID string }
			must(client.Request{Method: "POST", Path: "/v1/policies", Body: map[string]any{
				"version": "1.0", "name": "at most 1 ether", "chain_type": "ethereum",
				"owner": map[string]string{"public_key": pubOf(t, pk)},
				"rules": []any{map[string]any{"name": "small payments", "method": "eth_signTransaction", "action": "ALLOW",
					"conditions": []any{cond("ethereum_transaction", "value", "lte", "1000000000000000000")}}},
			}}, &pol)
			var pw struct{ ID, Address string }
			must(client.Request{Method: "POST", Path: "/v1/wallets", Body: map[string]any{"chain_type": "ethereum",
				"owner": map[string]string{"public_key": pubOf(t, pk)}, "policy_ids": []string{pol.ID}}}, &pw)
			policyChecks := func(when string) {
				t.Helper()
				to := common.HexToAddress("0x00000000000000000000000000000000000000aa")
				if _, err := cl.Do(ctx, client.Request{Method: "POST", Path: "/v1/wallets/" + pw.ID + "/rpc", Keys: []*ecdsa.PrivateKey{pk},
					Body: txBody(1, to, "0x", "0x6f05b59d3b20000")}); err != nil {
					t.Fatalf("%s: 0.5 ether under the policy: %v", when, err)
				}
				_, err := cl.Do(ctx, client.Request{Method: "POST", Path: "/v1/wallets/" + pw.ID + "/rpc", Keys: []*ecdsa.PrivateKey{pk},
					Body: txBody(2, to, "0x", "0x1bc16d674ec80000")})
				var ce *client.Error
				if !errors.As(err, &ce) || ce.Code != "policy_violation" {
					t.Fatalf("%s: 2 ether under the policy: %v, want policy_violation", when, err)
				}
			}
			policyChecks("before the backup")
			authIDs := map[string]string{}
			for range 3 {
				id, pub := authKey(t, cl, map[string][]int{"uids": {os.Getuid()}}, nil)
				authIDs[id] = pub
			}
			must(client.Request{Method: "POST", Path: "/v1/users", Body: map[string]any{
				"linked_accounts": []map[string]string{{"type": "custom_auth", "custom_user_id": "carol"}}}}, nil)
			jwt := idp.token("carol", time.Hour, nil, nil)
			emb, err := device.Create(ctx, cl, jwt, "automatic", device.Secret{})
			if err != nil {
				t.Fatalf("embedded wallet: %v", err)
			}

			// Signing load from 4 clients: a few thousand signatures
			// before the backup, and it goes on while the backup runs.
			var signed, failed atomic.Int64
			var firstErr atomic.Value
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for c := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						w := wallets[(c+4*i)%len(wallets)]
						if err := personalSign(ctx, cl, w, fmt.Sprintf("load %d/%d", c, i)); err != nil {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err)
						} else {
							signed.Add(1)
						}
					}
				}()
			}
			for signed.Load() < 2000 && failed.Load() == 0 {
				time.Sleep(50 * time.Millisecond)
			}
			before := signed.Load()
			backupFile := filepath.Join(a.dir, "backups", "drill.backup")
			os.MkdirAll(filepath.Dir(backupFile), 0o700)
			r := a.e.ok("backup", "--config", a.cfg, "--out", backupFile)
			during := signed.Load() - before
			close(stop)
			wg.Wait()
			if n := failed.Load(); n != 0 {
				t.Fatalf("%d signatures failed under load (first: %v)", n, firstErr.Load())
			}
			t.Logf("%d signatures before the backup, %d while it ran, %d in all", before, during, signed.Load())
			if !strings.Contains(r.stdout, "root "+fp) || !strings.Contains(r.stdout, fmt.Sprintf("%d wallets", len(wallets)+1)) {
				t.Fatalf("backup output: %s\n%s\n%s", r, r.stdout, r.stderr)
			}
			for id, pub := range authIDs {
				if err := signWith(t, cl, a.appID, id, pub); err != nil {
					t.Fatal(err)
				}
			}
			d.stop()

			// The backup holds no secret of the test in clear.
			b, err := os.ReadFile(backupFile)
			if err != nil {
				t.Fatal(err)
			}
			share, _ := base64.StdEncoding.DecodeString(emb.DeviceShare)
			for name, secret := range map[string][]byte{"app secret": []byte(a.appSecret), "device share": share} {
				if bytes.Contains(b, secret) {
					t.Errorf("the backup holds the %s in clear", name)
				}
			}
			if fi, _ := os.Stat(backupFile); fi.Mode().Perm() != 0o600 {
				t.Errorf("backup file mode %v, want 0600", fi.Mode().Perm())
			}

			// Wipe: the store and the hardware are gone.
			if err := os.RemoveAll(filepath.Join(a.dir, "data")); err != nil {
				t.Fatal(err)
			}
			dev := ""
			if kind == config.KindTPM {
				a.sw.Stop(t)
				dev = testhw.StartSwtpm(t).Device
			}
			cfg2 := a.writeConfig("new-machine.toml", a.backendSection(dev), "")
			appendFile(t, cfg2, idp.jwtSection())
			shares := []string{"--share", a.share(1), "--share", a.share(3), "--identity", a.ops[0].keyFile, "--identity", a.ops[2].keyFile}

			// A corrupted backup is refused before anything is written.
			bad := filepath.Join(a.dir, "backups", "corrupt.backup")
			c := bytes.Clone(b)
			c[len(c)-100] ^= 1
			writeFile(t, bad, string(c), 0o600)
			if r := a.e.run(append([]string{"restore", "--config", cfg2, "--backup", bad}, shares...)...); r.code == 0 || !strings.Contains(r.stderr, "backup file is corrupt") {
				t.Fatalf("corrupted backup: %s", r)
			}
			storePath := filepath.Join(a.dir, "data", "cachet.db")
			if _, err := os.Stat(storePath); err == nil {
				t.Fatal("a refused restore left a store behind")
			}
			// A restore from a backup refuses to write over a store.
			writeFile(t, storePath, "not yours", 0o600)
			if r := a.e.run(append([]string{"restore", "--config", cfg2, "--backup", backupFile}, shares...)...); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
				t.Fatalf("restore --backup over a store: %s", r)
			}
			os.RemoveAll(filepath.Join(a.dir, "data"))

			// (Had a refused restore provisioned the hardware, this one
			// would fail: restore wants new, empty hardware.)
			r = a.e.ok(append([]string{"restore", "--config", cfg2, "--backup", backupFile}, shares...)...)
			if !strings.Contains(r.stdout, "restored root "+fp) || !strings.Contains(r.stdout, "audit log verified") {
				t.Fatalf("restore: %s", r)
			}
			if r := a.e.ok("audit", "verify", "--config", cfg2); !strings.HasPrefix(r.stdout, "ok:") {
				t.Fatal(r)
			}
			d = a.serve(cfg2)
			for i, w := range wallets {
				if err := personalSign(ctx, cl, w, fmt.Sprintf("after the restore %d", i)); err != nil {
					t.Errorf("wallet %d after the restore: %v", i, err)
				}
			}
			policyChecks("after the restore")
			for id, pub := range authIDs {
				var k struct {
					PublicKey string `json:"public_key"`
				}
				must(client.Request{Method: "GET", Path: "/v1/authorization_keys/" + id}, &k)
				if k.PublicKey != pub {
					t.Errorf("authorization key %s: public key %s after the restore, %s before", id, k.PublicKey, pub)
				}
				if err := signWith(t, cl, a.appID, id, pub); err != nil {
					t.Errorf("authorization key %s after the restore: %v", id, err)
				}
			}
			rec, err := device.Recover(ctx, cl, emb.WalletID, jwt, device.Secret{})
			if err != nil || rec.Address != emb.Address || rec.DeviceShare != emb.DeviceShare {
				t.Fatalf("automatic recovery after the restore: %v", err)
			}
			sig, err := device.SignMessage(ctx, cl, rec, jwt, []byte("recovered"))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := hexutil.Decode(sig)
			if addr, err := wallet.PersonalSigner([]byte("recovered"), raw); err != nil || addr != common.HexToAddress(emb.Address) {
				t.Fatalf("embedded wallet signs for %s, want %s (%v)", addr.Hex(), emb.Address, err)
			}
			d.stop()
			if r := a.e.ok("audit", "verify", "--config", cfg2); !strings.HasPrefix(r.stdout, "ok:") {
				t.Fatal(r)
			}
		})
	}
}
