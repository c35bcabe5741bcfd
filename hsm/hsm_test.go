package hsm_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"

	"github.com/cachet-custody/cachet/hsm"
	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
	"github.com/miekg/pkcs11"
)

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

// TestInfoIdentity checks what Info says about the token, before and after
// provisioning; the conformance suite checks only that it names some
// hardware, and differently for two tokens.
func TestInfoIdentity(t *testing.T) {
	checkReleased(t)
	ctx := context.Background()
	for range 2 {
		label := newToken(t)
		b := open(t, label, 0)
		for _, when := range []string{"before provisioning", "after provisioning"} {
			info, err := b.Info(ctx)
			if err != nil {
				t.Fatalf("Info %s: %v", when, err)
			}
			if info.Kind != "pkcs11" || info.Identity["token_label"] != label {
				t.Errorf("Info %s: identity = %q %v, want pkcs11 token %q", when, info.Kind, info.Identity, label)
			}
			for _, k := range []string{"manufacturer", "model", "serial", "library"} {
				if info.Identity[k] == "" {
					t.Errorf("Info %s: Identity[%q] is empty", when, k)
				}
			}
			if !info.Provisioned {
				provision(t, b, newRoot(t), keys.ProvisionOptions{Generation: 1})
			}
		}
	}
}

// TestLastCloseFinalizesModule closes the last backend, so the module is
// finalized, and opens the token again in the same process.
func TestLastCloseFinalizesModule(t *testing.T) {
	checkReleased(t)
	ctx := context.Background()
	label := newToken(t)
	b, err := hsm.Open(ctx, openOpts(t, label, 0))
	if err != nil {
		t.Fatal(err)
	}
	provision(t, b, newRoot(t), keys.ProvisionOptions{Generation: 1})
	blob := sealT(t, b, keys.PurposeWallet, []byte("kept"), nil)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := hsm.ModuleRefs(testhw.Module()); n != 0 {
		t.Fatalf("module still held by %d users after the last Close", n)
	}

	b = open(t, label, 0)
	if got, err := b.Unseal(ctx, keys.PurposeWallet, blob, nil); err != nil || string(got) != "kept" {
		t.Errorf("Unseal after the module was finalized and initialized again = %q, %v", got, err)
	}
}
