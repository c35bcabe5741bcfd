package keys

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// AES key wrap with padding (RFC 5649) is what PKCS#11's
// CKM_AES_KEY_WRAP_PAD computes, so a P-256 key wrapped by an HSM can be
// unwrapped by the TPM backend in software and the other way round. Go's
// standard library has no key wrap, and the one well-kept Go implementation
// (tink-go's kwp) would pull in Tink for some forty lines; so it is written
// here, against the RFC's test vectors (keys_test.go).

var kwpICV = [4]byte{0xA6, 0x59, 0x59, 0xA6}

// WrapKeyPad wraps plaintext under kek (16, 24 or 32 bytes) with RFC 5649.
func WrapKeyPad(kek, plaintext []byte) ([]byte, error) {
	if len(plaintext) == 0 || uint64(len(plaintext)) > 1<<32-1 {
		return nil, fmt.Errorf("%w: key wrap of %d bytes", ErrInvalidInput, len(plaintext))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("key wrap: %w", err)
	}
	n := (len(plaintext) + 7) / 8
	buf := make([]byte, 8+8*n) // A || R[1..n]
	copy(buf, kwpICV[:])
	binary.BigEndian.PutUint32(buf[4:8], uint32(len(plaintext)))
	copy(buf[8:], plaintext)
	if n == 1 {
		block.Encrypt(buf, buf)
		return buf, nil
	}
	var b [16]byte
	defer clear(b[:])
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(b[:8], buf[:8])
			copy(b[8:], buf[8*i:8*i+8])
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(buf[:8], binary.BigEndian.Uint64(b[:8])^t)
			copy(buf[8*i:8*i+8], b[8:])
		}
	}
	return buf, nil
}

// UnwrapKeyPad reverses WrapKeyPad. Any integrity failure gives ErrAuthFailed
// and no plaintext. The caller zeroes the result.
func UnwrapKeyPad(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 16 || len(wrapped)%8 != 0 {
		return nil, fmt.Errorf("%w: wrapped key of %d bytes", ErrAuthFailed, len(wrapped))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("key unwrap: %w", err)
	}
	n := len(wrapped)/8 - 1
	buf := make([]byte, len(wrapped))
	copy(buf, wrapped)
	if n == 1 {
		block.Decrypt(buf, buf)
	} else {
		var b [16]byte
		defer clear(b[:])
		for j := 5; j >= 0; j-- {
			for i := n; i >= 1; i-- {
				t := uint64(n*j + i)
				binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(buf[:8])^t)
				copy(b[8:], buf[8*i:8*i+8])
				block.Decrypt(b[:], b[:])
				copy(buf[:8], b[:8])
				copy(buf[8*i:8*i+8], b[8:])
			}
		}
	}
	mli := int(binary.BigEndian.Uint32(buf[4:8]))
	ok := subtle.ConstantTimeCompare(buf[:4], kwpICV[:]) == 1 && mli > 8*(n-1) && mli <= 8*n
	if ok {
		var pad byte
		for _, c := range buf[8+mli:] {
			pad |= c
		}
		ok = pad == 0
	}
	if !ok {
		clear(buf)
		return nil, fmt.Errorf("%w: wrapped key does not unwrap under this key", ErrAuthFailed)
	}
	out := make([]byte, mli)
	copy(out, buf[8:8+mli])
	clear(buf)
	return out, nil
}
