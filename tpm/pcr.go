package tpm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cachet-custody/cachet/keys"
)

// maxPCR is the highest PCR index of a PC Client TPM (PCRs 0 to 23).
const maxPCR = 23

// pcrSelection is the sha256-bank selection of pcrs.
func pcrSelection(pcrs []int) tpm2.TPMLPCRSelection {
	idx := make([]uint, len(pcrs))
	for i, p := range pcrs {
		idx[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(idx...),
	}}}
}

// normalizePCRs validates a PCR list and returns it sorted, the order in
// which the TPM concatenates PCR values for PolicyPCR.
func normalizePCRs(pcrs []int) ([]int, error) {
	out := slices.Clone(pcrs)
	slices.Sort(out)
	for i, p := range out {
		if p < 0 || p > maxPCR {
			return nil, fmt.Errorf("%w: PCR %d out of range 0-%d", keys.ErrInvalidInput, p, maxPCR)
		}
		if i > 0 && out[i-1] == p {
			return nil, fmt.Errorf("%w: PCR %d listed twice", keys.ErrInvalidInput, p)
		}
	}
	return out, nil
}

// readPCRs reads the sha256 bank values of pcrs, in order (Part 3, section
// 22.4, TPM2_PCR_Read). It reads one PCR per command because the TPM may
// return fewer values than selected and say so only in pcrSelectionOut.
func readPCRs(t transport.TPM, pcrs []int) ([][]byte, error) {
	vals := make([][]byte, len(pcrs))
	for i, p := range pcrs {
		rsp, err := tpm2.PCRRead{PCRSelectionIn: pcrSelection([]int{p})}.Execute(t)
		if err != nil {
			return nil, tpmOp(fmt.Sprintf("PCR_Read(sha256:%d)", p), err)
		}
		if len(rsp.PCRValues.Digests) != 1 || len(rsp.PCRValues.Digests[0].Buffer) != sha256.Size {
			return nil, fmt.Errorf("PCR_Read(sha256:%d): TPM returned %d values; is the sha256 bank allocated?", p, len(rsp.PCRValues.Digests))
		}
		vals[i] = rsp.PCRValues.Digests[0].Buffer
	}
	return vals, nil
}

// pcrCompositeDigest is the digest PolicyPCR compares: SHA-256 over the
// selected PCR values concatenated in selection order (Part 3, section 23.7).
func pcrCompositeDigest(vals [][]byte) []byte {
	h := sha256.New()
	for _, v := range vals {
		h.Write(v)
	}
	return h.Sum(nil)
}

// ExtendPCR extends sha256 PCR pcr with SHA-256(data) (Part 3, section 22.2,
// TPM2_PCR_Extend), authorizing with the empty password as PCRs 0-23 of a PC
// Client TPM require. It is for tests and diagnostics: extending a PCR that a
// sealed root is bound to makes the next Open fail until the PCR is reset,
// which for most PCRs means a reboot. It connects for this one command.
func ExtendPCR(ctx context.Context, device string, pcr int, data []byte) error {
	if _, err := normalizePCRs([]int{pcr}); err != nil {
		return err
	}
	d, err := parseDevice(device)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	return d.do(ctx, "extend PCR", func(t transport.TPM) error {
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
			Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
				HashAlg: tpm2.TPMAlgSHA256,
				Digest:  sum[:],
			}}},
		}.Execute(t)
		return tpmOp(fmt.Sprintf("PCR_Extend(sha256:%d)", pcr), err)
	})
}

// PCRChange is one PCR of a sealed root's policy: its sha256 value when the
// root was sealed (nil when no state file recorded it) and now.
type PCRChange struct {
	PCR     int
	Sealed  []byte
	Current []byte
}

// PCRMismatchError is returned, wrapped, by Open when the TPM refused to
// unseal a root because its PCR policy failed (TPM_RC_POLICY_FAIL): the
// machine booted into a state other than the one the root was sealed in.
//
// Changed lists the PCRs whose value differs from the one the state file
// recorded at provisioning. It is empty when there was no usable state file
// (Current then still lists every bound PCR with its current value), or when
// no PCR changed and the policy failed for another reason, such as a
// configuration that binds other PCRs or no longer sets the auth value (Note
// says which). Unwrap returns the TPM's response code.
type PCRMismatchError struct {
	// Generation and Handle name the sealed root that failed.
	Generation uint32
	Handle     uint32
	// Bound is the PCR selection (sha256 bank) the policy was evaluated
	// over: Options.PCRs.
	Bound []int
	// Changed are the PCRs sealed to whose value differs from the sealed one.
	Changed []PCRChange
	// Current holds every bound PCR, and every PCR the state file says the
	// root was sealed to; Sealed is set where the state file recorded it.
	Current []PCRChange
	// StateFile is the state file compared against, "" when none was usable.
	StateFile string
	// Note explains a failure that no changed PCR accounts for, such as a
	// PCR selection or auth setting that differs from the one at sealing.
	Note string

	err error
}

// remedy is what an operator should do about a PCR mismatch.
const remedy = "If this change is expected (firmware, bootloader or kernel update), re-seal the root from m operator shares with `cachet restore --replace`; otherwise treat the machine as tampered with and investigate before serving."

func (e *PCRMismatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the TPM refused to unseal the root of generation %d (handle %#x): its PCR policy failed", e.Generation, e.Handle)
	switch {
	case len(e.Changed) > 0:
		for _, c := range e.Changed {
			fmt.Fprintf(&b, "; PCR %d changed: sealed %s, now %s", c.PCR, hex.EncodeToString(c.Sealed), hex.EncodeToString(c.Current))
		}
	case e.StateFile == "":
		fmt.Fprintf(&b, "; no state file to compare with; the policy binds sha256 PCRs %s, whose values are now ", joinInts(e.Bound))
		for i, c := range e.Current {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "PCR %d = %s", c.PCR, hex.EncodeToString(c.Current))
		}
	default:
		fmt.Fprintf(&b, "; no bound PCR (%s) differs from state file %s", joinInts(e.Bound), e.StateFile)
	}
	if e.Note != "" {
		b.WriteString("; ")
		b.WriteString(e.Note)
	}
	b.WriteString(". ")
	b.WriteString(remedy)
	return b.String()
}

// Unwrap returns the TPM's response code (TPM_RC_POLICY_FAIL).
func (e *PCRMismatchError) Unwrap() error { return e.err }

func joinInts(xs []int) string {
	if len(xs) == 0 {
		return "(none)"
	}
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}
