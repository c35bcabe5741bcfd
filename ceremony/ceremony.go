// Package ceremony owns the operator ceremonies that move Cachet's root
// secret between the hardware and its operators: init (generate the root,
// provision the HSM or TPM, split the root into m-of-n shares, each encrypted
// to one operator's age key), restore (take m shares and provision fresh
// hardware with the same root, so every derived key comes back), and the
// status report of the hardware, store and audit log.
//
// The root exists in process memory only during a ceremony and is zeroed
// before the ceremony returns. It is never written, logged or printed; only
// its fingerprint is. Every ceremony is recorded in the audit log.
//
// Shares use Shamir's secret sharing over GF(2^8) from HashiCorp Vault's
// shamir package (MPL-2.0), the implementation Privy's own library is
// modelled on. Share files are age (filippo.io/age) files, ASCII-armored.
package ceremony

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/cachet-custody/cachet/internal/shamir"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
)

// ErrAlreadyInitialized means the store already records a root.
var ErrAlreadyInitialized = errors.New("this appliance is already initialized (the store records a root fingerprint)")

// InitOptions configures `cachet init`.
type InitOptions struct {
	// Operators are the operators' age public keys ("age1..." or a file
	// holding one), one per share, in order: share i goes to operator i.
	Operators []string
	// Threshold is m: how many shares restore the root.
	Threshold int
	// OutDir receives share-<i>-of-<n>.age, one per operator.
	OutDir string
	// Actor is recorded in the audit log ("operator uid=0").
	Actor string
}

// InitResult is what init reports. It holds no secret.
type InitResult struct {
	Fingerprint string   `json:"root_fingerprint"`
	Generation  uint32   `json:"generation"`
	Threshold   int      `json:"threshold"`
	ShareFiles  []string `json:"share_files"`
}

// Init generates a root secret, provisions it into the backend as generation
// 1, writes one encrypted share per operator and records the ceremony. It
// refuses when the store or the hardware already holds a root.
func Init(ctx context.Context, b keys.Backend, st *store.Store, opts InitOptions) (res InitResult, err error) {
	n, m := len(opts.Operators), opts.Threshold
	if m < 2 || n < m || n > 255 {
		return res, fmt.Errorf("init: need 2 <= threshold (%d) <= operators (%d) <= 255", m, n)
	}
	prov, ok := b.(keys.Provisioner)
	if !ok {
		return res, fmt.Errorf("init: this backend cannot be provisioned")
	}
	recips, recipText, err := parseOperators(opts.Operators)
	if err != nil {
		return res, fmt.Errorf("init: %w", err)
	}
	if fp, ok, err := st.Meta(ctx, store.MetaRootFingerprint); err != nil {
		return res, err
	} else if ok {
		return res, fmt.Errorf("init: %w (root %s); to replace hardware use `cachet restore`", ErrAlreadyInitialized, fp)
	}
	info, err := b.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("init: backend: %w", err)
	}
	if info.Provisioned {
		return res, fmt.Errorf("init: %w: the %s already holds root %s", keys.ErrAlreadyProvisioned, info.Kind, info.RootFingerprint)
	}
	if err := os.MkdirAll(opts.OutDir, 0o700); err != nil {
		return res, fmt.Errorf("init: share directory: %w", err)
	}

	useWrappedKeys(b, st)
	format := keys.DefaultFormat
	root := make([]byte, keys.RootSize)
	defer keys.Zero(root)
	if _, err := rand.Read(root); err != nil {
		return res, fmt.Errorf("init: generate root: %w", err)
	}
	fp, err := keys.FingerprintOf(format, root)
	if err != nil {
		return res, err
	}
	// Shares are written before the hardware is provisioned: a root that
	// reached the hardware but whose shares could not be written would have
	// no backup. If provisioning fails, the shares of the unused root are
	// removed again.
	files, err := writeShares(opts.OutDir, root, fp, 1, m, n, recips, func(i int) string { return fmt.Sprintf("share-%d-of-%d.age", i, n) })
	if err != nil {
		return res, fmt.Errorf("init: %w", err)
	}
	defer func() {
		if err != nil {
			removeAll(files)
		}
	}()
	if err = prov.Provision(ctx, root, keys.ProvisionOptions{Generation: 1, Format: format}); err != nil {
		return res, fmt.Errorf("init: provision %s: %w", info.Kind, err)
	}
	after, err := b.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("init: backend after provisioning: %w", err)
	}
	if after.RootFingerprint != fp {
		return res, fmt.Errorf("init: the hardware reports root %s after provisioning root %s", after.RootFingerprint, fp)
	}
	ident, _ := json.Marshal(after.Identity)
	ops, _ := json.Marshal(recipText)
	detail, _ := json.Marshal(map[string]any{
		"root_fingerprint": fp, "generation": 1, "key_format": int(format), "threshold": m, "shares": n,
		"operators": recipText, "backend": after.Kind, "backend_identity": after.Identity,
	})
	err = st.Write(ctx, func(tx *store.Tx) error {
		for k, v := range map[string]string{
			store.MetaRootFingerprint: fp, store.MetaGeneration: "1", store.MetaKeyFormat: format.String(),
			store.MetaThreshold: strconv.Itoa(m), store.MetaShares: strconv.Itoa(n),
			store.MetaOperators: string(ops), store.MetaBackendKind: after.Kind,
			store.MetaBackendIdentity: string(ident), store.MetaInitializedAt: time.Now().UTC().Format(time.RFC3339),
		} {
			if err := tx.SetMeta(k, v); err != nil {
				return err
			}
		}
		_, err := audit.Append(tx, audit.Entry{Actor: opts.Actor, Action: "ceremony.init", Target: fp, Decision: audit.DecisionAllow, Detail: string(detail)})
		return err
	})
	if err != nil {
		// The hardware holds the root and the operators hold its shares, so
		// nothing is lost; the store can be initialized again with restore.
		files = nil
		return res, fmt.Errorf("init: the hardware was provisioned and the shares written, but recording it in the store failed (run `cachet restore --replace` with the shares once the store is fixed): %w", err)
	}
	return InitResult{Fingerprint: fp, Generation: 1, Threshold: m, ShareFiles: files}, nil
}

// parseOperators reads the operators' age recipients and refuses one key
// given twice.
func parseOperators(operators []string) ([]age.Recipient, []string, error) {
	recips := make([]age.Recipient, len(operators))
	recipText := make([]string, len(operators))
	seen := map[string]int{}
	for i, o := range operators {
		var err error
		if recips[i], recipText[i], err = ParseRecipient(o); err != nil {
			return nil, nil, err
		}
		if j, dup := seen[recipText[i]]; dup {
			return nil, nil, fmt.Errorf("operators %d and %d have the same key: each share must go to a different operator", j+1, i+1)
		}
		seen[recipText[i]] = i
	}
	return recips, recipText, nil
}

// split shares root m-of-n and checks, before any share leaves the process,
// that every share takes part in a combination that gives the root back.
func split(root []byte, n, m int) ([][]byte, error) {
	parts, err := shamir.Split(root, n, m)
	if err != nil {
		return nil, fmt.Errorf("split root: %w", err)
	}
	for i := 0; i < n; i++ {
		subset := make([][]byte, m)
		for j := range subset {
			subset[j] = parts[(i+j)%n]
		}
		got, err := shamir.Combine(subset)
		ok := err == nil && subtle.ConstantTimeCompare(got, root) == 1
		keys.Zero(got)
		if !ok {
			return nil, fmt.Errorf("split root: self-check of shares failed")
		}
	}
	return parts, nil
}

// writeShares splits root into n shares of threshold m, writes share i to
// the file name(i) in dir encrypted to recips[i-1], and zeroes the parts. On
// error it removes what it wrote; on success the caller owns the files.
func writeShares(dir string, root []byte, fp string, gen uint32, m, n int, recips []age.Recipient, name func(i int) string) (files []string, err error) {
	parts, err := split(root, n, m)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, p := range parts {
			keys.Zero(p)
		}
		if err != nil {
			removeAll(files)
		}
	}()
	for i := range parts {
		s := Share{Fingerprint: fp, Generation: gen, Threshold: m, Count: n, Index: i + 1, Data: parts[i]}
		path := filepath.Join(dir, name(i+1))
		if err = writeShareFile(path, &s, recips[i]); err != nil {
			return nil, fmt.Errorf("write share %d: %w", i+1, err)
		}
		files = append(files, path)
	}
	return files, nil
}

func removeAll(files []string) {
	for _, f := range files {
		os.Remove(f)
	}
}

func writeShareFile(path string, s *Share, r age.Recipient) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := EncryptShare(f, s, r); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// NamedShare is a share with the name an operator knows it by (its file, or
// "typed share 2"), used in every message about it.
type NamedShare struct {
	Name  string
	Share Share
}

// RestoreOptions configures `cachet restore`.
type RestoreOptions struct {
	Shares []NamedShare
	// Replace allows provisioning over a root the hardware already holds,
	// for re-sealing a TPM root after an expected PCR change. The shares
	// must reconstruct the root the store records.
	Replace bool
	Actor   string
}

// RestoreResult is what restore reports.
type RestoreResult struct {
	Fingerprint string `json:"root_fingerprint"`
	Generation  uint32 `json:"generation"`
	SharesUsed  []int  `json:"shares_used"`
}

// ShareError names the share a restore refused, and why.
type ShareError struct {
	Name   string
	Reason string
}

func (e *ShareError) Error() string { return fmt.Sprintf("share %s: %s", e.Name, e.Reason) }

// CheckShares validates a set of shares before anything is written: each
// parses (the caller did that), all belong to one root and generation, none
// is a duplicate, there are at least m, and if the store records a root it is
// theirs. It returns the shares to combine.
func CheckShares(shares []NamedShare, storeFingerprint string) ([]NamedShare, error) {
	if len(shares) == 0 {
		return nil, fmt.Errorf("restore: no shares given")
	}
	ref := shares[0]
	byIndex := map[int]string{}
	byX := map[byte]string{}
	for _, s := range shares {
		sh := s.Share
		switch {
		case storeFingerprint != "" && sh.Fingerprint != storeFingerprint:
			return nil, &ShareError{s.Name, fmt.Sprintf("belongs to root %s, but this store was initialized with root %s (a share from another appliance?)", sh.Fingerprint, storeFingerprint)}
		case sh.Fingerprint != ref.Share.Fingerprint:
			return nil, &ShareError{s.Name, fmt.Sprintf("belongs to root %s, but %s belongs to root %s: the shares are from different ceremonies", sh.Fingerprint, ref.Name, ref.Share.Fingerprint)}
		case sh.Generation != ref.Share.Generation:
			return nil, &ShareError{s.Name, fmt.Sprintf("is for key generation %d, but %s is for generation %d", sh.Generation, ref.Name, ref.Share.Generation)}
		case sh.Threshold != ref.Share.Threshold || sh.Count != ref.Share.Count:
			return nil, &ShareError{s.Name, fmt.Sprintf("is a %d-of-%d share, but %s is %d-of-%d", sh.Threshold, sh.Count, ref.Name, ref.Share.Threshold, ref.Share.Count)}
		}
		if other, dup := byIndex[sh.Index]; dup {
			return nil, &ShareError{s.Name, fmt.Sprintf("duplicates %s (both are share %d of %d); each share counts once", other, sh.Index, sh.Count)}
		}
		if other, dup := byX[sh.Data[len(sh.Data)-1]]; dup {
			return nil, &ShareError{s.Name, fmt.Sprintf("has the same share point as %s", other)}
		}
		byIndex[sh.Index], byX[sh.Data[len(sh.Data)-1]] = s.Name, s.Name
	}
	if len(shares) < ref.Share.Threshold {
		return nil, fmt.Errorf("restore: %d share(s) given, but this root needs %d of %d", len(shares), ref.Share.Threshold, ref.Share.Count)
	}
	return shares[:ref.Share.Threshold], nil
}

// Restore provisions the backend with the root the shares reconstruct. It
// checks every share before anything is written, and refuses hardware that
// already holds a root unless opts.Replace.
func Restore(ctx context.Context, b keys.Backend, st *store.Store, opts RestoreOptions) (RestoreResult, error) {
	var res RestoreResult
	defer func() {
		for i := range opts.Shares {
			opts.Shares[i].Share.Wipe()
		}
	}()
	prov, ok := b.(keys.Provisioner)
	if !ok {
		return res, fmt.Errorf("restore: this backend cannot be provisioned")
	}
	storeFP, _, err := st.Meta(ctx, store.MetaRootFingerprint)
	if err != nil {
		return res, err
	}
	if err := checkRetired(ctx, st, opts.Shares); err != nil {
		return res, err
	}
	use, err := CheckShares(opts.Shares, storeFP)
	if err != nil {
		return res, err
	}
	ref := use[0].Share
	info, err := b.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("restore: backend: %w", err)
	}
	if info.Provisioned && !opts.Replace {
		return res, fmt.Errorf("restore: %w (root %s); restore provisions new, empty hardware (a TPM root can be re-sealed with --replace)", keys.ErrAlreadyProvisioned, info.RootFingerprint)
	}
	parts := make([][]byte, len(use))
	for i, s := range use {
		parts[i] = s.Share.Data
		res.SharesUsed = append(res.SharesUsed, s.Share.Index)
	}
	root, err := shamir.Combine(parts)
	if err != nil {
		return res, fmt.Errorf("restore: combine shares: %w", err)
	}
	defer keys.Zero(root)
	format, fp, err := formatOfRoot(root, ref.Fingerprint)
	if err != nil {
		return res, err
	}
	if stored, ok, err := st.Meta(ctx, store.MetaKeyFormat); err != nil {
		return res, err
	} else if ok && stored != format.String() {
		return res, fmt.Errorf("restore: the store records key format %s, but the shares make a root of format %s", stored, format)
	}
	useWrappedKeys(b, st)
	if fp != ref.Fingerprint {
		// Every share passed its checksum and they agree on the root, so
		// one of them was made for this root but altered consistently.
		return res, fmt.Errorf("restore: the shares combine to root %s, not %s: at least one share is wrong", fp, ref.Fingerprint)
	}
	if err := prov.Provision(ctx, root, keys.ProvisionOptions{Generation: ref.Generation, Replace: opts.Replace, Format: format}); err != nil {
		return res, fmt.Errorf("restore: provision %s: %w", info.Kind, err)
	}
	after, err := b.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("restore: backend after provisioning: %w", err)
	}
	if after.RootFingerprint != fp {
		return res, fmt.Errorf("restore: the hardware reports root %s after provisioning root %s", after.RootFingerprint, fp)
	}
	ident, _ := json.Marshal(after.Identity)
	anchored, err := reanchor(ctx, b, st)
	if err != nil {
		return res, fmt.Errorf("restore: the hardware was provisioned, but anchoring the record's head in it failed: %w", err)
	}
	detail, _ := json.Marshal(map[string]any{
		"root_fingerprint": fp, "generation": ref.Generation, "key_format": int(format), "shares_used": res.SharesUsed,
		"threshold": ref.Threshold, "shares": ref.Count, "replace": opts.Replace,
		"backend": after.Kind, "backend_identity": after.Identity, "anchored_checkpoint": anchored,
	})
	err = st.Write(ctx, func(tx *store.Tx) error {
		set := map[string]string{
			store.MetaBackendKind: after.Kind, store.MetaBackendIdentity: string(ident),
			store.MetaRestoredAt: time.Now().UTC().Format(time.RFC3339),
		}
		if storeFP == "" {
			set[store.MetaRootFingerprint] = fp
			set[store.MetaGeneration] = strconv.FormatUint(uint64(ref.Generation), 10)
			set[store.MetaThreshold] = strconv.Itoa(ref.Threshold)
			set[store.MetaShares] = strconv.Itoa(ref.Count)
			set[store.MetaKeyFormat] = format.String()
		}
		for k, v := range set {
			if err := tx.SetMeta(k, v); err != nil {
				return err
			}
		}
		_, err := audit.Append(tx, audit.Entry{Actor: opts.Actor, Action: "ceremony.restore", Target: fp, Decision: audit.DecisionAllow, Detail: string(detail)})
		return err
	})
	if err != nil {
		return res, fmt.Errorf("restore: the hardware was provisioned, but recording it in the store failed: %w", err)
	}
	res.Fingerprint, res.Generation = fp, ref.Generation
	return res, nil
}

// checkRetired refuses, with a message that says so, shares of a root that
// a rotation replaced.
func checkRetired(ctx context.Context, st *store.Store, shares []NamedShare) error {
	text, ok, err := st.Meta(ctx, MetaRetiredRoots)
	if err != nil || !ok {
		return err
	}
	var retired []RetiredRoot
	if err := json.Unmarshal([]byte(text), &retired); err != nil {
		return fmt.Errorf("restore: meta %s: %w", MetaRetiredRoots, err)
	}
	for _, s := range shares {
		for _, r := range retired {
			if s.Share.Fingerprint == r.Fingerprint {
				return &ShareError{s.Name, fmt.Sprintf("belongs to root %s (generation %d), which `cachet rotate` retired on %s; the shares of a retired root restore nothing: use the shares of the current generation", r.Fingerprint, r.Generation, r.RotatedAt)}
			}
		}
	}
	return nil
}

// formatOfRoot finds the key format whose fingerprint of root is want: a
// share records the fingerprint, not the format, and the two formats
// fingerprint a root differently. It returns the fingerprint of the root in
// the format found, or, when none matches, in the default format.
func formatOfRoot(root []byte, want string) (keys.Format, string, error) {
	var first string
	for _, f := range []keys.Format{keys.FormatDerive, keys.FormatHMAC} {
		fp, err := keys.FingerprintOf(f, root)
		if err != nil {
			return 0, "", err
		}
		if fp == want {
			return f, fp, nil
		}
		if first == "" {
			first = fp
		}
	}
	return keys.DefaultFormat, first, nil
}

// useWrappedKeys gives a backend that keeps P-256 keys in the store (key
// format 2) the store to keep them in.
func useWrappedKeys(b keys.Backend, st *store.Store) {
	if u, ok := b.(keys.WrappedKeysUser); ok {
		u.UseWrappedKeys(st)
	}
}

// reanchor sets the hardware's anchor of the audit record to the store's
// last checkpoint, deliberately: after a restore the hardware vouches for
// this database, whatever it anchored before. It returns the anchored
// sequence number (0: no checkpoint yet, so the anchor is cleared).
func reanchor(ctx context.Context, b keys.Backend, st *store.Store) (uint64, error) {
	a, ok := b.(keys.Anchor)
	if !ok {
		return 0, nil
	}
	head, err := audit.HeadCheckpoint(ctx, st.DB())
	if err != nil {
		return 0, err
	}
	if head.Seq == 0 {
		head.Hash = make([]byte, 32)
	}
	return head.Seq, a.Reanchor(ctx, head)
}

// ShareNames lists share names for messages.
func ShareNames(ss []NamedShare) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}
