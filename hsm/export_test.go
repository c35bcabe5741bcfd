package hsm

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/cachet-custody/cachet/keys"
	"github.com/miekg/pkcs11"
)

// Test hooks: a raw PKCS#11 path into the token behind a Backend, so that
// tests can check what the token holds rather than what the Backend says.

var (
	RootLabel      = rootLabel
	ParseRootLabel = parseRootLabel
	KEKLabel       = kekLabel
	P256Label      = p256Label
)

func raw(kb keys.Backend) *backend { return kb.(*backend) }

// Attributes reads the attributes types of the first object with class and
// label in one C_GetAttributeValue call. Its error is the mapped PKCS#11 error,
// so errors.As finds the pkcs11.Error.
func Attributes(ctx context.Context, kb keys.Backend, class uint, label string, types ...uint) (map[uint][]byte, error) {
	b := raw(kb)
	tmpl := make([]*pkcs11.Attribute, len(types))
	for i, t := range types {
		tmpl[i] = pkcs11.NewAttribute(t, nil)
	}
	out := map[uint][]byte{}
	err := b.p.do(ctx, func(s pkcs11.SessionHandle) error {
		h, found, err := b.findOne(s, objKey{class, label})
		if err != nil {
			return err
		}
		if !found {
			return &errMissing{objKey{class, label}}
		}
		as, err := b.p.mod.ctx.GetAttributeValue(s, h, tmpl)
		if err != nil {
			return mapErr("C_GetAttributeValue", err)
		}
		for _, a := range as {
			out[a.Type] = a.Value
		}
		return nil
	})
	return out, err
}

// SetAttribute tries to change one attribute of the first object with class
// and label.
func SetAttribute(ctx context.Context, kb keys.Backend, class uint, label string, a *pkcs11.Attribute) error {
	b := raw(kb)
	return b.p.doWrite(ctx, func(s pkcs11.SessionHandle) error {
		h, found, err := b.findOne(s, objKey{class, label})
		if err != nil {
			return err
		}
		if !found {
			return &errMissing{objKey{class, label}}
		}
		return mapErr("C_SetAttributeValue", b.p.mod.ctx.SetAttributeValue(s, h, []*pkcs11.Attribute{a}))
	})
}

// CountObjects counts the token objects with class and label.
func CountObjects(ctx context.Context, kb keys.Backend, class uint, label string) (int, error) {
	b := raw(kb)
	n := 0
	err := b.p.do(ctx, func(s pkcs11.SessionHandle) error {
		hs, err := b.findObjects(s, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		})
		n = len(hs)
		return err
	})
	return n, err
}

// CloseAllSessions calls C_CloseAllSessions on the Backend's token while it
// holds every pooled session, which also logs the token out and invalidates
// the handles of private objects. The pool keeps the dead session handles.
func CloseAllSessions(ctx context.Context, kb keys.Backend) error {
	b := raw(kb)
	return b.p.withAll(ctx, func() error {
		b.p.mod.objMu.Lock()
		defer b.p.mod.objMu.Unlock()
		return mapErr("C_CloseAllSessions", b.p.mod.ctx.CloseAllSessions(b.p.currentSlot()))
	})
}

// ModuleRefs reports how many users hold the module at path; 0 means it is
// finalized.
func ModuleRefs(path string) int {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if m := registry.mods[moduleKey(path)]; m != nil {
		return m.refs
	}
	return 0
}

// Object names a token object by class and label.
type Object struct {
	Class uint
	Label string
}

// ObjectCounts counts every token object on the Backend's token by class and
// label, private objects included.
func ObjectCounts(ctx context.Context, kb keys.Backend) (map[Object]int, error) {
	b := raw(kb)
	counts := map[Object]int{}
	err := b.p.do(ctx, func(s pkcs11.SessionHandle) error {
		clear(counts)
		if _, err := b.p.login(s); err != nil {
			return err
		}
		hs, err := b.findObjects(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true)})
		if err != nil {
			return err
		}
		for _, h := range hs {
			as, err := b.p.mod.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
			})
			if err != nil {
				return mapErr("C_GetAttributeValue", err)
			}
			// CK_ULONG in the module's byte order.
			var class uint64
			switch v := as[0].Value; len(v) {
			case 8:
				class = binary.NativeEndian.Uint64(v)
			case 4:
				class = uint64(binary.NativeEndian.Uint32(v))
			default:
				return fmt.Errorf("CKA_CLASS of %d bytes", len(v))
			}
			counts[Object{Class: uint(class), Label: string(as[1].Value)}]++
		}
		return nil
	})
	return counts, err
}

// RawSession runs fn on one of the Backend's logged-in sessions, with every
// other call into the module excluded: the access of someone who holds the
// PIN and talks to the module directly.
func RawSession(ctx context.Context, kb keys.Backend, fn func(c *pkcs11.Ctx, s pkcs11.SessionHandle) error) error {
	b := raw(kb)
	return b.p.doWrite(ctx, func(s pkcs11.SessionHandle) error {
		if _, err := b.p.login(s); err != nil {
			return err
		}
		return fn(b.p.mod.ctx, s)
	})
}

// DerivationString and AttributeArray build the pointer-carrying PKCS#11
// parameters for tests; free releases them.
func DerivationString(data []byte) (param []byte, free func()) {
	var m cMem
	return m.derivationString(data), m.free
}

// CBCDerivationParams is CK_AES_CBC_ENCRYPT_DATA_PARAMS: iv (16 bytes), then
// the data pointer and its length.
func CBCDerivationParams(iv, data []byte) (param []byte, free func()) {
	var m cMem
	s := m.derivationString(data)
	return append(append([]byte(nil), iv...), s...), m.free
}

var (
	MarkerLabel = markerLabel
	WrapLabel   = wrapLabel
)
