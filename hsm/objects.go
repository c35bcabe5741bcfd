package hsm

import (
	"context"
	"encoding/asn1"
	"fmt"
	"strconv"
	"strings"

	"github.com/cachet-custody/cachet/keys"
	"github.com/miekg/pkcs11"
)

// Object labels. Everything Cachet keeps on a token lives under
// "cachet/g<gen>/", so Provision with Replace can remove one generation and
// nothing else.
const labelPrefix = "cachet/g"

func genPrefix(gen uint32) string { return labelPrefix + strconv.FormatUint(uint64(gen), 10) + "/" }

func rootLabel(gen uint32) string { return genPrefix(gen) + "root" }

func kekLabel(gen uint32, p keys.Purpose) string { return genPrefix(gen) + "kek/" + string(p) }

func p256Label(gen uint32, label string) string { return genPrefix(gen) + "p256/" + label }

// parseRootLabel returns the generation of a root object's label. It accepts
// only the exact form rootLabel writes, so "cachet/g01/root" is not gen 1.
func parseRootLabel(label string) (uint32, bool) { return parseGenLabel(label, "/root", rootLabel) }

// parseGenLabel returns the generation of a label labelPrefix + gen +
// suffix, accepting only the exact form that format writes.
func parseGenLabel(label, suffix string, format func(uint32) string) (uint32, bool) {
	rest, ok := strings.CutPrefix(label, labelPrefix)
	if !ok {
		return 0, false
	}
	num, ok := strings.CutSuffix(rest, suffix)
	if !ok {
		return 0, false
	}
	g, err := strconv.ParseUint(num, 10, 32)
	if err != nil || g == 0 || format(uint32(g)) != label {
		return 0, false
	}
	return uint32(g), true
}

// p256Params is CKA_EC_PARAMS for P-256: the DER OID 1.2.840.10045.3.1.7
// (secp256r1), as PKCS#11 v2.40 Current Mechanisms section 2.3 requires.
var p256Params = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// objKey names one token object: its class and its label.
type objKey struct {
	class uint
	label string
}

func rootKey(gen uint32) objKey { return objKey{pkcs11.CKO_SECRET_KEY, rootLabel(gen)} }

func kekKey(gen uint32, p keys.Purpose) objKey {
	return objKey{pkcs11.CKO_SECRET_KEY, kekLabel(gen, p)}
}

func privKey(gen uint32, label string) objKey {
	return objKey{pkcs11.CKO_PRIVATE_KEY, p256Label(gen, label)}
}

func pubKey(gen uint32, label string) objKey {
	return objKey{pkcs11.CKO_PUBLIC_KEY, p256Label(gen, label)}
}

func attr(t uint, v any) *pkcs11.Attribute { return pkcs11.NewAttribute(t, v) }

// secretCommon are the attributes every secret or private object of Cachet
// carries: a private token object (invisible until C_Login) whose value can
// never be read (CKA_SENSITIVE) nor wrapped out (CKA_EXTRACTABLE false).
// PKCS#11 lets neither be turned back (v2.40 sections 4.9
// and 4.10), and CKA_MODIFIABLE
// false keeps the usage flags from being widened later.
func secretCommon(class, keyType uint, label string) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, class),
		attr(pkcs11.CKA_KEY_TYPE, keyType),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_SENSITIVE, true),
		attr(pkcs11.CKA_EXTRACTABLE, false),
		attr(pkcs11.CKA_MODIFIABLE, false),
		attr(pkcs11.CKA_LABEL, label),
	}
}

// rootTemplate imports the root as an HMAC key and nothing else: it can only
// compute HMAC-SHA256 (the HKDF-Expand step), never encrypt, derive or wrap.
// value is referenced, not copied; the caller zeroes it.
func rootTemplate(gen uint32, value []byte) []*pkcs11.Attribute {
	return append(secretCommon(pkcs11.CKO_SECRET_KEY, pkcs11.CKK_GENERIC_SECRET, rootLabel(gen)),
		attr(pkcs11.CKA_SIGN, true),
		attr(pkcs11.CKA_VERIFY, false),
		attr(pkcs11.CKA_ENCRYPT, false),
		attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_DERIVE, false),
		attr(pkcs11.CKA_WRAP, false),
		attr(pkcs11.CKA_UNWRAP, false),
		attr(pkcs11.CKA_VALUE, value),
	)
}

// kekTemplate imports a derived AES-256 key that only encrypts and decrypts.
func kekTemplate(gen uint32, p keys.Purpose, value []byte) []*pkcs11.Attribute {
	return append(secretCommon(pkcs11.CKO_SECRET_KEY, pkcs11.CKK_AES, kekLabel(gen, p)),
		attr(pkcs11.CKA_ENCRYPT, true),
		attr(pkcs11.CKA_DECRYPT, true),
		attr(pkcs11.CKA_SIGN, false),
		attr(pkcs11.CKA_VERIFY, false),
		attr(pkcs11.CKA_DERIVE, false),
		attr(pkcs11.CKA_WRAP, false),
		attr(pkcs11.CKA_UNWRAP, false),
		attr(pkcs11.CKA_VALUE, value),
	)
}

// p256PrivateTemplate imports a derived P-256 scalar d (32 bytes, big endian)
// that only signs.
func p256PrivateTemplate(gen uint32, label string, d []byte) []*pkcs11.Attribute {
	return append(secretCommon(pkcs11.CKO_PRIVATE_KEY, pkcs11.CKK_EC, p256Label(gen, label)),
		attr(pkcs11.CKA_SIGN, true),
		attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_DERIVE, false),
		attr(pkcs11.CKA_UNWRAP, false),
		attr(pkcs11.CKA_SIGN_RECOVER, false),
		attr(pkcs11.CKA_EC_PARAMS, p256Params),
		attr(pkcs11.CKA_VALUE, d),
	)
}

// p256PublicTemplate stores the public half next to the private key, so
// AuthKey reads it from the token instead of deriving it again. ecPoint is
// the DER OCTET STRING around the 65-byte uncompressed point (v2.40 Current
// Mechanisms section 2.3). It is private only so that all of Cachet's
// objects become visible together, at login.
func p256PublicTemplate(gen uint32, label string, ecPoint []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_MODIFIABLE, false),
		attr(pkcs11.CKA_LABEL, p256Label(gen, label)),
		attr(pkcs11.CKA_VERIFY, true),
		attr(pkcs11.CKA_ENCRYPT, false),
		attr(pkcs11.CKA_WRAP, false),
		attr(pkcs11.CKA_DERIVE, false),
		attr(pkcs11.CKA_EC_PARAMS, p256Params),
		attr(pkcs11.CKA_EC_POINT, ecPoint),
	}
}

// findObjects returns every token object matching tmpl. It always ends the
// search, since an open search blocks other calls on the session
// (C_FindObjectsInit, C_FindObjects, C_FindObjectsFinal; v2.40 section 5.7).
func (b *backend) findObjects(s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) (hs []pkcs11.ObjectHandle, err error) {
	c := b.p.mod.ctx
	if err := c.FindObjectsInit(s, tmpl); err != nil {
		return nil, mapErr("C_FindObjectsInit", err)
	}
	defer func() {
		if ferr := c.FindObjectsFinal(s); ferr != nil && err == nil {
			hs, err = nil, mapErr("C_FindObjectsFinal", ferr)
		}
	}()
	for {
		batch, _, err := c.FindObjects(s, 64)
		if err != nil {
			return nil, mapErr("C_FindObjects", err)
		}
		if len(batch) == 0 {
			return hs, nil
		}
		hs = append(hs, batch...)
	}
}

// findOne returns the object named k. Two processes, or a crash between
// C_CreateObject and caching, can leave two objects with one label; they were
// derived from the same root with the same info and hold the same value, so
// the first one serves.
func (b *backend) findOne(s pkcs11.SessionHandle, k objKey) (pkcs11.ObjectHandle, bool, error) {
	hs, err := b.findObjects(s, []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, k.class),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_LABEL, k.label),
	})
	if err != nil || len(hs) == 0 {
		return 0, false, err
	}
	return hs[0], true, nil
}

// labelOf reads an object's CKA_LABEL.
func (b *backend) labelOf(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) (string, error) {
	a, err := b.p.mod.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{attr(pkcs11.CKA_LABEL, nil)})
	if err != nil {
		return "", mapErr("C_GetAttributeValue", err)
	}
	return string(a[0].Value), nil
}

// ecPointOf reads a public key object's CKA_EC_POINT and unwraps the DER
// OCTET STRING around the uncompressed point.
func (b *backend) ecPointOf(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) ([]byte, error) {
	a, err := b.p.mod.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{attr(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, mapErr("C_GetAttributeValue", err)
	}
	var point []byte
	rest, err := asn1.Unmarshal(a[0].Value, &point)
	if err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("hsm: token returned a malformed CKA_EC_POINT: %w", keys.ErrUnavailable)
	}
	return point, nil
}

// destroyGeneration destroys every token object whose label starts with
// "cachet/g<gen>/" (C_DestroyObject, v2.40 section 5.7).
func (b *backend) destroyGeneration(s pkcs11.SessionHandle, gen uint32) (int, error) {
	hs, err := b.findObjects(s, []*pkcs11.Attribute{attr(pkcs11.CKA_TOKEN, true)})
	if err != nil {
		return 0, err
	}
	prefix, n := genPrefix(gen), 0
	for _, h := range hs {
		label, err := b.labelOf(s, h)
		if err != nil {
			return n, err
		}
		if !strings.HasPrefix(label, prefix) {
			continue
		}
		if err := b.p.mod.ctx.DestroyObject(s, h); err != nil {
			return n, mapErr("C_DestroyObject", err)
		}
		n++
	}
	return n, nil
}

// cachedHandle, cacheHandle and forgetHandles keep object handles between
// operations, so the fast path of Seal, Unseal and SignAuth makes no
// C_FindObjects call.
func (b *backend) cachedHandle(k objKey) (pkcs11.ObjectHandle, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	h, ok := b.handles[k]
	return h, ok
}

func (b *backend) cacheHandle(k objKey, h pkcs11.ObjectHandle) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handles[k] = h
}

func (b *backend) forgetHandles() {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.handles)
}

// lookup finds k on the token and caches its handle. A private object is
// invisible to a session that is not logged in, so before it concludes that
// k is absent it makes sure the token is logged in and looks again; a
// logged-out token must never read as "not provisioned".
func (b *backend) lookup(ctx context.Context, k objKey) (pkcs11.ObjectHandle, bool, error) {
	var h pkcs11.ObjectHandle
	var found bool
	err := b.p.do(ctx, func(s pkcs11.SessionHandle) error {
		var err error
		h, found, err = b.findOne(s, k)
		if err != nil || found {
			return err
		}
		relogged, err := b.p.login(s)
		if err != nil {
			return err
		}
		if relogged {
			if h, found, err = b.findOne(s, k); err != nil || found {
				return err
			}
		}
		// A token that went away answers searches with nothing: before
		// "absent" is concluded the token must answer (C_GetTokenInfo),
		// so an unreachable token never reads as one without a root.
		if _, err := b.p.mod.ctx.GetTokenInfo(b.p.currentSlot()); err != nil {
			return mapErr("C_GetTokenInfo", err)
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	if found {
		b.cacheHandle(k, h)
	}
	return h, found, nil
}

// errMissing is handle's result for an object that is absent and that it may
// not create; callers turn it into the sentinel that fits.
type errMissing struct{ k objKey }

func (e *errMissing) Error() string { return fmt.Sprintf("hsm: token object %q not found", e.k.label) }

// handle returns the handle of k, from the cache or the token. When k is
// absent and create is not nil, it runs create under a lock for k's label, so
// that many goroutines asking for a new key at once create it once. No
// session is held while waiting for that lock: with a pool of one session,
// the creator needs the session the waiters would otherwise hold.
func (b *backend) handle(ctx context.Context, k objKey, create func(context.Context) error) (pkcs11.ObjectHandle, error) {
	if h, ok := b.cachedHandle(k); ok {
		return h, nil
	}
	h, found, err := b.lookup(ctx, k)
	if err != nil || found {
		return h, err
	}
	if create == nil {
		return 0, &errMissing{k}
	}
	unlock, err := b.lockLabel(ctx, k.label)
	if err != nil {
		return 0, err
	}
	defer unlock()
	if h, ok := b.cachedHandle(k); ok {
		return h, nil
	}
	if err := create(ctx); err != nil {
		return 0, err
	}
	if h, ok := b.cachedHandle(k); ok {
		return h, nil
	}
	h, found, err = b.lookup(ctx, k)
	if err == nil && !found {
		err = fmt.Errorf("hsm: token object %q missing right after it was created: %w", k.label, keys.ErrUnavailable)
	}
	return h, err
}

// lockLabel takes the creation lock of one object label. It is a channel, not
// a mutex, so that waiting honours ctx.
func (b *backend) lockLabel(ctx context.Context, label string) (func(), error) {
	b.mu.Lock()
	l, ok := b.locks[label]
	if !ok {
		l = make(chan struct{}, 1)
		b.locks[label] = l
	}
	b.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("hsm: waiting to create %q: %w", label, ctx.Err())
	}
}

// withKey runs fn with the handle of k on one session. If the handle turns
// out to be stale (the token logged out, so the handles of private objects
// are gone), it forgets every cached handle, finds k again and retries once.
func (b *backend) withKey(ctx context.Context, k objKey, create func(context.Context) error, fn func(pkcs11.SessionHandle, pkcs11.ObjectHandle) error) error {
	for attempt := 0; ; attempt++ {
		h, err := b.handle(ctx, k, create)
		if err != nil {
			return err
		}
		err = b.p.do(ctx, func(s pkcs11.SessionHandle) error { return fn(s, h) })
		if attempt > 0 || !staleHandle(err) {
			return err
		}
		b.log.Warn("pkcs11 object handles are stale; finding the objects again", logToken, b.p.label, logErr, err)
		b.forgetHandles()
	}
}
