package device_test

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/device"
	"github.com/cachet-custody/cachet/recovery"
	"github.com/cachet-custody/cachet/wallet"
)

var ctx = context.Background()

func secretFor(t *testing.T, method string) device.Secret {
	t.Helper()
	switch method {
	case recovery.MethodPassword:
		return device.Secret{Password: []byte("correct horse battery staple")}
	case recovery.MethodCloud:
		s, err := recovery.NewCloudSecret()
		if err != nil {
			t.Fatal(err)
		}
		return device.Secret{CloudSecret: s}
	}
	return device.Secret{}
}

// sign signs msg on st's device and checks the signature is the wallet's.
func sign(t *testing.T, c *client.Client, st *device.State, jwt, msg string) string {
	t.Helper()
	sig, err := device.SignMessage(ctx, c, st, jwt, []byte(msg))
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	b, err := hexutil.Decode(sig)
	if err != nil {
		t.Fatal(err)
	}
	if addr, err := wallet.PersonalSigner([]byte(msg), b); err != nil || addr != common.HexToAddress(st.Address) {
		t.Fatalf("signature recovers %s, %v; want %s", addr.Hex(), err, st.Address)
	}
	return sig
}

// Each method: create on device A, recover on device B, which derives the
// same device share, and both sign for the wallet's address.
func TestCreateRecoverSign(t *testing.T) {
	f, c := newFake(t)
	for _, method := range []string{recovery.MethodAutomatic, recovery.MethodPassword, recovery.MethodCloud} {
		t.Run(method, func(t *testing.T) {
			s := secretFor(t, method)
			a, err := device.Create(ctx, c, "alice", method, s)
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if a.Status != device.StatusActive || a.RecoveryMethod != method || a.UserID != "alice" {
				t.Fatalf("created %+v", a)
			}
			if w := f.wallets[a.WalletID]; method != recovery.MethodAutomatic && (w.sealed == nil || (w.kdf != nil) != (method == recovery.MethodPassword)) {
				t.Fatalf("the sealed recovery share was not uploaded: %+v", w)
			}
			b, err := device.Recover(ctx, c, a.WalletID, "alice", s)
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			if b.DeviceShare != a.DeviceShare || b.Address != a.Address || b.ShareIndexes != a.ShareIndexes {
				t.Fatalf("device B %+v differs from A", b.WalletID)
			}
			sign(t, c, a, "alice", "one message")
			sign(t, c, b, "alice", "one message")
			if _, err := device.SignMessage(ctx, c, a, "bob", []byte("x")); !isAPI(err, 404) {
				t.Fatalf("another user's JWT: %v", err)
			}
		})
	}
}

func isAPI(err error, status int) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Status == status
}

// A wrong password or cloud secret fails on the device, and nothing is sent
// after the recover request; a missing one fails before it.
func TestWrongSecret(t *testing.T) {
	f, c := newFake(t)
	for _, method := range []string{recovery.MethodPassword, recovery.MethodCloud} {
		t.Run(method, func(t *testing.T) {
			st, err := device.Create(ctx, c, "alice", method, secretFor(t, method))
			if err != nil {
				t.Fatal(err)
			}
			wrong := secretFor(t, method)
			if method == recovery.MethodPassword {
				wrong.Password = []byte("Tr0ub4dor&3")
			}
			n := len(f.requests())
			_, err = device.Recover(ctx, c, st.WalletID, "alice", wrong)
			what := map[string]string{"password": "wrong password", "cloud": "wrong cloud secret"}[method]
			if !errors.Is(err, recovery.ErrWrongSecret) || !strings.Contains(err.Error(), what) {
				t.Fatalf("wrong secret: %v", err)
			}
			if strings.Contains(err.Error(), "Tr0ub4dor") {
				t.Fatal("the error holds the password")
			}
			if got := f.requests()[n:]; !slices.Equal(got, []string{"GET /v1/embedded_wallets/" + st.WalletID, "POST /v1/embedded_wallets/" + st.WalletID + "/recover"}) {
				t.Fatalf("requests: %v", got)
			}
			n = len(f.requests())
			if _, err := device.Recover(ctx, c, st.WalletID, "alice", device.Secret{}); !errors.Is(err, device.ErrSecretRequired) {
				t.Fatalf("no secret: %v", err)
			}
			if got := f.requests()[n:]; len(got) != 1 || !strings.HasPrefix(got[0], "GET ") {
				t.Fatalf("a recover without the secret sent %v", got)
			}
		})
	}
}

// Shares that do not give the wallet's address are never used: nothing is
// signed, and no challenge is asked for.
func TestWrongWallet(t *testing.T) {
	f, c := newFake(t)
	st, err := device.Create(ctx, c, "alice", recovery.MethodAutomatic, device.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	f.damageAuth = true
	if _, err := device.SignMessage(ctx, c, st, "alice", []byte("x")); !errors.Is(err, device.ErrWrongWallet) {
		t.Fatalf("sign with a damaged auth share: %v", err)
	}
	n := len(f.requests())
	if err := device.SetRecovery(ctx, c, st, "alice", recovery.MethodCloud, secretFor(t, recovery.MethodCloud)); !errors.Is(err, device.ErrWrongWallet) {
		t.Fatalf("set recovery with a damaged auth share: %v", err)
	}
	if got := f.requests()[n:]; len(got) != 1 || !strings.HasSuffix(got[0], "/auth_share") {
		t.Fatalf("requests: %v", got)
	}
	if _, err := device.Recover(ctx, c, st.WalletID, "alice", device.Secret{}); !errors.Is(err, device.ErrWrongWallet) {
		t.Fatalf("recover with a damaged auth share: %v", err)
	}
	f.damageAuth = false
	sign(t, c, st, "alice", "x")
}

// Every change of method, each followed by a recovery on a new device.
func TestSetRecovery(t *testing.T) {
	_, c := newFake(t)
	st, err := device.Create(ctx, c, "alice", recovery.MethodAutomatic, device.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{recovery.MethodPassword, recovery.MethodCloud, recovery.MethodAutomatic, recovery.MethodPassword} {
		s := secretFor(t, method)
		if err := device.SetRecovery(ctx, c, st, "alice", method, s); err != nil {
			t.Fatalf("to %s: %v", method, err)
		}
		if st.RecoveryMethod != method || st.Status != device.StatusActive {
			t.Fatalf("after the change to %s: %s, %s", method, st.RecoveryMethod, st.Status)
		}
		b, err := device.Recover(ctx, c, st.WalletID, "alice", s)
		if err != nil {
			t.Fatalf("recover after the change to %s: %v", method, err)
		}
		if b.DeviceShare != st.DeviceShare {
			t.Fatal("the new device's share differs")
		}
	}
}

// A create whose upload fails returns the state with the error; the wallet
// stays pending until SetRecovery finishes it.
func TestCreateUploadFails(t *testing.T) {
	f, c := newFake(t)
	f.failPut = true
	s := secretFor(t, recovery.MethodPassword)
	st, err := device.Create(ctx, c, "alice", recovery.MethodPassword, s)
	if err == nil || st == nil || st.Status != device.StatusRecoveryPending {
		t.Fatalf("create with a failing upload: %+v, %v", st, err)
	}
	if _, err := device.Recover(ctx, c, st.WalletID, "alice", s); !isAPI(err, 409) {
		t.Fatalf("recover of a pending wallet: %v", err)
	}
	f.failPut = false
	if err := device.SetRecovery(ctx, c, st, "alice", recovery.MethodPassword, s); err != nil {
		t.Fatal(err)
	}
	if _, err := device.Recover(ctx, c, st.WalletID, "alice", s); err != nil {
		t.Fatal(err)
	}
}

func TestStateFile(t *testing.T) {
	_, c := newFake(t)
	st, err := device.Create(ctx, c, "alice", recovery.MethodAutomatic, device.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "device.json")
	if err := st.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o", fi.Mode().Perm())
	}
	if err := st.Save(path); !errors.Is(err, os.ErrExist) {
		t.Fatalf("save over an existing file: %v", err)
	}
	got, err := device.Load(path)
	if err != nil || *got != *st {
		t.Fatalf("load: %+v, %v", got, err)
	}
	got.RecoveryMethod = recovery.MethodCloud
	if err := got.Replace(path); err != nil {
		t.Fatal(err)
	}
	if again, err := device.Load(path); err != nil || again.RecoveryMethod != recovery.MethodCloud {
		t.Fatalf("after replace: %+v, %v", again, err)
	}
	if err := got.Replace(filepath.Join(dir, "none.json")); err == nil {
		t.Fatal("replace created a file")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("files left behind: %v", ents)
	}

	os.Chmod(path, 0o644)
	if _, err := device.Load(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("load of a world-readable file: %v", err)
	}
	os.Chmod(path, 0o600)

	// A device share at the wrong index, or not base64: refused without
	// the share in the error.
	share, _ := base64.StdEncoding.DecodeString(st.DeviceShare)
	share[len(share)-1] ^= 0xff
	bad := *st
	bad.DeviceShare = base64.StdEncoding.EncodeToString(share)
	for _, b := range []device.State{bad, {WalletID: st.WalletID, Address: st.Address, ShareIndexes: st.ShareIndexes, DeviceShare: "!" + st.DeviceShare}} {
		err := b.Save(filepath.Join(dir, "bad.json"))
		if err == nil || strings.Contains(err.Error(), st.DeviceShare[:8]) || strings.Contains(err.Error(), b.DeviceShare[:8]) {
			t.Fatalf("save of a bad state: %v", err)
		}
	}
	os.WriteFile(filepath.Join(dir, "garbage.json"), []byte(`{"device_share": "`+st.DeviceShare+"\x01"), 0o600)
	if _, err := device.Load(filepath.Join(dir, "garbage.json")); err == nil || strings.Contains(err.Error(), "\x01") {
		t.Fatalf("load of garbage: %v", err)
	}
}
