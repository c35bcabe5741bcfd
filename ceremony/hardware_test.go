package ceremony_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/ceremony"
	"github.com/cachet-custody/cachet/hsm"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/tpm"
)

func TestMain(m *testing.M) { testhw.SoftHSMMain(m) }

// freshHardware returns a function that gives new, empty hardware of one
// kind each time it is called.
type freshHardware func(t *testing.T) keys.Backend

func softHSM(t *testing.T) keys.Backend {
	label := testhw.UniqueLabel("cer")
	if err := hsm.InitToken(testhw.Module(), label, "so-1234", "1234"); err != nil {
		t.Fatal(err)
	}
	b, err := hsm.Open(context.Background(), hsm.Options{Module: testhw.Module(), TokenLabel: label, PIN: "1234"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func swtpm(t *testing.T) keys.Backend {
	sw := testhw.StartSwtpm(t)
	b, err := tpm.Open(context.Background(), tpm.Options{Device: sw.Device, PCRs: []int{16}, StateFile: filepath.Join(t.TempDir(), "tpm-state.json")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

type operator struct {
	id       *age.X25519Identity
	identity []age.Identity
}

func readShares(t *testing.T, files []string, ops []operator, which ...int) []ceremony.NamedShare {
	t.Helper()
	var out []ceremony.NamedShare
	for _, i := range which {
		f, err := os.Open(files[i])
		if err != nil {
			t.Fatal(err)
		}
		s, err := ceremony.DecryptShare(f, ops[i].identity)
		f.Close()
		if err != nil {
			t.Fatalf("share %d: %v", i+1, err)
		}
		out = append(out, ceremony.NamedShare{Name: filepath.Base(files[i]), Share: s})
	}
	return out
}

func TestInitRestoreOntoNewHardware(t *testing.T) {
	for _, hw := range []struct {
		name  string
		fresh freshHardware
	}{{"softhsm", softHSM}, {"swtpm", swtpm}} {
		t.Run(hw.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			st, err := store.Open(ctx, filepath.Join(dir, "cachet.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ops := make([]operator, 3)
			var recipients []string
			for i := range ops {
				id, _ := age.GenerateX25519Identity()
				ops[i] = operator{id: id, identity: []age.Identity{id}}
				recipients = append(recipients, id.Recipient().String())
			}

			// Init 2-of-3 on the first hardware, and use it.
			first := hw.fresh(t)
			res, err := ceremony.Init(ctx, first, st, ceremony.InitOptions{Operators: recipients, Threshold: 2, OutDir: filepath.Join(dir, "shares"), Actor: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.ShareFiles) != 3 || res.Generation != 1 {
				t.Fatalf("init result %+v", res)
			}
			if _, err := ceremony.Init(ctx, first, st, ceremony.InitOptions{Operators: recipients, Threshold: 2, OutDir: filepath.Join(dir, "shares2")}); !errors.Is(err, ceremony.ErrAlreadyInitialized) {
				t.Fatalf("second init: %v", err)
			}
			secret := []byte("wallet entropy 0123456789abcdef")
			aad := []byte("wallet:wlt_1:entropy")
			blob, err := first.Seal(ctx, keys.PurposeWallet, secret, aad)
			if err != nil {
				t.Fatal(err)
			}
			authPub, err := first.AuthKey(ctx, "auth/server-1")
			if err != nil {
				t.Fatal(err)
			}
			alog := audit.New(st, first, audit.Options{})
			for i := 0; i < 3; i++ {
				if _, err := alog.Record(ctx, audit.Entry{Actor: "test", Action: "test.write", Target: "x", Decision: audit.DecisionAllow}); err != nil {
					t.Fatal(err)
				}
			}
			if seq, err := alog.Checkpoint(ctx); err != nil || seq == 0 {
				t.Fatalf("checkpoint %d %v", seq, err)
			}
			first.Close() // the first hardware is gone

			second := hw.fresh(t)
			unprovisioned := func() {
				t.Helper()
				if info, err := second.Info(ctx); err != nil || info.Provisioned {
					t.Fatalf("a refused restore provisioned the hardware (%+v, %v)", info, err)
				}
			}
			// Refused: one share alone, a duplicated share, a share of
			// another root. Nothing is written.
			_, err = ceremony.Restore(ctx, second, st, ceremony.RestoreOptions{Shares: readShares(t, res.ShareFiles, ops, 1)})
			if err == nil || !strings.Contains(err.Error(), "needs 2 of 3") {
				t.Fatalf("one share: %v", err)
			}
			unprovisioned()
			dup := readShares(t, res.ShareFiles, ops, 0, 0)
			dup[1].Name = "copy of share 1"
			var se *ceremony.ShareError
			if _, err = ceremony.Restore(ctx, second, st, ceremony.RestoreOptions{Shares: dup}); !errors.As(err, &se) || se.Name != "copy of share 1" {
				t.Fatalf("duplicate share: %v", err)
			}
			unprovisioned()
			foreign := readShares(t, res.ShareFiles, ops, 0)
			other := readShares(t, res.ShareFiles, ops, 2)[0]
			other.Share.Fingerprint = strings.Repeat("ab", 16)
			other.Name = "share of another appliance"
			text := other.Share.Text() // a well-formed share, checksum and all
			parsed, err := ceremony.ParseShare(text)
			if err != nil {
				t.Fatal(err)
			}
			foreign = append(foreign, ceremony.NamedShare{Name: other.Name, Share: parsed})
			if _, err = ceremony.Restore(ctx, second, st, ceremony.RestoreOptions{Shares: foreign}); !errors.As(err, &se) || se.Name != other.Name {
				t.Fatalf("foreign share: %v", err)
			}
			unprovisioned()

			// Restored with shares 1 and 3.
			rr, err := ceremony.Restore(ctx, second, st, ceremony.RestoreOptions{Shares: readShares(t, res.ShareFiles, ops, 0, 2), Actor: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if rr.Fingerprint != res.Fingerprint {
				t.Fatalf("restored root %s, want %s", rr.Fingerprint, res.Fingerprint)
			}
			if err := ceremony.CheckReady(ctx, second, st); err != nil {
				t.Fatal(err)
			}
			got, err := second.Unseal(ctx, keys.PurposeWallet, blob, aad)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("unseal after restore: %q %v", got, err)
			}
			pub2, err := second.AuthKey(ctx, "auth/server-1")
			if err != nil || !pub2.Equal(authPub) {
				t.Fatalf("authorization key changed across restore (%v)", err)
			}
			auditPub, err := second.AuthKey(ctx, keys.AuditKeyLabel)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := audit.Verify(ctx, st.DB(), auditPub)
			if err != nil || rep.Checkpoints != 1 {
				t.Fatalf("checkpoints signed before restore do not verify after: %+v %v", rep, err)
			}
			// The second hardware is no longer empty.
			if _, err := ceremony.Restore(ctx, second, st, ceremony.RestoreOptions{Shares: readShares(t, res.ShareFiles, ops, 0, 1)}); !errors.Is(err, keys.ErrAlreadyProvisioned) {
				t.Fatalf("restore onto provisioned hardware: %v", err)
			}
		})
	}
}
