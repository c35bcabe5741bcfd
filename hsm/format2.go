package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/cachet-custody/cachet/keys"
	"github.com/miekg/pkcs11"
)

// Key format 2 on a token (keys.FormatDerive).
//
// Format 1 imports the root as an HMAC key and computes each derived key
// with C_Sign, on the host's behalf, so whoever holds the PIN can ask the
// token for any derived key in clear. Format 2 never lets a derived secret
// out, and it does not trust the token to enforce anything PKCS#11 v2.40
// leaves optional:
//
//   - The root is imported as a session object (CKA_TOKEN false) of type
//     CKK_AES whose only use is CKA_DERIVE (no sign, encrypt, wrap, and not
//     extractable). Provision derives, with C_DeriveKey and
//     CKM_AES_ECB_ENCRYPT_DATA, each KEK and the P-256 wrapping key straight
//     into sensitive, non-extractable token objects, then destroys the root.
//     The root is not kept because a derive-capable key is itself an oracle:
//     SoftHSM 2.6.1 (and any token without CKA_DERIVE_TEMPLATE) lets a PIN
//     holder derive from it into a non-sensitive, extractable template and
//     read CKA_VALUE. So a provisioned token holds no key with CKA_DERIVE.
//   - Every derived key carries CKA_ALLOWED_MECHANISMS: the KEKs only
//     CKM_AES_GCM, the wrapping key only CKM_AES_KEY_WRAP_PAD.
//   - P-256 keys cannot be derived inside a token from an AES root, so they
//     are generated inside it, as session objects, wrapped under the
//     wrapping key (C_WrapKey, CKM_AES_KEY_WRAP_PAD, RFC 5649) and recorded
//     in the store (keys.WrappedKeys); the token object that signs is then
//     made from that record by C_UnwrapKey, sensitive and non-extractable.
//     So every P-256 key on the token has a backup, a restore brings it back
//     and the TPM backend, which unwraps the same record in software, signs
//     with the same key. The wrapping key carries CKA_UNWRAP_TEMPLATE
//     (sensitive, not extractable), so C_UnwrapKey cannot be asked for a
//     readable copy of a recorded key.
//   - The generation's marker is a CKO_DATA object "cachet/g<gen>/format2"
//     whose value is the root's public fingerprint, which the token computed
//     at provisioning (a derivation into a readable session object that is
//     destroyed at once) and which Provision checked against the software
//     definition, keys.Derive: a token whose CKM_AES_ECB_ENCRYPT_DATA
//     computed something else would give keys the TPM backend cannot match.
//
// The capability probe (probeFormat2) asks C_GetMechanismList and
// C_GetMechanismInfo for exactly the mechanisms above with the flags they
// are used with, and Provision refuses a token that lacks one, naming it,
// before anything is written. The derivation is fixed rather than chosen by
// the probe (for example CKM_SP800_108_COUNTER_KDF where a token has it)
// because a different function would give a different key for the same root,
// and one root must give the same keys on every token and on the TPM.

// format2Mechanisms are what format 2 needs, with the flags it uses them with.
var format2Mechanisms = []struct {
	mech  uint
	name  string
	flags uint
}{
	{pkcs11.CKM_AES_ECB_ENCRYPT_DATA, "CKM_AES_ECB_ENCRYPT_DATA", pkcs11.CKF_DERIVE},
	{pkcs11.CKM_AES_GCM, "CKM_AES_GCM", pkcs11.CKF_ENCRYPT | pkcs11.CKF_DECRYPT},
	{pkcs11.CKM_AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD", pkcs11.CKF_WRAP | pkcs11.CKF_UNWRAP},
	{pkcs11.CKM_EC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN", pkcs11.CKF_GENERATE_KEY_PAIR},
	{pkcs11.CKM_ECDSA, "CKM_ECDSA", pkcs11.CKF_SIGN},
}

// ErrMechanism means the token lacks a mechanism format 2 needs.
var ErrMechanism = errors.New("the token lacks a mechanism that key format 2 needs")

// probeFormat2 checks the token's mechanisms (C_GetMechanismList and
// C_GetMechanismInfo, v2.40 sections 5.5).
func (b *backend) probeFormat2(ctx context.Context) error {
	return b.p.do(ctx, func(pkcs11.SessionHandle) error {
		c, slot := b.p.mod.ctx, b.p.currentSlot()
		list, err := c.GetMechanismList(slot)
		if err != nil {
			return mapErr("C_GetMechanismList", err)
		}
		have := map[uint]bool{}
		for _, m := range list {
			have[m.Mechanism] = true
		}
		for _, want := range format2Mechanisms {
			if !have[want.mech] {
				return fmt.Errorf("hsm: token %q: %w: %s", b.p.label, ErrMechanism, want.name)
			}
			mi, err := c.GetMechanismInfo(slot, []*pkcs11.Mechanism{pkcs11.NewMechanism(want.mech, nil)})
			if err != nil {
				return mapErr("C_GetMechanismInfo", err)
			}
			if mi.Flags&want.flags != want.flags {
				return fmt.Errorf("hsm: token %q: %w: %s without flags %#x (has %#x)", b.p.label, ErrMechanism, want.name, want.flags, mi.Flags)
			}
		}
		return nil
	})
}

func markerLabel(gen uint32) string { return genPrefix(gen) + "format2" }

func wrapLabel(gen uint32) string { return genPrefix(gen) + "wrap/p256" }

func wrapKey(gen uint32) objKey { return objKey{pkcs11.CKO_SECRET_KEY, wrapLabel(gen)} }

// parseMarkerLabel returns the generation of a format-2 marker's label.
func parseMarkerLabel(label string) (uint32, bool) {
	return parseGenLabel(label, "/format2", markerLabel)
}

// deriveRootTemplate imports the format-2 root as a session object that can
// only derive. value is referenced, not copied; the caller zeroes it.
func deriveRootTemplate(value []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		attr(pkcs11.CKA_TOKEN, false),
		attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_SENSITIVE, true),
		attr(pkcs11.CKA_EXTRACTABLE, false),
		attr(pkcs11.CKA_MODIFIABLE, false),
		attr(pkcs11.CKA_LABEL, "cachet/provisioning-root"),
		attr(pkcs11.CKA_DERIVE, true),
		attr(pkcs11.CKA_SIGN, false),
		attr(pkcs11.CKA_VERIFY, false),
		attr(pkcs11.CKA_ENCRYPT, false),
		attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_WRAP, false),
		attr(pkcs11.CKA_UNWRAP, false),
		attr(pkcs11.CKA_ALLOWED_MECHANISMS, mechanismList(pkcs11.CKM_AES_ECB_ENCRYPT_DATA)),
		attr(pkcs11.CKA_VALUE, value),
	}
}

// modifiableLast moves CKA_MODIFIABLE to the end of a template. SoftHSM 2.6
// applies a C_DeriveKey or C_UnwrapKey template in order and refuses every
// attribute after CKA_MODIFIABLE false with CKR_ATTRIBUTE_READ_ONLY.
func modifiableLast(tmpl []*pkcs11.Attribute) []*pkcs11.Attribute {
	out := make([]*pkcs11.Attribute, 0, len(tmpl))
	var mod *pkcs11.Attribute
	for _, a := range tmpl {
		if a.Type == pkcs11.CKA_MODIFIABLE {
			mod = a
			continue
		}
		out = append(out, a)
	}
	if mod != nil {
		out = append(out, mod)
	}
	return out
}

// derivedKEKTemplate is a format-2 KEK: AES-256, GCM only, never readable.
func derivedKEKTemplate(gen uint32, p keys.Purpose) []*pkcs11.Attribute {
	return modifiableLast(append(secretCommon(pkcs11.CKO_SECRET_KEY, pkcs11.CKK_AES, kekLabel(gen, p)),
		attr(pkcs11.CKA_VALUE_LEN, keys.DeriveDataSize),
		attr(pkcs11.CKA_ENCRYPT, true),
		attr(pkcs11.CKA_DECRYPT, true),
		attr(pkcs11.CKA_SIGN, false),
		attr(pkcs11.CKA_VERIFY, false),
		attr(pkcs11.CKA_DERIVE, false),
		attr(pkcs11.CKA_WRAP, false),
		attr(pkcs11.CKA_UNWRAP, false),
		attr(pkcs11.CKA_ALLOWED_MECHANISMS, mechanismList(pkcs11.CKM_AES_GCM)),
	))
}

// p256UnwrapTemplate is what C_UnwrapKey may make with the wrapping key:
// only sensitive, non-extractable keys (PKCS#11 v2.40 section 4.7.2).
func p256UnwrapTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		attr(pkcs11.CKA_SENSITIVE, true),
		attr(pkcs11.CKA_EXTRACTABLE, false),
	}
}

// derivedWrapTemplate is the format-2 P-256 wrapping key: AES-256, key wrap
// with padding only, never readable, and it unwraps only into sensitive,
// non-extractable objects. It has CKA_WRAP so that Cachet can back up the
// P-256 keys it generates; every key of Cachet's that outlives a call is
// non-extractable, so it wraps nothing that stays on the token.
func derivedWrapTemplate(gen uint32, m *cMem) []*pkcs11.Attribute {
	return modifiableLast(append(secretCommon(pkcs11.CKO_SECRET_KEY, pkcs11.CKK_AES, wrapLabel(gen)),
		attr(pkcs11.CKA_VALUE_LEN, keys.DeriveDataSize),
		attr(pkcs11.CKA_WRAP, true),
		attr(pkcs11.CKA_UNWRAP, true),
		attr(pkcs11.CKA_ENCRYPT, false),
		attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_SIGN, false),
		attr(pkcs11.CKA_VERIFY, false),
		attr(pkcs11.CKA_DERIVE, false),
		attr(pkcs11.CKA_ALLOWED_MECHANISMS, mechanismList(pkcs11.CKM_AES_KEY_WRAP_PAD)),
		attr(pkcs11.CKA_UNWRAP_TEMPLATE, m.attributeArray(p256UnwrapTemplate())),
	))
}

// fingerprintTemplate is a readable session object for the fingerprint
// derivation, destroyed right after it is read. The fingerprint is public.
func fingerprintTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		attr(pkcs11.CKA_VALUE_LEN, keys.DeriveDataSize),
		attr(pkcs11.CKA_TOKEN, false),
		attr(pkcs11.CKA_SENSITIVE, false),
		attr(pkcs11.CKA_EXTRACTABLE, true),
		attr(pkcs11.CKA_ENCRYPT, false),
		attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_SIGN, false),
		attr(pkcs11.CKA_VERIFY, false),
		attr(pkcs11.CKA_DERIVE, false),
		attr(pkcs11.CKA_WRAP, false),
		attr(pkcs11.CKA_UNWRAP, false),
	}
}

func markerTemplate(gen uint32, fingerprint string) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_MODIFIABLE, false),
		attr(pkcs11.CKA_LABEL, markerLabel(gen)),
		attr(pkcs11.CKA_APPLICATION, "cachet key format 2; value: root fingerprint"),
		attr(pkcs11.CKA_VALUE, []byte(fingerprint)),
	}
}

// p256ECPrivateTemplate is a format-2 P-256 private key as C_UnwrapKey
// makes it on the token: sign only, never readable nor wrappable.
func p256ECPrivateTemplate(gen uint32, label string) []*pkcs11.Attribute {
	return modifiableLast(append(secretCommon(pkcs11.CKO_PRIVATE_KEY, pkcs11.CKK_EC, p256Label(gen, label)),
		attr(pkcs11.CKA_SIGN, true),
		attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_DERIVE, false),
		attr(pkcs11.CKA_UNWRAP, false),
		attr(pkcs11.CKA_SIGN_RECOVER, false),
		attr(pkcs11.CKA_ALLOWED_MECHANISMS, mechanismList(pkcs11.CKM_ECDSA)),
	))
}

// deriveMech is CKM_AES_ECB_ENCRYPT_DATA over keys.DeriveData(info).
func deriveMech(m *cMem, info []byte) []*pkcs11.Mechanism {
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB_ENCRYPT_DATA, m.derivationString(keys.DeriveData(info)))}
}

// provisionDerive provisions generation gen in format 2 from root. It runs
// with every other call into the module excluded. On error, whatever it
// created is destroyed again.
func (b *backend) provisionDerive(ctx context.Context, gen uint32, root []byte) error {
	if err := b.probeFormat2(ctx); err != nil {
		return err
	}
	want, err := keys.FingerprintOf(keys.FormatDerive, root)
	if err != nil {
		return err
	}
	err = b.p.doWrite(ctx, func(s pkcs11.SessionHandle) (err error) {
		c := b.p.mod.ctx
		var m cMem
		defer m.free()
		// C_CreateObject and C_DeriveKey, v2.40 sections 5.7 and 5.14.
		rh, err := c.CreateObject(s, deriveRootTemplate(root))
		if err != nil {
			return mapErr("C_CreateObject(root)", err)
		}
		defer func() {
			if derr := c.DestroyObject(s, rh); derr != nil {
				err = errors.Join(err, mapErr("C_DestroyObject(root)", derr))
			}
		}()
		fh, err := c.DeriveKey(s, deriveMech(&m, keys.FingerprintInfoV2()), rh, fingerprintTemplate())
		if err != nil {
			return mapErr("C_DeriveKey(fingerprint)", err)
		}
		v, err := c.GetAttributeValue(s, fh, []*pkcs11.Attribute{attr(pkcs11.CKA_VALUE, nil)})
		if derr := c.DestroyObject(s, fh); derr != nil && err == nil {
			err = derr
		}
		if err != nil {
			return mapErr("C_GetAttributeValue(fingerprint)", err)
		}
		if len(v[0].Value) != keys.DeriveDataSize {
			return fmt.Errorf("hsm: CKM_AES_ECB_ENCRYPT_DATA gave %d bytes, want %d: %w", len(v[0].Value), keys.DeriveDataSize, keys.ErrUnavailable)
		}
		if got := keys.FingerprintFromExpand(v[0].Value); got != want {
			return fmt.Errorf("hsm: token %q derives fingerprint %s where key format 2 defines %s: its CKM_AES_ECB_ENCRYPT_DATA is not the standard one: %w", b.p.label, got, want, ErrMechanism)
		}
		for _, p := range keys.Purposes {
			if _, err := c.DeriveKey(s, deriveMech(&m, keys.KEKInfoV2(p)), rh, derivedKEKTemplate(gen, p)); err != nil {
				return mapErr("C_DeriveKey(kek/"+string(p)+")", err)
			}
		}
		if _, err := c.DeriveKey(s, deriveMech(&m, keys.WrapInfoV2()), rh, derivedWrapTemplate(gen, &m)); err != nil {
			return mapErr("C_DeriveKey(wrap/p256)", err)
		}
		// The marker goes last: the generation exists once it does.
		if _, err := c.CreateObject(s, markerTemplate(gen, want)); err != nil {
			return mapErr("C_CreateObject(marker)", err)
		}
		return nil
	})
	if err != nil {
		return b.rollBack(ctx, gen, fmt.Errorf("hsm: provision generation %d (key format 2): %w", gen, err))
	}
	return nil
}

// UseWrappedKeys attaches the store of wrapped P-256 keys that format-2
// generations need.
func (b *backend) UseWrappedKeys(ws keys.WrappedKeys) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.wrapped = ws
}

func (b *backend) wrappedKeys() keys.WrappedKeys {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.wrapped
}

// createP256Wrapped makes the token objects of the format-2 P-256 key label:
// from its record in the store, or, when there is none, from a key the token
// generates, wraps and records first. It runs under the label's creation
// lock. No session is held while the store is called.
func (b *backend) createP256Wrapped(ctx context.Context, gen uint32, label string) error {
	ws := b.wrappedKeys()
	if ws == nil {
		return keys.ErrNoWrappedKeys
	}
	wk, found, err := ws.WrappedKey(ctx, gen, label)
	if err != nil {
		return fmt.Errorf("hsm: wrapped key %q: %w", label, err)
	}
	if !found {
		mine, err := b.generateWrapped(ctx, gen, label)
		if err != nil {
			return err
		}
		// Another process may have recorded one first; that one is the key.
		if wk, err = ws.PutWrappedKey(ctx, mine); err != nil {
			return fmt.Errorf("hsm: record wrapped key %q: %w", label, err)
		}
	}
	return b.unwrapP256(ctx, gen, label, wk)
}

// generateWrapped generates a P-256 key pair as session objects (C_GenerateKeyPair,
// v2.40 section 5.14), wraps the private key under the generation's wrapping
// key (C_WrapKey, CKM_AES_KEY_WRAP_PAD) and destroys both. The wrapped key
// is the only copy; it becomes a token object through unwrapP256.
func (b *backend) generateWrapped(ctx context.Context, gen uint32, label string) (keys.WrappedKey, error) {
	wh, err := b.handle(ctx, wrapKey(gen), nil)
	if err != nil {
		return keys.WrappedKey{}, b.missingDerived(err, gen)
	}
	var out keys.WrappedKey
	err = b.p.doWrite(ctx, func(s pkcs11.SessionHandle) (err error) {
		c := b.p.mod.ctx
		pubH, privH, err := c.GenerateKeyPair(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
			[]*pkcs11.Attribute{
				attr(pkcs11.CKA_TOKEN, false),
				attr(pkcs11.CKA_VERIFY, true),
				attr(pkcs11.CKA_EC_PARAMS, p256Params),
			},
			[]*pkcs11.Attribute{
				attr(pkcs11.CKA_TOKEN, false),
				attr(pkcs11.CKA_PRIVATE, true),
				attr(pkcs11.CKA_SENSITIVE, true),
				// Extractable only so that this one C_WrapKey can back it
				// up; it is a session object, destroyed below.
				attr(pkcs11.CKA_EXTRACTABLE, true),
				attr(pkcs11.CKA_SIGN, true),
			})
		if err != nil {
			return mapErr("C_GenerateKeyPair", err)
		}
		defer func() {
			err = errors.Join(err, mapErr("C_DestroyObject", c.DestroyObject(s, privH)), mapErr("C_DestroyObject", c.DestroyObject(s, pubH)))
		}()
		point, err := b.ecPointOf(s, pubH)
		if err != nil {
			return err
		}
		wrapped, err := c.WrapKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, wh, privH)
		if err != nil {
			return mapErr("C_WrapKey", err)
		}
		out = keys.WrappedKey{Generation: gen, Label: label, Wrapped: wrapped, Public: point}
		return nil
	})
	return out, err
}

// unwrapP256 makes the token objects of label from its record: the private
// key by C_UnwrapKey (sensitive, non-extractable, sign only), checked by a
// signature that must verify under the recorded public point, and the public
// key object holding that point.
func (b *backend) unwrapP256(ctx context.Context, gen uint32, label string, wk keys.WrappedKey) error {
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), wk.Public)
	if err != nil {
		return fmt.Errorf("hsm: wrapped key %q has an invalid public key: %w", label, keys.ErrAuthFailed)
	}
	ecPoint, err := asn1.Marshal(wk.Public)
	if err != nil {
		return fmt.Errorf("hsm: encode CKA_EC_POINT: %w", err)
	}
	wh, err := b.handle(ctx, wrapKey(gen), nil)
	if err != nil {
		return b.missingDerived(err, gen)
	}
	check := make([]byte, 32)
	if _, err := rand.Read(check); err != nil {
		return err
	}
	pk := privKey(gen, label)
	var priv pkcs11.ObjectHandle
	err = b.p.doWrite(ctx, func(s pkcs11.SessionHandle) error {
		c := b.p.mod.ctx
		var found bool
		var err error
		if priv, found, err = b.findOne(s, pk); err != nil {
			return err
		}
		if !found {
			priv, err = c.UnwrapKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}, wh, wk.Wrapped, p256ECPrivateTemplate(gen, label))
			if err != nil {
				return fmt.Errorf("hsm: unwrap key %q of generation %d: %w", label, gen, mapErr("C_UnwrapKey", err))
			}
			if err := c.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, priv); err != nil {
				return mapErr("C_SignInit", err)
			}
			raw, err := c.Sign(s, check)
			if err != nil {
				return mapErr("C_Sign", err)
			}
			der, err := keys.RawToDER(raw)
			if err != nil || !ecdsa.VerifyASN1(pub, check, der) {
				derr := c.DestroyObject(s, priv)
				return errors.Join(fmt.Errorf("hsm: wrapped key %q does not match its recorded public key: %w", label, keys.ErrAuthFailed), mapErr("C_DestroyObject", derr))
			}
			b.log.Info("pkcs11 key unwrapped from its backup", logToken, b.p.label, logLabel, pk.label)
		}
		if _, found, err = b.findOne(s, pubKey(gen, label)); err != nil || found {
			return err
		}
		_, err = c.CreateObject(s, p256PublicTemplate(gen, label, ecPoint))
		return mapErr("C_CreateObject", err)
	})
	if err != nil {
		return err
	}
	b.cacheHandle(pk, priv)
	return nil
}

// missingDerived turns the absence of a format-2 derived key into an error
// that says what happened: format 2 never derives later, so a token that
// lost one must be restored.
func (b *backend) missingDerived(err error, gen uint32) error {
	var missing *errMissing
	if errors.As(err, &missing) {
		return fmt.Errorf("hsm: token %q, generation %d (key format 2) lacks %q; restore it from the shares: %w", b.p.label, gen, missing.k.label, keys.ErrUnavailable)
	}
	return err
}

var _ keys.Retirer = (*backend)(nil)

// RetireGeneration destroys every object of generation gen on the token
// (C_DestroyObject). The current (highest) generation cannot be retired.
func (b *backend) RetireGeneration(ctx context.Context, gen uint32) error {
	gens, err := b.scanGenerations(ctx)
	if err != nil {
		return err
	}
	if len(gens) == 0 || gen == gens[len(gens)-1] {
		return fmt.Errorf("hsm: %w: generation %d is the current one (token holds %v)", keys.ErrInvalidInput, gen, gens)
	}
	unlock, err := b.lockLabel(ctx, provisionLock)
	if err != nil {
		return err
	}
	defer unlock()
	defer b.forgetAll()
	var n int
	err = b.p.doWrite(ctx, func(s pkcs11.SessionHandle) error {
		var err error
		n, err = b.destroyGeneration(s, gen)
		return err
	})
	if err != nil {
		return fmt.Errorf("hsm: retire generation %d: %w", gen, err)
	}
	b.log.Info("pkcs11 generation retired", logToken, b.p.label, logGen, gen, "objects", n)
	return nil
}

// presenceKey is the object whose presence says the token holds generation
// gen: its root (format 1) or its marker (format 2, which keeps no root).
func (b *backend) presenceKey(gen uint32) objKey {
	if b.formatOf(gen).format == keys.FormatDerive {
		return objKey{pkcs11.CKO_DATA, markerLabel(gen)}
	}
	return rootKey(gen)
}
