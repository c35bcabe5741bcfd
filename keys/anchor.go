package keys

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// AnchorState is the head of the audit record as the hardware holds it: the
// sequence number and hash of the last checkpoint record anchored.
type AnchorState struct {
	Seq  uint64
	Hash []byte // 32 bytes
}

// anchorMagic starts an encoded AnchorState ("CAH" + version 1).
var anchorMagic = []byte{'C', 'A', 'H', 1}

// AnchorSize is the size of an encoded AnchorState.
const AnchorSize = 4 + 8 + 32

// Encode is the stored form: magic, sequence (big-endian), hash.
func (a AnchorState) Encode() ([]byte, error) {
	if len(a.Hash) != 32 {
		return nil, fmt.Errorf("%w: anchor hash is %d bytes, want 32", ErrInvalidInput, len(a.Hash))
	}
	b := make([]byte, 0, AnchorSize)
	b = append(b, anchorMagic...)
	b = binary.BigEndian.AppendUint64(b, a.Seq)
	return append(b, a.Hash...), nil
}

// DecodeAnchor parses what Encode wrote.
func DecodeAnchor(b []byte) (AnchorState, error) {
	if len(b) != AnchorSize || string(b[:4]) != string(anchorMagic) {
		return AnchorState{}, errors.New("the hardware's anchor of the audit record is not in Cachet's format")
	}
	return AnchorState{Seq: binary.BigEndian.Uint64(b[4:12]), Hash: append([]byte(nil), b[12:]...)}, nil
}

// Anchor is the optional interface of a backend that keeps the head of the
// audit record outside the database, so that a database rolled back to an
// older copy is noticed: the TPM in an NV index, the HSM in a token data
// object. The audit log advances it at every checkpoint; start-up and `cachet
// audit verify` compare the database with it. Callers find it by type
// assertion.
//
// ReadAnchor returns ok false when nothing was anchored yet. AdvanceAnchor
// refuses to move the anchor backwards (ErrAnchorBackwards); Reanchor sets it
// to any state, for `cachet restore` onto hardware whose record deliberately
// starts from another database.
type Anchor interface {
	ReadAnchor(ctx context.Context) (state AnchorState, ok bool, err error)
	AdvanceAnchor(ctx context.Context, state AnchorState) error
	Reanchor(ctx context.Context, state AnchorState) error
}

// ErrAnchorBackwards means an anchor would move to an earlier sequence
// number than the hardware holds.
var ErrAnchorBackwards = errors.New("the hardware's anchor of the audit record is ahead of the state given")
