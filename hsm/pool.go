package hsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// Log field names.
const (
	logToken    = "token"
	logSlot     = "slot"
	logLabel    = "label"
	logErr      = "err"
	logGen      = "generation"
	logSize     = "sessions"
	logReplaced = "replaced_objects"
)

// pool lends the sessions of one token, one operation at a time per session.
//
// free holds exactly size entries at all times, counting those checked out.
// An entry with handle 0 (CK_INVALID_HANDLE) is a place whose session was
// closed or lost; get opens a new session there. The PIN is kept because the
// token logs the application out when all its sessions close, including
// through C_CloseAllSessions, and the pool must log in again.
//
// When one session is lost, the others were probably lost with it (a
// C_CloseAllSessions, a logout, a device reset), so every loss starts a new
// epoch, and get checks a session from an older epoch (C_GetSessionInfo, and
// C_Login if the token was logged out) before it lends it. A retry therefore
// never lands on a second dead session.
type pool struct {
	mod   *module
	label string // the token's label; the slot is re-resolved from it
	pin   string // never logged, never in an error
	log   *slog.Logger
	size  int

	slotMu sync.Mutex
	slot   uint

	epoch      atomic.Uint64
	lastReinit time.Time // guarded by reinitMu (probe.go)
	free       chan session
	done       chan struct{} // closed by close
	closing    atomic.Bool
}

// session is a pooled session handle and the epoch in which it was last
// known to work.
type session struct {
	h     pkcs11.SessionHandle
	epoch uint64
}

func newPool(mod *module, label, pin string, slot uint, size int, log *slog.Logger) *pool {
	p := &pool{
		mod: mod, label: label, pin: pin, log: log, size: size, slot: slot,
		free: make(chan session, size),
		done: make(chan struct{}),
	}
	for range size {
		p.free <- session{}
	}
	return p
}

func (p *pool) currentSlot() uint {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	return p.slot
}

// get checks a session out. Waiting honours ctx; the PKCS#11 calls that follow
// cannot be cancelled.
func (p *pool) get(ctx context.Context) (session, error) {
	if err := ctx.Err(); err != nil {
		return session{}, fmt.Errorf("hsm: waiting for a PKCS#11 session: %w", err)
	}
	select {
	case <-p.done:
		return session{}, errClosed
	case <-ctx.Done():
		return session{}, fmt.Errorf("hsm: waiting for a PKCS#11 session: %w", ctx.Err())
	case s := <-p.free:
		if p.closing.Load() {
			p.free <- s
			return session{}, errClosed
		}
		if err := p.ready(&s); err != nil {
			p.free <- session{}
			return session{}, err
		}
		return s, nil
	}
}

// ready makes a checked-out place usable: it checks a session from an older
// epoch and opens a new one where there is none. C_Login reads the token's
// files, so this holds module.objMu shared, like every read.
func (p *pool) ready(s *session) error {
	p.mod.objMu.RLock()
	defer p.mod.objMu.RUnlock()
	epoch := p.epoch.Load()
	if s.h != 0 && s.epoch != epoch {
		if _, err := p.login(s.h); err != nil {
			if !sessionGone(err) {
				_ = p.mod.ctx.CloseSession(s.h)
			}
			s.h = 0
		}
		s.epoch = epoch
	}
	if s.h != 0 {
		return nil
	}
	h, err := p.open()
	if err != nil {
		return err
	}
	*s = session{h: h, epoch: epoch}
	return nil
}

// put returns a healthy session to the pool.
func (p *pool) put(s session) { p.free <- s }

// discard drops a session that failed with err, starts a new epoch and leaves
// an empty place in the pool, so the next get opens a fresh session.
func (p *pool) discard(s session, err error) {
	p.epoch.Add(1)
	if !sessionGone(err) {
		// The handle is still valid (a device error, an operation left
		// active, a logged-out token); close it so it does not leak. Its
		// error adds nothing to err.
		_ = p.mod.ctx.CloseSession(s.h)
	}
	p.free <- session{}
}

// open opens a read-write session (token objects are created in it) and makes
// sure the token is logged in.
func (p *pool) open() (pkcs11.SessionHandle, error) {
	const flags = pkcs11.CKF_SERIAL_SESSION | pkcs11.CKF_RW_SESSION
	slot := p.currentSlot()
	// C_OpenSession, v2.40 section 5.6.
	s, err := p.mod.ctx.OpenSession(slot, flags)
	if rv, ok := rvOf(err); ok && (rv == pkcs11.CKR_SLOT_ID_INVALID || rv == pkcs11.CKR_TOKEN_NOT_PRESENT || rv == pkcs11.CKR_DEVICE_REMOVED) {
		// The token may have come back in another slot.
		if moved, ferr := findSlot(p.mod.ctx, p.label); ferr == nil && moved != slot {
			p.log.Warn("pkcs11 token moved to another slot", logToken, p.label, logSlot, moved)
			p.slotMu.Lock()
			p.slot = moved
			p.slotMu.Unlock()
			s, err = p.mod.ctx.OpenSession(moved, flags)
		}
	}
	if err != nil {
		return 0, mapErr("C_OpenSession", err)
	}
	if _, err := p.login(s); err != nil {
		_ = p.mod.ctx.CloseSession(s)
		return 0, err
	}
	return s, nil
}

// login logs the user in unless the token already is. The login state belongs
// to the application and token, not to one session (v2.40 section 5.6,
// C_Login): sessions opened later share it, a second C_Login gives
// CKR_USER_ALREADY_LOGGED_IN, and closing the last session logs out. It
// reports whether it had to log in.
func (p *pool) login(s pkcs11.SessionHandle) (bool, error) {
	info, err := p.mod.ctx.GetSessionInfo(s)
	if err != nil {
		return false, mapErr("C_GetSessionInfo", err)
	}
	if info.State == pkcs11.CKS_RO_USER_FUNCTIONS || info.State == pkcs11.CKS_RW_USER_FUNCTIONS {
		return false, nil
	}
	err = p.mod.ctx.Login(s, pkcs11.CKU_USER, p.pin)
	if rv, ok := rvOf(err); ok && rv == pkcs11.CKR_USER_ALREADY_LOGGED_IN {
		return false, nil
	}
	if err != nil {
		return false, mapErr("C_Login", err)
	}
	p.log.Info("pkcs11 login", logToken, p.label)
	return true, nil
}

// do runs fn on one checked-out session; no other goroutine can use that
// session until fn returns. When fn fails because the session was lost (see
// sessionLost), the session is replaced and fn runs once more on a fresh,
// logged-in one, so fn must be safe to repeat. fn must not create, change or
// destroy token objects; doWrite is for that.
func (p *pool) do(ctx context.Context, fn func(pkcs11.SessionHandle) error) error {
	return p.run(ctx, false, fn)
}

// doWrite is do for a fn that creates, changes or destroys token objects:
// it runs while no other call of the module does (see module.objMu).
func (p *pool) doWrite(ctx context.Context, fn func(pkcs11.SessionHandle) error) error {
	return p.run(ctx, true, fn)
}

func (p *pool) run(ctx context.Context, write bool, fn func(pkcs11.SessionHandle) error) error {
	for attempt := 0; ; attempt++ {
		s, err := p.get(ctx)
		if err != nil {
			return err
		}
		// The session is checked out before the lock is taken, and the lock
		// is released before the session goes back, so a goroutine holding
		// the lock never waits for a session.
		if write {
			p.mod.objMu.Lock()
		} else {
			p.mod.objMu.RLock()
		}
		err = fn(s.h)
		if write {
			p.mod.objMu.Unlock()
		} else {
			p.mod.objMu.RUnlock()
		}
		if err == nil || !sessionLost(err) {
			p.put(s)
			return err
		}
		p.discard(s, err)
		if attempt > 0 {
			return err
		}
		p.log.Warn("pkcs11 session lost; retrying on a fresh session", logToken, p.label, logErr, err)
	}
}

// close waits for every checked-out session to come back, closes them all and
// releases the module. Later calls return nil.
func (p *pool) close() error {
	if !p.closing.CompareAndSwap(false, true) {
		return nil
	}
	close(p.done)
	var errs []error
	for range p.size {
		s := <-p.free
		if s.h == 0 {
			continue
		}
		// C_CloseSession, v2.40 section 5.6.
		if err := p.mod.ctx.CloseSession(s.h); err != nil && !sessionGone(err) {
			errs = append(errs, mapErr("C_CloseSession", err))
		}
	}
	errs = append(errs, p.mod.release())
	return errors.Join(errs...)
}

// withAll checks out every session, so that nothing else runs on the token
// while fn does. Only tests use it (C_CloseAllSessions must not pull a
// session from under a running operation).
func (p *pool) withAll(ctx context.Context, fn func() error) error {
	held := make([]session, 0, p.size)
	defer func() {
		for _, s := range held {
			p.put(s)
		}
	}()
	for range p.size {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return errClosed
		case s := <-p.free:
			held = append(held, s)
		}
	}
	return fn()
}
