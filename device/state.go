package device

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ethereum/go-ethereum/common"

	"github.com/cachet-custody/cachet/recovery"
)

// State is what a device keeps of its wallet. Saved as a JSON file of mode
// 0600, it stands for the device's secure storage (the Keychain, Android's
// Keystore-backed storage): DeviceShare is one of the two shares that
// together give the wallet's key.
type State struct {
	WalletID       string  `json:"wallet_id"`
	Address        string  `json:"address"`
	UserID         string  `json:"user_id"`
	RecoveryMethod string  `json:"recovery_method"`
	Status         string  `json:"status"`
	ShareIndexes   Indexes `json:"share_indexes"`
	DeviceShare    string  `json:"device_share"` // standard base64 of the recovery.Share
}

func newState(w *Wallet, dev recovery.Share) *State {
	return &State{WalletID: w.ID, Address: common.HexToAddress(w.Address).Hex(), UserID: w.UserID, RecoveryMethod: w.RecoveryMethod,
		Status: w.Status, ShareIndexes: w.ShareIndexes, DeviceShare: base64.StdEncoding.EncodeToString(dev)}
}

// wallet is st's wallet as far as the device knows it.
func (st *State) wallet() Wallet {
	return Wallet{ID: st.WalletID, Address: st.Address, UserID: st.UserID, RecoveryMethod: st.RecoveryMethod, Status: st.Status, ShareIndexes: st.ShareIndexes}
}

// check validates every field; errors never hold the share.
func (st *State) check() error {
	if st == nil {
		return errors.New("device: no device state")
	}
	if err := checkWalletID(st.WalletID); err != nil {
		return err
	}
	if !common.IsHexAddress(st.Address) {
		return fmt.Errorf("device: wallet %s: address %q is not an Ethereum address", st.WalletID, st.Address)
	}
	if err := st.ShareIndexes.valid(); err != nil {
		return fmt.Errorf("device: wallet %s: %w", st.WalletID, err)
	}
	dev, err := st.deviceShare()
	clear(dev)
	return err
}

// deviceShare decodes and checks the device share; the caller clears it.
func (st *State) deviceShare() (recovery.Share, error) {
	b, err := base64.StdEncoding.DecodeString(st.DeviceShare)
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("device: wallet %s: device_share is not standard base64", st.WalletID)
	}
	if err := checkShare(b, st.ShareIndexes.Device); err != nil {
		clear(b)
		return nil, fmt.Errorf("device: wallet %s: device_share: %w", st.WalletID, err)
	}
	return recovery.Share(b), nil
}

// Load reads a device file written by Save. It refuses a file that others
// can read or write, as ssh does a private key.
func Load(path string) (*State, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("device: %s is accessible to others (mode %04o); it holds a share of a wallet's key: chmod 600 it", path, perm)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(f); err != nil {
		return nil, err
	}
	defer clear(b.Bytes())
	dec := json.NewDecoder(bytes.NewReader(b.Bytes()))
	dec.DisallowUnknownFields()
	var st State
	if err := dec.Decode(&st); err != nil {
		// A syntax error would quote a character of the input, which may
		// be the share's: say only where.
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("device: %s: not a device file: JSON syntax error at byte %d", path, se.Offset)
		}
		return nil, fmt.Errorf("device: %s: not a device file: %w", path, err)
	}
	if err := st.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &st, nil
}

// Save writes st to a new file of mode 0600. It refuses to overwrite an
// existing file: a device file may hold the only device share of another
// wallet.
func (st *State) Save(path string) error {
	if err := st.check(); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := writeState(f, st); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// Replace writes st over the existing file at path, atomically (a new file
// renamed over it), keeping mode 0600. It is for a device that updates its
// own file, as after SetRecovery.
func (st *State) Replace(path string) error {
	if err := st.check(); err != nil {
		return err
	}
	if _, err := os.Stat(path); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := writeState(f, st); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// writeState writes, syncs and closes f.
func writeState(f *os.File, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		f.Close()
		return err
	}
	defer clear(b)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write([]byte("\n")); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
