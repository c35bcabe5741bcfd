package tpm

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cachet-custody/cachet/keys"
)

// sessionNonceSize is the caller nonce size of every session: the digest
// size of SHA-256, the session hash (Part 1, section 19.6.5 asks for at
// least half of it).
const sessionNonceSize = 32

// maxGenerations bounds the persistent handles that Open scans: generation g
// lives at Handle+g-1 for g in [1, maxGenerations].
const maxGenerations = 64

// tpmOp names a TPM command (and what it was for) in errors; the single
// place where command failures get their context.
func tpmOp(cmd string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", cmd, err)
}

// srkObject is the storage root key, loaded as a transient primary for the
// length of one operation.
type srkObject struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public tpm2.TPMTPublic
}

// createSRK creates the ECC storage root key under the owner hierarchy
// (Part 3, section 24.1, TPM2_CreatePrimary). A primary key is a function of
// the hierarchy's seed and the template, so tpm2.ECCSRKTemplate yields the
// same key, with the same Name, every time until the owner hierarchy is
// cleared; Cachet does not persist it and leaves persistent SRK slots to the
// machine's owner. The caller flushes it with flushSRK.
func createSRK(t transport.TPM) (*srkObject, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t)
	if err != nil {
		return nil, tpmOp("CreatePrimary (storage root key)", err)
	}
	srk := &srkObject{handle: rsp.ObjectHandle, name: rsp.Name}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, errors.Join(tpmOp("CreatePrimary (storage root key): parse public area", err), flush(t, srk.handle, "storage root key"))
	}
	srk.public = *pub
	return srk, nil
}

// flush removes a transient object or session (Part 3, section 28.4,
// TPM2_FlushContext). swtpm has no resource manager: whatever is not flushed
// stays loaded across connections until the TPM restarts.
func flush(t transport.TPM, h tpm2.TPMHandle, what string) error {
	_, err := tpm2.FlushContext{FlushHandle: h}.Execute(t)
	return tpmOp("FlushContext ("+what+")", err)
}

// sealedTemplate is the public area of a sealed root: a keyed-hash object
// with no scheme holds opaque data that only TPM2_Unseal returns (Part 1,
// section 27.2.3). FixedTPM and FixedParent keep it from being duplicated off
// this TPM; UserWithAuth is clear so that only the policy, never a bare auth
// value, authorizes Unseal; NoDA keeps a PCR mismatch at boot from counting
// towards the dictionary-attack lockout of the whole TPM.
func sealedTemplate(policy []byte) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:     true,
			FixedParent:  true,
			UserWithAuth: false,
			NoDA:         true,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
	}
}

// looksSealed reports whether a persistent object has the shape Provision
// gives a sealed root, so that Open refuses to treat someone else's object
// in Cachet's handle range as a root.
func looksSealed(pub *tpm2.TPMTPublic) bool {
	a := pub.ObjectAttributes
	return pub.Type == tpm2.TPMAlgKeyedHash && pub.NameAlg == tpm2.TPMAlgSHA256 &&
		a.FixedTPM && a.FixedParent && !a.UserWithAuth && a.NoDA &&
		!a.SignEncrypt && !a.Decrypt && !a.Restricted && !a.SensitiveDataOrigin
}

// policyDigest computes, in software, the authPolicy the TPM will compare a
// policy session against (Part 1, section 19.7): PolicyPCR over the sha256
// bank with the digest of the PCR values at seal time (Part 3, section 23.7),
// then PolicyAuthValue when an auth value is set (Part 3, section 23.17).
// Unseal replays the same commands in the same order.
func policyDigest(pcrs []int, pcrDigest []byte, withAuth bool) ([]byte, error) {
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if len(pcrs) > 0 {
		cmd := tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: pcrDigest}, Pcrs: pcrSelection(pcrs)}
		if err := cmd.Update(calc); err != nil {
			return nil, err
		}
	}
	if withAuth {
		if err := (tpm2.PolicyAuthValue{}).Update(calc); err != nil {
			return nil, err
		}
	}
	return calc.Hash().Digest, nil
}

// persistent reads the public area of a persistent handle (Part 3, section
// 12.4, TPM2_ReadPublic). ok is false when nothing lives there.
func persistent(t transport.TPM, h tpm2.TPMHandle) (pub *tpm2.TPMTPublic, name tpm2.TPM2BName, ok bool, err error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, tpm2.TPM2BName{}, false, nil
	}
	if err != nil {
		return nil, tpm2.TPM2BName{}, false, tpmOp(fmt.Sprintf("ReadPublic(%#x)", uint32(h)), err)
	}
	pub, err = rsp.OutPublic.Contents()
	if err != nil {
		return nil, tpm2.TPM2BName{}, false, tpmOp(fmt.Sprintf("ReadPublic(%#x): parse public area", uint32(h)), err)
	}
	return pub, rsp.Name, true, nil
}

// occupiedGenerations lists the generations whose handle holds an object
// (Part 3, section 30.2, TPM2_GetCapability of TPM_CAP_HANDLES).
func occupiedGenerations(t transport.TPM, base uint32) ([]uint32, error) {
	var gens []uint32
	next := base
	for {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      next,
			PropertyCount: maxGenerations,
		}.Execute(t)
		if err != nil {
			return nil, tpmOp("GetCapability(TPM_CAP_HANDLES)", err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, tpmOp("GetCapability(TPM_CAP_HANDLES)", err)
		}
		for _, h := range hs.Handle {
			if uint32(h) >= base && uint32(h) < base+maxGenerations {
				gens = append(gens, uint32(h)-base+1)
			}
			next = uint32(h) + 1
		}
		if !bool(rsp.MoreData) || len(hs.Handle) == 0 || next >= base+maxGenerations {
			return gens, nil
		}
	}
}

// evict removes a persistent object (Part 3, section 28.5,
// TPM2_EvictControl with a persistent objectHandle). Owner authorization is
// the empty password, as on a machine whose owner hierarchy was not taken.
func evict(t transport.TPM, h tpm2.TPMHandle, name tpm2.TPM2BName) error {
	_, err := tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: h, Name: name},
		PersistentHandle: h,
	}.Execute(t)
	return tpmOp(fmt.Sprintf("EvictControl(evict %#x)", uint32(h)), err)
}

// sealRoot creates the sealed object under the SRK (Part 3, section 12.1,
// TPM2_Create) and makes it persistent at h (section 28.5), evicting an
// object already there when old is set. The root travels as the first
// parameter of TPM2_Create, encrypted by a session salted with the SRK
// (AES-128-CFB parameter encryption, Part 1, section 21), so it never crosses
// the bus or socket in clear.
//
// The new object is created and loaded before the old one is evicted, so a
// failure while creating leaves the old root in place.
func sealRoot(t transport.TPM, srk *srkObject, root, auth, policy []byte, h tpm2.TPMHandle, old *tpm2.TPM2BName) (err error) {
	sess, closeSess, err := tpm2.HMACSession(t, tpm2.TPMAlgSHA256, sessionNonceSize,
		tpm2.Salted(srk.handle, srk.public),
		tpm2.AESEncryption(128, tpm2.EncryptIn))
	if err != nil {
		return tpmOp("StartAuthSession (salted HMAC)", err)
	}
	defer func() { err = errors.Join(err, tpmOp("FlushContext (HMAC session)", closeSess())) }()

	data := bytes.Clone(root)
	defer keys.Zero(data)
	sensitive := &tpm2.TPMSSensitiveCreate{
		Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: data}),
	}
	if len(auth) > 0 {
		sensitive.UserAuth = tpm2.TPM2BAuth{Buffer: bytes.Clone(auth)}
		defer keys.Zero(sensitive.UserAuth.Buffer)
	}
	created, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: sess},
		InSensitive:  tpm2.TPM2BSensitiveCreate{Sensitive: sensitive},
		InPublic:     tpm2.New2B(sealedTemplate(policy)),
	}.Execute(t)
	if err != nil {
		return tpmOp("Create (sealed root)", err)
	}

	// TPM2_Load, Part 3, section 12.2. The private blob is encrypted under
	// the SRK, so a password session suffices.
	loaded, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    created.OutPrivate,
		InPublic:     created.OutPublic,
	}.Execute(t)
	if err != nil {
		return tpmOp("Load (sealed root)", err)
	}
	defer func() { err = errors.Join(err, flush(t, loaded.ObjectHandle, "sealed root")) }()

	if old != nil {
		if err := evict(t, h, *old); err != nil {
			return err
		}
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: loaded.ObjectHandle, Name: loaded.Name},
		PersistentHandle: h,
	}.Execute(t)
	return tpmOp(fmt.Sprintf("EvictControl(persist at %#x)", uint32(h)), err)
}

// unsealRoot runs the root's policy in a fresh policy session and unseals it
// (Part 3, section 12.7, TPM2_Unseal). The session is salted with the SRK and
// encrypts the response parameter, so the root comes back encrypted. PolicyPCR
// is sent with an empty digest: the TPM then uses the current PCR values
// (Part 3, section 23.7), and a changed PCR shows up as TPM_RC_POLICY_FAIL at
// TPM2_Unseal.
//
// The returned slice is the only copy the caller gets; it must move it into
// locked memory and zero it. On error no slice is returned.
func unsealRoot(t transport.TPM, srk *srkObject, h tpm2.TPMHandle, name tpm2.TPM2BName, pcrs []int, auth []byte) (root []byte, err error) {
	opts := []tpm2.AuthOption{
		tpm2.Salted(srk.handle, srk.public),
		tpm2.AESEncryption(128, tpm2.EncryptOut),
	}
	if len(auth) > 0 {
		// PolicyAuthValue makes the TPM check the session HMAC, keyed with
		// the object's auth value (Part 1, section 19.6.13).
		opts = append(opts, tpm2.Auth(auth))
	}
	sess, closeSess, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, sessionNonceSize, opts...)
	if err != nil {
		return nil, tpmOp("StartAuthSession (salted policy)", err)
	}
	defer func() {
		err = errors.Join(err, tpmOp("FlushContext (policy session)", closeSess()))
		if err != nil && root != nil {
			keys.Zero(root)
			root = nil
		}
	}()
	if len(pcrs) > 0 {
		if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: pcrSelection(pcrs)}).Execute(t); err != nil {
			return nil, tpmOp("PolicyPCR", err)
		}
	}
	if len(auth) > 0 {
		if _, err := (tpm2.PolicyAuthValue{PolicySession: sess.Handle()}).Execute(t); err != nil {
			return nil, tpmOp("PolicyAuthValue", err)
		}
	}
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: h, Name: name, Auth: sess}}.Execute(t)
	if err != nil {
		return nil, tpmOp(fmt.Sprintf("Unseal(%#x)", uint32(h)), err)
	}
	return rsp.OutData.Buffer, nil
}
