// Package keystest is the conformance suite of the keys.Backend contract, in
// the spirit of testing/fstest: a backend's tests describe how to make fresh
// hardware for it (a Hardware), and Run checks, against that real hardware,
// every behaviour package keys promises of a Backend and a Provisioner: the
// errors before provisioning, Provision and Replace, the sealed-blob envelope
// and its authentication, key generations, derivation equal to the software
// definition in package keys, low-S signatures, restore onto other hardware,
// persistence, concurrent use, cancelled contexts and Close.
//
// Each behaviour is written here once, so every backend is held to the same
// assertions. What only one backend can be asked (token attributes, PCR
// policies, session recovery, leaked TPM handles) stays in that backend's own
// tests; a Hardware may also check such invariants in the t.Cleanup of the
// hardware it makes.
//
// BenchSeal, BenchUnseal and BenchSignAuth are the shared benchmarks.
//
// The package imports only the standard library and package keys, so any
// backend's tests can use it.
package keystest

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/keys"
)

// Hardware makes hardware for the suite.
type Hardware interface {
	// New makes new, empty hardware (holding no root) and opens a backend
	// on it. The backend must also implement keys.Provisioner.
	//
	// reopen opens another backend on the same hardware, as a restart of
	// the daemon would; it closes nothing itself. The suite closes every
	// backend it has on that hardware before it calls reopen.
	//
	// New arranges with t.Cleanup to close every backend that it or reopen
	// opened, and to remove the hardware, when t's test ends; the suite may
	// have closed a backend already, and a second Close must return nil.
	New(t testing.TB) (b keys.Backend, reopen func(t testing.TB) keys.Backend)
}

// Run runs the conformance tests against hardware from hw, each as a subtest
// of t with its own hardware. The subtests run one after another.
func Run(t *testing.T, hw Hardware) {
	t.Run("NotProvisioned", func(t *testing.T) { testNotProvisioned(t, hw) })
	t.Run("Provision", func(t *testing.T) { testProvision(t, hw) })
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, hw) })
	t.Run("Tamper", func(t *testing.T) { testTamper(t, hw) })
	t.Run("Generations", func(t *testing.T) { testGenerations(t, hw) })
	t.Run("Derivation", func(t *testing.T) { testDerivation(t, hw) })
	t.Run("InvalidInput", func(t *testing.T) { testInvalidInput(t, hw) })
	t.Run("Restore", func(t *testing.T) { testRestore(t, hw) })
	t.Run("Persistence", func(t *testing.T) { testPersistence(t, hw) })
	t.Run("Concurrency", func(t *testing.T) { testConcurrency(t, hw) })
	t.Run("ContextCanceled", func(t *testing.T) { testContextCanceled(t, hw) })
	t.Run("Close", func(t *testing.T) { testClose(t, hw) })
}

// ---- helpers ----

func newRoot(t testing.TB) []byte {
	t.Helper()
	root := make([]byte, keys.RootSize)
	if _, err := rand.Read(root); err != nil {
		t.Fatal(err)
	}
	return root
}

// fixedRoot is a root whose derived keys are the same in every run, so a
// derivation failure can be reproduced outside the suite.
func fixedRoot() []byte {
	root := make([]byte, keys.RootSize)
	for i := range root {
		root[i] = byte(i*7 + 3)
	}
	return root
}

// provisionErr provisions a copy of root and zeroes the copy afterwards, as a
// ceremony does: a backend that kept a reference to it would derive from
// zeros later.
func provisionErr(t testing.TB, b keys.Backend, root []byte, opts keys.ProvisionOptions) error {
	t.Helper()
	p, ok := b.(keys.Provisioner)
	if !ok {
		t.Fatalf("backend %T does not implement keys.Provisioner", b)
	}
	c := slices.Clone(root)
	defer keys.Zero(c)
	return p.Provision(context.Background(), c, opts)
}

func provision(t testing.TB, b keys.Backend, root []byte, opts keys.ProvisionOptions) {
	t.Helper()
	if err := provisionErr(t, b, root, opts); err != nil {
		t.Fatalf("Provision(generation %d, replace %v): %v", opts.Generation, opts.Replace, err)
	}
}

// provisioned makes new hardware with a random root as generation 1.
func provisioned(t testing.TB, hw Hardware) (keys.Backend, func(testing.TB) keys.Backend, []byte) {
	t.Helper()
	b, reopen := hw.New(t)
	root := newRoot(t)
	provision(t, b, root, keys.ProvisionOptions{Generation: 1})
	return b, reopen, root
}

func seal(t testing.TB, b keys.Backend, p keys.Purpose, pt, aad []byte) []byte {
	t.Helper()
	blob, err := b.Seal(context.Background(), p, pt, aad)
	if err != nil {
		t.Fatalf("Seal(%s, %d bytes): %v", p, len(pt), err)
	}
	return blob
}

func unsealEquals(t testing.TB, b keys.Backend, p keys.Purpose, blob, aad, want []byte, what string) {
	t.Helper()
	got, err := b.Unseal(context.Background(), p, blob, aad)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s: Unseal = %q, %v; want %q", what, got, err, want)
	}
}

func authKey(t testing.TB, b keys.Backend, label string) *ecdsa.PublicKey {
	t.Helper()
	pub, err := b.AuthKey(context.Background(), label)
	if err != nil {
		t.Fatalf("AuthKey(%q): %v", label, err)
	}
	return pub
}

func info(t testing.TB, b keys.Backend) keys.BackendInfo {
	t.Helper()
	in, err := b.Info(context.Background())
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	return in
}

func fingerprint(t testing.TB, root []byte) string {
	t.Helper()
	fp, err := keys.Fingerprint(root)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// wantInfo checks a provisioned backend's Info.
func wantInfo(t testing.TB, b keys.Backend, gen uint32, gens []uint32, fp, when string) {
	t.Helper()
	in := info(t, b)
	if !in.Provisioned || in.Generation != gen || !slices.Equal(in.Generations, gens) || in.RootFingerprint != fp {
		t.Errorf("%s: Info = %+v; want provisioned, generation %d of %v, fingerprint %s", when, in, gen, gens, fp)
	}
}

// derive is the software definition of the P-256 key label under root.
func derive(t testing.TB, root []byte, label string) *ecdsa.PrivateKey {
	t.Helper()
	k, err := keys.DeriveP256(label, func(info []byte) ([]byte, error) { return keys.Expand(root, info) })
	if err != nil {
		t.Fatalf("keys.DeriveP256(%q): %v", label, err)
	}
	return k
}

// softwareGCM is AES-256-GCM under the software definition of purpose p's KEK.
func softwareGCM(t testing.TB, root []byte, p keys.Purpose) cipher.AEAD {
	t.Helper()
	kek, err := keys.Expand(root, keys.KEKInfo(p))
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return gcm
}

// softwareSeal seals pt as generation gen the way the keys package defines a
// blob, without any backend.
func softwareSeal(t testing.TB, root []byte, p keys.Purpose, gen uint32, pt, aad []byte) []byte {
	t.Helper()
	env, err := keys.NewEnvelope(p, gen)
	if err != nil {
		t.Fatal(err)
	}
	env.Ciphertext = softwareGCM(t, root, p).Seal(nil, env.IV, pt, env.AAD(aad))
	return env.Encode()
}

// digest is the SHA-256 of a message that depends on s and i.
func digest(s string, i int) []byte {
	d := sha256.Sum256(fmt.Appendf(nil, "%s message %d", s, i))
	return d[:]
}

// checkSig checks that sig is a low-S DER signature of d under pub.
func checkSig(pub *ecdsa.PublicKey, d, sig []byte) error {
	if !ecdsa.VerifyASN1(pub, d, sig) {
		return errors.New("signature does not verify")
	}
	if !keys.IsLowS(sig) {
		return errors.New("signature has high S")
	}
	return nil
}

func iv(blob []byte) []byte { return blob[headerSize : headerSize+keys.IVSize] }

// headerSize is the length of a blob's header (magic, version, purpose tag,
// generation), which keys does not export.
const headerSize = keys.BlobOverhead - keys.IVSize - keys.TagSize

// ---- conformance tests ----

func testNotProvisioned(t *testing.T, hw Hardware) {
	ctx := context.Background()
	b, _ := hw.New(t)
	// A well-formed blob, so Unseal gets past parsing if it parses first.
	wellFormed := softwareSeal(t, newRoot(t), keys.PurposeWallet, 1, []byte("x"), nil)

	for _, r := range []struct {
		name string
		call func() error
	}{
		{"Seal", func() error { _, err := b.Seal(ctx, keys.PurposeWallet, []byte("x"), nil); return err }},
		{"Seal recovery", func() error { _, err := b.Seal(ctx, keys.PurposeRecovery, nil, nil); return err }},
		{"Unseal well-formed blob", func() error { _, err := b.Unseal(ctx, keys.PurposeWallet, wellFormed, nil); return err }},
		{"Unseal zero blob", func() error {
			_, err := b.Unseal(ctx, keys.PurposeWallet, make([]byte, keys.BlobOverhead), nil)
			return err
		}},
		{"AuthKey audit", func() error { _, err := b.AuthKey(ctx, keys.AuditKeyLabel); return err }},
		{"AuthKey auth", func() error { _, err := b.AuthKey(ctx, "auth/0"); return err }},
		{"SignAuth audit", func() error { _, err := b.SignAuth(ctx, keys.AuditKeyLabel, digest("", 0)); return err }},
		{"SignAuth auth", func() error { _, err := b.SignAuth(ctx, "auth/0", digest("", 0)); return err }},
	} {
		t.Run(r.name, func(t *testing.T) {
			if err := r.call(); !errors.Is(err, keys.ErrNotProvisioned) {
				t.Fatalf("%s = %v, want an error wrapping ErrNotProvisioned", r.name, err)
			}
		})
	}

	in, err := b.Info(ctx)
	if err != nil {
		t.Fatalf("Info before provisioning: %v", err)
	}
	if in.Provisioned || in.Generation != 0 || len(in.Generations) != 0 || in.RootFingerprint != "" {
		t.Errorf("Info before provisioning = %+v, want unprovisioned", in)
	}
	if in.Kind == "" || len(in.Identity) == 0 {
		t.Errorf("Info before provisioning names no hardware: %+v", in)
	}

	// A later Provision makes the same backend usable.
	root := newRoot(t)
	provision(t, b, root, keys.ProvisionOptions{Generation: 1})
	blob := seal(t, b, keys.PurposeWallet, []byte("x"), nil)
	unsealEquals(t, b, keys.PurposeWallet, blob, nil, []byte("x"), "after Provision")
	wantInfo(t, b, 1, []uint32{1}, fingerprint(t, root), "after Provision")
}

func testProvision(t *testing.T, hw Hardware) {
	ctx := context.Background()

	t.Run("InvalidInput", func(t *testing.T) {
		root := newRoot(t)
		rows := []struct {
			name string
			root []byte
			opts keys.ProvisionOptions
		}{
			{"short root", root[:keys.RootSize-1], keys.ProvisionOptions{Generation: 1}},
			{"short root, replace", root[:keys.RootSize-1], keys.ProvisionOptions{Generation: 1, Replace: true}},
			{"short root, generation 9", root[:keys.RootSize-1], keys.ProvisionOptions{Generation: 9}},
			{"long root", append(slices.Clone(root), 0), keys.ProvisionOptions{Generation: 1}},
			{"long root, generation 9", append(slices.Clone(root), 0), keys.ProvisionOptions{Generation: 9}},
			{"empty root", nil, keys.ProvisionOptions{Generation: 1}},
			{"generation 0", root, keys.ProvisionOptions{Generation: 0}},
			{"generation 0, replace", root, keys.ProvisionOptions{Generation: 0, Replace: true}},
		}
		refuseAll := func(t *testing.T, b keys.Backend) {
			t.Helper()
			for _, r := range rows {
				if err := provisionErr(t, b, r.root, r.opts); !errors.Is(err, keys.ErrInvalidInput) {
					t.Errorf("%s: Provision = %v, want ErrInvalidInput", r.name, err)
				}
			}
		}

		t.Run("fresh", func(t *testing.T) {
			b, _ := hw.New(t)
			refuseAll(t, b)
			if in := info(t, b); in.Provisioned {
				t.Errorf("Info after refused provisioning = %+v, want unprovisioned", in)
			}
			if _, err := b.Seal(ctx, keys.PurposeWallet, nil, nil); !errors.Is(err, keys.ErrNotProvisioned) {
				t.Errorf("Seal after refused provisioning = %v, want ErrNotProvisioned", err)
			}
		})
		t.Run("provisioned", func(t *testing.T) {
			b, _, root1 := provisioned(t, hw)
			blob := seal(t, b, keys.PurposeWallet, []byte("before"), nil)
			refuseAll(t, b)
			wantInfo(t, b, 1, []uint32{1}, fingerprint(t, root1), "after refused provisioning")
			unsealEquals(t, b, keys.PurposeWallet, blob, nil, []byte("before"), "after refused provisioning")
		})
	})

	t.Run("Twice", func(t *testing.T) {
		b, reopen, root1 := provisioned(t, hw)
		old := seal(t, b, keys.PurposeRecovery, []byte("share"), nil)
		audit := authKey(t, b, keys.AuditKeyLabel)
		for _, r := range []struct {
			name string
			root []byte
		}{{"same root", root1}, {"another root", newRoot(t)}} {
			err := provisionErr(t, b, r.root, keys.ProvisionOptions{Generation: 1})
			if !errors.Is(err, keys.ErrAlreadyProvisioned) {
				t.Fatalf("second Provision with %s = %v, want ErrAlreadyProvisioned", r.name, err)
			}
		}
		// Refusing changed nothing, in this backend or in a new one.
		fp1 := fingerprint(t, root1)
		wantInfo(t, b, 1, []uint32{1}, fp1, "after a refused Provision")
		unsealEquals(t, b, keys.PurposeRecovery, old, nil, []byte("share"), "after a refused Provision")
		if !authKey(t, b, keys.AuditKeyLabel).Equal(audit) {
			t.Errorf("the audit key changed after a refused Provision")
		}
		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		b = reopen(t)
		wantInfo(t, b, 1, []uint32{1}, fp1, "reopened after a refused Provision")
		unsealEquals(t, b, keys.PurposeRecovery, old, nil, []byte("share"), "reopened after a refused Provision")
	})

	t.Run("Replace", func(t *testing.T) {
		b, reopen, _ := provisioned(t, hw)
		old := seal(t, b, keys.PurposeWallet, []byte("before"), nil)
		audit1 := authKey(t, b, keys.AuditKeyLabel)

		root2 := newRoot(t)
		provision(t, b, root2, keys.ProvisionOptions{Generation: 1, Replace: true})
		fp2 := fingerprint(t, root2)
		check := func(t *testing.T, b keys.Backend, when string) {
			t.Helper()
			wantInfo(t, b, 1, []uint32{1}, fp2, when)
			// The old KEK is gone, so the old blob no longer authenticates.
			if _, err := b.Unseal(ctx, keys.PurposeWallet, old, nil); !errors.Is(err, keys.ErrAuthFailed) {
				t.Errorf("%s: Unseal of a blob of the replaced root = %v, want ErrAuthFailed", when, err)
			}
			audit2 := authKey(t, b, keys.AuditKeyLabel)
			if audit2.Equal(audit1) {
				t.Errorf("%s: the audit key survived Replace with a new root", when)
			}
			if !audit2.Equal(&derive(t, root2, keys.AuditKeyLabel).PublicKey) {
				t.Errorf("%s: the audit key is not the one derived from the new root", when)
			}
		}
		check(t, b, "after Replace")
		blob2 := seal(t, b, keys.PurposeWallet, []byte("after"), nil)
		unsealEquals(t, b, keys.PurposeWallet, blob2, nil, []byte("after"), "round trip after Replace")

		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		b = reopen(t)
		check(t, b, "reopened after Replace")
		unsealEquals(t, b, keys.PurposeWallet, blob2, nil, []byte("after"), "reopened after Replace")
	})
}

func testRoundTrip(t *testing.T, hw Hardware) {
	b, _, _ := provisioned(t, hw)
	for _, p := range keys.Purposes {
		for _, size := range []int{0, 1, 64, 4096, keys.MaxPlaintext} {
			t.Run(fmt.Sprintf("%s/%dB", p, size), func(t *testing.T) {
				pt := make([]byte, size)
				if _, err := rand.Read(pt); err != nil {
					t.Fatal(err)
				}
				aad := []byte("wallet-42/" + string(p))
				blob1 := seal(t, b, p, pt, aad)
				blob2 := seal(t, b, p, pt, aad)
				if want := size + keys.BlobOverhead; len(blob1) != want {
					t.Errorf("blob is %d bytes, want %d", len(blob1), want)
				}
				if gen, err := keys.BlobGeneration(blob1); err != nil || gen != 1 {
					t.Errorf("BlobGeneration = %d, %v; want 1", gen, err)
				}
				// A fresh IV each time: the same plaintext never seals the same.
				if bytes.Equal(blob1, blob2) {
					t.Errorf("two seals of the same plaintext are identical")
				}
				if bytes.Equal(iv(blob1), iv(blob2)) {
					t.Errorf("two seals used the same IV %x", iv(blob1))
				}
				for i, blob := range [][]byte{blob1, blob2} {
					got, err := b.Unseal(context.Background(), p, blob, aad)
					if err != nil {
						t.Fatalf("Unseal of seal #%d: %v", i+1, err)
					}
					if !bytes.Equal(got, pt) {
						t.Fatalf("round trip #%d changed the plaintext", i+1)
					}
				}
			})
		}
	}
	t.Run("over MaxPlaintext", func(t *testing.T) {
		for _, p := range keys.Purposes {
			if blob, err := b.Seal(context.Background(), p, make([]byte, keys.MaxPlaintext+1), nil); !errors.Is(err, keys.ErrInvalidInput) || blob != nil {
				t.Errorf("Seal(%s) of MaxPlaintext+1 bytes = %d bytes, %v; want ErrInvalidInput", p, len(blob), err)
			}
		}
	})
}

func testTamper(t *testing.T, hw Hardware) {
	ctx := context.Background()
	b, _, _ := provisioned(t, hw)
	pt := bytes.Repeat([]byte("secret!!"), 8)
	aad := []byte("wallet-7")
	blob1 := seal(t, b, keys.PurposeWallet, pt, aad)
	// Generation 3 exists too, so a header edit can name a generation the
	// hardware holds, and must then fail the tag check.
	provision(t, b, newRoot(t), keys.ProvisionOptions{Generation: 3})
	held := []uint32{1, 3}
	blob3 := seal(t, b, keys.PurposeWallet, pt, aad)
	if gen, _ := keys.BlobGeneration(blob3); gen != 3 {
		t.Fatalf("Seal used generation %d, want the highest, 3", gen)
	}

	rejects := func(t *testing.T, what string, p keys.Purpose, blob, aad []byte, want error) {
		t.Helper()
		got, err := b.Unseal(ctx, p, blob, aad)
		if !errors.Is(err, want) {
			t.Fatalf("%s: Unseal = %x, %v; want an error wrapping %v", what, got, err, want)
		}
		if got != nil {
			t.Errorf("%s: Unseal returned %d bytes with its error", what, len(got))
		}
		if errors.Is(err, keys.ErrUnavailable) {
			t.Errorf("%s: error %v also says the hardware is unavailable", what, err)
		}
	}
	edit := func(blob []byte, i int, mask byte) []byte {
		out := slices.Clone(blob)
		out[i] ^= mask
		return out
	}
	const genAt = headerSize - 4

	for _, c := range []struct {
		name string
		blob []byte
	}{{"gen1", blob1}, {"gen3", blob3}} {
		t.Run(c.name, func(t *testing.T) {
			blob := c.blob
			ivAt, ctAt, tagAt := headerSize, headerSize+keys.IVSize, len(blob)-keys.TagSize
			for _, region := range []struct {
				name     string
				from, to int
			}{
				{"header", 0, ivAt},
				{"IV", ivAt, ctAt},
				{"ciphertext", ctAt, tagAt},
				{"tag", tagAt, len(blob)},
			} {
				// Every single-bit flip in the region.
				t.Run("bit flips/"+region.name, func(t *testing.T) {
					for i := region.from; i < region.to; i++ {
						for bit := range 8 {
							edited := edit(blob, i, 1<<bit)
							want := keys.ErrAuthFailed
							if i >= genAt && i < headerSize {
								if g := binary.BigEndian.Uint32(edited[genAt:headerSize]); g != 0 && !slices.Contains(held, g) {
									want = keys.ErrUnknownGeneration
								}
							}
							rejects(t, fmt.Sprintf("byte %d bit %d", i, bit), keys.PurposeWallet, edited, aad, want)
						}
					}
				})
			}
			for _, r := range []struct {
				name    string
				purpose keys.Purpose
				blob    []byte
				aad     []byte
				want    error
			}{
				{"header relabelled to the other purpose", keys.PurposeWallet, edit(blob, 2, 0x03), aad, keys.ErrAuthFailed},
				// Relabelled to recovery, the header parses, and only the
				// recovery KEK's tag check can refuse it.
				{"other purpose, header relabelled", keys.PurposeRecovery, edit(blob, 2, 0x03), aad, keys.ErrAuthFailed},
				{"other purpose", keys.PurposeRecovery, blob, aad, keys.ErrAuthFailed},
				{"wrong aad", keys.PurposeWallet, blob, []byte("wallet-8"), keys.ErrAuthFailed},
				{"no aad", keys.PurposeWallet, blob, nil, keys.ErrAuthFailed},
				{"aad with a byte added", keys.PurposeWallet, blob, append(slices.Clone(aad), 0), keys.ErrAuthFailed},
				{"truncated by one byte", keys.PurposeWallet, blob[:len(blob)-1], aad, keys.ErrAuthFailed},
				{"a byte appended", keys.PurposeWallet, append(slices.Clone(blob), 0), aad, keys.ErrAuthFailed},
				{"shorter than the overhead", keys.PurposeWallet, blob[:keys.BlobOverhead-1], aad, keys.ErrAuthFailed},
				{"empty", keys.PurposeWallet, nil, aad, keys.ErrAuthFailed},
				{"unknown purpose", keys.Purpose("audit"), blob, aad, keys.ErrInvalidInput},
			} {
				t.Run(r.name, func(t *testing.T) { rejects(t, r.name, r.purpose, r.blob, r.aad, r.want) })
			}
			// The untouched blob still unseals: the failures left no broken state.
			unsealEquals(t, b, keys.PurposeWallet, blob, aad, pt, "the untouched blob")
		})
	}
}

func testGenerations(t *testing.T, hw Hardware) {
	b, reopen, root1 := provisioned(t, hw)
	old := seal(t, b, keys.PurposeRecovery, []byte("share"), nil)
	oldAudit := authKey(t, b, keys.AuditKeyLabel)
	if !oldAudit.Equal(&derive(t, root1, keys.AuditKeyLabel).PublicKey) {
		t.Errorf("generation-1 audit key is not the one derived from its root")
	}

	root2 := newRoot(t)
	provision(t, b, root2, keys.ProvisionOptions{Generation: 2})
	fp2 := fingerprint(t, root2)
	wantAudit := &derive(t, root2, keys.AuditKeyLabel).PublicKey
	blob2 := seal(t, b, keys.PurposeRecovery, []byte("share 2"), nil)
	if gen, _ := keys.BlobGeneration(blob2); gen != 2 {
		t.Errorf("Seal used generation %d, want the highest, 2", gen)
	}
	check := func(b keys.Backend, when string) {
		t.Helper()
		wantInfo(t, b, 2, []uint32{1, 2}, fp2, when)
		unsealEquals(t, b, keys.PurposeRecovery, old, nil, []byte("share"), when+": generation-1 blob")
		unsealEquals(t, b, keys.PurposeRecovery, blob2, nil, []byte("share 2"), when+": generation-2 blob")
		// Keys follow the current generation, derived from its root.
		audit := authKey(t, b, keys.AuditKeyLabel)
		if !audit.Equal(wantAudit) || audit.Equal(oldAudit) {
			t.Errorf("%s: the audit key is not the one derived from the generation-2 root", when)
		}
		sig, err := b.SignAuth(context.Background(), keys.AuditKeyLabel, digest("gen2", 0))
		if err != nil {
			t.Fatalf("%s: SignAuth: %v", when, err)
		}
		if err := checkSig(wantAudit, digest("gen2", 0), sig); err != nil {
			t.Errorf("%s: audit signature: %v", when, err)
		}
	}
	check(b, "after provisioning generation 2")
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	check(reopen(t), "reopened")
}

// testDerivation proves the backend derives exactly what keys.Expand derives
// from the same root, so every backend and a restore agree.
func testDerivation(t *testing.T, hw Hardware) {
	ctx := context.Background()
	b, _ := hw.New(t)
	root := fixedRoot()
	provision(t, b, root, keys.ProvisionOptions{Generation: 1})

	t.Run("fingerprint", func(t *testing.T) {
		if got, want := info(t, b).RootFingerprint, fingerprint(t, root); got != want {
			t.Errorf("RootFingerprint = %s, want %s", got, want)
		}
	})

	labels := []string{keys.AuditKeyLabel, "auth/0", "auth/ops/1", "auth/ops.alice-1", "auth/a/b/c_d", "x"}
	for _, label := range labels {
		t.Run("p256/"+label, func(t *testing.T) {
			want := derive(t, root, label)
			pub := authKey(t, b, label)
			if !pub.Equal(&want.PublicKey) {
				t.Fatalf("AuthKey(%q) differs from keys.DeriveP256", label)
			}
			// The returned key is the caller's: changing it must not
			// change what the backend returns next.
			pub.Curve = nil
			if again := authKey(t, b, label); !again.Equal(&want.PublicKey) {
				t.Fatalf("AuthKey(%q) after the caller modified its copy differs", label)
			}
			for i := range 200 {
				d := digest(label, i)
				sig, err := b.SignAuth(ctx, label, d)
				if err != nil {
					t.Fatalf("SignAuth #%d: %v", i, err)
				}
				if err := checkSig(&want.PublicKey, d, sig); err != nil {
					t.Fatalf("signature #%d: %v", i, err)
				}
			}
		})
	}

	for _, p := range keys.Purposes {
		t.Run("kek/"+string(p), func(t *testing.T) {
			gcm := softwareGCM(t, root, p)
			aad := []byte("aad-" + string(p))

			// The backend seals, software opens.
			blob := seal(t, b, p, []byte("sealed by the backend"), aad)
			env, err := keys.ParseEnvelope(p, blob)
			if err != nil {
				t.Fatal(err)
			}
			got, err := gcm.Open(nil, env.IV, env.Ciphertext, env.AAD(aad))
			if err != nil || string(got) != "sealed by the backend" {
				t.Fatalf("software AES-GCM with keys.Expand(root, KEKInfo) = %q, %v", got, err)
			}

			// Software seals, the backend opens.
			sw := softwareSeal(t, root, p, 1, []byte("sealed in software"), aad)
			unsealEquals(t, b, p, sw, aad, []byte("sealed in software"), "software-sealed blob")
		})
	}
}

func testInvalidInput(t *testing.T, hw Hardware) {
	ctx := context.Background()
	b, _, _ := provisioned(t, hw)
	blob := seal(t, b, keys.PurposeWallet, []byte("x"), nil)
	type row struct {
		name string
		call func() error
	}
	rows := []row{
		{"Seal unknown purpose", func() error { _, err := b.Seal(ctx, "other", []byte("x"), nil); return err }},
		{"Seal empty purpose", func() error { _, err := b.Seal(ctx, "", []byte("x"), nil); return err }},
		{"Unseal unknown purpose", func() error { _, err := b.Unseal(ctx, "other", blob, nil); return err }},
		{"Unseal purpose named like a key", func() error { _, err := b.Unseal(ctx, keys.AuditKeyLabel, blob, nil); return err }},
		{"Seal over MaxPlaintext", func() error {
			_, err := b.Seal(ctx, keys.PurposeWallet, make([]byte, keys.MaxPlaintext+1), nil)
			return err
		}},
	}
	for _, d := range []struct {
		name string
		d    []byte
	}{{"nil", nil}, {"short", make([]byte, 31)}, {"long", make([]byte, 33)}, {"SHA-512 sized", make([]byte, 64)}} {
		rows = append(rows, row{"SignAuth " + d.name + " digest", func() error {
			_, err := b.SignAuth(ctx, keys.AuditKeyLabel, d.d)
			return err
		}})
	}
	for _, label := range []string{"", "Auth/X", "Audit", "../audit", "auth/../root", "/auth", "auth/white space"} {
		rows = append(rows,
			row{fmt.Sprintf("AuthKey label %q", label), func() error { _, err := b.AuthKey(ctx, label); return err }},
			row{fmt.Sprintf("SignAuth label %q", label), func() error { _, err := b.SignAuth(ctx, label, digest("", 0)); return err }},
		)
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			if err := r.call(); !errors.Is(err, keys.ErrInvalidInput) {
				t.Fatalf("%s = %v, want ErrInvalidInput", r.name, err)
			}
		})
	}
}

// testRestore provisions the same root on two pieces of hardware, as a
// restore onto new hardware does.
func testRestore(t *testing.T, hw Hardware) {
	ctx := context.Background()
	a, _, root := provisioned(t, hw)
	b, _ := hw.New(t)
	provision(t, b, root, keys.ProvisionOptions{Generation: 1})

	for _, p := range keys.Purposes {
		blob := seal(t, a, p, []byte("moves with the root"), []byte("id"))
		unsealEquals(t, b, p, blob, []byte("id"), []byte("moves with the root"), string(p)+": sealed on A, unsealed on B")
		blob = seal(t, b, p, []byte("and back"), []byte("id"))
		unsealEquals(t, a, p, blob, []byte("id"), []byte("and back"), string(p)+": sealed on B, unsealed on A")
	}
	for _, label := range []string{keys.AuditKeyLabel, "auth/0", "auth/7"} {
		pa, pb := authKey(t, a, label), authKey(t, b, label)
		if !pa.Equal(pb) {
			t.Errorf("AuthKey(%q) differs between the two pieces of hardware", label)
		}
		d := digest(label, 3)
		sig, err := b.SignAuth(ctx, label, d)
		if err != nil {
			t.Fatalf("SignAuth(%q) on B: %v", label, err)
		}
		if err := checkSig(pa, d, sig); err != nil {
			t.Errorf("B's %q signature under A's key: %v", label, err)
		}
	}
	ia, ib := info(t, a), info(t, b)
	if ia.RootFingerprint != ib.RootFingerprint || ia.RootFingerprint != fingerprint(t, root) {
		t.Errorf("fingerprints %q and %q, want both %q", ia.RootFingerprint, ib.RootFingerprint, fingerprint(t, root))
	}
	if maps.Equal(ia.Identity, ib.Identity) {
		t.Errorf("two pieces of hardware report the same identity %v", ia.Identity)
	}
}

// testPersistence closes the backend and opens the same hardware again.
func testPersistence(t *testing.T, hw Hardware) {
	ctx := context.Background()
	b, reopen, root := provisioned(t, hw)
	blobs := map[keys.Purpose][]byte{}
	for _, p := range keys.Purposes {
		blobs[p] = seal(t, b, p, []byte("kept/"+string(p)), []byte("id"))
	}
	labels := []string{keys.AuditKeyLabel, "auth/persist"}
	pubs := map[string]*ecdsa.PublicKey{}
	for _, label := range labels {
		pubs[label] = authKey(t, b, label)
	}
	fp := fingerprint(t, root)
	wantInfo(t, b, 1, []uint32{1}, fp, "before Close")
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	b = reopen(t)
	for _, p := range keys.Purposes {
		unsealEquals(t, b, p, blobs[p], []byte("id"), []byte("kept/"+string(p)), string(p)+" after reopening")
	}
	for _, label := range labels {
		if !authKey(t, b, label).Equal(pubs[label]) {
			t.Errorf("AuthKey(%q) after reopening differs", label)
		}
		d := digest(label, 0)
		sig, err := b.SignAuth(ctx, label, d)
		if err != nil {
			t.Fatalf("SignAuth(%q) after reopening: %v", label, err)
		}
		if err := checkSig(pubs[label], d, sig); err != nil {
			t.Errorf("%q signature after reopening: %v", label, err)
		}
	}
	wantInfo(t, b, 1, []uint32{1}, fp, "after reopening")
}

// testConcurrency runs every operation from 16 goroutines at once, including
// the first use of new labels. Run it with -race.
func testConcurrency(t *testing.T, hw Hardware) {
	b, _, root := provisioned(t, hw)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fp := fingerprint(t, root)
	labels := []string{"auth/race/shared", "auth/race/a", "auth/race/b", "auth/race/c"}
	want := map[string]*ecdsa.PublicKey{}
	for _, label := range labels {
		want[label] = &derive(t, root, label).PublicKey
	}
	const workers, iters = 16, 30
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-start
			// Everyone asks for the same new keys at the same moment.
			d := digest("first", w)
			sig, err := b.SignAuth(ctx, labels[0], d)
			if err != nil {
				t.Errorf("worker %d: first SignAuth: %v", w, err)
				return
			}
			if err := checkSig(want[labels[0]], d, sig); err != nil {
				t.Errorf("worker %d: first signature: %v", w, err)
				return
			}
			if pub, err := b.AuthKey(ctx, labels[1+w%3]); err != nil || !pub.Equal(want[labels[1+w%3]]) {
				t.Errorf("worker %d: first AuthKey(%q) differs from the derivation (%v)", w, labels[1+w%3], err)
				return
			}
			for i := range iters {
				p := keys.Purposes[(w+i)%len(keys.Purposes)]
				pt := fmt.Appendf(nil, "worker %d iteration %d", w, i)
				aad := fmt.Appendf(nil, "w%d", w)
				blob, err := b.Seal(ctx, p, pt, aad)
				if err != nil {
					t.Errorf("worker %d: Seal: %v", w, err)
					return
				}
				got, err := b.Unseal(ctx, p, blob, aad)
				if err != nil || !bytes.Equal(got, pt) {
					t.Errorf("worker %d: Unseal = %q, %v", w, got, err)
					return
				}
				label := labels[(w+i)%len(labels)]
				d := digest(label, w*iters+i)
				sig, err := b.SignAuth(ctx, label, d)
				if err != nil {
					t.Errorf("worker %d: SignAuth: %v", w, err)
					return
				}
				if err := checkSig(want[label], d, sig); err != nil {
					t.Errorf("worker %d: signature under %q: %v", w, label, err)
					return
				}
				if pub, err := b.AuthKey(ctx, label); err != nil || !pub.Equal(want[label]) {
					t.Errorf("worker %d: AuthKey(%q) differs from the derivation (%v)", w, label, err)
					return
				}
				if i%5 == 0 {
					if in, err := b.Info(ctx); err != nil || !in.Provisioned || in.RootFingerprint != fp {
						t.Errorf("worker %d: Info = %+v, %v", w, in, err)
						return
					}
				}
			}
		})
	}
	close(start)
	wg.Wait()
}

// testContextCanceled calls the methods that do the work with a context
// that is already cancelled, before and after their first use.
func testContextCanceled(t *testing.T, hw Hardware) {
	b, _, _ := provisioned(t, hw)
	live := context.Background()
	blob := seal(t, b, keys.PurposeWallet, []byte("x"), nil)
	dead, cancel := context.WithCancel(live)
	cancel()
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Seal", func(ctx context.Context) error {
			_, err := b.Seal(ctx, keys.PurposeRecovery, []byte("x"), nil)
			return err
		}},
		{"Unseal", func(ctx context.Context) error { _, err := b.Unseal(ctx, keys.PurposeWallet, blob, nil); return err }},
		{"SignAuth", func(ctx context.Context) error { _, err := b.SignAuth(ctx, "auth/ctx", digest("", 0)); return err }},
	}
	for _, when := range []string{"first use", "after use"} {
		for _, c := range calls {
			if err := c.call(dead); !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %s with a canceled context = %v, want context.Canceled", when, c.name, err)
			}
		}
		for _, c := range calls {
			if err := c.call(live); err != nil {
				t.Fatalf("%s: %s with a live context: %v", when, c.name, err)
			}
		}
	}
}

func testClose(t *testing.T, hw Hardware) {
	ctx := context.Background()
	b, reopen, root := provisioned(t, hw)
	blob := seal(t, b, keys.PurposeWallet, []byte("x"), nil)
	if _, err := b.SignAuth(ctx, keys.AuditKeyLabel, digest("", 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AuthKey(ctx, keys.AuditKeyLabel); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, r := range []struct {
		name string
		call func() error
	}{
		{"Seal", func() error { _, err := b.Seal(ctx, keys.PurposeWallet, []byte("x"), nil); return err }},
		{"Unseal", func() error { _, err := b.Unseal(ctx, keys.PurposeWallet, blob, nil); return err }},
		{"AuthKey", func() error { _, err := b.AuthKey(ctx, "auth/after-close"); return err }},
		// A key used before Close must not be answered from a cache.
		{"AuthKey of a key in use", func() error { _, err := b.AuthKey(ctx, keys.AuditKeyLabel); return err }},
		{"SignAuth", func() error { _, err := b.SignAuth(ctx, keys.AuditKeyLabel, digest("", 0)); return err }},
		{"Info", func() error { _, err := b.Info(ctx); return err }},
		{"Provision", func() error { return provisionErr(t, b, root, keys.ProvisionOptions{Generation: 2}) }},
	} {
		t.Run(r.name, func(t *testing.T) {
			if err := r.call(); !errors.Is(err, keys.ErrUnavailable) {
				t.Fatalf("%s after Close = %v, want ErrUnavailable", r.name, err)
			}
		})
	}
	// The refused Provision did not reach the hardware.
	b = reopen(t)
	wantInfo(t, b, 1, []uint32{1}, fingerprint(t, root), "reopened after Close")
	unsealEquals(t, b, keys.PurposeWallet, blob, nil, []byte("x"), "reopened after Close")
}

// ---- benchmarks ----

// The benchmarks measure one operation through a provisioned backend on
// hardware from hw, serially and with b.RunParallel, once the keys it uses
// exist. They report costs; they assert none.

func benchBackend(b *testing.B, hw Hardware) keys.Backend {
	b.Helper()
	be, _ := hw.New(b)
	provision(b, be, newRoot(b), keys.ProvisionOptions{Generation: 1})
	return be
}

// benchOp runs op as the sub-benchmarks "serial" and "parallel".
func benchOp(b *testing.B, size int, op func(ctx context.Context) error) {
	ctx := context.Background()
	if err := op(ctx); err != nil { // create and cache the keys outside the timing
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(int64(size))
		for b.Loop() {
			if err := op(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := op(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// benchPlaintext is the size of the secret the Seal and Unseal benchmarks use.
const benchPlaintext = 64

// BenchSeal measures Seal of 64 bytes with aad.
func BenchSeal(b *testing.B, hw Hardware) {
	be := benchBackend(b, hw)
	pt, aad := bytes.Repeat([]byte{7}, benchPlaintext), []byte("wallet-1")
	benchOp(b, len(pt), func(ctx context.Context) error {
		_, err := be.Seal(ctx, keys.PurposeWallet, pt, aad)
		return err
	})
}

// BenchUnseal measures Unseal of a 64-byte secret with aad.
func BenchUnseal(b *testing.B, hw Hardware) {
	be := benchBackend(b, hw)
	pt, aad := bytes.Repeat([]byte{7}, benchPlaintext), []byte("wallet-1")
	blob := seal(b, be, keys.PurposeWallet, pt, aad)
	benchOp(b, len(pt), func(ctx context.Context) error {
		_, err := be.Unseal(ctx, keys.PurposeWallet, blob, aad)
		return err
	})
}

// BenchSignAuth measures SignAuth of a digest with an authorization key.
func BenchSignAuth(b *testing.B, hw Hardware) {
	be := benchBackend(b, hw)
	d := digest("request", 1)
	benchOp(b, 0, func(ctx context.Context) error {
		_, err := be.SignAuth(ctx, "auth/0", d)
		return err
	})
}
