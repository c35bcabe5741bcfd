package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/keys"
	"github.com/ethereum/go-ethereum/crypto"
)

// runDevSeed fills a stopped dev appliance with wallets for the scale
// benchmarks (BENCHMARKS.md, the 1M-wallet run). Each wallet is made by the
// custody service as the API makes it, only without HTTP: with --kind
// imported (the default) a fresh secp256k1 key goes through import/init and
// import/submit (HPKE, sealed by the hardware, audited); with --kind hd the
// wallet is created (BIP-39 entropy and BIP-32 derivation, whose PBKDF2
// costs ~2-4 ms a wallet, so a million take half an hour on two cores).
// Refused on anything but a dev appliance: a load-test fixture, not a
// ceremony.
func runDevSeed(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("dev seed")
	dir := fs.String("dir", "", "directory of a stopped dev appliance")
	n := fs.Int("wallets", 0, "how many wallets to add")
	conc := fs.Int("concurrency", 32, "wallets made at once")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the seeding to this file")
	kind := fs.String("kind", "imported", "imported (private keys through import/submit) or hd (created)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || *n <= 0 || *conc <= 0 {
		return usageError{"--dir DIR and --wallets N (> 0) are required"}
	}
	if *kind != "imported" && *kind != "hd" {
		return usageError{"--kind: imported or hd"}
	}
	env, err := prepareDev(ctx, *dir, "", io.Discard)
	if err != nil {
		return err
	}
	defer env.Close()
	a, err := openWith(ctx, env.Config, openOptions{mustExist: true})
	if err != nil {
		return err
	}
	defer a.Close()
	anchor, _ := a.backend.(keys.Anchor)
	if anchor != nil {
		if _, _, err := audit.CheckAnchor(ctx, a.store.DB(), anchor); err != nil {
			return fmt.Errorf("refusing to seed: %w", err)
		}
	}
	// Checkpoints as the daemon makes them, so the seeded log verifies.
	alog := audit.New(a.store, a.backend, audit.Options{CheckpointEvery: env.Config.Audit.CheckpointRecords, Logger: a.log, Anchor: anchor})
	lctx, stopLog := context.WithCancel(ctx)
	logDone := make(chan struct{})
	go func() { defer close(logDone); alog.Run(lctx) }()
	defer func() { stopLog(); <-logDone }()

	stopProfile, err := startCPUProfile(*prof)
	if err != nil {
		return err
	}
	defer stopProfile()
	svc := custody.New(a.store, a.backend, nil, custody.Options{Logger: a.log})
	call := custody.Call{App: env.App.AppID, Actor: "cachet dev seed"}
	var next, done atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for range *conc {
		wg.Go(func() {
			for next.Add(1) <= int64(*n) && ctx.Err() == nil && firstErr.Load() == nil {
				make := func() error {
					_, err := svc.CreateWallet(ctx, call, custody.WalletInput{ChainType: "ethereum"})
					return err
				}
				if *kind == "imported" {
					make = func() error { return importRandomKey(ctx, svc, call) }
				}
				if err := make(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if d := done.Add(1); d%10000 == 0 {
					fmt.Fprintf(out, "%d wallets, %.0f/s\n", d, float64(d)/time.Since(start).Seconds())
				}
			}
		})
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return fmt.Errorf("after %d wallets: %w", done.Load(), err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("after %d wallets: %w", done.Load(), err)
	}
	_, err = fmt.Fprintf(out, "added %d wallets in %s (%.0f/s)\n", done.Load(), time.Since(start).Round(time.Millisecond), float64(done.Load())/time.Since(start).Seconds())
	return err
}

// importRandomKey imports a fresh secp256k1 key through the service's
// import/init and import/submit, as an SDK would over the API.
func importRandomKey(ctx context.Context, svc *custody.Service, call custody.Call) error {
	k, err := crypto.GenerateKey()
	if err != nil {
		return err
	}
	priv := crypto.FromECDSA(k)
	defer keys.Zero(priv)
	addr := crypto.PubkeyToAddress(k.PublicKey).Hex()
	init, err := svc.ImportInit(ctx, call, []byte(`{"address":"`+addr+`","chain_type":"ethereum","entropy_type":"private-key","encryption_type":"HPKE"}`))
	if err != nil {
		return fmt.Errorf("import init: %w", err)
	}
	var resp custody.ImportInitResponse
	if err := json.Unmarshal(init, &resp); err != nil {
		return err
	}
	raw, err := base64.StdEncoding.DecodeString(resp.EncryptionPublicKey)
	if err != nil {
		return err
	}
	pub, err := hpkebox.ParseRawPublicKey(raw)
	if err != nil {
		return err
	}
	enc, ct, err := hpkebox.Seal(pub, priv)
	if err != nil {
		return err
	}
	body := fmt.Sprintf(`{"wallet":{"address":%q,"chain_type":"ethereum","entropy_type":"private-key","encryption_type":"HPKE","ciphertext":%q,"encapsulated_key":%q}}`,
		addr, base64.StdEncoding.EncodeToString(ct), base64.StdEncoding.EncodeToString(enc))
	if _, err := svc.ImportSubmit(ctx, call, []byte(body)); err != nil {
		return fmt.Errorf("import submit: %w", err)
	}
	return nil
}
