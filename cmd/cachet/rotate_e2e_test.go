package main

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/device"
	"github.com/cachet-custody/cachet/internal/testhw"
)

// signingLoad signs with the wallets from 3 clients until stopped, and
// counts failures.
type signingLoad struct {
	stop          chan struct{}
	wg            sync.WaitGroup
	signed, fails atomic.Int64
	first         atomic.Value
}

func startSigningLoad(ctx context.Context, cl *client.Client, wallets []drillWallet) *signingLoad {
	l := &signingLoad{stop: make(chan struct{})}
	for c := range 3 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := personalSign(ctx, cl, wallets[(c+3*i)%len(wallets)], fmt.Sprintf("rotation load %d/%d", c, i)); err != nil {
					l.fails.Add(1)
					l.first.CompareAndSwap(nil, err)
				} else {
					l.signed.Add(1)
				}
			}
		}()
	}
	return l
}

func (l *signingLoad) end(t *testing.T, what string) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if n := l.fails.Load(); n != 0 {
		t.Fatalf("%s: %d of %d signatures failed (first: %v)", what, n, n+l.signed.Load(), l.first.Load())
	}
	t.Logf("%s: %d signatures, none failed", what, l.signed.Load())
}

// resealProgress reads the daemon's last recorded re-seal progress straight
// from the database (no second process on the token).
func resealProgress(t *testing.T, dbPath string) (custody.ResealProgress, bool) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+dbPath+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var s string
	if err := db.QueryRow(`SELECT value FROM meta WHERE key = ?`, custody.MetaResealProgress).Scan(&s); err != nil {
		return custody.ResealProgress{}, false
	}
	var p custody.ResealProgress
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		t.Fatal(err)
	}
	return p, true
}

// blobsOfGeneration counts the store's sealed blobs of generation gen.
func blobsOfGeneration(t *testing.T, dbPath string, gen uint32) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+dbPath+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	g := binary.BigEndian.AppendUint32(nil, gen)
	total := 0
	for _, q := range []string{
		`SELECT COUNT(*) FROM wallets WHERE substr(sealed_key, 4, 4) = ?`,
		`SELECT COUNT(*) FROM wallets WHERE length(sealed_entropy) >= 7 AND substr(sealed_entropy, 4, 4) = ?`,
		`SELECT COUNT(*) FROM embedded_wallets WHERE substr(sealed_auth_share, 4, 4) = ?`,
		`SELECT COUNT(*) FROM embedded_wallets WHERE sealed_recovery_share IS NOT NULL AND substr(sealed_recovery_share, 4, 4) = ?`,
	} {
		var n int
		if err := db.QueryRow(q, g).Scan(&n); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

// TestRotationUnderLoad: `cachet rotate` to a new operator set (3 of 4
// instead of 2 of 3), then the daemon re-seals every blob in the background
// while it signs under load with no failed request; kill -9 halfway, and the
// re-seal resumes at the next start. Afterwards no blob of generation 1 is
// left, authorization keys have the same public keys, `rotate --finish`
// removes generation 1 from the token, the old shares are refused with a
// message that says the root was retired, the new shares restore onto new
// hardware where every wallet signs with its address, and the audit chain
// verifies across both generations.
func TestRotationUnderLoad(t *testing.T) {
	for _, kind := range []string{config.KindPKCS11, config.KindTPM} {
		t.Run(kind, func(t *testing.T) { testRotation(t, kind) })
	}
}

func testRotation(t *testing.T, kind string) {
	ctx := context.Background()
	a := newAppliance(t, kind)
	idp := newTestIdP(t, a.dir)
	slow := "[rotation]\nreseal_batch = 4\nreseal_pause = \"40ms\"\n"
	a.cfg = a.writeConfigWith("cachet.toml", a.backendSection(""), "", slow)
	appendFile(t, a.cfg, idp.jwtSection())
	fp1 := a.init()
	db := filepath.Join(a.dir, "data", "cachet.db")
	d := a.serve(a.cfg)
	cl := client.New(a.socket, "http://localhost", a.appID, a.appSecret)
	var wallets []drillWallet
	for range 60 {
		resp, err := cl.Do(ctx, client.Request{Method: "POST", Path: "/v1/wallets", Body: map[string]any{"chain_type": "ethereum"}})
		if err != nil {
			t.Fatal(err)
		}
		var w struct{ ID, Address string }
		json.Unmarshal(resp.Body, &w)
		wallets = append(wallets, drillWallet{id: w.ID, address: w.Address})
	}
	authIDs := map[string]string{}
	for range 2 {
		id, pub := authKey(t, cl, map[string][]int{"uids": {os.Getuid()}}, nil)
		authIDs[id] = pub
	}
	if _, err := cl.Do(ctx, client.Request{Method: "POST", Path: "/v1/users", Body: map[string]any{
		"linked_accounts": []map[string]string{{"type": "custom_auth", "custom_user_id": "carol"}}}}); err != nil {
		t.Fatal(err)
	}
	jwt := idp.token("carol", time.Hour, nil, nil)
	emb, err := device.Create(ctx, cl, jwt, "automatic", device.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	total := blobsOfGeneration(t, db, 1)
	if total != 2*len(wallets)+2 {
		t.Fatalf("%d blobs of generation 1, want %d", total, 2*len(wallets)+2)
	}
	d.stop()

	// The ceremony: 2 of the 3 current shares authorize a new root for 4
	// new operators, 3 of whom restore it.
	var newOps []opKey
	args := []string{"rotate", "--config", a.cfg, "--threshold", "3", "--out", filepath.Join(a.dir, "shares-g2"),
		"--share", a.share(1), "--share", a.share(2), "--identity", a.ops[0].keyFile, "--identity", a.ops[1].keyFile}
	for i := 1; i <= 4; i++ {
		id, _ := age.GenerateX25519Identity()
		f := writeFile(t, filepath.Join(a.dir, "operators", fmt.Sprintf("new%d.key", i)), id.String()+"\n", 0o600)
		newOps = append(newOps, opKey{keyFile: f, pub: id.Recipient().String(), id: id})
		args = append(args, "--operator", id.Recipient().String())
	}
	r := a.e.ok(args...)
	if !strings.Contains(r.stdout, "key generation:   2 (from 1)") || !strings.Contains(r.stdout, "P-256 keys re-wrapped: 3") {
		t.Fatalf("rotate: %s\n%s", r, r.stdout)
	}
	newShare := func(i int) string { return filepath.Join(a.dir, "shares-g2", fmt.Sprintf("share-g2-%d-of-4.age", i)) }

	// The daemon re-seals in the background while it signs.
	d = a.serve(a.cfg)
	load := startSigningLoad(ctx, cl, wallets)
	deadline := time.Now().Add(60 * time.Second)
	for {
		p, ok := resealProgress(t, db)
		if ok && p.Done >= int64(total/2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("re-seal progress after 60s: %+v\n%s", p, d.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	load.end(t, "first half of the re-seal")
	d.cmd.Process.Kill() // kill -9, halfway
	<-d.done
	d.done <- nil
	left := blobsOfGeneration(t, db, 1)
	if left == 0 || left == total {
		t.Fatalf("after kill -9: %d of %d blobs still of generation 1; want some", left, total)
	}
	t.Logf("killed with %d of %d blobs still of generation 1", left, total)

	d = a.serve(a.cfg)
	load = startSigningLoad(ctx, cl, wallets)
	for {
		p, ok := resealProgress(t, db)
		if ok && p.Finished {
			if p.Done != int64(left) || p.Generation != 2 {
				t.Fatalf("the resumed re-seal did %d blobs to generation %d; want the %d left, to generation 2", p.Done, p.Generation, left)
			}
			break
		}
		if time.Now().After(deadline.Add(60 * time.Second)) {
			t.Fatalf("re-seal not finished: %+v\n%s", p, d.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	load.end(t, "second half of the re-seal")
	if n := blobsOfGeneration(t, db, 1); n != 0 {
		t.Fatalf("%d blobs of generation 1 remain", n)
	}
	if n := blobsOfGeneration(t, db, 2); n != total {
		t.Fatalf("%d blobs of generation 2, want %d", n, total)
	}
	for id, pub := range authIDs {
		if err := signWith(t, cl, a.appID, id, pub); err != nil {
			t.Fatalf("authorization key %s after rotation: %v", id, err)
		}
		resp, err := cl.Do(ctx, client.Request{Method: "GET", Path: "/v1/authorization_keys/" + id})
		if err != nil || !strings.Contains(string(resp.Body), pub) {
			t.Fatalf("authorization key %s: public key changed: %v", id, err)
		}
	}
	d.stop()
	if n := countRecords(t, db, "rotation.reseal_start"); n != 2 {
		t.Errorf("%d rotation.reseal_start records, want 2 (the first run and the resumed one)", n)
	}

	r = a.e.ok("rotate", "--config", a.cfg, "--finish")
	if !strings.Contains(r.stdout, "generation 1 removed") {
		t.Fatal(r)
	}
	var st struct {
		Backend struct{ Generations []uint32 } `json:"backend"`
		Root    struct{ Fingerprint string }   `json:"root"`
	}
	mustJSON(t, []byte(a.e.ok("status", "--config", a.cfg, "--json").stdout), &st)
	if len(st.Backend.Generations) != 1 || st.Backend.Generations[0] != 2 || st.Root.Fingerprint == fp1 {
		t.Fatalf("status after --finish: %+v", st)
	}
	if r := a.e.ok("audit", "verify", "--config", a.cfg); !strings.HasPrefix(r.stdout, "ok:") {
		t.Fatal(r)
	}

	// New hardware for the same store: the old shares are refused as
	// retired, 2 new shares are too few, 3 new ones restore it.
	dev := ""
	if kind == config.KindTPM {
		dev = testhw.StartSwtpm(t).Device
	}
	cfg2 := a.writeConfig("new-hardware.toml", a.backendSection(dev), "")
	appendFile(t, cfg2, idp.jwtSection())
	if r := a.e.run("restore", "--config", cfg2, "--share", a.share(1), "--share", a.share(3), "--identity", a.ops[0].keyFile, "--identity", a.ops[2].keyFile); r.code == 0 || !strings.Contains(r.stderr, "retired") {
		t.Fatalf("restore with the old shares: %s", r)
	}
	if r := a.e.run("restore", "--config", cfg2, "--share", newShare(1), "--share", newShare(4), "--identity", newOps[0].keyFile, "--identity", newOps[3].keyFile); r.code == 0 || !strings.Contains(r.stderr, "needs 3 of 4") {
		t.Fatalf("restore with 2 new shares: %s", r)
	}
	a.e.ok("restore", "--config", cfg2, "--share", newShare(1), "--share", newShare(2), "--share", newShare(4),
		"--identity", newOps[0].keyFile, "--identity", newOps[1].keyFile, "--identity", newOps[3].keyFile)
	d = a.serve(cfg2)
	for i, w := range wallets {
		if err := personalSign(ctx, cl, w, fmt.Sprintf("after rotation and restore %d", i)); err != nil {
			t.Fatalf("wallet %d: %v", i, err)
		}
	}
	for id, pub := range authIDs {
		if err := signWith(t, cl, a.appID, id, pub); err != nil {
			t.Fatalf("authorization key %s after rotation and restore: %v", id, err)
		}
	}
	if rec, err := device.Recover(ctx, cl, emb.WalletID, jwt, device.Secret{}); err != nil || rec.Address != emb.Address {
		t.Fatalf("automatic recovery after rotation and restore: %v", err)
	}
	d.stop()
	if r := a.e.ok("audit", "verify", "--config", cfg2); !strings.HasPrefix(r.stdout, "ok:") || !strings.Contains(r.stdout, "signed checkpoints verified") {
		t.Fatal(r)
	}
}
