package ceremony

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/internal/shamir"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
)

// Meta keys of a rotation.
const (
	// MetaRotationFrom is the generation a rotation moves away from, while
	// it is not finished.
	MetaRotationFrom = "rotation_from"
	// MetaRetiredRoots is a JSON list of the roots rotations replaced, so
	// that a restore with old shares says what they are.
	MetaRetiredRoots = "retired_roots"
)

// RetiredRoot is one entry of MetaRetiredRoots.
type RetiredRoot struct {
	Fingerprint string `json:"root_fingerprint"`
	Generation  uint32 `json:"generation"`
	RotatedAt   string `json:"rotated_at"`
}

// RotateOptions configures `cachet rotate`.
type RotateOptions struct {
	// Shares are m shares of the current root: the current operators
	// authorize the rotation with them.
	Shares []NamedShare
	// Operators and Threshold are the new operator set, as for init.
	Operators []string
	Threshold int
	// OutDir receives the new share files.
	OutDir string
	Actor  string
}

// RotateResult is what rotate reports. It holds no secret.
type RotateResult struct {
	Fingerprint    string   `json:"root_fingerprint"`
	Generation     uint32   `json:"generation"`
	FromGeneration uint32   `json:"from_generation"`
	Threshold      int      `json:"threshold"`
	ShareFiles     []string `json:"share_files"`
	RewrappedKeys  int      `json:"rewrapped_keys"`
}

// Rotate makes a new root generation (key format 2) for a new operator set:
// it checks m shares of the current root, writes the new shares, re-wraps
// every P-256 key of the current generation under the new generation's
// wrapping key (so authorization keys and the audit key keep their public
// keys), provisions the new generation in the hardware and records it. The
// hardware then seals under the new generation; blobs of the old one still
// open, and the daemon re-seals them in the background (custody.Reseal).
// Both roots are in this process's memory only during the ceremony.
func Rotate(ctx context.Context, b keys.Backend, st *store.Store, opts RotateOptions) (res RotateResult, err error) {
	defer func() {
		for i := range opts.Shares {
			opts.Shares[i].Share.Wipe()
		}
	}()
	n, m := len(opts.Operators), opts.Threshold
	if m < 2 || n < m || n > 255 {
		return res, fmt.Errorf("rotate: need 2 <= threshold (%d) <= operators (%d) <= 255", m, n)
	}
	prov, ok := b.(keys.Provisioner)
	if !ok {
		return res, fmt.Errorf("rotate: this backend cannot be provisioned")
	}
	recips, recipText, err := parseOperators(opts.Operators)
	if err != nil {
		return res, fmt.Errorf("rotate: %w", err)
	}
	meta, err := st.AllMeta(ctx)
	if err != nil {
		return res, err
	}
	storeFP := meta[store.MetaRootFingerprint]
	if storeFP == "" {
		return res, fmt.Errorf("rotate: the store records no root: run `cachet init` or `cachet restore` first")
	}
	if from, pending := meta[MetaRotationFrom]; pending {
		return res, fmt.Errorf("rotate: the rotation from generation %s is not finished: let the daemon re-seal, then run `cachet rotate --finish`", from)
	}
	curGen64, err := strconv.ParseUint(meta[store.MetaGeneration], 10, 32)
	if err != nil || curGen64 == 0 {
		return res, fmt.Errorf("rotate: the store records generation %q", meta[store.MetaGeneration])
	}
	curGen := uint32(curGen64)
	use, err := CheckShares(opts.Shares, storeFP)
	if err != nil {
		return res, fmt.Errorf("rotate: %w", err)
	}
	if g := use[0].Share.Generation; g != curGen {
		return res, fmt.Errorf("rotate: the shares are of generation %d, the store's root is generation %d", g, curGen)
	}
	info, err := b.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("rotate: backend: %w", err)
	}
	if info.RootFingerprint != storeFP || info.Generation != curGen {
		return res, fmt.Errorf("rotate: the %s holds root %s generation %d, the store records root %s generation %d", info.Kind, info.RootFingerprint, info.Generation, storeFP, curGen)
	}
	parts := make([][]byte, len(use))
	for i, s := range use {
		parts[i] = s.Share.Data
	}
	oldRoot, err := shamir.Combine(parts)
	if err != nil {
		return res, fmt.Errorf("rotate: combine shares: %w", err)
	}
	defer keys.Zero(oldRoot)
	oldFormat, oldFP, err := formatOfRoot(oldRoot, storeFP)
	if err != nil {
		return res, err
	}
	if oldFP != storeFP {
		return res, fmt.Errorf("rotate: the shares combine to root %s, not %s: at least one share is wrong", oldFP, storeFP)
	}
	if err := os.MkdirAll(opts.OutDir, 0o700); err != nil {
		return res, fmt.Errorf("rotate: share directory: %w", err)
	}

	gen, format := curGen+1, keys.FormatDerive
	root := make([]byte, keys.RootSize)
	defer keys.Zero(root)
	if _, err := rand.Read(root); err != nil {
		return res, fmt.Errorf("rotate: generate root: %w", err)
	}
	fp, err := keys.FingerprintOf(format, root)
	if err != nil {
		return res, err
	}
	wrapped, err := rewrap(ctx, st, curGen, oldFormat, oldRoot, gen, root)
	if err != nil {
		return res, fmt.Errorf("rotate: %w", err)
	}
	files, err := writeShares(opts.OutDir, root, fp, gen, m, n, recips, func(i int) string { return fmt.Sprintf("share-g%d-%d-of-%d.age", gen, i, n) })
	if err != nil {
		return res, fmt.Errorf("rotate: %w", err)
	}
	defer func() {
		if err != nil {
			removeAll(files)
		}
	}()
	// The re-wrapped keys are recorded before the generation exists in the
	// hardware, so that nothing can make a different key under one of their
	// labels in between. Records of gen left by a rotation that failed
	// before provisioning are replaced.
	err = st.Write(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`DELETE FROM wrapped_keys WHERE generation = ?`, gen); err != nil {
			return err
		}
		for _, k := range wrapped {
			if _, err := tx.Exec(`INSERT INTO wrapped_keys (generation, label, wrapped, public_key, created_at) VALUES (?, ?, ?, ?, ?)`,
				k.Generation, k.Label, k.Wrapped, k.Public, time.Now().Unix()); err != nil {
				return fmt.Errorf("record wrapped key %q: %w", k.Label, err)
			}
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("rotate: %w", err)
	}
	useWrappedKeys(b, st)
	if err = prov.Provision(ctx, root, keys.ProvisionOptions{Generation: gen, Format: format}); err != nil {
		return res, fmt.Errorf("rotate: provision generation %d: %w", gen, err)
	}
	after, err := b.Info(ctx)
	if err != nil || after.RootFingerprint != fp || after.Generation != gen {
		return res, fmt.Errorf("rotate: the hardware reports %+v after provisioning root %s generation %d (%v)", after, fp, gen, err)
	}
	retired := []RetiredRoot{}
	if r := meta[MetaRetiredRoots]; r != "" {
		json.Unmarshal([]byte(r), &retired)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	retired = append(retired, RetiredRoot{Fingerprint: storeFP, Generation: curGen, RotatedAt: now})
	retiredJSON, _ := json.Marshal(retired)
	ops, _ := json.Marshal(recipText)
	detail, _ := json.Marshal(map[string]any{
		"root_fingerprint": fp, "generation": gen, "key_format": int(format), "from_root_fingerprint": storeFP,
		"from_generation": curGen, "threshold": m, "shares": n, "operators": recipText,
		"rewrapped_keys": len(wrapped), "shares_used": shareIndexes(use),
	})
	err = st.Write(ctx, func(tx *store.Tx) error {
		for k, v := range map[string]string{
			store.MetaRootFingerprint: fp, store.MetaGeneration: strconv.FormatUint(uint64(gen), 10),
			store.MetaKeyFormat: format.String(), store.MetaThreshold: strconv.Itoa(m), store.MetaShares: strconv.Itoa(n),
			store.MetaOperators: string(ops), MetaRotationFrom: strconv.FormatUint(uint64(curGen), 10),
			MetaRetiredRoots: string(retiredJSON), "rotated_at": now,
		} {
			if err := tx.SetMeta(k, v); err != nil {
				return err
			}
		}
		_, err := audit.Append(tx, audit.Entry{Actor: opts.Actor, Action: "ceremony.rotate", Target: fp, Decision: audit.DecisionAllow, Detail: string(detail)})
		return err
	})
	if err != nil {
		files = nil // the hardware holds the new root: its shares must stay
		return res, fmt.Errorf("rotate: the hardware holds generation %d and its shares are written, but recording it in the store failed: %w", gen, err)
	}
	return RotateResult{Fingerprint: fp, Generation: gen, FromGeneration: curGen, Threshold: m, ShareFiles: files, RewrappedKeys: len(wrapped)}, nil
}

func shareIndexes(ss []NamedShare) []int {
	out := make([]int, len(ss))
	for i, s := range ss {
		out[i] = s.Share.Index
	}
	return out
}

// rewrap returns every P-256 key of generation oldGen wrapped under the
// wrapping key of newRoot (format 2) as generation newGen: the wrapped
// records of a format-2 generation, or, for format 1, the audit key and the
// authorization keys the store names, derived from oldRoot as format 1 does.
func rewrap(ctx context.Context, st *store.Store, oldGen uint32, oldFormat keys.Format, oldRoot []byte, newGen uint32, newRoot []byte) ([]keys.WrappedKey, error) {
	newWrap, err := keys.Derive(newRoot, keys.WrapInfoV2())
	if err != nil {
		return nil, err
	}
	defer keys.Zero(newWrap)
	var out []keys.WrappedKey
	add := func(label string, k *ecdsa.PrivateKey) error {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return err
		}
		defer keys.Zero(der)
		w, err := keys.WrapKeyPad(newWrap, der)
		if err != nil {
			return err
		}
		pub, err := k.PublicKey.Bytes()
		if err != nil {
			return err
		}
		out = append(out, keys.WrappedKey{Generation: newGen, Label: label, Wrapped: w, Public: pub})
		return nil
	}
	switch oldFormat {
	case keys.FormatDerive:
		oldWrap, err := keys.Derive(oldRoot, keys.WrapInfoV2())
		if err != nil {
			return nil, err
		}
		defer keys.Zero(oldWrap)
		rows, err := st.DB().QueryContext(ctx, `SELECT label, wrapped, public_key FROM wrapped_keys WHERE generation = ? ORDER BY label`, oldGen)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var label string
			var w, pub []byte
			if err := rows.Scan(&label, &w, &pub); err != nil {
				return nil, err
			}
			der, err := keys.UnwrapKeyPad(oldWrap, w)
			if err != nil {
				return nil, fmt.Errorf("wrapped key %q of generation %d: %w", label, oldGen, err)
			}
			parsed, err := x509.ParsePKCS8PrivateKey(der)
			keys.Zero(der)
			k, ok := parsed.(*ecdsa.PrivateKey)
			if err != nil || !ok || k.Curve != elliptic.P256() {
				return nil, fmt.Errorf("wrapped key %q of generation %d is not a P-256 key", label, oldGen)
			}
			if got, _ := k.PublicKey.Bytes(); !bytes.Equal(got, pub) {
				return nil, fmt.Errorf("wrapped key %q of generation %d does not match its public key", label, oldGen)
			}
			if err := add(label, k); err != nil {
				return nil, err
			}
		}
		return out, rows.Err()
	case keys.FormatHMAC:
		labels := []string{keys.AuditKeyLabel}
		rows, err := st.DB().QueryContext(ctx, `SELECT id FROM authorization_keys ORDER BY id`)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			labels = append(labels, keys.AuthKeyPrefix+id)
		}
		rows.Close()
		for _, label := range labels {
			k, err := keys.DeriveP256(label, func(info []byte) ([]byte, error) { return keys.Expand(oldRoot, info) })
			if err != nil {
				return nil, err
			}
			if err := add(label, k); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown key format %d", oldFormat)
}

// ErrRotationUnfinished means `cachet rotate --finish` found blobs of the old
// generation still in the store.
var ErrRotationUnfinished = errors.New("the re-seal is not finished")

// FinishOptions configures `cachet rotate --finish`.
type FinishOptions struct {
	// OlderBlobs counts the store's blobs of generations other than the
	// current one (custody.CountOlderBlobs).
	OlderBlobs func(ctx context.Context, gen uint32) (int64, error)
	Actor      string
}

// FinishRotation removes the old generation from the hardware once nothing
// refers to it: no sealed blob of it is left. Its wrapped P-256 keys are
// deleted from the store, and its shares from then on restore nothing usable.
func FinishRotation(ctx context.Context, b keys.Backend, st *store.Store, opts FinishOptions) (uint32, error) {
	fromText, pending, err := st.Meta(ctx, MetaRotationFrom)
	if err != nil {
		return 0, err
	}
	if !pending {
		return 0, fmt.Errorf("rotate --finish: no rotation is in progress")
	}
	from64, err := strconv.ParseUint(fromText, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("rotate --finish: the store records rotation from %q", fromText)
	}
	from := uint32(from64)
	info, err := b.Info(ctx)
	if err != nil {
		return 0, err
	}
	left, err := opts.OlderBlobs(ctx, info.Generation)
	if err != nil {
		return 0, err
	}
	if left > 0 {
		return 0, fmt.Errorf("rotate --finish: %w: %d blobs of older generations remain (the daemon re-seals them in the background; see `cachet status`)", ErrRotationUnfinished, left)
	}
	ret, ok := b.(keys.Retirer)
	if !ok {
		return 0, fmt.Errorf("rotate --finish: this backend cannot remove a generation")
	}
	if err := ret.RetireGeneration(ctx, from); err != nil {
		return 0, fmt.Errorf("rotate --finish: %w", err)
	}
	detail, _ := json.Marshal(map[string]any{"retired_generation": from, "generation": info.Generation})
	err = st.Write(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`DELETE FROM wrapped_keys WHERE generation = ?`, from); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM meta WHERE key = ?`, MetaRotationFrom); err != nil {
			return err
		}
		_, err := audit.Append(tx, audit.Entry{Actor: opts.Actor, Action: "ceremony.rotate_finish", Target: info.RootFingerprint, Decision: audit.DecisionAllow, Detail: string(detail)})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("rotate --finish: generation %d is gone from the hardware, but recording it failed: %w", from, err)
	}
	return from, nil
}
