package hsm

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/cachet-custody/cachet/keys"
)

var _ keys.Anchor = (*backend)(nil)

// anchorLabel names the token data objects that hold the head of the audit
// record.
const anchorLabel = "cachet/anchor"

// Why a data object: PKCS#11's monotonic counter (CKO_HW_FEATURE with
// CKH_MONOTONIC_COUNTER, v2.40 section 4.3) is read-only to applications,
// and SoftHSM does not offer one; a private token data object (CKO_DATA,
// section 4.5) is what every token stores. It is written the way a log is:
// each anchor is a new object created before the older ones are destroyed,
// so a crash between the two leaves two objects, never none, and a reader
// takes the highest sequence number. Monotonicity is enforced by
// AdvanceAnchor. Whoever holds the user PIN can change it; that is the same
// trust as the keys themselves.

func anchorTemplate(value []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_MODIFIABLE, false),
		attr(pkcs11.CKA_LABEL, anchorLabel),
		attr(pkcs11.CKA_APPLICATION, "cachet"),
		attr(pkcs11.CKA_VALUE, value),
	}
}

// readAnchors returns every anchor object and the highest state among them.
func (b *backend) readAnchors(s pkcs11.SessionHandle) (best keys.AnchorState, ok bool, hs []pkcs11.ObjectHandle, err error) {
	if _, err := b.p.login(s); err != nil {
		return best, false, nil, err
	}
	hs, err = b.findObjects(s, []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_LABEL, anchorLabel),
	})
	if err != nil {
		return best, false, nil, err
	}
	for _, h := range hs {
		a, err := b.p.mod.ctx.GetAttributeValue(s, h, []*pkcs11.Attribute{attr(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			return best, false, nil, mapErr("C_GetAttributeValue", err)
		}
		st, err := keys.DecodeAnchor(a[0].Value)
		if err != nil {
			return best, false, nil, fmt.Errorf("hsm: token %q: %w", b.p.label, err)
		}
		if !ok || st.Seq > best.Seq {
			best, ok = st, true
		}
	}
	return best, ok, hs, nil
}

// ReadAnchor reads the head of the audit record from the token.
func (b *backend) ReadAnchor(ctx context.Context) (st keys.AnchorState, ok bool, err error) {
	err = b.p.do(ctx, func(s pkcs11.SessionHandle) (err error) {
		st, ok, _, err = b.readAnchors(s)
		return err
	})
	return st, ok, err
}

// AdvanceAnchor stores st unless the token holds a later sequence number.
func (b *backend) AdvanceAnchor(ctx context.Context, st keys.AnchorState) error {
	return b.writeAnchor(ctx, st, false)
}

// Reanchor stores st whatever the token holds.
func (b *backend) Reanchor(ctx context.Context, st keys.AnchorState) error {
	return b.writeAnchor(ctx, st, true)
}

func (b *backend) writeAnchor(ctx context.Context, st keys.AnchorState, force bool) error {
	value, err := st.Encode()
	if err != nil {
		return err
	}
	return b.p.doWrite(ctx, func(s pkcs11.SessionHandle) error {
		cur, ok, old, err := b.readAnchors(s)
		if err != nil {
			return err
		}
		if ok && cur.Seq > st.Seq && !force {
			return fmt.Errorf("%w: token anchor at record %d, asked to write %d", keys.ErrAnchorBackwards, cur.Seq, st.Seq)
		}
		// C_CreateObject, then C_DestroyObject of the older ones (v2.40
		// sections 5.7).
		if _, err := b.p.mod.ctx.CreateObject(s, anchorTemplate(value)); err != nil {
			return mapErr("C_CreateObject", err)
		}
		for _, h := range old {
			if err := b.p.mod.ctx.DestroyObject(s, h); err != nil {
				return mapErr("C_DestroyObject", err)
			}
		}
		return nil
	})
}
