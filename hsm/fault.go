package hsm

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/cachet-custody/cachet/keys"
)

// decryptFailed classifies a C_Decrypt failure. SoftHSM reports a GCM tag
// that does not verify as CKR_GENERAL_ERROR, but on other tokens that code
// means a hardware fault, and reading it as a tampered blob would blame the
// data for the hardware. So a CKR_GENERAL_ERROR is followed by a
// known-answer round trip on the same session and key (encrypt 16 random
// bytes under a fresh IV, decrypt them back): if the key works, the blob was
// at fault (keys.ErrAuthFailed); if the round trip fails too, the token is
// (keys.ErrUnavailable, naming the hardware fault). Only the failure path
// pays for it.
func (b *backend) decryptFailed(s pkcs11.SessionHandle, h pkcs11.ObjectHandle, err error) error {
	mapped := mapErr(opDecrypt, err)
	if rv, ok := rvOf(err); !ok || rv != pkcs11.CKR_GENERAL_ERROR {
		return mapped
	}
	if kerr := b.knownAnswer(s, h); kerr != nil {
		return &p11Error{op: opDecrypt, rv: pkcs11.CKR_GENERAL_ERROR, kind: fmt.Errorf("%w: hardware fault (a known-answer AES-GCM round trip on the same key failed too: %v)", keys.ErrUnavailable, kerr)}
	}
	return mapped
}

func (b *backend) knownAnswer(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) error {
	c := b.p.mod.ctx
	iv := make([]byte, keys.IVSize)
	want := make([]byte, 16)
	if _, err := rand.Read(iv); err != nil {
		return err
	}
	if _, err := rand.Read(want); err != nil {
		return err
	}
	aad := []byte("cachet-known-answer")
	mech, params := gcmMechanism(iv, aad)
	defer params.Free()
	if err := c.EncryptInit(s, mech, h); err != nil {
		return mapErr("C_EncryptInit", err)
	}
	ct, err := c.Encrypt(s, want)
	if err != nil {
		return mapErr("C_Encrypt", err)
	}
	mech2, params2 := gcmMechanism(iv, aad)
	defer params2.Free()
	if err := c.DecryptInit(s, mech2, h); err != nil {
		return mapErr("C_DecryptInit", err)
	}
	got, err := c.Decrypt(s, ct)
	if err != nil {
		return mapErr(opDecrypt, err)
	}
	if !bytes.Equal(got, want) {
		return errors.New("the round trip returned other bytes")
	}
	return nil
}
