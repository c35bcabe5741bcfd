package ceremony

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
)

// Status is the appliance's state as `cachet status` and GET /v1/status show
// it. It holds no secret.
type Status struct {
	Backend     keys.BackendInfo `json:"backend"`
	BackendErr  string           `json:"backend_error,omitempty"`
	Root        RootStatus       `json:"root"`
	Store       store.Stats      `json:"store"`
	Audit       audit.Head       `json:"audit"`
	Initialized bool             `json:"initialized"`
	// Rotation is set while a rotation is not finished, and after the last
	// re-seal until the next rotation.
	Rotation *RotationStatus `json:"rotation,omitempty"`
}

// RotationStatus is the state of the last rotation: the generation it moves
// away from (0 once finished) and the re-seal's progress as the daemon last
// recorded it (custody.ResealProgress).
type RotationStatus struct {
	FromGeneration uint32          `json:"from_generation,omitempty"`
	Pending        bool            `json:"pending"`
	Progress       json.RawMessage `json:"reseal_progress,omitempty"`
}

// RootStatus compares the root the store records with the one the hardware
// holds.
type RootStatus struct {
	Fingerprint         string `json:"fingerprint,omitempty"`
	HardwareFingerprint string `json:"hardware_fingerprint,omitempty"`
	Match               bool   `json:"match"`
	Generation          uint32 `json:"generation,omitempty"`
	Threshold           int    `json:"share_threshold,omitempty"`
	Shares              int    `json:"share_count,omitempty"`
	InitializedAt       string `json:"initialized_at,omitempty"`
	RestoredAt          string `json:"restored_at,omitempty"`
}

// metaResealProgress is custody.MetaResealProgress (custody imports this
// package's callers, not the other way round).
const metaResealProgress = "reseal_progress"

// ReadStatus gathers the status. A backend that cannot answer is reported in
// BackendErr rather than failing the whole report.
func ReadStatus(ctx context.Context, b keys.Backend, st *store.Store) (Status, error) {
	var s Status
	if b != nil {
		info, err := b.Info(ctx)
		if err != nil {
			s.BackendErr = err.Error()
		}
		s.Backend = info
	}
	meta, err := st.AllMeta(ctx)
	if err != nil {
		return s, err
	}
	if from, ok := meta[MetaRotationFrom]; ok || meta[metaResealProgress] != "" {
		s.Rotation = &RotationStatus{Pending: ok}
		if g, err := strconv.ParseUint(from, 10, 32); err == nil {
			s.Rotation.FromGeneration = uint32(g)
		}
		if p := meta[metaResealProgress]; json.Valid([]byte(p)) {
			s.Rotation.Progress = json.RawMessage(p)
		}
	}
	s.Root.Fingerprint = meta[store.MetaRootFingerprint]
	s.Initialized = s.Root.Fingerprint != ""
	s.Root.HardwareFingerprint = s.Backend.RootFingerprint
	s.Root.Match = s.Initialized && s.Root.Fingerprint == s.Root.HardwareFingerprint
	if g, err := strconv.ParseUint(meta[store.MetaGeneration], 10, 32); err == nil {
		s.Root.Generation = uint32(g)
	}
	s.Root.Threshold, _ = strconv.Atoi(meta[store.MetaThreshold])
	s.Root.Shares, _ = strconv.Atoi(meta[store.MetaShares])
	s.Root.InitializedAt = meta[store.MetaInitializedAt]
	s.Root.RestoredAt = meta[store.MetaRestoredAt]
	if s.Store, err = st.Stats(ctx); err != nil {
		return s, err
	}
	if s.Audit, err = audit.ReadHead(ctx, st.DB()); err != nil {
		return s, err
	}
	return s, nil
}

// CheckReady says why the appliance must not serve, or nil: the hardware
// holds a root, the store records one, and they are the same.
func CheckReady(ctx context.Context, b keys.Backend, st *store.Store) error {
	info, err := b.Info(ctx)
	if err != nil {
		return fmt.Errorf("key backend: %w", err)
	}
	fp, ok, err := st.Meta(ctx, store.MetaRootFingerprint)
	if err != nil {
		return err
	}
	switch {
	case !info.Provisioned && !ok:
		return fmt.Errorf("not initialized: run `cachet init` first")
	case !info.Provisioned:
		return fmt.Errorf("the %s holds no root, but the store was initialized with root %s: run `cachet restore` with m operator shares", info.Kind, fp)
	case !ok:
		return fmt.Errorf("the %s holds root %s, but the store records none: run `cachet restore` with the shares of that root to attach this store", info.Kind, info.RootFingerprint)
	case fp != info.RootFingerprint:
		return fmt.Errorf("the %s holds root %s, but the store was initialized with root %s: wrong hardware or wrong store", info.Kind, info.RootFingerprint, fp)
	}
	return nil
}
