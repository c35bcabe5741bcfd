package hsm_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cachet-custody/cachet/hsm"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
	"github.com/miekg/pkcs11"
)

func TestSealUnsealRoundTrip(t *testing.T) {
	b, _ := provisioned(t, 0)
	ctx := context.Background()
	for _, p := range keys.Purposes {
		for _, size := range []int{0, 1, 64, 4096} {
			t.Run(fmt.Sprintf("%s/%dB", p, size), func(t *testing.T) {
				pt := bytes.Repeat([]byte{0xa5}, size)
				aad := []byte("wallet-42/" + string(p))
				blob := sealT(t, b, p, pt, aad)
				if want := size + keys.BlobOverhead; len(blob) != want {
					t.Errorf("blob is %d bytes, want %d", len(blob), want)
				}
				if gen, err := keys.BlobGeneration(blob); err != nil || gen != 1 {
					t.Errorf("BlobGeneration = %d, %v; want 1", gen, err)
				}
				got, err := b.Unseal(ctx, p, blob, aad)
				if err != nil {
					t.Fatalf("Unseal: %v", err)
				}
				if !bytes.Equal(got, pt) {
					t.Errorf("Unseal returned %x, want %x", got, pt)
				}
				// A fresh IV each time: the same plaintext never seals the same.
				again := sealT(t, b, p, pt, aad)
				if bytes.Equal(blob, again) {
					t.Errorf("two seals of the same plaintext are identical")
				}
				ivs := func(b []byte) []byte { return b[7 : 7+keys.IVSize] }
				if bytes.Equal(ivs(blob), ivs(again)) {
					t.Errorf("two seals used the same IV %x", ivs(blob))
				}
			})
		}
	}
}

func TestSealLargest(t *testing.T) {
	b, _ := provisioned(t, 0)
	pt := bytes.Repeat([]byte{0x3c}, keys.MaxPlaintext)
	blob := sealT(t, b, keys.PurposeRecovery, pt, nil)
	got, err := b.Unseal(context.Background(), keys.PurposeRecovery, blob, nil)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("round trip of %d bytes: %v", len(pt), err)
	}
}

func TestUnsealRejects(t *testing.T) {
	b, _ := provisioned(t, 0)
	ctx := context.Background()
	pt := bytes.Repeat([]byte("secret!!"), 8)
	aad := []byte("wallet-7")
	blob := sealT(t, b, keys.PurposeWallet, pt, aad)
	// Generation 3 exists too, so a blob relabelled from 1 to 3 parses and
	// must then fail the tag check.
	provision(t, b, newRoot(t), keys.ProvisionOptions{Generation: 3})

	const ivAt, ctAt = 7, 7 + keys.IVSize
	flip := func(i int, mask byte) func([]byte) []byte {
		return func(blob []byte) []byte {
			out := slices.Clone(blob)
			if i < 0 {
				i = len(out) + i
			}
			out[i] ^= mask
			return out
		}
	}
	same := func(blob []byte) []byte { return blob }
	rows := []struct {
		name    string
		purpose keys.Purpose
		edit    func([]byte) []byte
		aad     []byte
		want    error
	}{
		{"ciphertext bit", keys.PurposeWallet, flip(ctAt+5, 0x01), aad, keys.ErrAuthFailed},
		{"tag bit", keys.PurposeWallet, flip(-1, 0x80), aad, keys.ErrAuthFailed},
		{"IV bit", keys.PurposeWallet, flip(ivAt+3, 0x10), aad, keys.ErrAuthFailed},
		{"header magic", keys.PurposeWallet, flip(0, 0x01), aad, keys.ErrAuthFailed},
		{"header version", keys.PurposeWallet, flip(1, 0x01), aad, keys.ErrAuthFailed},
		{"header purpose", keys.PurposeWallet, flip(2, 0x03), aad, keys.ErrAuthFailed},
		{"header generation 1 to 3", keys.PurposeWallet, flip(6, 0x02), aad, keys.ErrAuthFailed},
		{"truncated by one byte", keys.PurposeWallet, func(b []byte) []byte { return b[:len(b)-1] }, aad, keys.ErrAuthFailed},
		{"shorter than the overhead", keys.PurposeWallet, func(b []byte) []byte { return b[:keys.BlobOverhead-1] }, aad, keys.ErrAuthFailed},
		{"wrong aad", keys.PurposeWallet, same, []byte("wallet-8"), keys.ErrAuthFailed},
		{"no aad", keys.PurposeWallet, same, nil, keys.ErrAuthFailed},
		{"other purpose", keys.PurposeRecovery, same, aad, keys.ErrAuthFailed},
		// Relabelled to recovery, the header parses, and only the recovery
		// KEK's tag check can refuse it.
		{"other purpose, header relabelled", keys.PurposeRecovery, flip(2, 0x03), aad, keys.ErrAuthFailed},
		{"generation absent", keys.PurposeWallet, flip(6, 0x04), aad, keys.ErrUnknownGeneration},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			got, err := b.Unseal(ctx, r.purpose, r.edit(blob), r.aad)
			if !errors.Is(err, r.want) {
				t.Fatalf("Unseal = %x, %v; want an error wrapping %v", got, err, r.want)
			}
			if got != nil {
				t.Errorf("Unseal returned %d bytes with its error", len(got))
			}
			if errors.Is(err, keys.ErrUnavailable) {
				t.Errorf("error %v also says the token is unavailable", err)
			}
		})
	}
	// The untouched blob still unseals: the failures left no broken state.
	got, err := b.Unseal(ctx, keys.PurposeWallet, blob, aad)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Unseal of the original blob = %x, %v", got, err)
	}
}

func TestGenerations(t *testing.T) {
	b, _ := provisioned(t, 0)
	ctx := context.Background()
	old := sealT(t, b, keys.PurposeRecovery, []byte("share"), nil)
	oldAudit, err := b.AuthKey(ctx, keys.AuditKeyLabel)
	if err != nil {
		t.Fatal(err)
	}
	root2 := newRoot(t)
	provision(t, b, root2, keys.ProvisionOptions{Generation: 2})

	info, err := b.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fp2, _ := keys.Fingerprint(root2)
	if !info.Provisioned || info.Generation != 2 || !slices.Equal(info.Generations, []uint32{1, 2}) || info.RootFingerprint != fp2 {
		t.Errorf("Info = %+v; want generation 2 of [1 2] with fingerprint %s", info, fp2)
	}
	blob := sealT(t, b, keys.PurposeRecovery, []byte("share"), nil)
	if gen, _ := keys.BlobGeneration(blob); gen != 2 {
		t.Errorf("Seal used generation %d, want the highest, 2", gen)
	}
	if got, err := b.Unseal(ctx, keys.PurposeRecovery, old, nil); err != nil || string(got) != "share" {
		t.Errorf("Unseal of a generation-1 blob = %q, %v", got, err)
	}
	// Keys follow the current generation, derived from its root.
	audit, err := b.AuthKey(ctx, keys.AuditKeyLabel)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := keys.DeriveP256(keys.AuditKeyLabel, func(info []byte) ([]byte, error) { return keys.Expand(root2, info) })
	if !audit.Equal(&want.PublicKey) || audit.Equal(oldAudit) {
		t.Errorf("audit key after rotation is not the one derived from the generation-2 root")
	}
}

func TestNotProvisioned(t *testing.T) {
	ctx := context.Background()
	// A blob from another token, so Unseal gets a well-formed envelope.
	other, _ := provisioned(t, 0)
	blob := sealT(t, other, keys.PurposeWallet, []byte("x"), nil)

	label := newToken(t)
	b := open(t, label, 0)

	rows := []struct {
		name string
		call func() error
	}{
		{"Seal", func() error { _, err := b.Seal(ctx, keys.PurposeWallet, []byte("x"), nil); return err }},
		{"Unseal", func() error { _, err := b.Unseal(ctx, keys.PurposeWallet, blob, nil); return err }},
		{"AuthKey", func() error { _, err := b.AuthKey(ctx, keys.AuditKeyLabel); return err }},
		{"SignAuth", func() error { _, err := b.SignAuth(ctx, "auth/0", digest(0)); return err }},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			if err := r.call(); !errors.Is(err, keys.ErrNotProvisioned) {
				t.Fatalf("%s = %v, want an error wrapping ErrNotProvisioned", r.name, err)
			}
		})
	}
	info, err := b.Info(ctx)
	if err != nil {
		t.Fatalf("Info before provisioning: %v", err)
	}
	if info.Provisioned || info.Generation != 0 || len(info.Generations) != 0 || info.RootFingerprint != "" {
		t.Errorf("Info before provisioning = %+v", info)
	}
	if info.Kind != "pkcs11" || info.Identity["token_label"] != label {
		t.Errorf("Info identity = %q %v, want pkcs11 token %q", info.Kind, info.Identity, label)
	}
	for _, k := range []string{"manufacturer", "model", "serial", "library"} {
		if info.Identity[k] == "" {
			t.Errorf("Info.Identity[%q] is empty", k)
		}
	}
}

func TestProvision(t *testing.T) {
	b, root := provisioned(t, 0)
	ctx := context.Background()
	prov := b.(keys.Provisioner)
	blob := sealT(t, b, keys.PurposeWallet, []byte("before"), nil)
	audit1, err := b.AuthKey(ctx, keys.AuditKeyLabel)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("twice", func(t *testing.T) {
		err := prov.Provision(ctx, root, keys.ProvisionOptions{Generation: 1})
		if !errors.Is(err, keys.ErrAlreadyProvisioned) {
			t.Fatalf("second Provision = %v, want ErrAlreadyProvisioned", err)
		}
		// Refusing changed nothing.
		if got, err := b.Unseal(ctx, keys.PurposeWallet, blob, nil); err != nil || string(got) != "before" {
			t.Fatalf("Unseal after a refused Provision = %q, %v", got, err)
		}
	})
	t.Run("invalid input", func(t *testing.T) {
		for _, r := range []struct {
			name string
			root []byte
			opts keys.ProvisionOptions
		}{
			{"short root", root[:31], keys.ProvisionOptions{Generation: 9}},
			{"long root", append(slices.Clone(root), 0), keys.ProvisionOptions{Generation: 9}},
			{"generation 0", root, keys.ProvisionOptions{Generation: 0, Replace: true}},
		} {
			if err := prov.Provision(ctx, r.root, r.opts); !errors.Is(err, keys.ErrInvalidInput) {
				t.Errorf("%s: Provision = %v, want ErrInvalidInput", r.name, err)
			}
		}
	})
	t.Run("replace", func(t *testing.T) {
		root2 := newRoot(t)
		provision(t, b, root2, keys.ProvisionOptions{Generation: 1, Replace: true})
		info, err := b.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fp2, _ := keys.Fingerprint(root2)
		if info.RootFingerprint != fp2 || !slices.Equal(info.Generations, []uint32{1}) {
			t.Errorf("Info after Replace = %+v, want generation 1 with fingerprint %s", info, fp2)
		}
		// The old KEK is gone, so the old blob no longer authenticates.
		if _, err := b.Unseal(ctx, keys.PurposeWallet, blob, nil); !errors.Is(err, keys.ErrAuthFailed) {
			t.Errorf("Unseal of a blob of the replaced root = %v, want ErrAuthFailed", err)
		}
		blob2 := sealT(t, b, keys.PurposeWallet, []byte("after"), nil)
		if got, err := b.Unseal(ctx, keys.PurposeWallet, blob2, nil); err != nil || string(got) != "after" {
			t.Errorf("round trip after Replace = %q, %v", got, err)
		}
		audit2, err := b.AuthKey(ctx, keys.AuditKeyLabel)
		if err != nil {
			t.Fatal(err)
		}
		if audit2.Equal(audit1) {
			t.Errorf("the audit key survived Replace with a new root")
		}
		// Replace destroyed the old objects instead of adding to them.
		for _, o := range []struct {
			class uint
			label string
		}{
			{pkcs11.CKO_SECRET_KEY, hsm.RootLabel(1)},
			{pkcs11.CKO_SECRET_KEY, hsm.KEKLabel(1, keys.PurposeWallet)},
			{pkcs11.CKO_SECRET_KEY, hsm.KEKLabel(1, keys.PurposeRecovery)},
			{pkcs11.CKO_PRIVATE_KEY, hsm.P256Label(1, keys.AuditKeyLabel)},
			{pkcs11.CKO_PUBLIC_KEY, hsm.P256Label(1, keys.AuditKeyLabel)},
		} {
			if n, err := hsm.CountObjects(ctx, b, o.class, o.label); err != nil || n != 1 {
				t.Errorf("%d objects %q of class %d after Replace (%v), want 1", n, o.label, o.class, err)
			}
		}
	})
}

// TestDerivationMatchesSoftware proves the token derives exactly what
// keys.Expand derives from the same root, so the TPM backend and a restore
// agree with it.
func TestDerivationMatchesSoftware(t *testing.T) {
	checkReleased(t)
	ctx := context.Background()
	b := open(t, newToken(t), 0)
	root := make([]byte, keys.RootSize)
	for i := range root {
		root[i] = byte(i*7 + 3)
	}
	provision(t, b, root, keys.ProvisionOptions{Generation: 1})
	expand := func(info []byte) ([]byte, error) { return keys.Expand(root, info) }

	info, err := b.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := keys.Fingerprint(root); info.RootFingerprint != want {
		t.Errorf("RootFingerprint = %s, want %s", info.RootFingerprint, want)
	}

	for _, label := range []string{keys.AuditKeyLabel, "auth/0", "auth/ops.alice-1", "auth/a/b/c_d"} {
		t.Run("p256/"+label, func(t *testing.T) {
			want, err := keys.DeriveP256(label, expand)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := b.AuthKey(ctx, label)
			if err != nil {
				t.Fatal(err)
			}
			if !pub.Equal(&want.PublicKey) {
				t.Fatalf("AuthKey(%q) differs from the software derivation", label)
			}
			for i := range 100 {
				sig, err := b.SignAuth(ctx, label, digest(i))
				if err != nil {
					t.Fatalf("SignAuth #%d: %v", i, err)
				}
				if !ecdsa.VerifyASN1(pub, digest(i), sig) {
					t.Fatalf("signature #%d does not verify", i)
				}
				if !keys.IsLowS(sig) {
					t.Fatalf("signature #%d has high S", i)
				}
			}
		})
	}

	for _, p := range keys.Purposes {
		t.Run("kek/"+string(p), func(t *testing.T) {
			kek, err := keys.Expand(root, keys.KEKInfo(p))
			if err != nil {
				t.Fatal(err)
			}
			block, _ := aes.NewCipher(kek)
			gcm, _ := cipher.NewGCM(block)
			aad := []byte("aad-" + string(p))

			// Token seals, software opens.
			blob := sealT(t, b, p, []byte("sealed in the token"), aad)
			env, err := keys.ParseEnvelope(p, blob)
			if err != nil {
				t.Fatal(err)
			}
			got, err := gcm.Open(nil, env.IV, env.Ciphertext, env.AAD(aad))
			if err != nil || string(got) != "sealed in the token" {
				t.Fatalf("software AES-GCM with keys.Expand(root, KEKInfo) = %q, %v", got, err)
			}

			// Software seals, token opens.
			env, err = keys.NewEnvelope(p, 1)
			if err != nil {
				t.Fatal(err)
			}
			env.Ciphertext = gcm.Seal(nil, env.IV, []byte("sealed in software"), env.AAD(aad))
			got, err = b.Unseal(ctx, p, env.Encode(), aad)
			if err != nil || string(got) != "sealed in software" {
				t.Fatalf("Unseal of a software-sealed blob = %q, %v", got, err)
			}
		})
	}
}

// TestKeysStayInToken reads the key objects' attributes back through raw
// PKCS#11 calls: nothing Cachet imports can be read or wrapped out, and each
// key can do only its job.
func TestKeysStayInToken(t *testing.T) {
	b, _ := provisioned(t, 0)
	ctx := context.Background()
	const firstUse = "auth/first-use"
	if _, err := b.SignAuth(ctx, firstUse, digest(1)); err != nil {
		t.Fatal(err)
	}
	keyType := func(kt uint) []byte { return pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, kt).Value }
	common := map[uint]bool{
		pkcs11.CKA_TOKEN: true, pkcs11.CKA_PRIVATE: true, pkcs11.CKA_SENSITIVE: true,
		pkcs11.CKA_EXTRACTABLE: false, pkcs11.CKA_MODIFIABLE: false,
	}
	with := func(m map[uint]bool) map[uint]bool {
		out := maps.Clone(common)
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	kek := with(map[uint]bool{
		pkcs11.CKA_ENCRYPT: true, pkcs11.CKA_DECRYPT: true, pkcs11.CKA_SIGN: false,
		pkcs11.CKA_DERIVE: false, pkcs11.CKA_WRAP: false, pkcs11.CKA_UNWRAP: false,
	})
	ec := with(map[uint]bool{
		pkcs11.CKA_SIGN: true, pkcs11.CKA_DECRYPT: false, pkcs11.CKA_DERIVE: false, pkcs11.CKA_UNWRAP: false,
	})
	rows := []struct {
		name    string
		class   uint
		label   string
		keyType []byte
		want    map[uint]bool
	}{
		{"root", pkcs11.CKO_SECRET_KEY, hsm.RootLabel(1), keyType(pkcs11.CKK_GENERIC_SECRET), with(map[uint]bool{
			pkcs11.CKA_SIGN: true, pkcs11.CKA_VERIFY: false, pkcs11.CKA_ENCRYPT: false, pkcs11.CKA_DECRYPT: false,
			pkcs11.CKA_DERIVE: false, pkcs11.CKA_WRAP: false, pkcs11.CKA_UNWRAP: false,
		})},
		{"wallet KEK", pkcs11.CKO_SECRET_KEY, hsm.KEKLabel(1, keys.PurposeWallet), keyType(pkcs11.CKK_AES), kek},
		{"recovery KEK", pkcs11.CKO_SECRET_KEY, hsm.KEKLabel(1, keys.PurposeRecovery), keyType(pkcs11.CKK_AES), kek},
		{"audit private key", pkcs11.CKO_PRIVATE_KEY, hsm.P256Label(1, keys.AuditKeyLabel), keyType(pkcs11.CKK_EC), ec},
		{"private key created on first use", pkcs11.CKO_PRIVATE_KEY, hsm.P256Label(1, firstUse), keyType(pkcs11.CKK_EC), ec},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			types := []uint{pkcs11.CKA_KEY_TYPE}
			for a := range r.want {
				types = append(types, a)
			}
			got, err := hsm.Attributes(ctx, b, r.class, r.label, types...)
			if err != nil {
				t.Fatalf("read attributes of %q: %v", r.label, err)
			}
			if !bytes.Equal(got[pkcs11.CKA_KEY_TYPE], r.keyType) {
				t.Errorf("CKA_KEY_TYPE = %x, want %x", got[pkcs11.CKA_KEY_TYPE], r.keyType)
			}
			for a, want := range r.want {
				v := got[a]
				if len(v) != 1 || (v[0] != 0) != want {
					t.Errorf("attribute 0x%x = %x, want %v", a, v, want)
				}
			}

			_, err = hsm.Attributes(ctx, b, r.class, r.label, pkcs11.CKA_VALUE)
			var rv pkcs11.Error
			if !errors.As(err, &rv) || rv != pkcs11.CKR_ATTRIBUTE_SENSITIVE {
				t.Errorf("reading CKA_VALUE = %v, want CKR_ATTRIBUTE_SENSITIVE", err)
			}

			for _, a := range []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
				pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
			} {
				if err := hsm.SetAttribute(ctx, b, r.class, r.label, a); err == nil {
					t.Errorf("setting attribute 0x%x to %x succeeded", a.Type, a.Value)
				}
			}
			got, err = hsm.Attributes(ctx, b, r.class, r.label, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_SENSITIVE, pkcs11.CKA_DERIVE)
			if err != nil {
				t.Fatal(err)
			}
			if got[pkcs11.CKA_EXTRACTABLE][0] != 0 || got[pkcs11.CKA_SENSITIVE][0] != 1 || got[pkcs11.CKA_DERIVE][0] != 0 {
				t.Errorf("attributes changed after refused updates: %v", got)
			}
		})
	}

	t.Run("public key object", func(t *testing.T) {
		pub, err := b.AuthKey(ctx, firstUse)
		if err != nil {
			t.Fatal(err)
		}
		point, _ := pub.Bytes()
		got, err := hsm.Attributes(ctx, b, pkcs11.CKO_PUBLIC_KEY, hsm.P256Label(1, firstUse), pkcs11.CKA_EC_POINT, pkcs11.CKA_EC_PARAMS)
		if err != nil {
			t.Fatal(err)
		}
		// DER OCTET STRING (04 41) around the 65-byte point.
		if want := append([]byte{0x04, 0x41}, point...); !bytes.Equal(got[pkcs11.CKA_EC_POINT], want) {
			t.Errorf("CKA_EC_POINT = %x, want %x", got[pkcs11.CKA_EC_POINT], want)
		}
		if want := []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}; !bytes.Equal(got[pkcs11.CKA_EC_PARAMS], want) {
			t.Errorf("CKA_EC_PARAMS = %x, want the P-256 OID %x", got[pkcs11.CKA_EC_PARAMS], want)
		}
	})
}

// TestRestoreOntoSecondToken provisions the same root on two tokens in one
// process, as `cachet restore` does on new hardware.
func TestRestoreOntoSecondToken(t *testing.T) {
	checkReleased(t)
	ctx := context.Background()
	a := open(t, newToken(t), 0)
	b := open(t, newToken(t), 0)
	root := newRoot(t)
	provision(t, a, root, keys.ProvisionOptions{Generation: 1})
	provision(t, b, slices.Clone(root), keys.ProvisionOptions{Generation: 1})

	for _, p := range keys.Purposes {
		blob := sealT(t, a, p, []byte("moves with the root"), []byte("id"))
		got, err := b.Unseal(ctx, p, blob, []byte("id"))
		if err != nil || string(got) != "moves with the root" {
			t.Errorf("%s: blob sealed on token A unseals on token B as %q, %v", p, got, err)
		}
	}
	for _, label := range []string{keys.AuditKeyLabel, "auth/7"} {
		pa, err := a.AuthKey(ctx, label)
		if err != nil {
			t.Fatal(err)
		}
		pb, err := b.AuthKey(ctx, label)
		if err != nil {
			t.Fatal(err)
		}
		if !pa.Equal(pb) {
			t.Errorf("AuthKey(%q) differs between the tokens", label)
		}
		sig, err := b.SignAuth(ctx, label, digest(3))
		if err != nil || !ecdsa.VerifyASN1(pa, digest(3), sig) {
			t.Errorf("token B's %q signature does not verify under token A's key (%v)", label, err)
		}
	}
	ia, errA := a.Info(ctx)
	ib, errB := b.Info(ctx)
	if errA != nil || errB != nil || ia.RootFingerprint != ib.RootFingerprint {
		t.Errorf("fingerprints %q (%v) and %q (%v) differ", ia.RootFingerprint, errA, ib.RootFingerprint, errB)
	}
	if ia.Identity["token_label"] == ib.Identity["token_label"] {
		t.Errorf("both backends report token %q", ia.Identity["token_label"])
	}
}

// TestPersistence closes the last backend, so the module is finalized, and
// opens the token again.
func TestPersistence(t *testing.T) {
	checkReleased(t)
	ctx := context.Background()
	label := newToken(t)
	b, err := hsm.Open(ctx, openOpts(t, label, 0))
	if err != nil {
		t.Fatal(err)
	}
	provision(t, b, newRoot(t), keys.ProvisionOptions{Generation: 1})
	blob := sealT(t, b, keys.PurposeWallet, []byte("kept"), nil)
	audit, err := b.AuthKey(ctx, keys.AuditKeyLabel)
	if err != nil {
		t.Fatal(err)
	}
	authKey, err := b.AuthKey(ctx, "auth/persist")
	if err != nil {
		t.Fatal(err)
	}
	info1, err := b.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := hsm.ModuleRefs(testhw.Module()); n != 0 {
		t.Fatalf("module still held by %d users after the last Close", n)
	}

	b = open(t, label, 0)
	if got, err := b.Unseal(ctx, keys.PurposeWallet, blob, nil); err != nil || string(got) != "kept" {
		t.Errorf("Unseal after reopening = %q, %v", got, err)
	}
	for label, want := range map[string]*ecdsa.PublicKey{keys.AuditKeyLabel: audit, "auth/persist": authKey} {
		got, err := b.AuthKey(ctx, label)
		if err != nil || !got.Equal(want) {
			t.Errorf("AuthKey(%q) after reopening differs (%v)", label, err)
		}
	}
	info2, err := b.Info(ctx)
	if err != nil || info2.RootFingerprint != info1.RootFingerprint || info2.Generation != 1 {
		t.Errorf("Info after reopening = %+v, %v; want %+v", info2, err, info1)
	}
	if n, err := hsm.CountObjects(ctx, b, pkcs11.CKO_PRIVATE_KEY, hsm.P256Label(1, "auth/persist")); err != nil || n != 1 {
		t.Errorf("%d private keys for auth/persist after reopening (%v), want 1", n, err)
	}
}

// TestConcurrentUse runs every operation from 16 goroutines at once,
// including the first use of new labels, on pools smaller than the number of
// goroutines. Run it with -race; SoftHSM crashes the process if a session is
// ever shared.
func TestConcurrentUse(t *testing.T) {
	for _, sessions := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("sessions=%d", sessions), func(t *testing.T) {
			b, _ := provisioned(t, sessions)
			ctx := context.Background()
			const workers, iters = 16, 30
			labels := []string{"auth/race/shared", "auth/race/a", "auth/race/b", "auth/race/c"}
			start := make(chan struct{})
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					<-start
					// Everyone asks for the same new keys at the same moment.
					if _, err := b.SignAuth(ctx, labels[0], digest(w)); err != nil {
						t.Errorf("worker %d: first SignAuth: %v", w, err)
						return
					}
					if _, err := b.AuthKey(ctx, labels[1+w%3]); err != nil {
						t.Errorf("worker %d: first AuthKey: %v", w, err)
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
						sig, err := b.SignAuth(ctx, label, digest(i))
						if err != nil {
							t.Errorf("worker %d: SignAuth: %v", w, err)
							return
						}
						pub, err := b.AuthKey(ctx, label)
						if err != nil {
							t.Errorf("worker %d: AuthKey: %v", w, err)
							return
						}
						if !ecdsa.VerifyASN1(pub, digest(i), sig) || !keys.IsLowS(sig) {
							t.Errorf("worker %d: bad signature under %q", w, label)
							return
						}
					}
				})
			}
			close(start)
			wg.Wait()
			for _, label := range labels {
				for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
					if n, err := hsm.CountObjects(ctx, b, class, hsm.P256Label(1, label)); err != nil || n != 1 {
						t.Errorf("%d objects of class %d for %q (%v), want exactly 1", n, class, label, err)
					}
				}
			}
		})
	}
}

// TestSessionRecovery closes every session of the token under the backend,
// which also logs the token out and invalidates object handles, and checks
// that the next operations log in again and succeed.
func TestSessionRecovery(t *testing.T) {
	b, _ := provisioned(t, 2)
	ctx := context.Background()
	blob := sealT(t, b, keys.PurposeWallet, []byte("survives"), nil)
	audit, err := b.AuthKey(ctx, keys.AuditKeyLabel)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.SignAuth(ctx, keys.AuditKeyLabel, digest(0)); err != nil {
		t.Fatal(err)
	}

	ops := []struct {
		name string
		call func(i int) error
	}{
		{"Unseal", func(int) error {
			got, err := b.Unseal(ctx, keys.PurposeWallet, blob, nil)
			if err == nil && string(got) != "survives" {
				err = fmt.Errorf("got %q", got)
			}
			return err
		}},
		{"Seal", func(int) error { _, err := b.Seal(ctx, keys.PurposeRecovery, []byte("new"), nil); return err }},
		{"SignAuth", func(i int) error {
			sig, err := b.SignAuth(ctx, keys.AuditKeyLabel, digest(i))
			if err == nil && !ecdsa.VerifyASN1(audit, digest(i), sig) {
				err = errors.New("signature does not verify")
			}
			return err
		}},
		{"AuthKey of a new label", func(i int) error {
			_, err := b.AuthKey(ctx, fmt.Sprintf("auth/after-logout-%d", i))
			return err
		}},
		{"Info", func(int) error {
			info, err := b.Info(ctx)
			if err == nil && !info.Provisioned {
				err = errors.New("token reads as not provisioned")
			}
			return err
		}},
	}
	for round := range 2 {
		for _, op := range ops {
			t.Run(fmt.Sprintf("round %d/%s", round, op.name), func(t *testing.T) {
				if err := hsm.CloseAllSessions(ctx, b); err != nil {
					t.Fatalf("C_CloseAllSessions: %v", err)
				}
				if err := op.call(round); err != nil {
					t.Fatalf("%s after C_CloseAllSessions: %v", op.name, err)
				}
			})
		}
	}

	t.Run("concurrent", func(t *testing.T) {
		if err := hsm.CloseAllSessions(ctx, b); err != nil {
			t.Fatalf("C_CloseAllSessions: %v", err)
		}
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for _, op := range ops {
					if err := op.call(100 + w); err != nil {
						t.Errorf("worker %d: %s: %v", w, op.name, err)
					}
				}
			})
		}
		wg.Wait()
	})
}

func TestWrongPIN(t *testing.T) {
	checkReleased(t)
	label := newToken(t)
	const wrong = "wrong-pin-918273"
	opts := openOpts(t, label, 0)
	opts.PIN = wrong
	b, err := hsm.Open(context.Background(), opts)
	if err == nil {
		b.Close()
		t.Fatal("Open with a wrong PIN succeeded")
	}
	for _, secret := range []string{wrong, userPIN, soPIN} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains a PIN", err)
		}
	}
	var rv pkcs11.Error
	if !errors.As(err, &rv) || rv != pkcs11.CKR_PIN_INCORRECT {
		t.Errorf("Open with a wrong PIN = %v, want CKR_PIN_INCORRECT", err)
	}
	if !errors.Is(err, keys.ErrUnavailable) {
		t.Errorf("Open with a wrong PIN = %v, want it to wrap ErrUnavailable", err)
	}
	// The failed Open released the module, and the right PIN still works.
	if n := hsm.ModuleRefs(testhw.Module()); n != 0 {
		t.Errorf("failed Open left the module held by %d users", n)
	}
	open(t, label, 0)

	err = hsm.InitToken(testhw.Module(), label, "so-secret-5555", "user-secret-6666")
	if !errors.Is(err, keys.ErrInvalidInput) {
		t.Errorf("InitToken with an existing label = %v, want ErrInvalidInput", err)
	}
	if err != nil && (strings.Contains(err.Error(), "so-secret-5555") || strings.Contains(err.Error(), "user-secret-6666")) {
		t.Errorf("error %q contains a PIN", err)
	}
}

func TestInvalidInput(t *testing.T) {
	b, _ := provisioned(t, 0)
	ctx := context.Background()
	blob := sealT(t, b, keys.PurposeWallet, []byte("x"), nil)
	rows := []struct {
		name string
		call func() error
	}{
		{"Seal unknown purpose", func() error { _, err := b.Seal(ctx, "other", []byte("x"), nil); return err }},
		{"Unseal unknown purpose", func() error { _, err := b.Unseal(ctx, "other", blob, nil); return err }},
		{"Seal over MaxPlaintext", func() error {
			_, err := b.Seal(ctx, keys.PurposeWallet, make([]byte, keys.MaxPlaintext+1), nil)
			return err
		}},
		{"SignAuth short digest", func() error { _, err := b.SignAuth(ctx, "auth/0", make([]byte, 31)); return err }},
		{"SignAuth long digest", func() error { _, err := b.SignAuth(ctx, "auth/0", make([]byte, 33)); return err }},
		{"SignAuth bad label", func() error { _, err := b.SignAuth(ctx, "Auth/X", digest(0)); return err }},
		{"AuthKey empty label", func() error { _, err := b.AuthKey(ctx, ""); return err }},
		{"AuthKey dotdot label", func() error { _, err := b.AuthKey(ctx, "auth/../root"); return err }},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			if err := r.call(); !errors.Is(err, keys.ErrInvalidInput) {
				t.Fatalf("%s = %v, want ErrInvalidInput", r.name, err)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	checkReleased(t)
	ctx := context.Background()
	label := newToken(t)
	rows := []struct {
		name string
		edit func(*hsm.Options)
		want error
	}{
		{"unknown token", func(o *hsm.Options) { o.TokenLabel = "no-such-token" }, keys.ErrUnavailable},
		{"missing module", func(o *hsm.Options) { o.Module = "/nonexistent/libpkcs11.so" }, keys.ErrUnavailable},
		{"no module", func(o *hsm.Options) { o.Module = "" }, keys.ErrInvalidInput},
		{"no token label", func(o *hsm.Options) { o.TokenLabel = "" }, keys.ErrInvalidInput},
		{"no PIN", func(o *hsm.Options) { o.PIN = "" }, keys.ErrInvalidInput},
		{"negative pool", func(o *hsm.Options) { o.Sessions = -1 }, keys.ErrInvalidInput},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			opts := openOpts(t, label, 0)
			r.edit(&opts)
			b, err := hsm.Open(ctx, opts)
			if err == nil {
				b.Close()
			}
			if !errors.Is(err, r.want) {
				t.Fatalf("Open = %v, want an error wrapping %v", err, r.want)
			}
		})
	}
}

func TestClose(t *testing.T) {
	b, _ := provisioned(t, 0)
	ctx := context.Background()
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.Seal(ctx, keys.PurposeWallet, []byte("x"), nil); !errors.Is(err, keys.ErrUnavailable) {
		t.Errorf("Seal after Close = %v, want ErrUnavailable", err)
	}
	if _, err := b.Info(ctx); !errors.Is(err, keys.ErrUnavailable) {
		t.Errorf("Info after Close = %v, want ErrUnavailable", err)
	}
}

func TestContextCanceled(t *testing.T) {
	b, _ := provisioned(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Seal(ctx, keys.PurposeWallet, []byte("x"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Seal with a canceled context = %v, want context.Canceled", err)
	}
	if _, err := b.SignAuth(ctx, "auth/ctx", digest(0)); !errors.Is(err, context.Canceled) {
		t.Errorf("SignAuth with a canceled context = %v, want context.Canceled", err)
	}
}
