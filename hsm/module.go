package hsm

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/cachet-custody/cachet/keys"
	"github.com/miekg/pkcs11"
)

// module is one loaded and initialized PKCS#11 library. Cryptoki allows one
// C_Initialize per process (a second gives CKR_CRYPTOKI_ALREADY_INITIALIZED,
// v2.40 section 5.4), so every Backend on the same library shares one module
// and the last one to close finalizes it.
//
// objMu orders writes to token objects against everything else. SoftHSM 2.6.1
// corrupts objects when C_CreateObject runs while another thread reads token
// objects, which every C_FindObjects, C_Sign and C_Decrypt does (its file
// store refreshes objects from disk on each access; softhsm/SoftHSMv2 issue
// 573, fixed after 2.6.1). Creating and destroying objects is rare (first use
// of a key, provisioning), so those calls hold objMu exclusively and every
// other call holds it shared.
type module struct {
	key   string // resolved path, the registry key
	ctx   *pkcs11.Ctx
	refs  int  // guarded by registry.mu
	owned bool // we called C_Initialize, so we call C_Finalize
	objMu sync.RWMutex
}

var registry = struct {
	mu   sync.Mutex
	mods map[string]*module
}{mods: map[string]*module{}}

// moduleKey resolves symlinks, because the dynamic loader maps
// /usr/lib/softhsm/libsofthsm2.so and the file it points to as one library:
// two registry entries for it would initialize it twice.
func moduleKey(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		return p
	}
	return filepath.Clean(path)
}

// acquire loads and initializes the module at path, or takes another
// reference to it when this process already has.
func acquire(path string) (*module, error) {
	if path == "" {
		return nil, fmt.Errorf("hsm: %w: no PKCS#11 module path", keys.ErrInvalidInput)
	}
	key := moduleKey(path)
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if m := registry.mods[key]; m != nil {
		m.refs++
		return m, nil
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("hsm: cannot load PKCS#11 module %q: %w", path, keys.ErrUnavailable)
	}
	owned := true
	// C_Initialize with CKF_OS_LOCKING_OK (miekg/pkcs11's default): the
	// library may be called from several OS threads, which cgo does.
	if err := ctx.Initialize(); err != nil {
		if rv, ok := rvOf(err); !ok || rv != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
			ctx.Destroy()
			return nil, mapErr("C_Initialize", err)
		}
		// Someone else in this process initialized the library without us;
		// finalizing it would pull it from under them.
		owned = false
	}
	m := &module{key: key, ctx: ctx, refs: 1, owned: owned}
	registry.mods[key] = m
	return m, nil
}

// release drops one reference and finalizes the library with the last one.
// C_Finalize closes every session and logs the application out.
func (m *module) release() error {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	m.refs--
	if m.refs > 0 {
		return nil
	}
	delete(registry.mods, m.key)
	var err error
	if m.owned {
		err = mapErr("C_Finalize", m.ctx.Finalize())
	}
	m.ctx.Destroy()
	return err
}

// tokenSlots returns the slots whose initialized token is labelled label.
// Tokens are found by label, never by slot number: SoftHSM gives a token a
// new, random-looking slot id when it is initialized.
func tokenSlots(ctx *pkcs11.Ctx, label string) ([]uint, error) {
	slots, err := ctx.GetSlotList(true) // v2.40 section 5.5
	if err != nil {
		return nil, mapErr("C_GetSlotList", err)
	}
	var found []uint
	var errs []error
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			// One broken slot must not hide the token we look for; report it
			// only if the token is not found elsewhere.
			errs = append(errs, mapErr("C_GetTokenInfo", err))
			continue
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 && ti.Label == label {
			found = append(found, s)
		}
	}
	if len(found) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return found, nil
}

// findSlot returns the one slot that holds the token labelled label.
func findSlot(ctx *pkcs11.Ctx, label string) (uint, error) {
	slots, err := tokenSlots(ctx, label)
	if err != nil {
		return 0, fmt.Errorf("hsm: find token %q: %w", label, err)
	}
	switch len(slots) {
	case 0:
		return 0, fmt.Errorf("hsm: no initialized PKCS#11 token labelled %q: %w", label, keys.ErrUnavailable)
	case 1:
		return slots[0], nil
	}
	return 0, fmt.Errorf("hsm: %d PKCS#11 tokens labelled %q; the label must name one token: %w", len(slots), label, keys.ErrUnavailable)
}

// initTokenMu keeps two InitToken calls from claiming the same free slot.
var initTokenMu sync.Mutex

// maxTokenLabel is the size of CK_TOKEN_INFO.label (v2.40 section 3.2).
const maxTokenLabel = 32

// InitToken initializes a token labelled label in the module's free slot
// (the uninitialized token SoftHSM always offers), sets its security-officer
// PIN to soPIN and its user PIN to userPIN. It is for development mode and
// tests; production tokens are set up with the vendor's tools.
//
// It uses the process's shared module handle, so a token it creates is
// visible to every Backend in this process (SoftHSM does not show this process
// tokens that another process creates after C_Initialize). It fails when a
// token with the label exists already, because tokens are found by label.
// Neither PIN appears in an error.
func InitToken(module, label, soPIN, userPIN string) (err error) {
	if label == "" || len(label) > maxTokenLabel {
		return fmt.Errorf("hsm: %w: token label %q: want 1-%d bytes", keys.ErrInvalidInput, label, maxTokenLabel)
	}
	if soPIN == "" || userPIN == "" {
		return fmt.Errorf("hsm: %w: empty PIN", keys.ErrInvalidInput)
	}
	initTokenMu.Lock()
	defer initTokenMu.Unlock()
	mod, err := acquire(module)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, mod.release()) }()
	c := mod.ctx
	// A new token is new files in the token directory; keep every other
	// call of this module out while SoftHSM writes them.
	mod.objMu.Lock()
	defer mod.objMu.Unlock()

	if slots, err := tokenSlots(c, label); err != nil {
		return fmt.Errorf("hsm: init token %q: %w", label, err)
	} else if len(slots) > 0 {
		return fmt.Errorf("hsm: init token: %w: a token labelled %q exists already", keys.ErrInvalidInput, label)
	}
	slots, err := c.GetSlotList(true)
	if err != nil {
		return mapErr("C_GetSlotList", err)
	}
	free, found := uint(0), false
	for _, s := range slots {
		ti, err := c.GetTokenInfo(s)
		if err == nil && ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			free, found = s, true
			break
		}
	}
	if !found {
		return fmt.Errorf("hsm: init token %q: no slot with an uninitialized token: %w", label, keys.ErrUnavailable)
	}
	// C_InitToken, v2.40 section 5.5.
	if err := c.InitToken(free, soPIN, label); err != nil {
		return mapErr("C_InitToken", err)
	}
	// SoftHSM moves the new token to a new slot id, so look it up again.
	slot, err := findSlot(c, label)
	if err != nil {
		return err
	}
	s, err := c.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return mapErr("C_OpenSession", err)
	}
	defer func() {
		if cerr := c.CloseSession(s); cerr != nil {
			err = errors.Join(err, mapErr("C_CloseSession", cerr))
		}
	}()
	// C_Login as SO, C_InitPIN and C_Logout, v2.40 sections 5.6 and 5.5.
	if err := c.Login(s, pkcs11.CKU_SO, soPIN); err != nil {
		return mapErr("C_Login", err)
	}
	if err := c.InitPIN(s, userPIN); err != nil {
		return errors.Join(mapErr("C_InitPIN", err), mapErr("C_Logout", c.Logout(s)))
	}
	return mapErr("C_Logout", c.Logout(s))
}
