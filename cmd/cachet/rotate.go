package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/ceremony"
	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/store"
)

// runRotate is `cachet rotate`: a new root generation for a (possibly new)
// operator set, authorized by m current shares; or, with --finish, the
// removal of the old generation once the daemon has re-sealed everything.
func runRotate(ctx context.Context, args []string, out io.Writer) error {
	fs := newConfigFlags("rotate")
	cfgPath := fs.config
	var operators, shareFiles, idFiles listFlag
	fs.Var(&operators, "operator", "a new operator's age public key (age1...) or a file holding one; repeat once per operator")
	threshold := fs.Int("threshold", 0, "shares needed to restore the new root (m)")
	outDir := fs.String("out", "", "directory for the new share files")
	fs.Var(&shareFiles, "share", "a share file of the current root; repeat for m shares")
	fs.Var(&idFiles, "identity", "an age identity file that decrypts one or more of the current shares")
	prompt := fs.Int("prompt", 0, "also read this many current shares typed at the terminal")
	finish := fs.Bool("finish", false, "remove the old generation from the hardware once no blob refers to it")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *finish {
		a, err := openAppliance(ctx, *cfgPath, openOptions{})
		if err != nil {
			return err
		}
		defer a.Close()
		gen, err := ceremony.FinishRotation(ctx, a.backend, a.store, ceremony.FinishOptions{
			OlderBlobs: func(ctx context.Context, gen uint32) (int64, error) {
				return custody.CountOlderBlobs(ctx, a.store.DB(), gen)
			},
			Actor: operatorActor(),
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "generation %d removed from the hardware; its shares restore nothing usable any more\n", gen)
		return nil
	}
	if len(operators) == 0 || *threshold == 0 || *outDir == "" {
		return usageError{"--operator (one per new operator), --threshold and --out are required, with m current shares"}
	}
	shares, err := readShares(shareFiles, idFiles, *prompt)
	defer wipeShares(shares)
	if err != nil {
		return err
	}
	a, err := openAppliance(ctx, *cfgPath, openOptions{})
	if err != nil {
		return err
	}
	defer a.Close()
	res, err := ceremony.Rotate(ctx, a.backend, a.store, ceremony.RotateOptions{
		Shares: shares, Operators: operators, Threshold: *threshold, OutDir: *outDir, Actor: operatorActor(),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "root fingerprint: %s\nkey generation:   %d (from %d)\nshares:           %d of %d needed to restore\n", res.Fingerprint, res.Generation, res.FromGeneration, res.Threshold, len(res.ShareFiles))
	for i, f := range res.ShareFiles {
		fmt.Fprintf(out, "  operator %d: %s\n", i+1, f)
	}
	fmt.Fprintf(out, "P-256 keys re-wrapped: %d (same public keys)\n", res.RewrappedKeys)
	fmt.Fprintln(out, "(Re)start the daemon: it re-seals every blob to the new generation in the background while it serves (progress in `cachet status`); then run `cachet rotate --finish`.")
	return nil
}

// startReseal runs the background re-seal of an unfinished rotation for the
// daemon's lifetime, and records its start and end in the audit log.
func startReseal(ctx context.Context, a *appliance) {
	from, pending, err := a.store.Meta(ctx, ceremony.MetaRotationFrom)
	if err != nil || !pending {
		return
	}
	log := a.log.With("component", "reseal", "from_generation", from)
	go func() {
		record := func(action string, detail any) {
			d, _ := json.Marshal(detail)
			err := a.store.Write(ctx, func(tx *store.Tx) error {
				_, err := audit.Append(tx, audit.Entry{Actor: "cachet", Action: action, Target: "generation " + from, Decision: audit.DecisionAllow, Detail: string(d)})
				return err
			})
			if err != nil && ctx.Err() == nil {
				log.Error("audit the re-seal", "action", action, "err", err)
			}
		}
		record("rotation.reseal_start", map[string]any{"from_generation": from})
		var p custody.ResealProgress
		for {
			var err error
			p, err = custody.Reseal(ctx, a.backend, a.store, custody.ResealOptions{
				Batch: a.cfg.Rotation.ResealBatch, Pause: a.cfg.Rotation.ResealPause.Duration, Logger: log,
			})
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			// The hardware or the store failed (the daemon's health gate
			// says which); what is done stays done. Try again later.
			log.Error("re-seal interrupted; retrying in 10s", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
		}
		record("rotation.reseal_end", p)
		lvl := slog.LevelInfo
		if !p.Finished {
			lvl = slog.LevelWarn
		}
		log.Log(ctx, lvl, "re-seal done; run `cachet rotate --finish` to remove the old generation", "generation", p.Generation,
			"resealed", p.Done, "failed", p.Failed, "remaining", strconv.FormatInt(p.Remaining, 10))
	}()
}
