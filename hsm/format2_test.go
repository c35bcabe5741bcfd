package hsm_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/cachet-custody/cachet/hsm"
	"github.com/cachet-custody/cachet/keys"
)

// memWrapped is keys.WrappedKeys in memory, as the store keeps it.
type memWrapped struct {
	mu sync.Mutex
	m  map[string]keys.WrappedKey
}

func newMemWrapped() *memWrapped { return &memWrapped{m: map[string]keys.WrappedKey{}} }

func (w *memWrapped) WrappedKey(_ context.Context, gen uint32, label string) (keys.WrappedKey, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	k, ok := w.m[fmt.Sprint(gen, "/", label)]
	return k, ok, nil
}

func (w *memWrapped) PutWrappedKey(_ context.Context, k keys.WrappedKey) (keys.WrappedKey, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := fmt.Sprint(k.Generation, "/", k.Label)
	if got, ok := w.m[id]; ok {
		return got, nil
	}
	w.m[id] = k
	return k, nil
}

// provisionedFormat2 is a fresh token provisioned in key format 2 with a
// random root, its wrapped-key store, and the root.
func provisionedFormat2(t *testing.T) (keys.Backend, *memWrapped, []byte) {
	t.Helper()
	checkReleased(t)
	b := open(t, newToken(t), 2)
	ws := newMemWrapped()
	b.(keys.WrappedKeysUser).UseWrappedKeys(ws)
	root := newRoot(t)
	provision(t, b, append([]byte(nil), root...), keys.ProvisionOptions{Generation: 1, Format: keys.FormatDerive})
	return b, ws, root
}

// ulong reads a CK_ULONG attribute value in the module's byte order.
func ulong(v []byte) uint {
	if len(v) == 4 {
		return uint(binary.NativeEndian.Uint32(v))
	}
	return uint(binary.NativeEndian.Uint64(v))
}

type tokenObject struct {
	h       pkcs11.ObjectHandle
	class   uint
	keyType uint
	label   string
}

func allObjects(c *pkcs11.Ctx, s pkcs11.SessionHandle) ([]tokenObject, error) {
	if err := c.FindObjectsInit(s, nil); err != nil {
		return nil, err
	}
	var hs []pkcs11.ObjectHandle
	for {
		batch, _, err := c.FindObjects(s, 100)
		if err != nil {
			c.FindObjectsFinal(s)
			return nil, err
		}
		if len(batch) == 0 {
			break
		}
		hs = append(hs, batch...)
	}
	if err := c.FindObjectsFinal(s); err != nil {
		return nil, err
	}
	var out []tokenObject
	for _, h := range hs {
		as, err := c.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil), pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil)})
		if err != nil {
			return nil, err
		}
		o := tokenObject{h: h, class: ulong(as[0].Value), label: string(as[1].Value)}
		if kt, err := c.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil)}); err == nil {
			o.keyType = ulong(kt[0].Value)
		}
		out = append(out, o)
	}
	return out, nil
}

// TestFormat2NoDerivedKeyInClear holds the PIN and tries every PKCS#11 way
// to get a derived key (or a P-256 key) out of a format-2 token in clear:
// the token must refuse each one, or hand out only what is no secret, while
// sealing and signing keep working. "In clear" is checked against the keys
// themselves: the software definition of every derived key (keys.Derive)
// and every P-256 scalar (unwrapped in software from the store's records).
func TestFormat2NoDerivedKeyInClear(t *testing.T) {
	ctx := context.Background()
	b, ws, root := provisionedFormat2(t)

	// Sealing and signing work, and the token's KEKs are the software
	// definition of format 2 (a blob it sealed opens with keys.Derive).
	labels := []string{keys.AuditKeyLabel, "auth/one", "auth/two"}
	pubs := map[string]*ecdsa.PublicKey{}
	for _, l := range labels {
		pub, err := b.AuthKey(ctx, l)
		if err != nil {
			t.Fatalf("AuthKey(%q): %v", l, err)
		}
		pubs[l] = pub
	}
	for _, p := range keys.Purposes {
		blob := sealT(t, b, p, []byte("wallet secret"), []byte("aad"))
		kek, err := keys.Derive(root, keys.KEKInfoV2(p))
		if err != nil {
			t.Fatal(err)
		}
		env, err := keys.ParseEnvelope(p, blob)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := aes.NewCipher(kek)
		gcm, _ := cipher.NewGCM(blk)
		if pt, err := gcm.Open(nil, env.IV, env.Ciphertext, env.AAD([]byte("aad"))); err != nil || string(pt) != "wallet secret" {
			t.Fatalf("%s: a blob sealed by the token does not open under keys.Derive's KEK: %q, %v", p, pt, err)
		}
	}

	// Every secret an attacker must not get.
	secrets := map[string][]byte{}
	for _, p := range keys.Purposes {
		k, _ := keys.Derive(root, keys.KEKInfoV2(p))
		secrets["kek/"+string(p)] = k
	}
	wrapKey, _ := keys.Derive(root, keys.WrapInfoV2())
	secrets["wrap"] = wrapKey
	secrets["root"] = root
	for _, l := range labels {
		wk, ok, _ := ws.WrappedKey(ctx, 1, l)
		if !ok {
			t.Fatalf("no wrapped backup of %q in the store", l)
		}
		der, err := keys.UnwrapKeyPad(wrapKey, wk.Wrapped)
		if err != nil {
			t.Fatalf("backup of %q does not unwrap in software: %v", l, err)
		}
		k, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			t.Fatalf("backup of %q: %v", l, err)
		}
		ek := k.(*ecdsa.PrivateKey)
		if !ek.PublicKey.Equal(pubs[l]) {
			t.Fatalf("backup of %q holds another key than the token signs with", l)
		}
		d, _ := ek.Bytes()
		secrets["p256/"+l] = d
	}
	leaks := func(what string, got []byte) {
		t.Helper()
		for name, sec := range secrets {
			if len(got) > 0 && (bytes.Contains(got, sec) || bytes.Contains(got, sec[:16]) || bytes.Contains(got, sec[16:])) {
				t.Errorf("%s gave %s in clear", what, name)
			}
		}
	}
	refused := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: the token allowed it", what)
		}
	}

	err := hsm.RawSession(ctx, b, func(c *pkcs11.Ctx, s pkcs11.SessionHandle) error {
		objs, err := allObjects(c, s)
		if err != nil {
			return err
		}
		var keyObjs, targets []tokenObject
		for _, o := range objs {
			switch o.class {
			case pkcs11.CKO_SECRET_KEY, pkcs11.CKO_PRIVATE_KEY:
				keyObjs, targets = append(keyObjs, o), append(targets, o)
			case pkcs11.CKO_PUBLIC_KEY:
				keyObjs = append(keyObjs, o)
			}
			// No root, and nothing that can derive, is left on the token.
			if o.label == "cachet/provisioning-root" || o.keyType == pkcs11.CKK_GENERIC_SECRET {
				t.Errorf("the token holds %q (class %#x, type %#x) after provisioning", o.label, o.class, o.keyType)
			}
			if a, err := c.GetAttributeValue(s, o.h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_DERIVE, nil)}); err == nil && len(a[0].Value) == 1 && a[0].Value[0] != 0 {
				t.Errorf("%q has CKA_DERIVE true", o.label)
			}
		}
		if len(targets) != 2+1+len(labels) {
			t.Errorf("the token holds %d secret and private keys, want 2 KEKs, the wrapping key and %d P-256 keys: %+v", len(targets), len(labels), targets)
		}

		// 1. C_GetAttributeValue(CKA_VALUE) on every object.
		for _, o := range objs {
			a, err := c.GetAttributeValue(s, o.h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
			if err == nil {
				leaks(fmt.Sprintf("CKA_VALUE of %q", o.label), a[0].Value)
				if o.class != pkcs11.CKO_DATA {
					t.Errorf("CKA_VALUE of %q (class %#x) was readable", o.label, o.class)
				}
			}
			if o.class == pkcs11.CKO_PRIVATE_KEY || o.class == pkcs11.CKO_SECRET_KEY {
				a, err := c.GetAttributeValue(s, o.h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil), pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, nil)})
				if err != nil || a[0].Value[0] != 1 || a[1].Value[0] != 0 || a[2].Value[0] != 0 {
					t.Errorf("%q: sensitive/extractable/modifiable = %v, %v; want true, false, false", o.label, a, err)
				}
			}
		}

		// 2. C_Sign and C_Encrypt with every key, with the mechanisms that
		// would turn a key into a derivation oracle (HMAC, raw AES).
		data := make([]byte, 32)
		for _, o := range targets {
			for _, m := range []uint{pkcs11.CKM_SHA256_HMAC, pkcs11.CKM_AES_CMAC, pkcs11.CKM_AES_MAC} {
				if err := c.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(m, nil)}, o.h); err == nil {
					out, _ := c.Sign(s, data)
					leaks("C_Sign", out)
					t.Errorf("C_SignInit(%#x) with %q was allowed", m, o.label)
				}
			}
			for _, m := range []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil), pkcs11.NewMechanism(pkcs11.CKM_AES_CBC, make([]byte, 16))} {
				if err := c.EncryptInit(s, []*pkcs11.Mechanism{m}, o.h); err == nil {
					out, _ := c.Encrypt(s, data)
					leaks("C_Encrypt", out)
					t.Errorf("C_EncryptInit(%#x) with %q was allowed", m.Mechanism, o.label)
				}
			}
		}

		// 3. C_DeriveKey from every key into an extractable, non-sensitive
		// template, with every derivation mechanism SoftHSM has.
		extractable := func() []*pkcs11.Attribute {
			return []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
				pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
			}
		}
		for _, o := range keyObjs {
			for _, info := range [][]byte{keys.KEKInfoV2(keys.PurposeWallet), keys.WrapInfoV2(), make([]byte, 32)} {
				ecb, free1 := hsm.DerivationString(keys.DeriveData(info))
				cbc, free2 := hsm.CBCDerivationParams(make([]byte, 16), keys.DeriveData(info))
				for _, m := range []*pkcs11.Mechanism{
					pkcs11.NewMechanism(pkcs11.CKM_AES_ECB_ENCRYPT_DATA, ecb),
					pkcs11.NewMechanism(pkcs11.CKM_AES_CBC_ENCRYPT_DATA, cbc),
					pkcs11.NewMechanism(pkcs11.CKM_ECDH1_DERIVE, pkcs11.NewECDH1DeriveParams(pkcs11.CKD_NULL, nil, append([]byte{4}, make([]byte, 64)...))),
				} {
					h, err := c.DeriveKey(s, []*pkcs11.Mechanism{m}, o.h, extractable())
					if err == nil {
						if a, err := c.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err == nil {
							leaks("C_DeriveKey", a[0].Value)
						}
						c.DestroyObject(s, h)
						t.Errorf("C_DeriveKey(%#x) from %q into an extractable template was allowed", m.Mechanism, o.label)
					}
				}
				free1()
				free2()
			}
		}

		// 4. C_WrapKey of every secret and private key with every key the
		// token holds, and with a wrapping key of the attacker's own.
		mine, err := c.CreateObject(s, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, make([]byte, 32)),
		})
		if err != nil {
			return fmt.Errorf("create the attacker's wrapping key: %w", err)
		}
		wrappers := append(append([]tokenObject(nil), keyObjs...), tokenObject{h: mine, label: "attacker's key"})
		for _, w := range wrappers {
			for _, o := range targets {
				for _, m := range []*pkcs11.Mechanism{
					pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP, nil),
					pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil),
					pkcs11.NewMechanism(pkcs11.CKM_AES_CBC, make([]byte, 16)),
				} {
					out, err := c.WrapKey(s, []*pkcs11.Mechanism{m}, w.h, o.h)
					if err == nil {
						leaks("C_WrapKey", out)
						t.Errorf("C_WrapKey(%#x) of %q with %q was allowed", m.Mechanism, o.label, w.label)
					}
				}
			}
		}

		// 5. C_UnwrapKey of a recorded backup into a readable template.
		var wrapH pkcs11.ObjectHandle
		for _, o := range objs {
			if o.label == hsm.WrapLabel(1) {
				wrapH = o.h
			}
		}
		wk, _, _ := ws.WrappedKey(ctx, 1, "auth/one")
		_, err = c.UnwrapKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, wrapH, wk.Wrapped, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		})
		refused("C_UnwrapKey of a backup into an extractable template", err)
		// C_Decrypt of a backup with the wrapping key.
		refused("C_DecryptInit with the wrapping key", c.DecryptInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil)}, wrapH))

		// 6. Loosening any key: C_SetAttributeValue and C_CopyObject.
		for _, o := range targets {
			for _, a := range []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
				pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
				pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
				pkcs11.NewAttribute(pkcs11.CKA_ALLOWED_MECHANISMS, nil),
			} {
				refused(fmt.Sprintf("C_SetAttributeValue(%#x) on %q", a.Type, o.label), c.SetAttributeValue(s, o.h, []*pkcs11.Attribute{a}))
				h, err := c.CopyObject(s, o.h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false), a})
				if err == nil {
					c.DestroyObject(s, h)
				}
				refused(fmt.Sprintf("C_CopyObject(%#x) of %q", a.Type, o.label), err)
			}
		}
		return c.DestroyObject(s, mine)
	})
	if err != nil {
		t.Fatal(err)
	}

	// And the appliance still seals, unseals and signs.
	for _, p := range keys.Purposes {
		blob := sealT(t, b, p, []byte("after"), nil)
		if pt, err := b.Unseal(ctx, p, blob, nil); err != nil || string(pt) != "after" {
			t.Errorf("Unseal after the attempts: %q, %v", pt, err)
		}
	}
	for i, l := range labels {
		sig, err := b.SignAuth(ctx, l, digest(i))
		if err != nil || !ecdsa.VerifyASN1(pubs[l], digest(i), sig) || !keys.IsLowS(sig) {
			t.Errorf("SignAuth(%q) after the attempts: %v", l, err)
		}
	}
}

// TestFormat2RestoreBringsKeysBack: a new token provisioned with the same
// root and given the same store of wrapped keys has the same KEKs and the same
// P-256 keys; a token without the store refuses P-256 use; another root's
// token refuses the backups.
func TestFormat2RestoreBringsKeysBack(t *testing.T) {
	ctx := context.Background()
	b, ws, root := provisionedFormat2(t)
	pub := authKeyT(t, b, "auth/k")
	blob := sealT(t, b, keys.PurposeWallet, []byte("w"), nil)
	in, err := b.Info(ctx)
	if err != nil || in.Format != keys.FormatDerive || !in.Provisioned {
		t.Fatalf("Info = %+v, %v", in, err)
	}
	if fp, _ := keys.FingerprintOf(keys.FormatDerive, root); in.RootFingerprint != fp {
		t.Errorf("fingerprint %s, want %s", in.RootFingerprint, fp)
	}

	for _, tc := range []struct {
		name    string
		root    []byte
		store   keys.WrappedKeys
		wantErr error
	}{
		{"same root and store", root, ws, nil},
		{"no store", root, nil, keys.ErrNoWrappedKeys},
		{"other root", newRoot(t), ws, keys.ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b2 := open(t, newToken(t), 1)
			if tc.store != nil {
				b2.(keys.WrappedKeysUser).UseWrappedKeys(tc.store)
			}
			provision(t, b2, append([]byte(nil), tc.root...), keys.ProvisionOptions{Generation: 1, Format: keys.FormatDerive})
			got, err := b2.AuthKey(ctx, "auth/k")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("AuthKey = %v; want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || !got.Equal(pub) {
				t.Fatalf("AuthKey after restore: %v; same key %v", err, err == nil && got.Equal(pub))
			}
			if pt, err := b2.Unseal(ctx, keys.PurposeWallet, blob, nil); err != nil || string(pt) != "w" {
				t.Errorf("Unseal after restore: %q, %v", pt, err)
			}
			sig, err := b2.SignAuth(ctx, "auth/k", digest(1))
			if err != nil || !ecdsa.VerifyASN1(pub, digest(1), sig) {
				t.Errorf("SignAuth after restore: %v", err)
			}
		})
	}
}

func authKeyT(t *testing.T, b keys.Backend, label string) *ecdsa.PublicKey {
	t.Helper()
	pub, err := b.AuthKey(context.Background(), label)
	if err != nil {
		t.Fatalf("AuthKey(%q): %v", label, err)
	}
	return pub
}

// Many callers asking for a new format-2 key at once, through two backends
// on one token and one store (two processes), get one key: one record in
// the store, one private key object on the token, one public key.
func TestFormat2ConcurrentFirstUse(t *testing.T) {
	ctx := context.Background()
	b1, ws, _ := provisionedFormat2(t)
	b2 := open(t, raw1Label(t, b1), 2)
	b2.(keys.WrappedKeysUser).UseWrappedKeys(ws)
	var wg sync.WaitGroup
	pubs := make([]*ecdsa.PublicKey, 16)
	errs := make([]error, 16)
	for i := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := b1
			if i%2 == 1 {
				b = b2
			}
			pubs[i], errs[i] = b.AuthKey(ctx, "auth/concurrent")
		}()
	}
	wg.Wait()
	for i := range pubs {
		if errs[i] != nil || !pubs[i].Equal(pubs[0]) {
			t.Fatalf("caller %d: %v (same key %v)", i, errs[i], errs[i] == nil && pubs[i].Equal(pubs[0]))
		}
	}
	counts, err := hsm.ObjectCounts(ctx, b1)
	if err != nil {
		t.Fatal(err)
	}
	if n := counts[hsm.Object{Class: pkcs11.CKO_PRIVATE_KEY, Label: hsm.P256Label(1, "auth/concurrent")}]; n != 1 {
		t.Errorf("%d private key objects for the label, want 1", n)
	}
	ws.mu.Lock()
	n := len(ws.m)
	ws.mu.Unlock()
	if n != 1 {
		t.Errorf("%d wrapped records, want 1", n)
	}
}

// raw1Label is the token label of a backend's token, read through Info.
func raw1Label(t *testing.T, b keys.Backend) string {
	t.Helper()
	in, err := b.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return in.Identity["token_label"]
}
