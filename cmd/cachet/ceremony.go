package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"filippo.io/age"
	"golang.org/x/term"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/ceremony"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/keys"
)

func operatorActor() string { return fmt.Sprintf("operator uid=%d", os.Getuid()) }

func runInit(ctx context.Context, args []string, out io.Writer) error {
	fs := newConfigFlags("init")
	cfgPath := fs.config
	var operators listFlag
	fs.Var(&operators, "operator", "an operator's age public key (age1...) or a file holding one; repeat once per operator")
	threshold := fs.Int("threshold", 0, "shares needed to restore the root (m)")
	outDir := fs.String("out", "", "directory for the share files (one per operator)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if len(operators) == 0 || *threshold == 0 || *outDir == "" {
		return usageError{"--operator (one per operator), --threshold and --out are required"}
	}
	a, err := openAppliance(ctx, *cfgPath, openOptions{})
	if err != nil {
		return err
	}
	defer a.Close()
	res, err := ceremony.Init(ctx, a.backend, a.store, ceremony.InitOptions{
		Operators: operators, Threshold: *threshold, OutDir: *outDir, Actor: operatorActor(),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "root fingerprint: %s\nkey generation:   %d\nshares:           %d of %d needed to restore\n", res.Fingerprint, res.Generation, res.Threshold, len(res.ShareFiles))
	for i, f := range res.ShareFiles {
		fmt.Fprintf(out, "  operator %d: %s\n", i+1, f)
	}
	fmt.Fprintln(out, "Hand each operator their share file; it opens only with their age identity. Keep no copy here.")
	return nil
}

func runRestore(ctx context.Context, args []string, out io.Writer) error {
	fs := newConfigFlags("restore")
	cfgPath := fs.config
	var shareFiles, idFiles listFlag
	fs.Var(&shareFiles, "share", "an age-encrypted share file; repeat for each share")
	fs.Var(&idFiles, "identity", "an age identity file that decrypts one or more of the shares; repeat as needed")
	prompt := fs.Int("prompt", 0, "also read this many shares typed at the terminal (one cachet-share-v1 line each)")
	replace := fs.Bool("replace", false, "provision over a root the hardware holds (re-seal a TPM root after an expected PCR change)")
	backupFile := fs.String("backup", "", "install this backup (cachet backup) as the store first: a new machine gets back every wallet and key")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *backupFile != "" && *replace {
		return usageError{"--backup restores a new machine; it does not go with --replace"}
	}
	shares, err := readShares(shareFiles, idFiles, *prompt)
	defer wipeShares(shares)
	if err != nil {
		return err
	}
	if _, err := ceremony.CheckShares(shares, ""); err != nil {
		return err
	}
	var undo func()
	if *backupFile != "" {
		var err error
		if undo, err = installBackup(ctx, *cfgPath, *backupFile, out); err != nil {
			return err
		}
	}
	res, err := restoreWith(ctx, *cfgPath, shares, *replace, undo != nil, out)
	if err != nil {
		if undo != nil {
			undo()
		}
		return err
	}
	used := make([]string, len(res.SharesUsed))
	for i, n := range res.SharesUsed {
		used[i] = fmt.Sprint(n)
	}
	fmt.Fprintf(out, "restored root %s (key generation %d) from shares %s\n", res.Fingerprint, res.Generation, strings.Join(used, ", "))
	return nil
}

// readShares reads and decrypts the shares given with --share/--identity
// and --prompt, before any hardware is touched. The caller wipes them.
func readShares(shareFiles, idFiles []string, prompt int) ([]ceremony.NamedShare, error) {
	if len(shareFiles) == 0 && prompt == 0 {
		return nil, usageError{"give shares with --share FILE (and --identity FILE) or --prompt N"}
	}
	if len(shareFiles) > 0 && len(idFiles) == 0 {
		return nil, usageError{"--share needs at least one --identity to decrypt it"}
	}
	var ids []age.Identity
	for _, f := range idFiles {
		got, err := ceremony.ReadIdentityFile(f)
		if err != nil {
			return nil, err
		}
		ids = append(ids, got...)
	}
	var shares []ceremony.NamedShare
	for _, f := range shareFiles {
		fh, err := os.Open(f)
		if err != nil {
			return shares, fmt.Errorf("share %s: %w", f, err)
		}
		s, err := ceremony.DecryptShare(fh, ids)
		fh.Close()
		if err != nil {
			return shares, &ceremony.ShareError{Name: f, Reason: err.Error()}
		}
		shares = append(shares, ceremony.NamedShare{Name: f, Share: s})
	}
	for i := 1; i <= prompt; i++ {
		name := fmt.Sprintf("typed share %d", i)
		text, err := readSecretLine(fmt.Sprintf("share %d of %d (cachet-share-v1:...): ", i, prompt))
		if err != nil {
			return shares, fmt.Errorf("%s: %w", name, err)
		}
		s, err := ceremony.ParseShare(text)
		if err != nil {
			return shares, &ceremony.ShareError{Name: name, Reason: err.Error()}
		}
		shares = append(shares, ceremony.NamedShare{Name: name, Share: s})
	}
	return shares, nil
}

// restoreWith runs the restore ceremony; after a backup was installed, it
// also verifies the whole audit log with the restored audit key.
func restoreWith(ctx context.Context, cfgPath string, shares []ceremony.NamedShare, replace, fromBackup bool, out io.Writer) (ceremony.RestoreResult, error) {
	a, err := openAppliance(ctx, cfgPath, openOptions{forReplace: replace})
	if err != nil {
		return ceremony.RestoreResult{}, err
	}
	defer a.Close()
	res, err := ceremony.Restore(ctx, a.backend, a.store, ceremony.RestoreOptions{Shares: shares, Replace: replace, Actor: operatorActor()})
	if err != nil {
		return res, err
	}
	if fromBackup {
		if err := verifyAudit(ctx, a, out); err != nil {
			return res, err
		}
	}
	return res, nil
}

// stdin is shared by every typed share, so a piped stream of several lines
// is read line by line.
var stdin = bufio.NewReader(os.Stdin)

// readSecretLine reads one line without echo from a terminal, or a plain
// line from a pipe (scripts and tests).
func readSecretLine(prompt string) (string, error) {
	fd := int(os.Stdin.Fd())
	if term.IsTerminal(fd) {
		fmt.Fprint(os.Stderr, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		defer clear(b)
		return string(b), err
	}
	line, err := stdin.ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", fmt.Errorf("read share: %w", err)
	}
	return line, nil
}

func runStatus(ctx context.Context, args []string, out io.Writer) error {
	fs := newConfigFlags("status")
	cfgPath := fs.config
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.parse(args); err != nil {
		return err
	}
	a, err := openAppliance(ctx, *cfgPath, openOptions{mustExist: true})
	if err != nil {
		return err
	}
	defer a.Close()
	st, err := ceremony.ReadStatus(ctx, a.backend, a.store)
	if err != nil {
		return err
	}
	integrity := "ok"
	if err := a.store.QuickCheck(ctx); err != nil {
		integrity = err.Error()
	}
	if *asJSON {
		return printJSON(out, struct {
			ceremony.Status
			Integrity string `json:"integrity"`
		}{st, integrity})
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "backend\t%s\n", st.Backend.Kind)
	for _, k := range sortedKeys(st.Backend.Identity) {
		fmt.Fprintf(w, "  %s\t%s\n", k, st.Backend.Identity[k])
	}
	if st.BackendErr != "" {
		fmt.Fprintf(w, "  error\t%s\n", st.BackendErr)
	}
	fmt.Fprintf(w, "  provisioned\t%v\n", st.Backend.Provisioned)
	fmt.Fprintf(w, "  key generations\t%v (current %d)\n", st.Backend.Generations, st.Backend.Generation)
	if st.Backend.Format != 0 {
		fmt.Fprintf(w, "  key format\t%d\n", st.Backend.Format)
	}
	fmt.Fprintf(w, "root fingerprint\t%s\n", orNone(st.Root.Fingerprint))
	fmt.Fprintf(w, "  in hardware\t%s\n", orNone(st.Root.HardwareFingerprint))
	fmt.Fprintf(w, "  match\t%v\n", st.Root.Match)
	if st.Initialized {
		fmt.Fprintf(w, "  shares\t%d of %d\n", st.Root.Threshold, st.Root.Shares)
		fmt.Fprintf(w, "  initialized\t%s\n", st.Root.InitializedAt)
		if st.Root.RestoredAt != "" {
			fmt.Fprintf(w, "  restored\t%s\n", st.Root.RestoredAt)
		}
	}
	if r := st.Rotation; r != nil {
		if r.Pending {
			fmt.Fprintf(w, "rotation\tfrom generation %d, re-sealing\n", r.FromGeneration)
		} else {
			fmt.Fprintf(w, "rotation\tfinished\n")
		}
		if len(r.Progress) > 0 {
			var p custody.ResealProgress
			if json.Unmarshal(r.Progress, &p) == nil {
				fmt.Fprintf(w, "  re-seal\t%d done, %d left, %d failed, %.0f blobs/s, ETA %s (at %s)\n", p.Done, p.Remaining, p.Failed, p.PerSecond,
					(time.Duration(p.ETASeconds) * time.Second).String(), p.UpdatedAt.Format(time.RFC3339))
			}
		}
	}
	fmt.Fprintf(w, "store\t%s\n", st.Store.Path)
	fmt.Fprintf(w, "  schema version\t%d\n", st.Store.SchemaVersion)
	fmt.Fprintf(w, "  size\t%d bytes (+%d WAL)\n", st.Store.SizeBytes, st.Store.WALBytes)
	fmt.Fprintf(w, "  quick_check\t%s\n", integrity)
	fmt.Fprintf(w, "audit\thead %d\n", st.Audit.Seq)
	fmt.Fprintf(w, "  last checkpoint\t%d\n", st.Audit.CheckpointSeq)
	fmt.Fprintf(w, "  since checkpoint\t%d records\n", st.Audit.UncheckpointedN)
	return w.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func runAudit(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "export" {
		return runAuditExport(ctx, args[1:], out)
	}
	if len(args) == 0 || args[0] != "verify" {
		return usageError{"usage: cachet audit verify --config FILE [--public-key KEY] [--json]\n       cachet audit export --config FILE [--since SEQ] [--format jsonl]"}
	}
	fs := newConfigFlags("audit verify")
	cfgPath := fs.config
	pubFlag := fs.String("public-key", "", "verify checkpoints with this audit public key (base64 DER SPKI) instead of asking the hardware")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.parse(args[1:]); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	var pub *ecdsa.PublicKey
	var a *appliance
	if *pubFlag != "" {
		if pub, err = parseP256SPKI(*pubFlag); err != nil {
			return usageError{"--public-key: " + err.Error()}
		}
		a = &appliance{cfg: cfg, log: newLogger(cfg.Log)}
		if a.store, err = openStoreOnly(ctx, cfg); err != nil {
			return err
		}
	} else {
		if a, err = openWith(ctx, cfg, openOptions{mustExist: true}); err != nil {
			return err
		}
		if pub, err = a.backend.AuthKey(ctx, keys.AuditKeyLabel); err != nil {
			a.Close()
			return fmt.Errorf("audit key: %w", err)
		}
	}
	defer a.Close()
	// The pages first: a damaged page can hide records from the walk.
	if err := a.store.QuickCheck(ctx); err != nil {
		return exitError{fmt.Errorf("FAILED: %w", err), 1}
	}
	rep, err := audit.Verify(ctx, a.store.DB(), pub)
	// The head against the hardware's anchor: a chain that verifies can
	// still be an older copy of the database.
	anchorNote := ""
	if an, ok := a.backend.(keys.Anchor); ok && err == nil {
		st, anchored, aerr := audit.CheckAnchor(ctx, a.store.DB(), an)
		var re *audit.RollbackError
		switch {
		case errors.As(aerr, &re):
			return exitError{fmt.Errorf("FAILED: %w", aerr), 1}
		case aerr != nil:
			return aerr
		case anchored:
			anchorNote = fmt.Sprintf("; the hardware anchors checkpoint %d", st.Seq)
		default:
			anchorNote = "; the hardware anchors no checkpoint yet"
		}
	}
	var ce *audit.ChainError
	if *asJSON {
		res := map[string]any{"ok": err == nil, "report": rep}
		if errors.As(err, &ce) {
			res["first_bad_seq"], res["reason"] = ce.Seq, ce.Reason
		}
		printJSON(out, res)
	}
	if err != nil {
		if errors.As(err, &ce) {
			return exitError{fmt.Errorf("FAILED: first bad record %d: %s (%d records before it verified)", ce.Seq, ce.Reason, rep.Records), 1}
		}
		return err
	}
	if !*asJSON {
		fmt.Fprintf(out, "ok: %d records, %d signed checkpoints verified; head %d (%s)%s\n", rep.Records, rep.Checkpoints, rep.HeadSeq, rep.HeadHash, anchorNote)
		if rep.Unsigned > 0 {
			fmt.Fprintf(out, "note: the last %d records come after the last checkpoint and are protected by the hash chain only\n", rep.Unsigned)
		}
	}
	return nil
}

// runAuditExport writes the records after --since as JSON lines, each with
// the fields its hash covers and the hash, for a SIEM that verifies the
// chain itself (audit.ExportRecord documents the format). It reads the store
// only: the hardware is not needed.
func runAuditExport(ctx context.Context, args []string, out io.Writer) error {
	fs := newConfigFlags("audit export")
	cfgPath := fs.config
	since := fs.Uint64("since", 0, "export the records with a sequence number greater than SEQ (the last one the receiver has)")
	format := fs.String("format", "jsonl", "output format; jsonl (one JSON object per line) is the only one")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *format != "jsonl" {
		return usageError{fmt.Sprintf("--format: %q is not a format; jsonl is the only one", *format)}
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	st, err := openStoreOnly(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	_, err = audit.ExportJSONL(ctx, st.DB(), *since, out)
	return err
}

func parseP256SPKI(s string) (*ecdsa.PublicKey, error) {
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("not base64")
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, err
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("not an ECDSA public key")
	}
	return pub, nil
}

func runConfig(ctx context.Context, args []string, out io.Writer) error {
	if len(args) != 2 || args[0] != "check" {
		return usageError{"usage: cachet config check FILE"}
	}
	path := args[1]
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	cfg, err := config.Parse(path, data)
	var problems []config.Problem
	var pe *config.ProblemsError
	switch {
	case errors.As(err, &pe):
		problems = pe.Problems
	case err != nil:
		return err
	default:
		problems = cfg.Check()
	}
	if len(problems) == 0 {
		fmt.Fprintf(out, "%s: ok\n", path)
		return nil
	}
	for _, p := range problems {
		fmt.Fprintf(out, "%s: %s: %s\n", path, p.Key, p.Reason)
	}
	return exitError{fmt.Errorf("%d problem(s)", len(problems)), 1}
}

// wipeShares zeroes the shares a ceremony read, once it is done with them.
func wipeShares(shares []ceremony.NamedShare) {
	for i := range shares {
		shares[i].Share.Wipe()
	}
}
