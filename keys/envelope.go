package keys

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// A sealed blob is
//
//	magic 'C' | version 1 | purpose tag | generation (uint32, big endian) | IV (12) | ciphertext || tag (16)
//
// The 7-byte header is authenticated: the GCM additional data is the header
// followed by the caller's aad. So a blob cannot be relabelled with another
// purpose or generation without failing authentication.
const (
	blobMagic     = 'C'
	blobVersion   = 1
	headerSize    = 7
	IVSize        = 12
	TagSize       = 16
	BlobOverhead  = headerSize + IVSize + TagSize
	maxSealedSize = 1 << 20
	// MaxPlaintext is the largest secret Seal accepts: its blob must stay
	// within what ParseEnvelope accepts.
	MaxPlaintext = maxSealedSize - BlobOverhead
)

// CheckPlaintextSize refuses a secret too large to seal. Backends call it
// before sealing, so no blob is ever made that Unseal would refuse.
func CheckPlaintextSize(n int) error {
	if n > MaxPlaintext {
		return fmt.Errorf("%w: plaintext of %d bytes, at most %d", ErrInvalidInput, n, MaxPlaintext)
	}
	return nil
}

// Envelope is the parsed header of a sealed blob.
type Envelope struct {
	Purpose    Purpose
	Generation uint32
	IV         []byte // 12 bytes
	Ciphertext []byte // ciphertext followed by the 16-byte GCM tag
	header     []byte
}

// AAD returns the GCM additional data for this envelope: header || aad.
func (e *Envelope) AAD(aad []byte) []byte {
	out := make([]byte, 0, len(e.header)+len(aad))
	return append(append(out, e.header...), aad...)
}

// NewEnvelope starts a blob for purpose and gen with a fresh random IV. Seal
// implementations encrypt with env.IV and env.AAD(aad), then call Encode.
// The IV comes from Go's CSPRNG every time because SoftHSM accepts an empty
// IV and then encrypts deterministically.
func NewEnvelope(purpose Purpose, gen uint32) (*Envelope, error) {
	tag, err := purpose.tag()
	if err != nil {
		return nil, err
	}
	if gen == 0 {
		return nil, fmt.Errorf("%w: generation 0", ErrInvalidInput)
	}
	iv := make([]byte, IVSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("generate IV: %w", err)
	}
	h := []byte{blobMagic, blobVersion, tag, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[3:], gen)
	return &Envelope{Purpose: purpose, Generation: gen, IV: iv, header: h}, nil
}

// Encode returns the blob for an envelope whose Ciphertext is set.
func (e *Envelope) Encode() []byte {
	out := make([]byte, 0, headerSize+IVSize+len(e.Ciphertext))
	out = append(out, e.header...)
	out = append(out, e.IV...)
	return append(out, e.Ciphertext...)
}

// ParseEnvelope checks a blob's header against the purpose the caller expects.
// A blob for another purpose fails with ErrAuthFailed, exactly as a tampered
// one would, so a caller cannot probe what a blob is for.
func ParseEnvelope(purpose Purpose, sealed []byte) (*Envelope, error) {
	tag, err := purpose.tag()
	if err != nil {
		return nil, err
	}
	if len(sealed) < BlobOverhead || len(sealed) > maxSealedSize {
		return nil, fmt.Errorf("%w: sealed blob of %d bytes", ErrAuthFailed, len(sealed))
	}
	if sealed[0] != blobMagic || sealed[1] != blobVersion {
		return nil, fmt.Errorf("%w: not a Cachet sealed blob (version %d)", ErrAuthFailed, sealed[1])
	}
	if sealed[2] != tag {
		return nil, fmt.Errorf("%w: blob was not sealed for purpose %q", ErrAuthFailed, string(purpose))
	}
	gen := binary.BigEndian.Uint32(sealed[3:7])
	if gen == 0 {
		return nil, fmt.Errorf("%w: generation 0", ErrAuthFailed)
	}
	return &Envelope{
		Purpose:    purpose,
		Generation: gen,
		header:     sealed[:headerSize:headerSize],
		IV:         sealed[headerSize : headerSize+IVSize : headerSize+IVSize],
		Ciphertext: sealed[headerSize+IVSize:],
	}, nil
}

// BlobGeneration returns the generation a blob was sealed under, without
// checking anything else. `cachet rotate` uses it to find blobs to re-seal.
func BlobGeneration(sealed []byte) (uint32, error) {
	if len(sealed) < headerSize || sealed[0] != blobMagic {
		return 0, fmt.Errorf("%w: not a Cachet sealed blob", ErrInvalidInput)
	}
	return binary.BigEndian.Uint32(sealed[3:7]), nil
}
