package hsm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/cachet-custody/cachet/keys"
	"github.com/miekg/pkcs11"
)

// Options says which token Open uses and how.
type Options struct {
	// Module is the path of the PKCS#11 library, for example
	// /usr/lib/softhsm/libsofthsm2.so.
	Module string
	// TokenLabel names the token. Tokens are found by label, never by slot
	// number, because SoftHSM reassigns slot ids; the label must be unique
	// among the module's tokens.
	TokenLabel string
	// PIN is the user PIN. It is never logged and never part of an error.
	PIN string
	// Sessions is the size of the session pool; 0 means 2. More sessions
	// lower SoftHSM's throughput (lock contention inside the module); a
	// hardware HSM may want more. The token's own session limit caps it.
	Sessions int
	// Logger receives session recovery and key creation events; nil means
	// slog.Default().
	Logger *slog.Logger
}

// DefaultSessions is the pool size when Options.Sessions is 0.
const DefaultSessions = 2

// backend is keys.Backend and keys.Provisioner over one PKCS#11 token.
type backend struct {
	p   *pool
	log *slog.Logger

	mu      sync.RWMutex
	handles map[objKey]pkcs11.ObjectHandle
	points  map[string][]byte        // uncompressed P-256 points by object label
	gens    []uint32                 // root generations on the token, ascending; nil until scanned
	formats map[uint32]genFormat     // key format of each generation in gens
	locks   map[string]chan struct{} // creation locks by object label
	wrapped keys.WrappedKeys         // format 2: backups of P-256 keys; set once after Open
}

// genFormat is how one generation on the token derives, and for format 2 the
// fingerprint its marker records.
type genFormat struct {
	format      keys.Format
	fingerprint string
}

var (
	_ keys.Backend         = (*backend)(nil)
	_ keys.Provisioner     = (*backend)(nil)
	_ keys.WrappedKeysUser = (*backend)(nil)
)

// Open finds the token labelled opts.TokenLabel in the module, logs in and
// fills the session pool. The result also implements keys.Provisioner. Open
// succeeds on a token that holds no root yet; every method but Info then
// returns an error wrapping keys.ErrNotProvisioned until Provision runs.
// Errors from the token wrap keys.ErrUnavailable.
func Open(ctx context.Context, opts Options) (keys.Backend, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hsm: open: %w", err)
	}
	switch {
	case opts.TokenLabel == "":
		return nil, fmt.Errorf("hsm: %w: no token label", keys.ErrInvalidInput)
	case opts.PIN == "":
		return nil, fmt.Errorf("hsm: %w: no PIN for token %q", keys.ErrInvalidInput, opts.TokenLabel)
	case opts.Sessions < 0:
		return nil, fmt.Errorf("hsm: %w: %d sessions", keys.ErrInvalidInput, opts.Sessions)
	}
	size := opts.Sessions
	if size == 0 {
		size = DefaultSessions
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	mod, err := acquire(opts.Module)
	if err != nil {
		return nil, err
	}
	mod.objMu.RLock() // reads token files; see module.objMu
	slot, err := findSlot(mod.ctx, opts.TokenLabel)
	var ti pkcs11.TokenInfo
	if err == nil {
		if ti, err = mod.ctx.GetTokenInfo(slot); err != nil {
			err = mapErr("C_GetTokenInfo", err)
		}
	}
	mod.objMu.RUnlock()
	if err != nil {
		return nil, errors.Join(err, mod.release())
	}
	if limit := ti.MaxSessionCount; limit != pkcs11.CK_EFFECTIVELY_INFINITE && limit != pkcs11.CK_UNAVAILABLE_INFORMATION && limit < uint(size) {
		size = int(limit)
	}
	b := &backend{
		p:       newPool(mod, opts.TokenLabel, opts.PIN, slot, size, log),
		log:     log,
		handles: map[objKey]pkcs11.ObjectHandle{},
		points:  map[string][]byte{},
		formats: map[uint32]genFormat{},
		locks:   map[string]chan struct{}{},
	}
	// Open every session now, so that a wrong PIN or a broken token fails
	// here and not on the first request.
	held := make([]session, 0, size)
	for range size {
		s, err := b.p.get(ctx)
		if err != nil {
			for _, s := range held {
				b.p.put(s)
			}
			return nil, errors.Join(fmt.Errorf("hsm: open token %q: %w", opts.TokenLabel, err), b.p.close())
		}
		held = append(held, s)
	}
	for _, s := range held {
		b.p.put(s)
	}
	log.Info("pkcs11 token open", logToken, opts.TokenLabel, logSlot, slot, logSize, size)
	return b, nil
}

// Close closes the sessions and releases this backend's reference to the
// module; the last reference finalizes it. It waits for operations in
// flight. A second Close returns nil.
func (b *backend) Close() error { return b.p.close() }

// scanGenerations lists the generations whose root is on the token, and
// caches their handles. The token, not memory, is the authority: another
// Backend (a ceremony) may have provisioned it since.
func (b *backend) scanGenerations(ctx context.Context) ([]uint32, error) {
	found := map[uint32]pkcs11.ObjectHandle{}
	markers := map[uint32]genFormat{}
	err := b.p.do(ctx, func(s pkcs11.SessionHandle) error {
		clear(found)
		clear(markers)
		// Roots are private objects; an absent root must not just mean
		// "logged out".
		if _, err := b.p.login(s); err != nil {
			return err
		}
		hs, err := b.findObjects(s, []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			attr(pkcs11.CKA_TOKEN, true),
		})
		if err != nil {
			return err
		}
		for _, h := range hs {
			label, err := b.labelOf(s, h)
			if err != nil {
				return err
			}
			if g, ok := parseRootLabel(label); ok {
				if _, dup := found[g]; !dup {
					found[g] = h
				}
			}
		}
		// Format-2 generations keep no root; their marker says they exist.
		hs, err = b.findObjects(s, []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
			attr(pkcs11.CKA_TOKEN, true),
		})
		if err != nil {
			return err
		}
		for _, h := range hs {
			as, err := b.p.mod.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{attr(pkcs11.CKA_LABEL, nil), attr(pkcs11.CKA_VALUE, nil)})
			if err != nil {
				return mapErr("C_GetAttributeValue", err)
			}
			if g, ok := parseMarkerLabel(string(as[0].Value)); ok {
				markers[g] = genFormat{format: keys.FormatDerive, fingerprint: string(as[1].Value)}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	gens := make([]uint32, 0, len(found)+len(markers))
	b.mu.Lock()
	clear(b.formats)
	for g, h := range found {
		gens = append(gens, g)
		b.handles[rootKey(g)] = h
		b.formats[g] = genFormat{format: keys.FormatHMAC}
	}
	for g, f := range markers {
		if _, dup := found[g]; dup {
			continue // a format-1 root wins; Provision never makes both
		}
		gens = append(gens, g)
		b.formats[g] = f
	}
	slices.Sort(gens)
	b.gens = gens
	b.mu.Unlock()
	return slices.Clone(gens), nil
}

func (b *backend) cachedGens() []uint32 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.gens
}

func (b *backend) errNotProvisioned() error {
	return fmt.Errorf("hsm: token %q: %w", b.p.label, keys.ErrNotProvisioned)
}

// current returns the generation Seal uses: the highest one on the token.
func (b *backend) current(ctx context.Context) (uint32, error) {
	// The caches below answer without the token; a closed backend must not.
	if b.p.closing.Load() {
		return 0, errClosed
	}
	gens := b.cachedGens()
	if len(gens) == 0 {
		var err error
		if gens, err = b.scanGenerations(ctx); err != nil {
			return 0, err
		}
	}
	if len(gens) == 0 {
		return 0, b.errNotProvisioned()
	}
	return gens[len(gens)-1], nil
}

// requireGen checks that the token holds generation gen, looking at the token
// again before it says no.
func (b *backend) requireGen(ctx context.Context, gen uint32) error {
	if slices.Contains(b.cachedGens(), gen) {
		return nil
	}
	gens, err := b.scanGenerations(ctx)
	if err != nil {
		return err
	}
	if len(gens) == 0 {
		return b.errNotProvisioned()
	}
	if !slices.Contains(gens, gen) {
		return fmt.Errorf("hsm: token %q holds generations %v, not %d: %w", b.p.label, gens, gen, keys.ErrUnknownGeneration)
	}
	return nil
}

// expand computes HKDF-Expand(SHA-256, root, info, 32) for the root of
// generation gen inside the token: one HMAC-SHA256 block over info || 0x01
// (RFC 5869 section 2.3; C_SignInit and C_Sign, v2.40 section 5.11). The
// result is secret; the caller zeroes it.
func (b *backend) expand(ctx context.Context, gen uint32, info []byte) ([]byte, error) {
	msg := make([]byte, 0, len(info)+1)
	msg = append(append(msg, info...), 0x01)
	var out []byte
	err := b.withKey(ctx, rootKey(gen), nil, func(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		c := b.p.mod.ctx
		if err := c.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}, h); err != nil {
			return mapErr("C_SignInit", err)
		}
		var err error
		out, err = c.Sign(s, msg)
		return mapErr("C_Sign", err)
	})
	var missing *errMissing
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("hsm: token %q holds no root of generation %d: %w", b.p.label, gen, keys.ErrUnknownGeneration)
	}
	if err != nil {
		return nil, err
	}
	if len(out) != 32 {
		keys.Zero(out)
		return nil, fmt.Errorf("hsm: CKM_SHA256_HMAC returned %d bytes, want 32: %w", len(out), keys.ErrUnavailable)
	}
	return out, nil
}

// formatOf returns the key format of generation gen, which the caller has
// checked the token holds.
func (b *backend) formatOf(gen uint32) genFormat {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if f, ok := b.formats[gen]; ok {
		return f
	}
	return genFormat{format: keys.FormatHMAC}
}

// createKEK derives the KEK of purpose p in generation gen and imports it.
func (b *backend) createKEK(ctx context.Context, gen uint32, p keys.Purpose) error {
	k := kekKey(gen, p)
	value, err := b.expand(ctx, gen, keys.KEKInfo(p))
	if err != nil {
		return err
	}
	defer keys.Zero(value)
	var h pkcs11.ObjectHandle
	err = b.p.doWrite(ctx, func(s pkcs11.SessionHandle) error {
		var found bool
		var err error
		// Another process may have created it since the lookup.
		if h, found, err = b.findOne(s, k); err != nil || found {
			return err
		}
		// C_CreateObject, v2.40 section 5.7.
		h, err = b.p.mod.ctx.CreateObject(s, kekTemplate(gen, p, value))
		if err != nil {
			return mapErr("C_CreateObject", err)
		}
		b.log.Info("pkcs11 derived key created", logToken, b.p.label, logLabel, k.label)
		return nil
	})
	if err != nil {
		return err
	}
	b.cacheHandle(k, h)
	return nil
}

// createP256 derives the P-256 key label in generation gen and imports its
// private half (sign only) and public half, whichever is missing.
func (b *backend) createP256(ctx context.Context, gen uint32, label string) error {
	k, err := keys.DeriveP256(label, func(info []byte) ([]byte, error) { return b.expand(ctx, gen, info) })
	if err != nil {
		return err
	}
	// d is zeroed below; crypto/ecdsa keeps its own copy of the scalar in k,
	// which only the garbage collector reclaims.
	d, err := k.Bytes()
	if err != nil {
		return fmt.Errorf("hsm: encode derived P-256 key %q: %w", label, err)
	}
	defer keys.Zero(d)
	point, err := k.PublicKey.Bytes()
	if err != nil {
		return fmt.Errorf("hsm: encode derived P-256 public key %q: %w", label, err)
	}
	ecPoint, err := asn1.Marshal(point) // DER OCTET STRING
	if err != nil {
		return fmt.Errorf("hsm: encode CKA_EC_POINT: %w", err)
	}
	pk, pub := privKey(gen, label), pubKey(gen, label)
	var priv pkcs11.ObjectHandle
	err = b.p.doWrite(ctx, func(s pkcs11.SessionHandle) error {
		c := b.p.mod.ctx
		var found bool
		var err error
		if priv, found, err = b.findOne(s, pk); err != nil {
			return err
		}
		if !found {
			if priv, err = c.CreateObject(s, p256PrivateTemplate(gen, label, d)); err != nil {
				return mapErr("C_CreateObject", err)
			}
			b.log.Info("pkcs11 derived key created", logToken, b.p.label, logLabel, pk.label)
		}
		if _, found, err = b.findOne(s, pub); err != nil || found {
			return err
		}
		if _, err = c.CreateObject(s, p256PublicTemplate(gen, label, ecPoint)); err != nil {
			return mapErr("C_CreateObject", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.cacheHandle(pk, priv)
	return nil
}

// kek names the KEK of purpose p in generation gen and how to make it when
// it is missing: format 1 derives it on first use; format 2 made it at
// provisioning and cannot make it again without the root.
func (b *backend) kek(gen uint32, p keys.Purpose) (objKey, func(context.Context) error) {
	k := kekKey(gen, p)
	if b.formatOf(gen).format == keys.FormatDerive {
		return k, func(context.Context) error {
			return b.missingDerived(&errMissing{k}, gen)
		}
	}
	return k, func(ctx context.Context) error { return b.createKEK(ctx, gen, p) }
}

func (b *backend) p256Create(gen uint32, label string) func(context.Context) error {
	if b.formatOf(gen).format == keys.FormatDerive {
		return func(ctx context.Context) error { return b.createP256Wrapped(ctx, gen, label) }
	}
	return func(ctx context.Context) error { return b.createP256(ctx, gen, label) }
}

// gcmMechanism is CKM_AES_GCM with the envelope's IV and AAD and a 128-bit
// tag. The IV is always the 12 random bytes of keys.NewEnvelope: SoftHSM
// accepts an empty IV and then encrypts deterministically. The caller frees
// the parameters after the operation.
func gcmMechanism(iv, aad []byte) ([]*pkcs11.Mechanism, *pkcs11.GCMParams) {
	params := pkcs11.NewGCMParams(iv, aad, 8*keys.TagSize)
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, params
}

// Seal encrypts plaintext under the KEK of purpose in the current generation
// with AES-256-GCM inside the token (C_EncryptInit and C_Encrypt, v2.40
// section 5.8).
func (b *backend) Seal(ctx context.Context, purpose keys.Purpose, plaintext, aad []byte) ([]byte, error) {
	gen, err := b.current(ctx)
	if err != nil {
		return nil, err
	}
	env, err := keys.NewEnvelope(purpose, gen)
	if err != nil {
		return nil, err
	}
	if err := keys.CheckPlaintextSize(len(plaintext)); err != nil {
		return nil, fmt.Errorf("hsm: seal: %w", err)
	}
	k, create := b.kek(gen, purpose)
	var ct []byte
	err = b.withKey(ctx, k, create, func(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		c := b.p.mod.ctx
		mech, params := gcmMechanism(env.IV, env.AAD(aad))
		defer params.Free()
		if err := c.EncryptInit(s, mech, h); err != nil {
			return mapErr("C_EncryptInit", err)
		}
		out, err := c.Encrypt(s, plaintext)
		if err != nil {
			return mapErr("C_Encrypt", err)
		}
		// Some tokens replace the caller's IV with one of their own; the
		// blob would then carry the wrong one.
		if used := params.IV(); !bytes.Equal(used, env.IV) {
			return fmt.Errorf("hsm: seal: the token did not use the IV it was given: %w", keys.ErrUnavailable)
		}
		ct = out
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(ct) != len(plaintext)+keys.TagSize {
		return nil, fmt.Errorf("hsm: seal: CKM_AES_GCM returned %d bytes for %d: %w", len(ct), len(plaintext), keys.ErrUnavailable)
	}
	env.Ciphertext = ct
	return env.Encode(), nil
}

// Unseal decrypts a blob made by Seal (C_DecryptInit and C_Decrypt, v2.40
// section 5.9). A tag that does not verify gives keys.ErrAuthFailed.
func (b *backend) Unseal(ctx context.Context, purpose keys.Purpose, sealed, aad []byte) ([]byte, error) {
	if _, err := b.current(ctx); err != nil {
		return nil, err
	}
	env, err := keys.ParseEnvelope(purpose, sealed)
	if err != nil {
		return nil, err
	}
	if err := b.requireGen(ctx, env.Generation); err != nil {
		return nil, err
	}
	k, create := b.kek(env.Generation, purpose)
	var pt []byte
	err = b.withKey(ctx, k, create, func(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		c := b.p.mod.ctx
		mech, params := gcmMechanism(env.IV, env.AAD(aad))
		defer params.Free()
		if err := c.DecryptInit(s, mech, h); err != nil {
			return mapErr("C_DecryptInit", err)
		}
		out, err := c.Decrypt(s, env.Ciphertext)
		if err != nil {
			return b.decryptFailed(s, h, err)
		}
		pt = out
		return nil
	})
	if err != nil {
		keys.Zero(pt)
		return nil, err
	}
	if len(pt) != len(env.Ciphertext)-keys.TagSize {
		keys.Zero(pt)
		return nil, fmt.Errorf("hsm: unseal: CKM_AES_GCM returned %d bytes for %d: %w", len(pt), len(env.Ciphertext), keys.ErrUnavailable)
	}
	return pt, nil
}

// AuthKey returns the public key of the P-256 key label in the current
// generation, creating the key pair on the token the first time.
func (b *backend) AuthKey(ctx context.Context, label string) (*ecdsa.PublicKey, error) {
	gen, err := b.current(ctx)
	if err != nil {
		return nil, err
	}
	if err := keys.ValidLabel(label); err != nil {
		return nil, err
	}
	objLabel := p256Label(gen, label)
	b.mu.RLock()
	point, ok := b.points[objLabel]
	b.mu.RUnlock()
	if !ok {
		err := b.withKey(ctx, pubKey(gen, label), b.p256Create(gen, label), func(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
			var err error
			point, err = b.ecPointOf(s, h)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	// A fresh key each call, so that no caller can change the cached one.
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, fmt.Errorf("hsm: token holds an invalid P-256 point for %q: %w", label, keys.ErrUnavailable)
	}
	if !ok {
		b.mu.Lock()
		b.points[objLabel] = point
		b.mu.Unlock()
	}
	return pub, nil
}

// SignAuth signs a 32-byte digest with the P-256 key label in the current
// generation (CKM_ECDSA over the digest, C_SignInit and C_Sign, v2.40 section
// 5.11; SoftHSM has no CKM_ECDSA_SHA256) and returns DER with low S.
func (b *backend) SignAuth(ctx context.Context, label string, digest []byte) ([]byte, error) {
	gen, err := b.current(ctx)
	if err != nil {
		return nil, err
	}
	if err := keys.ValidLabel(label); err != nil {
		return nil, err
	}
	if len(digest) != 32 {
		return nil, fmt.Errorf("hsm: sign: %w: digest of %d bytes, want 32", keys.ErrInvalidInput, len(digest))
	}
	var raw []byte
	err = b.withKey(ctx, privKey(gen, label), b.p256Create(gen, label), func(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
		c := b.p.mod.ctx
		if err := c.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, h); err != nil {
			return mapErr("C_SignInit", err)
		}
		var err error
		raw, err = c.Sign(s, digest)
		return mapErr("C_Sign", err)
	})
	if err != nil {
		return nil, err
	}
	der, err := keys.RawToDER(raw)
	if err != nil {
		return nil, fmt.Errorf("hsm: sign: %w: %w", keys.ErrUnavailable, err)
	}
	return der, nil
}

// Info reads the token's identity and its generations live, so it doubles as
// a health check: it fails when the token does not answer. Before
// provisioning it succeeds with Provisioned false.
func (b *backend) Info(ctx context.Context) (keys.BackendInfo, error) {
	info := keys.BackendInfo{Kind: "pkcs11"}
	err := b.p.do(ctx, func(s pkcs11.SessionHandle) error {
		c := b.p.mod.ctx
		// C_GetTokenInfo and C_GetInfo, v2.40 sections 5.5 and 5.4.
		ti, err := c.GetTokenInfo(b.p.currentSlot())
		if err != nil {
			return mapErr("C_GetTokenInfo", err)
		}
		li, err := c.GetInfo()
		if err != nil {
			return mapErr("C_GetInfo", err)
		}
		info.Identity = map[string]string{
			"token_label":  ti.Label,
			"manufacturer": ti.ManufacturerID,
			"model":        ti.Model,
			"serial":       ti.SerialNumber,
			"library": fmt.Sprintf("%s %d.%d (%s)", li.LibraryDescription,
				li.LibraryVersion.Major, li.LibraryVersion.Minor, li.ManufacturerID),
		}
		return nil
	})
	if err != nil {
		return keys.BackendInfo{}, err
	}
	gens, err := b.scanGenerations(ctx)
	if err != nil {
		return keys.BackendInfo{}, err
	}
	if len(gens) == 0 {
		return info, nil
	}
	info.Provisioned = true
	info.Generations = gens
	info.Generation = gens[len(gens)-1]
	if f := b.formatOf(info.Generation); f.format == keys.FormatDerive {
		// The token computed it at provisioning (provisionDerive); the
		// root that could compute it again is gone.
		info.Format, info.RootFingerprint = f.format, f.fingerprint
		return info, nil
	}
	info.Format = keys.FormatHMAC
	out, err := b.expand(ctx, info.Generation, keys.FingerprintInfo())
	if err != nil {
		return keys.BackendInfo{}, err
	}
	info.RootFingerprint = keys.FingerprintFromExpand(out)
	keys.Zero(out)
	return info, nil
}

// provisionLock is the creation-lock name Provision takes; object labels all
// start with "cachet/", so it cannot collide with one.
const provisionLock = "provision"

// Provision imports root as the root of generation opts.Generation and
// creates both KEKs and the audit key from it, so that a token that cannot
// derive fails here rather than on the first request; if that fails, the
// generation's objects are removed again. It refuses with
// keys.ErrAlreadyProvisioned when the generation's root exists, unless
// opts.Replace, which first destroys every object of that generation.
// Provision keeps no reference to root. It must not run while other calls use
// the same generation.
func (b *backend) Provision(ctx context.Context, root []byte, opts keys.ProvisionOptions) error {
	if len(root) != keys.RootSize {
		return fmt.Errorf("hsm: provision: %w: root of %d bytes, want %d", keys.ErrInvalidInput, len(root), keys.RootSize)
	}
	gen := opts.Generation
	if gen == 0 {
		return fmt.Errorf("hsm: provision: %w: generation 0", keys.ErrInvalidInput)
	}
	format := opts.Format
	if format == 0 {
		format = keys.FormatHMAC
	}
	if !format.Valid() {
		return fmt.Errorf("hsm: provision: %w: key format %d", keys.ErrInvalidInput, format)
	}
	unlock, err := b.lockLabel(ctx, provisionLock)
	if err != nil {
		return err
	}
	defer unlock()
	defer b.forgetAll()

	removed := 0
	err = b.p.doWrite(ctx, func(s pkcs11.SessionHandle) error {
		if _, err := b.p.login(s); err != nil {
			return err
		}
		hs, err := b.findObjects(s, []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			attr(pkcs11.CKA_TOKEN, true),
			attr(pkcs11.CKA_LABEL, rootLabel(gen)),
		})
		if err != nil {
			return err
		}
		ms, err := b.findObjects(s, []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
			attr(pkcs11.CKA_TOKEN, true),
			attr(pkcs11.CKA_LABEL, markerLabel(gen)),
		})
		if err != nil {
			return err
		}
		if len(hs)+len(ms) > 0 && !opts.Replace {
			return fmt.Errorf("hsm: token %q, generation %d: %w", b.p.label, gen, keys.ErrAlreadyProvisioned)
		}
		// Without a root or marker, objects of gen are leftovers of a
		// provisioning that did not finish; they go too.
		removed, err = b.destroyGeneration(s, gen)
		return err
	})
	if err != nil {
		return err
	}
	b.forgetAll()
	if format == keys.FormatDerive {
		if err := b.provisionDerive(ctx, gen, root); err != nil {
			return err
		}
		b.forgetAll()
		b.log.Info("pkcs11 token provisioned", logToken, b.p.label, logGen, gen, "key_format", 2, logReplaced, removed)
		return nil
	}
	err = b.p.doWrite(ctx, func(s pkcs11.SessionHandle) error {
		_, err := b.p.mod.ctx.CreateObject(s, rootTemplate(gen, root))
		return mapErr("C_CreateObject", err)
	})
	if err != nil {
		return fmt.Errorf("hsm: provision generation %d: import root: %w", gen, err)
	}
	if err := b.prepare(ctx, gen); err != nil {
		return b.rollBack(ctx, gen, fmt.Errorf("hsm: provision generation %d: %w", gen, err))
	}
	b.log.Info("pkcs11 token provisioned", logToken, b.p.label, logGen, gen, logReplaced, removed)
	return nil
}

// prepare creates every key of generation gen that Cachet always needs.
func (b *backend) prepare(ctx context.Context, gen uint32) error {
	for _, p := range keys.Purposes {
		k, create := b.kek(gen, p)
		if _, err := b.handle(ctx, k, create); err != nil {
			return err
		}
	}
	_, err := b.handle(ctx, pubKey(gen, keys.AuditKeyLabel), b.p256Create(gen, keys.AuditKeyLabel))
	return err
}

// forgetAll drops every cache, after the token's objects changed.
func (b *backend) forgetAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.handles)
	clear(b.points)
	b.gens = nil
}

// rollBack removes what a failed provisioning of gen left in the token and
// returns cause joined with any failure to remove it.
func (b *backend) rollBack(ctx context.Context, gen uint32, cause error) error {
	b.forgetAll()
	rb := b.p.doWrite(ctx, func(s pkcs11.SessionHandle) error {
		_, err := b.destroyGeneration(s, gen)
		return err
	})
	if rb != nil {
		rb = fmt.Errorf("hsm: roll back generation %d: %w", gen, rb)
	}
	return errors.Join(cause, rb)
}
