package tpm

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cachet-custody/cachet/keys"
)

// AnchorIndex is the NV index that holds the head of the audit record, in
// the owner's range of NV indexes (TCG handle registry: 0x01000000 to
// 0x013FFFFF).
const AnchorIndex tpm2.TPMHandle = 0x01000C01

var _ keys.Anchor = (*backend)(nil)

// Why an ordinary NV index and not an NV counter: a TPM counter can only be
// incremented by one per TPM2_NV_Increment (Part 3, section 31.8), so it
// cannot hold a checkpoint's sequence number without thousands of commands,
// and it cannot hold the checkpoint's hash at all. The ordinary index holds
// both (44 bytes: "CAH" 1, sequence, hash); monotonicity is enforced by
// AdvanceAnchor, and writing needs owner authorization. It is not
// TPMA_NV_ORDERLY, so every write reaches NV before the command returns (a
// power cut cannot lose it). TPM NV has a limited write endurance: one write
// per audit checkpoint (by default at most one per 1000 records or 5
// minutes) is the budget this spends.
func anchorPublic() tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{
		NVIndex: AnchorIndex,
		NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{
			OwnerWrite: true, OwnerRead: true, AuthRead: true, NoDA: true,
			NT: tpm2.TPMNTOrdinary,
		},
		DataSize: keys.AnchorSize,
	}
}

var ownerAuth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}

// readAnchor reads the index; ok is false when it is not defined or was
// never written.
func readAnchor(t transport.TPM) (st keys.AnchorState, name tpm2.TPM2BName, ok bool, err error) {
	pub, err := tpm2.NVReadPublic{NVIndex: AnchorIndex}.Execute(t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return st, name, false, nil
	}
	if err != nil {
		return st, name, false, tpmOp("NV_ReadPublic(anchor)", err)
	}
	p, err := pub.NVPublic.Contents()
	if err != nil {
		return st, name, false, tpmOp("NV_ReadPublic(anchor): parse", err)
	}
	if !p.Attributes.Written {
		return st, pub.NVName, false, nil
	}
	rsp, err := tpm2.NVRead{
		AuthHandle: tpm2.AuthHandle{Handle: AnchorIndex, Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: AnchorIndex, Name: pub.NVName},
		Size:       keys.AnchorSize,
	}.Execute(t)
	if err != nil {
		return st, name, false, tpmOp("NV_Read(anchor)", err)
	}
	st, err = keys.DecodeAnchor(rsp.Data.Buffer)
	if err != nil {
		return st, name, false, err
	}
	return st, pub.NVName, true, nil
}

// ReadAnchor reads the head of the audit record from the TPM's NV index
// (Part 3, sections 31.6 and 31.13).
func (b *backend) ReadAnchor(ctx context.Context) (st keys.AnchorState, ok bool, err error) {
	err = b.dev.do(ctx, "read anchor", func(t transport.TPM) (err error) {
		st, _, ok, err = readAnchor(t)
		return err
	})
	return st, ok, err
}

// AdvanceAnchor writes st unless the index holds a later sequence number.
func (b *backend) AdvanceAnchor(ctx context.Context, st keys.AnchorState) error {
	return b.writeAnchor(ctx, st, false)
}

// Reanchor writes st whatever the index holds.
func (b *backend) Reanchor(ctx context.Context, st keys.AnchorState) error {
	return b.writeAnchor(ctx, st, true)
}

func (b *backend) writeAnchor(ctx context.Context, st keys.AnchorState, force bool) error {
	data, err := st.Encode()
	if err != nil {
		return err
	}
	return b.dev.do(ctx, "write anchor", func(t transport.TPM) error {
		cur, name, ok, err := readAnchor(t)
		if err != nil {
			return err
		}
		if ok && cur.Seq > st.Seq && !force {
			return fmt.Errorf("%w: TPM anchor at record %d, asked to write %d", keys.ErrAnchorBackwards, cur.Seq, st.Seq)
		}
		if len(name.Buffer) == 0 {
			// Part 3, section 31.3, TPM2_NV_DefineSpace.
			if _, err := (tpm2.NVDefineSpace{AuthHandle: ownerAuth, PublicInfo: tpm2.New2B(anchorPublic())}).Execute(t); err != nil {
				return tpmOp("NV_DefineSpace(anchor)", err)
			}
			pub, err := tpm2.NVReadPublic{NVIndex: AnchorIndex}.Execute(t)
			if err != nil {
				return tpmOp("NV_ReadPublic(anchor)", err)
			}
			name = pub.NVName
		}
		// Part 3, section 31.9, TPM2_NV_Write.
		_, err = tpm2.NVWrite{
			AuthHandle: ownerAuth,
			NVIndex:    tpm2.NamedHandle{Handle: AnchorIndex, Name: name},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: data},
		}.Execute(t)
		return tpmOp("NV_Write(anchor)", err)
	})
}
