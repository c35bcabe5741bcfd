package tpm

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// stateVersion is the version of the state file format.
const stateVersion = 1

// stateFile is the JSON sidecar written at provisioning. It records what the
// TPM cannot tell after the fact: which PCR values a root was sealed against.
// Open reads it only to explain a policy failure; it holds no secret (the
// root fingerprint is public), and a missing or stale file never stops an
// unseal that the TPM allows.
//
//	{
//	  "version": 1,
//	  "device": "/dev/tpmrm0",
//	  "srk_name": "000b…",
//	  "generations": [{
//	    "generation": 1, "handle": "0x81000c01", "sealed_at": "2026-11-21T10:00:00Z",
//	    "pcr_bank": "sha256", "pcrs": [7], "pcr_values": {"7": "…"},
//	    "auth_value": false, "policy_digest": "…", "root_fingerprint": "…"
//	  }]
//	}
type stateFile struct {
	Version     int          `json:"version"`
	Device      string       `json:"device"`
	SRKName     string       `json:"srk_name"`
	Generations []stateEntry `json:"generations"`
}

type stateEntry struct {
	Generation      uint32            `json:"generation"`
	Handle          string            `json:"handle"`
	SealedAt        time.Time         `json:"sealed_at"`
	PCRBank         string            `json:"pcr_bank"`
	PCRs            []int             `json:"pcrs"`
	PCRValues       map[string]string `json:"pcr_values"`
	AuthValue       bool              `json:"auth_value"`
	PolicyDigest    string            `json:"policy_digest"`
	RootFingerprint string            `json:"root_fingerprint"`
}

func (e *stateEntry) pcrValue(pcr int) ([]byte, bool) {
	s, ok := e.PCRValues[strconv.Itoa(pcr)]
	if !ok {
		return nil, false
	}
	v, err := hex.DecodeString(s)
	return v, err == nil
}

func (s *stateFile) entry(gen uint32) *stateEntry {
	for i := range s.Generations {
		if s.Generations[i].Generation == gen {
			return &s.Generations[i]
		}
	}
	return nil
}

// readState reads the state file. A missing file returns (nil, nil).
func readState(path string) (*stateFile, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read TPM state file: %w", err)
	}
	var s stateFile
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse TPM state file %s: %w", path, err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("TPM state file %s has version %d, want %d", path, s.Version, stateVersion)
	}
	return &s, nil
}

// putState records e in the state file at path, keeping the entries of other
// generations when the file describes the same TPM (same SRK name), and
// replaces the file atomically: a temporary file in the same directory,
// fsync, rename, fsync of the directory.
func putState(path, device, srkName string, e stateEntry) error {
	s, err := readState(path)
	if err != nil || s == nil || s.SRKName != srkName {
		// Unreadable, absent, or about another TPM: start afresh. The
		// file is diagnostic only.
		s = &stateFile{}
	}
	s.Version, s.Device, s.SRKName = stateVersion, device, srkName
	s.Generations = slices.DeleteFunc(s.Generations, func(o stateEntry) bool { return o.Generation == e.Generation })
	s.Generations = append(s.Generations, e)
	slices.SortFunc(s.Generations, func(a, b stateEntry) int { return cmp.Compare(a.Generation, b.Generation) })
	body, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	body = append(body, '\n')

	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write TPM state file: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write TPM state file: %w", err)
	}
	if _, err := tmp.Write(body); err != nil {
		tmp.Close()
		return fmt.Errorf("write TPM state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write TPM state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write TPM state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write TPM state file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write TPM state file: sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write TPM state file: sync directory: %w", err)
	}
	return nil
}
