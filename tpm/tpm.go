// Package tpm implements keys.Backend over a TPM 2.0: it owns Cachet's root
// secret while it is sealed in the TPM, unseals it once at Open, and derives
// every key from it in locked memory.
//
// # Objects in the TPM
//
// The storage root key (SRK) is the TCG reference ECC P-256 primary key
// (tpm2.ECCSRKTemplate) under the owner hierarchy. A primary key is a
// function of the hierarchy seed and the template, so Cachet recreates it as
// a transient object for each operation and flushes it afterwards; it never
// takes a persistent SRK slot. Its Name identifies the owner seed and is
// reported as "srk_name".
//
// The root of key generation g is a sealed-data object (TPM_ALG_KEYEDHASH
// with a null scheme) created under the SRK and made persistent at
// Options.Handle+g-1 (0x81000C01 for generation 1 by default). It is
// FixedTPM and FixedParent (it cannot leave this TPM), NoDA, and has
// userWithAuth clear: only its policy authorizes TPM2_Unseal. The policy,
// computed in software at provisioning, is TPM2_PolicyPCR over the sha256
// bank of Options.PCRs with the PCR values at seal time, followed by
// TPM2_PolicyAuthValue when Options.Auth is set.
//
// The root crosses the wire only inside encrypted session parameters: a
// session salted with the SRK (ECDH) and AES-128-CFB parameter encryption on
// TPM2_Create's sensitive input and on TPM2_Unseal's output (Part 1,
// section 21).
//
// # Connections
//
// A go-tpm transport must not be used by two goroutines at once, and swtpm
// serves one client connection at a time. So every TPM command of this
// process, for a given device, goes through one lock, and each high-level
// operation (Open's unseal, Provision, the liveness check in Info, ExtendPCR)
// opens its own connection and closes it when done. Between operations other
// processes (`cachet status`, tpm2-tools) can use the same TPM. Every
// transient object and session is flushed, on error paths too: swtpm has no
// resource manager, and what a client leaves loaded stays loaded.
//
// # Memory
//
// After unseal, the root and every key derived from it (the KEKs of each
// keys.Purpose at Open, P-256 scalars on first use of a label) live only in
// memory from package internal/lockedmem: locked against swapping, excluded
// from core dumps, zeroed at Close. The unsealed bytes from TPM2_Unseal are
// copied there and zeroed. Go's crypto cannot work on that memory in place:
// crypto/aes copies the key schedule, HKDF/HMAC keep their state, and ECDSA
// keeps the scalar in its own structures, all on the heap. So the
// cipher.AEAD and the ecdsa.PrivateKey are built for each operation from the
// locked bytes and dropped afterwards, which bounds how long such copies
// exist; it does not zero them. go-tpm's command and response buffers
// likewise hold the root in clear, briefly, during Open and Provision.
//
// Seal, Unseal, AuthKey and SignAuth therefore never talk to the TPM; they
// are AES-256-GCM and ECDSA P-256 in Go, with the envelope and derivation
// labels of package keys, so a root restored onto any backend gives the same
// keys.
//
// # What this package does not do
//
// It assumes the owner hierarchy has an empty authorization value, as Linux
// distributions leave it. It does not persist the SRK, read event logs,
// produce quotes, or retire old generations. It does not protect the root
// from root on the running machine, which can read the daemon's memory. It
// runs on Linux only (mlock, MADV_DONTDUMP, /dev/tpmrm0).
//
// Command sections cited in comments are from TPM 2.0 Library
// Specification, Part 3: Commands (and Part 1: Architecture), as in go-tpm.
package tpm

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cachet-custody/cachet/keys"
)

// DefaultHandle is the persistent handle of generation 1's sealed root when
// Options.Handle is 0. It sits in the owner's persistent range (0x81000000 to
// 0x817FFFFF), away from the slots the TCG provisioning guidance reserves for
// SRKs (0x81000001) and EKs (0x81010001).
const DefaultHandle uint32 = 0x81000C01

// Options configures Open.
type Options struct {
	// Device names the TPM: a character device such as "/dev/tpmrm0" (the
	// kernel's resource manager), "unix:PATH" for swtpm's unixio socket, or
	// "tcp:HOST:PORT" for swtpm on loopback.
	Device string
	// PCRs are the sha256-bank PCRs the root's policy binds. They may be
	// empty; then only the auth value, if any, protects the root beyond its
	// being bound to this TPM.
	PCRs []int
	// Auth is an optional auth value for the sealed root, at most 32 bytes;
	// nil means none. It is never logged and never appears in errors.
	Auth []byte
	// Handle is the persistent handle of generation 1's root; 0 means
	// DefaultHandle. Generation g lives at Handle+g-1.
	Handle uint32
	// StateFile is the path of a JSON sidecar written at provisioning: the
	// SRK name, and per generation the PCR selection and the PCR values at
	// seal time. Open reads it only to say which PCR changed when the
	// policy fails; it holds no secret and its absence does not stop an
	// unseal. Empty means none.
	StateFile string
	// Logger receives operational events; nil discards them.
	Logger *slog.Logger
	// AllowLocked lets Open succeed when a generation's root is present but
	// the TPM refuses to unseal it (its PCR policy fails, or the auth value
	// is rejected), so that `cachet restore --replace` can re-seal it from
	// operator shares. Such a generation holds no key: Info reports the
	// hardware as provisioned, and every key operation fails with the
	// TPM's refusal until Provision replaces the root. Only the restore
	// ceremony sets it; serving with a locked root is never possible.
	AllowLocked bool
}

// ErrAuthValue means the TPM rejected Options.Auth for the sealed root.
var ErrAuthValue = errors.New("the TPM rejected the configured auth value for the sealed root")

// errClosed is returned by every method after Close.
var errClosed = fmt.Errorf("%w: TPM backend is closed", keys.ErrUnavailable)

// Log field names.
const (
	logDevice      = "device"
	logGeneration  = "generation"
	logHandle      = "handle"
	logPCRs        = "pcrs"
	logFingerprint = "root_fingerprint"
	logStateFile   = "state_file"
	logErr         = "err"
)

// backend is the keys.Backend and keys.Provisioner over one TPM.
type backend struct {
	dev       *device
	pcrs      []int
	auth      []byte
	base      uint32
	stateFile string
	log       *slog.Logger

	// mu guards everything below and the keyrings' memory: readers
	// (Seal, Unseal, AuthKey, SignAuth, Info) hold it shared, Provision
	// and Close exclusively. Lock order: device semaphore, then mu.
	mu      sync.RWMutex
	closed  bool
	gens    map[uint32]*keyring
	locked  map[uint32]error // generations present but refused (AllowLocked)
	current uint32           // highest generation held; 0 when unprovisioned
	srkName string           // hex; refreshed by every operation that creates the SRK
	wrapped keys.WrappedKeys // format 2: backups of P-256 keys; set once after Open

	probeMu   sync.Mutex
	probeName []byte // Name of the sealed root the first Probe saw (probe.go)
}

var (
	_ keys.Backend         = (*backend)(nil)
	_ keys.Provisioner     = (*backend)(nil)
	_ keys.WrappedKeysUser = (*backend)(nil)
)

// UseWrappedKeys attaches the store of wrapped P-256 keys that format-2
// generations need.
func (b *backend) UseWrappedKeys(ws keys.WrappedKeys) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.wrapped = ws
}

// Open connects to the TPM, unseals the root of every generation present
// and returns the backend; the connection is closed before Open returns.
//
// When no generation's handle holds an object, the backend is unprovisioned:
// Info reports Provisioned=false and the other methods return errors wrapping
// keys.ErrNotProvisioned until Provision succeeds.
//
// When the TPM refuses a root because its PCR policy fails, the error wraps a
// *PCRMismatchError. A rejected auth value gives an error wrapping
// ErrAuthValue. An unreachable TPM gives keys.ErrUnavailable, a bad option
// keys.ErrInvalidInput.
func Open(ctx context.Context, opts Options) (keys.Backend, error) {
	dev, err := parseDevice(opts.Device)
	if err != nil {
		return nil, err
	}
	pcrs, err := normalizePCRs(opts.PCRs)
	if err != nil {
		return nil, err
	}
	if len(opts.Auth) > 32 {
		// The TPM limits an auth value to the size of the object's name
		// digest (SHA-256) and trims trailing zeros.
		return nil, fmt.Errorf("%w: tpm auth value longer than 32 bytes", keys.ErrInvalidInput)
	}
	base := opts.Handle
	if base == 0 {
		base = DefaultHandle
	}
	if base < 0x81000000 || base+maxGenerations-1 > 0x817FFFFF {
		return nil, fmt.Errorf("%w: tpm handle %#x: want an owner persistent handle in 0x81000000-%#x", keys.ErrInvalidInput, base, 0x817FFFFF-maxGenerations+1)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &backend{
		dev:       dev,
		pcrs:      pcrs,
		base:      base,
		stateFile: opts.StateFile,
		log:       log.With(logDevice, opts.Device),
		gens:      map[uint32]*keyring{},
		locked:    map[uint32]error{},
	}
	if len(opts.Auth) > 0 {
		b.auth = slices.Clone(opts.Auth)
	}
	if len(pcrs) == 0 && len(b.auth) == 0 {
		b.log.Warn("the sealed root is bound to no PCR and no auth value: anyone who can send commands to this TPM can unseal it")
	}

	err = dev.do(ctx, "open", func(t transport.TPM) (err error) {
		srk, err := createSRK(t)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, flush(t, srk.handle, "storage root key")) }()
		b.srkName = hex.EncodeToString(srk.name.Buffer)

		gens, err := occupiedGenerations(t, base)
		if err != nil {
			return err
		}
		for _, g := range gens {
			kr, err := b.unsealGeneration(t, srk, g)
			var mismatch *PCRMismatchError
			if err != nil && opts.AllowLocked && (errors.As(err, &mismatch) || errors.Is(err, ErrAuthValue)) {
				b.locked[g] = err
				b.log.Warn("sealed root present but refused by the TPM; open for replacement only", logGeneration, g, logErr, err)
				continue
			}
			if err != nil {
				return err
			}
			b.gens[g] = kr
			b.current = max(b.current, g)
			b.log.Info("unsealed root", logGeneration, g, logHandle, fmt.Sprintf("%#x", b.handle(g)), logFingerprint, kr.fingerprint)
		}
		return nil
	})
	if err != nil {
		return nil, errors.Join(err, b.destroyKeyrings())
	}
	if b.current == 0 {
		b.log.Info("TPM holds no Cachet root", logHandle, fmt.Sprintf("%#x", base))
	}
	return b, nil
}

func (b *backend) handle(gen uint32) tpm2.TPMHandle { return tpm2.TPMHandle(b.base + gen - 1) }

// unsealGeneration unseals one generation's root into a keyring, turning a
// policy failure into a *PCRMismatchError and an auth failure into
// ErrAuthValue.
func (b *backend) unsealGeneration(t transport.TPM, srk *srkObject, gen uint32) (*keyring, error) {
	h := b.handle(gen)
	pub, name, ok, err := persistent(t, h)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("persistent handle %#x vanished while opening", uint32(h))
	}
	if !looksSealed(pub) {
		return nil, fmt.Errorf("persistent handle %#x (generation %d) holds an object that is not a Cachet sealed root; move it or choose another tpm handle", uint32(h), gen)
	}
	root, err := unsealRoot(t, srk, h, name, b.pcrs, b.auth)
	switch {
	case errors.Is(err, tpm2.TPMRCPolicyFail):
		return nil, b.mismatch(t, gen, err)
	case errors.Is(err, tpm2.TPMRCAuthFail), errors.Is(err, tpm2.TPMRCBadAuth):
		// The object is NoDA, so the TPM answers TPM_RC_BAD_AUTH rather
		// than TPM_RC_AUTH_FAIL; both mean the HMAC keyed with the auth
		// value did not verify. The value itself is not in err.
		return nil, fmt.Errorf("%w (generation %d, handle %#x): %w", ErrAuthValue, gen, uint32(h), err)
	case err != nil:
		return nil, err
	}
	return newKeyring(gen, root)
}

// mismatch builds the *PCRMismatchError for a failed policy: it reads the
// PCRs that are bound now or were bound at sealing, and compares them with
// the values the state file recorded.
func (b *backend) mismatch(t transport.TPM, gen uint32, cause error) error {
	e := &PCRMismatchError{Generation: gen, Handle: uint32(b.handle(gen)), Bound: slices.Clone(b.pcrs), err: cause}
	st, err := readState(b.stateFile)
	if err != nil {
		b.log.Warn("cannot use the TPM state file to explain a PCR policy failure", logStateFile, b.stateFile, logErr, err)
		st = nil
	}
	var entry *stateEntry
	switch {
	case st == nil:
	case st.SRKName != b.srkName:
		e.Note = fmt.Sprintf("state file %s describes another TPM (SRK name %s, this TPM's is %s)", b.stateFile, st.SRKName, b.srkName)
	default:
		if entry = st.entry(gen); entry == nil {
			e.Note = fmt.Sprintf("state file %s has no record of generation %d", b.stateFile, gen)
		}
	}

	diag := b.pcrs
	if entry != nil {
		e.StateFile = b.stateFile
		diag = slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(b.pcrs), entry.PCRs...))))
		if _, err := normalizePCRs(diag); err != nil {
			return errors.Join(e, fmt.Errorf("state file %s: %w", b.stateFile, err))
		}
		var notes []string
		if !slices.Equal(entry.PCRs, b.pcrs) {
			notes = append(notes, fmt.Sprintf("the root was sealed to PCRs %s but the configuration now binds %s", joinInts(entry.PCRs), joinInts(b.pcrs)))
		}
		if entry.AuthValue != (len(b.auth) > 0) {
			if entry.AuthValue {
				notes = append(notes, "the root was sealed with an auth value but none is configured")
			} else {
				notes = append(notes, "an auth value is configured but the root was sealed without one")
			}
		}
		e.Note = strings.Join(notes, "; ")
	}
	cur, err := readPCRs(t, diag)
	if err != nil {
		return errors.Join(e, err)
	}
	for i, p := range diag {
		c := PCRChange{PCR: p, Current: cur[i]}
		if entry != nil && slices.Contains(entry.PCRs, p) {
			if v, ok := entry.pcrValue(p); ok {
				c.Sealed = v
				if !slices.Equal(v, cur[i]) {
					e.Changed = append(e.Changed, c)
				}
			}
		}
		e.Current = append(e.Current, c)
	}
	return e
}

// classify gives an error from inside a TPM operation its place in the keys
// error contract: conditions callers branch on keep their own sentinel or
// type; anything else means the TPM did not do its part.
func classify(op string, err error) error {
	var mismatch *PCRMismatchError
	switch {
	case errors.As(err, &mismatch),
		errors.Is(err, ErrAuthValue),
		errors.Is(err, keys.ErrAlreadyProvisioned),
		errors.Is(err, keys.ErrInvalidInput),
		errors.Is(err, keys.ErrUnavailable),
		errors.Is(err, errVerify):
		return fmt.Errorf("tpm %s: %w", op, err)
	}
	return fmt.Errorf("tpm %s: %w: %w", op, keys.ErrUnavailable, err)
}

// errVerify marks a provisioning whose read-back did not match.
var errVerify = errors.New("the root unsealed after provisioning does not match the root provisioned")

// Provision seals root into the TPM as generation opts.Generation (see the
// package comment for the object and its policy), reads it back through the
// same policy path Open uses, and makes it usable by this backend. It refuses
// with keys.ErrAlreadyProvisioned when the generation's handle is occupied,
// unless opts.Replace.
//
// The PCR values bound are the current ones: provision on the machine, in
// the boot state, that will serve. The state file is written before the
// object is made persistent, so a bad StateFile path fails provisioning
// before the TPM changes.
func (b *backend) Provision(ctx context.Context, root []byte, opts keys.ProvisionOptions) error {
	if len(root) != keys.RootSize {
		return fmt.Errorf("tpm provision: %w: root of %d bytes, want %d", keys.ErrInvalidInput, len(root), keys.RootSize)
	}
	gen := opts.Generation
	if gen < 1 || gen > maxGenerations {
		return fmt.Errorf("tpm provision: %w: generation %d, want 1-%d", keys.ErrInvalidInput, gen, maxGenerations)
	}
	format := opts.Format
	if format == 0 {
		format = keys.FormatHMAC
	}
	if !format.Valid() {
		return fmt.Errorf("tpm provision: %w: key format %d", keys.ErrInvalidInput, format)
	}
	wantFP, err := keys.FingerprintOf(format, root)
	if err != nil {
		return err
	}
	payload := sealedPayload(format, root)
	defer keys.Zero(payload)
	h := b.handle(gen)
	var (
		kr      *keyring
		srkName string
	)
	err = b.dev.do(ctx, "provision", func(t transport.TPM) (err error) {
		// Shared, so that Close cannot clear b.auth under us, while Seal
		// and friends go on.
		b.mu.RLock()
		defer b.mu.RUnlock()
		if b.closed {
			return errClosed
		}
		srk, err := createSRK(t)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, flush(t, srk.handle, "storage root key")) }()
		srkName = hex.EncodeToString(srk.name.Buffer)

		_, oldName, occupied, err := persistent(t, h)
		if err != nil {
			return err
		}
		var old *tpm2.TPM2BName
		if occupied {
			if !opts.Replace {
				return fmt.Errorf("%w: generation %d at persistent handle %#x", keys.ErrAlreadyProvisioned, gen, uint32(h))
			}
			old = &oldName
		}

		vals, err := readPCRs(t, b.pcrs)
		if err != nil {
			return err
		}
		policy, err := policyDigest(b.pcrs, pcrCompositeDigest(vals), len(b.auth) > 0)
		if err != nil {
			return fmt.Errorf("compute policy digest: %w", err)
		}
		if b.stateFile != "" {
			entry := stateEntry{
				Generation:      gen,
				Handle:          fmt.Sprintf("%#x", uint32(h)),
				SealedAt:        time.Now().UTC().Truncate(time.Second),
				PCRBank:         "sha256",
				PCRs:            slices.Clone(b.pcrs),
				PCRValues:       map[string]string{},
				AuthValue:       len(b.auth) > 0,
				PolicyDigest:    hex.EncodeToString(policy),
				RootFingerprint: wantFP,
			}
			for i, p := range b.pcrs {
				entry.PCRValues[strconv.Itoa(p)] = hex.EncodeToString(vals[i])
			}
			if err := putState(b.stateFile, b.dev.name, srkName, entry); err != nil {
				return err
			}
		}

		if err := sealRoot(t, srk, payload, b.auth, policy, h, old); err != nil {
			return err
		}

		// Read the root back the way Open will. A mismatch here means
		// the TPM holds something other than what the operators' shares
		// reconstruct: remove it rather than leave a wrong root behind.
		_, name, ok, err := persistent(t, h)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: nothing at %#x after EvictControl", errVerify, uint32(h))
		}
		got, err := unsealRoot(t, srk, h, name, b.pcrs, b.auth)
		if err == nil && subtle.ConstantTimeCompare(got, payload) != 1 {
			keys.Zero(got)
			err = errVerify
		}
		if err == nil {
			kr, err = newKeyring(gen, got)
		}
		if err == nil && kr.fingerprint != wantFP {
			err = errors.Join(fmt.Errorf("%w: fingerprint %s, want %s", errVerify, kr.fingerprint, wantFP), kr.destroy())
			kr = nil
		}
		if err != nil {
			return errors.Join(fmt.Errorf("verify generation %d at %#x: %w", gen, uint32(h), err), evict(t, h, name))
		}
		return nil
	})
	if err != nil {
		return err
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.Join(errClosed, kr.destroy())
	}
	var derr error
	if prev := b.gens[gen]; prev != nil {
		derr = prev.destroy()
	}
	b.srkName = srkName
	b.gens[gen] = kr
	delete(b.locked, gen)
	b.current = max(b.current, gen)
	b.log.Info("provisioned root", logGeneration, gen, logHandle, fmt.Sprintf("%#x", uint32(h)), logPCRs, b.pcrs, logFingerprint, kr.fingerprint)
	return derr
}

// currentKeyring returns the keyring new blobs and keys use, or the error the
// keys contract asks for when there is none.
func (b *backend) currentKeyring() (*keyring, error) {
	if b.closed {
		return nil, errClosed
	}
	if b.current == 0 {
		for _, err := range b.locked {
			return nil, fmt.Errorf("tpm: %w: %w", keys.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("tpm: %w", keys.ErrNotProvisioned)
	}
	return b.gens[b.current], nil
}

// newGCM builds the AEAD for one operation. The AES key schedule it makes is
// a heap copy of the KEK; it is dropped when the operation returns.
func newGCM(kek []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plaintext with AES-256-GCM under the purpose's KEK of the
// current generation, with a fresh random IV and the blob header bound into
// the tag together with aad.
func (b *backend) Seal(ctx context.Context, purpose keys.Purpose, plaintext, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := keys.CheckPlaintextSize(len(plaintext)); err != nil {
		return nil, fmt.Errorf("tpm seal: %w", err)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	kr, err := b.currentKeyring()
	if err != nil {
		return nil, err
	}
	kek, err := kr.kek(purpose)
	if err != nil {
		return nil, err
	}
	env, err := keys.NewEnvelope(purpose, kr.gen)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	env.Ciphertext = aead.Seal(nil, env.IV, plaintext, env.AAD(aad))
	return env.Encode(), nil
}

// Unseal reverses Seal. A blob that does not authenticate (altered, other
// purpose, other aad) gives keys.ErrAuthFailed; a generation this TPM does not
// hold gives keys.ErrUnknownGeneration.
func (b *backend) Unseal(ctx context.Context, purpose keys.Purpose, sealed, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if _, err := b.currentKeyring(); err != nil {
		return nil, err
	}
	env, err := keys.ParseEnvelope(purpose, sealed)
	if err != nil {
		return nil, err
	}
	kr, ok := b.gens[env.Generation]
	if !ok {
		return nil, fmt.Errorf("%w: generation %d (this TPM holds %v)", keys.ErrUnknownGeneration, env.Generation, slices.Sorted(maps.Keys(b.gens)))
	}
	kek, err := kr.kek(purpose)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, env.IV, env.Ciphertext, env.AAD(aad))
	if err != nil {
		return nil, fmt.Errorf("%w: purpose %q, generation %d", keys.ErrAuthFailed, string(purpose), env.Generation)
	}
	return pt, nil
}

// AuthKey returns the public key of the P-256 key label, derived from the
// current root on first use.
func (b *backend) AuthKey(ctx context.Context, label string) (*ecdsa.PublicKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	kr, err := b.currentKeyring()
	if err != nil {
		return nil, err
	}
	_, pub, err := kr.p256For(ctx, b.wrapped, label)
	if err != nil {
		return nil, err
	}
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pub)
}

// SignAuth signs a 32-byte digest with the P-256 key label and returns ASN.1
// DER with S <= N/2. The private key is rebuilt from locked memory for this
// one signature.
func (b *backend) SignAuth(ctx context.Context, label string, digest []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(digest) != 32 {
		return nil, fmt.Errorf("tpm sign: %w: digest of %d bytes, want 32", keys.ErrInvalidInput, len(digest))
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	kr, err := b.currentKeyring()
	if err != nil {
		return nil, err
	}
	d, _, err := kr.p256For(ctx, b.wrapped, label)
	if err != nil {
		return nil, err
	}
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, fmt.Errorf("tpm sign: load key %q: %w", label, err)
	}
	der, err := ecdsa.SignASN1(rand.Reader, k, digest)
	if err != nil {
		return nil, fmt.Errorf("tpm sign with %q: %w", label, err)
	}
	return keys.LowS(der)
}

// Info reports the TPM's identity and the generations this backend holds.
// It sends TPM2_GetCapability over a fresh connection, so an unreachable TPM
// gives an error wrapping keys.ErrUnavailable.
func (b *backend) Info(ctx context.Context) (keys.BackendInfo, error) {
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return keys.BackendInfo{}, errClosed
	}
	var props map[tpm2.TPMPT]uint32
	err := b.dev.do(ctx, "info", func(t transport.TPM) (err error) {
		props, err = fixedProperties(t)
		return err
	})
	if err != nil {
		return keys.BackendInfo{}, err
	}

	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return keys.BackendInfo{}, errClosed
	}
	info := keys.BackendInfo{
		Kind: "tpm",
		Identity: map[string]string{
			"device":       b.dev.name,
			"manufacturer": propString(props, tpm2.TPMPTManufacturer),
			"vendor": propString(props, tpm2.TPMPTVendorString1, tpm2.TPMPTVendorString1+1,
				tpm2.TPMPTVendorString1+2, tpm2.TPMPTVendorString1+3),
			"firmware": fmt.Sprintf("%08x.%08x", props[tpm2.TPMPTFirmwareVersion1], props[tpm2.TPMPTFirmwareVersion2]),
			"srk_name": b.srkName,
		},
		Provisioned: b.current != 0 || len(b.locked) > 0,
		Generation:  b.current,
	}
	if len(b.locked) > 0 {
		var gs []string
		for _, g := range slices.Sorted(maps.Keys(b.locked)) {
			gs = append(gs, strconv.FormatUint(uint64(g), 10))
		}
		info.Identity["locked_generations"] = strings.Join(gs, ",")
	}
	if b.current != 0 {
		info.Generations = slices.Sorted(maps.Keys(b.gens))
		info.RootFingerprint = b.gens[b.current].fingerprint
		info.Format = b.gens[b.current].format
	}
	return info, nil
}

// fixedProperties reads TPM_PT_MANUFACTURER through TPM_PT_FIRMWARE_VERSION_2
// (Part 3, section 30.2, TPM2_GetCapability of TPM_CAP_TPM_PROPERTIES).
func fixedProperties(t transport.TPM) (map[tpm2.TPMPT]uint32, error) {
	first, last := tpm2.TPMPTManufacturer, tpm2.TPMPTFirmwareVersion2
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(first),
		PropertyCount: uint32(last - first + 1),
	}.Execute(t)
	if err != nil {
		return nil, tpmOp("GetCapability(TPM_CAP_TPM_PROPERTIES)", err)
	}
	list, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return nil, tpmOp("GetCapability(TPM_CAP_TPM_PROPERTIES)", err)
	}
	props := map[tpm2.TPMPT]uint32{}
	for _, p := range list.TPMProperty {
		props[p.Property] = p.Value
	}
	return props, nil
}

// propString decodes properties that hold four ASCII characters each, such
// as the manufacturer ("IBM\0") and the vendor strings.
func propString(props map[tpm2.TPMPT]uint32, pts ...tpm2.TPMPT) string {
	var buf []byte
	for _, pt := range pts {
		buf = binary.BigEndian.AppendUint32(buf, props[pt])
	}
	printable := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, string(buf))
	// Vendors pad each 4-byte word: swtpm's "SW  " " TPM" reads "SW TPM".
	return strings.Join(strings.Fields(printable), " ")
}

// Close zeroes and unmaps every key this backend holds. Later calls to any
// method fail; a second Close returns nil.
func (b *backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.current = 0
	clear(b.auth)
	return b.destroyKeyrings()
}

// destroyKeyrings destroys every keyring; the caller holds mu or owns b
// exclusively.
func (b *backend) destroyKeyrings() error {
	var errs []error
	for g, kr := range b.gens {
		errs = append(errs, kr.destroy())
		delete(b.gens, g)
	}
	return errors.Join(errs...)
}

var _ keys.Retirer = (*backend)(nil)

// RetireGeneration evicts generation gen's sealed root from the TPM and
// destroys its keyring. The current (highest) generation cannot be retired.
func (b *backend) RetireGeneration(ctx context.Context, gen uint32) error {
	b.mu.RLock()
	current, closed := b.current, b.closed
	b.mu.RUnlock()
	if closed {
		return errClosed
	}
	if gen == 0 || gen >= current {
		return fmt.Errorf("tpm: %w: generation %d is not an old generation (current %d)", keys.ErrInvalidInput, gen, current)
	}
	h := b.handle(gen)
	err := b.dev.do(ctx, "retire", func(t transport.TPM) error {
		_, name, ok, err := persistent(t, h)
		if err != nil || !ok {
			return err
		}
		return evict(t, h, name)
	})
	if err != nil {
		return fmt.Errorf("tpm: retire generation %d: %w", gen, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var derr error
	if kr := b.gens[gen]; kr != nil {
		derr = kr.destroy()
	}
	delete(b.gens, gen)
	b.log.Info("retired generation", logGeneration, gen, logHandle, fmt.Sprintf("%#x", uint32(h)))
	return derr
}
