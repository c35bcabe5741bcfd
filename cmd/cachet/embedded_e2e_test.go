package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
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

// Automatic recovery after `cachet restore` has moved the root onto new,
// empty hardware (a fresh SoftHSM token, a fresh swtpm): a wallet created
// on device A before the move is recovered on device B after it, and both
// sign for its address. The same store under an appliance initialised with
// another root is refused at start, naming both roots. The database holds
// no device share, and the audit log has one record per release.
func TestEmbeddedRecoveryAfterRestore(t *testing.T) {
	for _, kind := range []string{config.KindPKCS11, config.KindTPM} {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			a := newAppliance(t, kind)
			idp := newTestIdP(t, a.dir)
			appendFile(t, a.cfg, idp.jwtSection())
			fp := a.init()
			d := a.serve(a.cfg)
			cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)
			if _, err := cl.Do(ctx, client.Request{Method: "POST", Path: "/v1/users", Body: map[string]any{
				"linked_accounts": []map[string]string{{"type": "custom_auth", "custom_user_id": "carol"}}}}); err != nil {
				t.Fatal(err)
			}
			jwt := idp.token("carol", time.Hour, nil, nil)
			stA, err := device.Create(ctx, cl, jwt, "automatic", device.Secret{})
			if err != nil {
				t.Fatalf("create on device A: %v", err)
			}
			signs := func(st *device.State, msg string) {
				t.Helper()
				sig, err := device.SignMessage(ctx, cl, st, jwt, []byte(msg))
				if err != nil {
					t.Fatalf("sign on the device: %v", err)
				}
				raw, _ := hexutil.Decode(sig)
				if addr, err := wallet.PersonalSigner([]byte(msg), raw); err != nil || addr != common.HexToAddress(stA.Address) {
					t.Fatalf("signature recovers %s, %v; want %s", addr.Hex(), err, stA.Address)
				}
			}
			t.Logf("wallet %s at %s", stA.WalletID, stA.Address)
			signs(stA, "before the move")
			d.stop()

			// New, empty hardware; the root comes back from two operator shares.
			dev := ""
			if kind == config.KindTPM {
				dev = testhw.StartSwtpm(t).Device
			}
			cfg2 := a.writeConfig("new-hardware.toml", a.backendSection(dev), "")
			appendFile(t, cfg2, idp.jwtSection())
			a.e.ok("restore", "--config", cfg2, "--share", a.share(2), "--share", a.share(3), "--identity", a.ops[1].keyFile, "--identity", a.ops[2].keyFile)
			d = a.serve(cfg2)
			stB, err := device.Recover(ctx, cl, stA.WalletID, jwt, device.Secret{})
			if err != nil {
				t.Fatalf("automatic recovery after restore: %v\n%s", err, d.stderr.String())
			}
			if stB.DeviceShare != stA.DeviceShare {
				t.Fatal("device B derived another device share than device A's")
			}
			signs(stB, "after the move")
			signs(stA, "after the move")
			d.stop()

			db := filepath.Join(a.dir, "data", "cachet.db")
			for action, want := range map[string]int{"embedded_wallet.create": 1, "embedded_wallet.recover": 1, "embedded_wallet.auth_share": 3} {
				if n := countRecords(t, db, action); n != want {
					t.Errorf("%d %s records, want one per release (%d)", n, action, want)
				}
			}
			share, _ := base64.StdEncoding.DecodeString(stA.DeviceShare)
			for _, suffix := range []string{"", "-wal", "-shm"} {
				b, err := os.ReadFile(db + suffix)
				if err == nil && (bytes.Contains(b, share) || bytes.Contains(b, share[:len(share)-1])) {
					t.Fatalf("the device share is in %s", filepath.Base(db+suffix))
				}
			}

			// An appliance initialised with another root, given this store.
			other := newAppliance(t, kind)
			otherFP := other.init()
			if otherFP == fp {
				t.Fatal("two inits gave the same root")
			}
			for _, suffix := range []string{"", "-wal", "-shm"} {
				os.Remove(filepath.Join(other.dir, "data", "cachet.db"+suffix))
				if b, err := os.ReadFile(db + suffix); err == nil {
					writeFile(t, filepath.Join(other.dir, "data", "cachet.db"+suffix), string(b), 0o600)
				}
			}
			r := other.e.run("serve", "--config", other.cfg)
			if r.code == 0 || !strings.Contains(r.stderr, otherFP) || !strings.Contains(r.stderr, fp) || !strings.Contains(r.stderr, "wrong hardware or wrong store") {
				t.Fatalf("serve with another root's store: %s", r)
			}
			if n := countRecords(t, filepath.Join(other.dir, "data", "cachet.db"), "embedded_wallet.recover"); n != 1 {
				t.Fatalf("%d recover records after the refused start", n)
			}
		})
	}
}
