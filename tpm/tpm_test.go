package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
)

func newRoot(t testing.TB) []byte {
	t.Helper()
	r := make([]byte, keys.RootSize)
	if _, err := rand.Read(r); err != nil {
		t.Fatal(err)
	}
	return r
}

func open(t testing.TB, opts Options) keys.Backend {
	t.Helper()
	b, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", opts.Device, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func provision(t testing.TB, b keys.Backend, root []byte, gen uint32, replace bool) {
	t.Helper()
	p, ok := b.(keys.Provisioner)
	if !ok {
		t.Fatal("backend does not implement keys.Provisioner")
	}
	if err := p.Provision(context.Background(), root, keys.ProvisionOptions{Generation: gen, Replace: replace}); err != nil {
		t.Fatalf("Provision generation %d: %v", gen, err)
	}
}

// provisioned starts a backend on dev with a fresh root as generation 1.
func provisioned(t testing.TB, opts Options) (keys.Backend, []byte) {
	t.Helper()
	b := open(t, opts)
	root := newRoot(t)
	provision(t, b, root, 1, false)
	return b, root
}

// rawTPM connects to a swtpm device directly, bypassing the package's
// device lock, as another process would.
func rawTPM(t testing.TB, device string) transport.TPMCloser {
	t.Helper()
	network, addr, _ := strings.Cut(device, ":")
	conn, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return transport.FromReadWriteCloser(conn)
}

// loadedHandles lists transient objects and sessions in the TPM. The backend
// must leave none behind: swtpm keeps them across connections.
func loadedHandles(t testing.TB, device string) []tpm2.TPMHandle {
	t.Helper()
	tpm := rawTPM(t, device)
	defer tpm.Close()
	var all []tpm2.TPMHandle
	for _, first := range []uint32{0x80000000, 0x02000000, 0x03000000} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: first, PropertyCount: 64}.Execute(tpm)
		if err != nil {
			t.Fatalf("GetCapability handles %#x: %v", first, err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs.Handle {
			if uint32(h)>>24 == first>>24 {
				all = append(all, h)
			}
		}
	}
	return all
}

func checkNoLeaks(t testing.TB, device string) {
	t.Helper()
	if hs := loadedHandles(t, device); len(hs) != 0 {
		t.Errorf("TPM left with %d transient objects or sessions: %#x", len(hs), hs)
	}
}

// TestInfoIdentity checks what Info says about the TPM over both transports,
// before and after provisioning; the conformance suite checks only that it
// names some hardware, and differently for two TPMs.
func TestInfoIdentity(t *testing.T) {
	ctx := context.Background()
	srkNames := map[string]string{}
	for _, tc := range []struct {
		name  string
		start func(testing.TB) *testhw.Swtpm
	}{
		{"unix", testhw.StartSwtpm},
		{"tcp", testhw.StartSwtpmTCP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sw := tc.start(t)
			b := open(t, Options{Device: sw.Device, PCRs: []int{16}})
			for _, when := range []string{"before provisioning", "after provisioning"} {
				info, err := b.Info(ctx)
				if err != nil {
					t.Fatalf("Info %s: %v", when, err)
				}
				id := info.Identity
				if info.Kind != "tpm" || id["device"] != sw.Device || id["manufacturer"] != "IBM" || id["vendor"] == "" ||
					id["firmware"] == "" || len(id["srk_name"]) != 2*(2+sha256.Size) || id["locked_generations"] != "" {
					t.Errorf("Info %s: %q %v", when, info.Kind, id)
				}
				t.Logf("Identity %s: %v", when, id)
				if !info.Provisioned {
					provision(t, b, newRoot(t), 1, false)
				}
			}
			info, err := b.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for other, name := range srkNames {
				if name == info.Identity["srk_name"] {
					t.Errorf("swtpm instances %s and %s report the same SRK name", other, tc.name)
				}
			}
			srkNames[tc.name] = info.Identity["srk_name"]
			checkNoLeaks(t, sw.Device)
		})
	}
}

// Generation g's root sits at Options.Handle+g-1, and Open finds every
// generation there.
func TestHandleScheme(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	ctx := context.Background()
	opts := Options{Device: sw.Device, PCRs: []int{16}, Handle: 0x81000D00}
	b, _ := provisioned(t, opts)
	blob1, err := b.Seal(ctx, keys.PurposeWallet, []byte("one"), nil)
	if err != nil {
		t.Fatal(err)
	}
	provision(t, b, newRoot(t), 2, false)
	blob2, err := b.Seal(ctx, keys.PurposeWallet, []byte("two"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()

	b2 := open(t, opts)
	if info, err := b2.Info(ctx); err != nil || !slices.Equal(info.Generations, []uint32{1, 2}) {
		t.Fatalf("Info with handle %#x = %+v, %v", opts.Handle, info, err)
	}
	for want, blob := range map[string][]byte{"one": blob1, "two": blob2} {
		got, err := b2.Unseal(ctx, keys.PurposeWallet, blob, nil)
		if err != nil || string(got) != want {
			t.Fatalf("Unseal = %q, %v; want %q", got, err, want)
		}
	}
	tpm := rawTPM(t, sw.Device)
	defer tpm.Close()
	for _, h := range []uint32{0x81000D00, 0x81000D01} {
		if _, err := (tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(h)}).Execute(tpm); err != nil {
			t.Errorf("ReadPublic(%#x): %v", h, err)
		}
	}
	if _, err := (tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(DefaultHandle)}).Execute(tpm); !errors.Is(err, tpm2.TPMRCHandle) {
		t.Errorf("ReadPublic(DefaultHandle) with another Handle configured: %v, want TPM_RC_HANDLE", err)
	}
}

// Close zeroes the keys in memory, so even a key that was in use is gone, and
// a Provision after Close does not reach the TPM.
func TestCloseForgetsKeys(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	ctx := context.Background()
	b, root := provisioned(t, Options{Device: sw.Device})
	if _, err := b.AuthKey(ctx, keys.AuditKeyLabel); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AuthKey(ctx, keys.AuditKeyLabel); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("AuthKey of a key in use before Close: %v, want ErrUnavailable", err)
	}
	if err := b.(keys.Provisioner).Provision(ctx, root, keys.ProvisionOptions{Generation: 2}); !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("Provision after Close: %v, want ErrUnavailable", err)
	}
	tpm := rawTPM(t, sw.Device)
	defer tpm.Close()
	if _, err := (tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(DefaultHandle + 1)}).Execute(tpm); !errors.Is(err, tpm2.TPMRCHandle) {
		t.Fatalf("generation 2 handle after refused Provision: %v", err)
	}
}

func TestRestart(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	ctx := context.Background()
	opts := Options{Device: sw.Device, PCRs: []int{16}, StateFile: filepath.Join(t.TempDir(), "tpm.json")}
	b, root := provisioned(t, opts)
	blob, err := b.Seal(ctx, keys.PurposeWallet, []byte("survives"), []byte("id"))
	if err != nil {
		t.Fatal(err)
	}
	pub1, err := b.AuthKey(ctx, "audit")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	sw.Restart(t)
	b2 := open(t, opts)
	got, err := b2.Unseal(ctx, keys.PurposeWallet, blob, []byte("id"))
	if err != nil || string(got) != "survives" {
		t.Fatalf("Unseal after restart = %q, %v", got, err)
	}
	pub2, err := b2.AuthKey(ctx, "audit")
	if err != nil || !pub2.Equal(pub1) {
		t.Fatalf("AuthKey after restart differs: %v", err)
	}
	info, err := b2.Info(ctx)
	if want, _ := keys.Fingerprint(root); err != nil || info.RootFingerprint != want {
		t.Fatalf("Info after restart = %+v, %v", info, err)
	}
}

func TestPCRBinding(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stateFile bool // configure a state file
		remove    bool // delete it before the failing Open
	}{
		{"with state file", true, false},
		{"without state file", false, false},
		{"state file deleted", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sw := testhw.StartSwtpm(t)
			ctx := context.Background()
			opts := Options{Device: sw.Device, PCRs: []int{16}}
			if tc.stateFile {
				opts.StateFile = filepath.Join(t.TempDir(), "tpm-state.json")
			}
			b, _ := provisioned(t, opts)
			blob, err := b.Seal(ctx, keys.PurposeWallet, []byte("bound"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if tc.remove {
				if err := os.Remove(opts.StateFile); err != nil {
					t.Fatal(err)
				}
			}

			event := []byte("kernel update")
			if err := ExtendPCR(ctx, sw.Device, 16, event); err != nil {
				t.Fatal(err)
			}
			eventDigest := sha256.Sum256(event)
			wantPCR := sha256.Sum256(append(make([]byte, 32), eventDigest[:]...))

			_, err = Open(ctx, opts)
			var mm *PCRMismatchError
			if !errors.As(err, &mm) {
				t.Fatalf("Open after extending PCR 16: %v, want a *PCRMismatchError", err)
			}
			if !errors.Is(err, tpm2.TPMRCPolicyFail) {
				t.Errorf("error does not wrap TPM_RC_POLICY_FAIL: %v", err)
			}
			if errors.Is(err, keys.ErrUnavailable) {
				t.Errorf("a PCR mismatch is reported as an unavailable TPM: %v", err)
			}
			if !slices.Equal(mm.Bound, []int{16}) || mm.Generation != 1 || mm.Handle != DefaultHandle {
				t.Errorf("mismatch = %+v", mm)
			}
			if len(mm.Current) != 1 || mm.Current[0].PCR != 16 || !bytes.Equal(mm.Current[0].Current, wantPCR[:]) {
				t.Errorf("Current = %+v, want PCR 16 = %x", mm.Current, wantPCR)
			}
			msg := err.Error()
			for _, want := range []string{"PCR 16", hex.EncodeToString(wantPCR[:]), "cachet restore --replace", "tampered"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error text lacks %q: %s", want, msg)
				}
			}
			if tc.stateFile && !tc.remove {
				if len(mm.Changed) != 1 || mm.Changed[0].PCR != 16 ||
					!bytes.Equal(mm.Changed[0].Sealed, make([]byte, 32)) || !bytes.Equal(mm.Changed[0].Current, wantPCR[:]) {
					t.Fatalf("Changed = %+v, want PCR 16 from zero to %x", mm.Changed, wantPCR)
				}
				if mm.StateFile != opts.StateFile {
					t.Errorf("StateFile = %q", mm.StateFile)
				}
			} else if len(mm.Changed) != 0 || mm.StateFile != "" {
				t.Errorf("without a state file: Changed = %+v, StateFile %q", mm.Changed, mm.StateFile)
			}
			t.Logf("error text: %s", msg)
			checkNoLeaks(t, sw.Device)

			// A reboot resets PCR 16 (swtpm's debug PCR) and the root
			// unseals again.
			sw.Restart(t)
			b2 := open(t, opts)
			if got, err := b2.Unseal(ctx, keys.PurposeWallet, blob, nil); err != nil || string(got) != "bound" {
				t.Fatalf("Unseal after PCR reset = %q, %v", got, err)
			}
		})
	}
}

// A configuration that binds other PCRs than the sealing did is named as
// such, not as a changed PCR.
func TestPCRSelectionChanged(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	opts := Options{Device: sw.Device, PCRs: []int{16}, StateFile: filepath.Join(t.TempDir(), "s.json")}
	b, _ := provisioned(t, opts)
	b.Close()
	if err := ExtendPCR(context.Background(), sw.Device, 23, []byte("x")); err != nil {
		t.Fatal(err)
	}
	opts.PCRs = []int{16, 23}
	_, err := Open(context.Background(), opts)
	var mm *PCRMismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("Open with another PCR selection: %v, want a *PCRMismatchError", err)
	}
	if len(mm.Changed) != 0 || !strings.Contains(mm.Note, "sealed to PCRs 16 but the configuration now binds 16,23") {
		t.Fatalf("mismatch = %+v", mm)
	}
	if len(mm.Current) != 2 || mm.Current[0].Sealed == nil || mm.Current[1].Sealed != nil {
		t.Fatalf("Current = %+v, want PCR 16 with its sealed value and PCR 23 without", mm.Current)
	}
}

// A PCR outside the policy does not matter.
func TestUnboundPCRIgnored(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	ctx := context.Background()
	opts := Options{Device: sw.Device, PCRs: []int{16}}
	b, _ := provisioned(t, opts)
	b.Close()
	if err := ExtendPCR(ctx, sw.Device, 23, []byte("noise")); err != nil {
		t.Fatal(err)
	}
	open(t, opts)
}

func TestStateFile(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	path := filepath.Join(t.TempDir(), "state.json")
	b, root := provisioned(t, Options{Device: sw.Device, PCRs: []int{16, 23}, StateFile: path})
	provision(t, b, newRoot(t), 2, false)

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st stateFile
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	info, _ := b.Info(context.Background())
	if st.Version != 1 || st.SRKName != info.Identity["srk_name"] || st.Device != sw.Device || len(st.Generations) != 2 {
		t.Fatalf("state file = %s", body)
	}
	e := st.entry(1)
	fp, _ := keys.Fingerprint(root)
	if e == nil || !slices.Equal(e.PCRs, []int{16, 23}) || e.PCRBank != "sha256" || e.Handle != "0x81000c01" ||
		e.PCRValues["16"] != strings.Repeat("00", 32) || e.RootFingerprint != fp || e.AuthValue {
		t.Fatalf("generation 1 entry = %+v", e)
	}
	if bytes.Contains(body, root) || strings.Contains(string(body), hex.EncodeToString(root)) {
		t.Fatal("the state file contains the root")
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*"))
	if len(matches) != 0 {
		t.Errorf("temporary files left behind: %v", matches)
	}
}

func TestAuthValue(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	ctx := context.Background()
	right := []byte("correct horse battery")
	wrong := []byte("incorrect pony")
	opts := Options{Device: sw.Device, PCRs: []int{16}, Auth: right, StateFile: filepath.Join(t.TempDir(), "s.json")}
	b, _ := provisioned(t, opts)
	blob, err := b.Seal(ctx, keys.PurposeWallet, []byte("guarded"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()

	t.Run("wrong", func(t *testing.T) {
		o := opts
		o.Auth = wrong
		_, err := Open(ctx, o)
		if !errors.Is(err, ErrAuthValue) {
			t.Fatalf("Open with the wrong auth value: %v, want ErrAuthValue", err)
		}
		var mm *PCRMismatchError
		if errors.As(err, &mm) {
			t.Fatal("a wrong auth value is reported as a PCR mismatch")
		}
		for _, secret := range [][]byte{wrong, right} {
			if strings.Contains(err.Error(), string(secret)) || strings.Contains(err.Error(), hex.EncodeToString(secret)) {
				t.Fatalf("error echoes an auth value: %s", err)
			}
		}
		t.Logf("error text: %s", err)
		checkNoLeaks(t, sw.Device)
	})
	t.Run("missing", func(t *testing.T) {
		o := opts
		o.Auth = nil
		_, err := Open(ctx, o)
		var mm *PCRMismatchError
		if !errors.As(err, &mm) {
			t.Fatalf("Open without the auth value: %v, want a policy failure", err)
		}
		if len(mm.Changed) != 0 || !strings.Contains(mm.Note, "auth value") {
			t.Fatalf("mismatch = %+v, want no changed PCR and a note about the auth value", mm)
		}
	})
	t.Run("right", func(t *testing.T) {
		b := open(t, opts)
		if got, err := b.Unseal(ctx, keys.PurposeWallet, blob, nil); err != nil || string(got) != "guarded" {
			t.Fatalf("Unseal = %q, %v", got, err)
		}
	})
}

func TestOtherProcessCanUseTPM(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	b, _ := provisioned(t, Options{Device: sw.Device, PCRs: []int{16}})
	if _, err := b.Info(context.Background()); err != nil {
		t.Fatal(err)
	}
	sock := strings.TrimPrefix(sw.Device, "unix:")
	// tpm2-tools' swtpm TCTI expects the control socket at SOCK.ctrl;
	// testhw puts it at STATEDIR/ctrl.
	ctrl := filepath.Join(sw.StateDir, "ctrl")
	if _, err := os.Stat(ctrl); err != nil {
		t.Fatalf("swtpm control socket not where testhw used to put it: %v", err)
	}
	if err := os.Symlink(ctrl, sock+".ctrl"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "tpm2_getrandom", "-T", "swtpm:path="+sock, "--hex", "8").CombinedOutput()
	if err != nil {
		t.Fatalf("tpm2_getrandom while the backend is open (after %v): %v\n%s", time.Since(start), err, out)
	}
	t.Logf("tpm2_getrandom took %v: %s", time.Since(start), bytes.TrimSpace(out))

	// And a plain second connection, as another Go process would make.
	tpm := rawTPM(t, sw.Device)
	defer tpm.Close()
	if _, err := (tpm2.GetRandom{BytesRequested: 8}).Execute(tpm); err != nil {
		t.Fatalf("GetRandom on a second connection: %v", err)
	}
}

// vmLckKB reads the process's locked memory from /proc/self/status.
func vmLckKB(t testing.TB) int {
	t.Helper()
	body, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(body)) {
		if rest, ok := strings.CutPrefix(line, "VmLck:"); ok {
			var kb int
			if _, err := fmt.Sscanf(rest, "%d kB", &kb); err != nil {
				t.Fatalf("parse VmLck %q: %v", rest, err)
			}
			return kb
		}
	}
	t.Fatal("no VmLck in /proc/self/status")
	return 0
}

// The root, the KEKs and the P-256 scalars sit in locked pages, which Close
// releases.
func TestKeysInLockedMemory(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	before := vmLckKB(t)
	b, _ := provisioned(t, Options{Device: sw.Device})
	afterOpen := vmLckKB(t)
	if _, err := b.AuthKey(context.Background(), "audit"); err != nil {
		t.Fatal(err)
	}
	afterKey := vmLckKB(t)
	page := os.Getpagesize() / 1024
	if afterOpen-before < page {
		t.Errorf("VmLck grew by %d kB at provisioning, want a page for the root and KEKs", afterOpen-before)
	}
	if afterKey-afterOpen < page {
		t.Errorf("VmLck grew by %d kB for the first P-256 key, want a page", afterKey-afterOpen)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := vmLckKB(t); got != before {
		t.Errorf("VmLck %d kB after Close, %d kB before Open", got, before)
	}
}

func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	t.Run("no listener", func(t *testing.T) {
		_, err := Open(ctx, Options{Device: "unix:" + filepath.Join(t.TempDir(), "absent.sock")})
		if !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("Open: %v, want ErrUnavailable", err)
		}
	})
	t.Run("no device", func(t *testing.T) {
		_, err := Open(ctx, Options{Device: "/dev/no-such-tpm"})
		if !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("Open: %v, want ErrUnavailable", err)
		}
	})
	t.Run("not a device", func(t *testing.T) {
		_, err := Open(ctx, Options{Device: "/etc/hostname"})
		if !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("Open: %v, want ErrUnavailable", err)
		}
	})
	t.Run("TPM stops while open", func(t *testing.T) {
		sw := testhw.StartSwtpm(t)
		b, _ := provisioned(t, Options{Device: sw.Device})
		sw.Stop(t)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := b.Info(cctx); !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("Info with swtpm stopped: %v, want ErrUnavailable", err)
		}
		// Sealing needs no TPM round trip and goes on working.
		if _, err := b.Seal(ctx, keys.PurposeWallet, []byte("x"), nil); err != nil {
			t.Fatalf("Seal with swtpm stopped: %v", err)
		}
	})
	t.Run("peer holds the TPM", func(t *testing.T) {
		sw := testhw.StartSwtpm(t)
		b := open(t, Options{Device: sw.Device})
		// Another client holds swtpm's only connection slot: Info must
		// give up when its context ends rather than hang.
		hold := rawTPM(t, sw.Device)
		if _, err := (tpm2.GetRandom{BytesRequested: 1}).Execute(hold); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := b.Info(cctx)
		if !errors.Is(err, keys.ErrUnavailable) {
			t.Fatalf("Info while another client holds swtpm: %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("Info took %v to give up", d)
		}
		hold.Close()
		if _, err := b.Info(ctx); err != nil {
			t.Fatalf("Info once the peer let go: %v", err)
		}
	})
}

func TestOptionsRejected(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"empty device", Options{}},
		{"relative path", Options{Device: "tpmrm0"}},
		{"unix without path", Options{Device: "unix:"}},
		{"tcp without port", Options{Device: "tcp:127.0.0.1"}},
		{"tcp not loopback", Options{Device: "tcp:192.0.2.1:2321"}},
		{"negative PCR", Options{Device: sw.Device, PCRs: []int{-1}}},
		{"PCR 24", Options{Device: sw.Device, PCRs: []int{24}}},
		{"duplicate PCR", Options{Device: sw.Device, PCRs: []int{7, 7}}},
		{"auth too long", Options{Device: sw.Device, Auth: make([]byte, 33)}},
		{"handle not persistent", Options{Device: sw.Device, Handle: 0x80000001}},
		{"handle in platform range", Options{Device: sw.Device, Handle: 0x81800000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Open(context.Background(), tc.opts)
			if !errors.Is(err, keys.ErrInvalidInput) {
				if b != nil {
					b.Close()
				}
				t.Fatalf("Open: %v, want ErrInvalidInput", err)
			}
		})
	}
	b := open(t, Options{Device: sw.Device})
	p := b.(keys.Provisioner)
	for _, tc := range []struct {
		name string
		root []byte
		gen  uint32
	}{
		// Roots of the wrong size and generation 0 are in the conformance suite.
		{"generation past the handle range", newRoot(t), maxGenerations + 1},
		{"generation far past the handle range", newRoot(t), 1 << 31},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := p.Provision(context.Background(), tc.root, keys.ProvisionOptions{Generation: tc.gen}); !errors.Is(err, keys.ErrInvalidInput) {
				t.Fatalf("Provision: %v, want ErrInvalidInput", err)
			}
		})
	}
	if info, err := b.Info(context.Background()); err != nil || info.Provisioned {
		t.Fatalf("after refused provisioning: %+v, %v", info, err)
	}
}

// An object that is not a Cachet root in Cachet's handle range stops Open
// instead of being unsealed or ignored.
func TestForeignObjectInHandleRange(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	tpm := rawTPM(t, sw.Device)
	srk, err := createSRK(tpm)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: srk.handle, Name: srk.name},
		PersistentHandle: tpm2.TPMHandle(DefaultHandle),
	}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if err := flush(tpm, srk.handle, "srk"); err != nil {
		t.Fatal(err)
	}
	tpm.Close()

	_, err = Open(context.Background(), Options{Device: sw.Device})
	if err == nil || errors.Is(err, keys.ErrNotProvisioned) || !strings.Contains(err.Error(), "not a Cachet sealed root") {
		t.Fatalf("Open with a foreign object at %#x: %v", DefaultHandle, err)
	}
	checkNoLeaks(t, sw.Device)
}

// After an expected PCR change, AllowLocked opens the TPM for the re-seal
// only: no key operation works, Info says the TPM holds a root, and a
// Provision with Replace re-seals the same root to the new PCR value.
func TestAllowLockedForReseal(t *testing.T) {
	sw := testhw.StartSwtpm(t)
	ctx := context.Background()
	opts := Options{Device: sw.Device, PCRs: []int{16}, StateFile: filepath.Join(t.TempDir(), "s.json")}
	b, root := provisioned(t, opts)
	blob, err := b.Seal(ctx, keys.PurposeWallet, []byte("kept"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := ExtendPCR(ctx, sw.Device, 16, []byte("expected update")); err != nil {
		t.Fatal(err)
	}
	// Without the option, a refused root still fails Open.
	if _, err := Open(ctx, opts); err == nil {
		t.Fatal("Open succeeded with a locked root")
	}
	lockedOpts := opts
	lockedOpts.AllowLocked = true
	lb := open(t, lockedOpts)
	info, err := lb.Info(ctx)
	if err != nil || !info.Provisioned || info.RootFingerprint != "" || info.Identity["locked_generations"] != "1" {
		t.Fatalf("Info of a locked TPM: %+v %v", info, err)
	}
	var mm *PCRMismatchError
	if _, err := lb.Seal(ctx, keys.PurposeWallet, []byte("x"), nil); !errors.As(err, &mm) || !errors.Is(err, keys.ErrUnavailable) {
		t.Fatalf("Seal with a locked root: %v", err)
	}
	if _, err := lb.SignAuth(ctx, keys.AuditKeyLabel, make([]byte, 32)); err == nil {
		t.Fatal("SignAuth with a locked root succeeded")
	}
	if err := lb.(keys.Provisioner).Provision(ctx, root, keys.ProvisionOptions{Generation: 1}); !errors.Is(err, keys.ErrAlreadyProvisioned) {
		t.Fatalf("Provision without Replace over a locked root: %v", err)
	}
	provision(t, lb, root, 1, true)
	if got, err := lb.Unseal(ctx, keys.PurposeWallet, blob, nil); err != nil || string(got) != "kept" {
		t.Fatalf("Unseal after re-seal: %q %v", got, err)
	}
	lb.Close()
	// The re-sealed root opens normally at the new PCR value.
	b3 := open(t, opts)
	if info, err := b3.Info(ctx); err != nil || info.Identity["locked_generations"] != "" || !info.Provisioned {
		t.Fatalf("after re-seal: %+v %v", info, err)
	}
}
