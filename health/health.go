// Package health holds the live state of the three parts every release
// depends on: the key backend (the HSM or TPM still answers and still holds
// Cachet's root), the store (a durable write succeeds and its files are the
// ones it opened) and the record (the audit log can checkpoint and its head
// matches the hardware's anchor). A signature, a share, an exported key or an
// authorization-key signature leaves the daemon only while all three are
// healthy.
//
// Each part is proved by a probe that runs on a schedule (Watch); a part can
// also report a failure the moment it sees one (Set, or a live check added
// with Live). Err is cheap (an atomic load and the live checks), so the
// daemon calls it before and after each release.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachet-custody/cachet/keys"
)

// Part names one part a release depends on.
type Part string

// The parts, in the order Err reports them.
const (
	Backend Part = "backend"
	Store   Part = "store"
	Record  Part = "record"
)

// Parts lists every part.
var Parts = []Part{Backend, Store, Record}

// UnavailableError is the refusal of a release while a part is failing. It
// matches keys.ErrUnavailable with errors.Is, so code that fails closed on an
// unavailable backend does so here too.
type UnavailableError struct {
	Part  Part
	Cause error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("%s unavailable: %v", e.Part, e.Cause)
}

func (e *UnavailableError) Unwrap() error { return e.Cause }

// Is makes every UnavailableError match keys.ErrUnavailable.
func (e *UnavailableError) Is(target error) bool { return target == keys.ErrUnavailable }

// State is one part's state as /healthz reports it.
type State struct {
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since"`
	// Checked is when the part was last proved (its probe last ended).
	Checked time.Time `json:"checked,omitzero"`
}

type partState struct {
	err     error
	since   time.Time
	checked time.Time
}

// Monitor holds the parts' states.
type Monitor struct {
	log  *slog.Logger
	mu   sync.Mutex
	snap atomic.Pointer[map[Part]partState]
	live map[Part]func() error // read-only after the first Err
}

// New returns a Monitor in which every part is failing with "not checked
// yet" until its first probe succeeds: nothing is released before each part
// was proved once.
func New(log *slog.Logger) *Monitor {
	if log == nil {
		log = slog.Default()
	}
	m := &Monitor{log: log, live: map[Part]func() error{}}
	now := time.Now()
	st := map[Part]partState{}
	for _, p := range Parts {
		st[p] = partState{err: errors.New("not checked yet"), since: now}
	}
	m.snap.Store(&st)
	return m
}

// Live adds a check that Err runs on every call for part, for a failure the
// part knows about without a probe (an atomic load, never I/O). Call it
// before the Monitor is used.
func (m *Monitor) Live(p Part, check func() error) { m.live[p] = check }

// Set records part p's state: nil is healthy. Transitions are logged.
func (m *Monitor) Set(p Part, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.snap.Load()
	cur := old[p]
	now := time.Now()
	next := partState{err: err, since: cur.since, checked: now}
	if (cur.err == nil) != (err == nil) {
		next.since = now
		if err != nil {
			m.log.Error("part failing: releases stop", "part", string(p), "error", err)
		} else {
			m.log.Info("part healthy: releases resume", "part", string(p), "was", cur.err)
		}
	}
	st := make(map[Part]partState, len(old))
	for k, v := range old {
		st[k] = v
	}
	st[p] = next
	m.snap.Store(&st)
}

// PartErr is part p's failure, or nil.
func (m *Monitor) PartErr(p Part) error {
	if c := m.live[p]; c != nil {
		if err := c(); err != nil {
			return &UnavailableError{Part: p, Cause: err}
		}
	}
	if err := (*m.snap.Load())[p].err; err != nil {
		return &UnavailableError{Part: p, Cause: err}
	}
	return nil
}

// Err returns an *UnavailableError naming the first failing part, or nil
// when every part is healthy.
func (m *Monitor) Err() error {
	for _, p := range Parts {
		if err := m.PartErr(p); err != nil {
			return err
		}
	}
	return nil
}

// States reports every part for /healthz.
func (m *Monitor) States() map[Part]State {
	snap := *m.snap.Load()
	out := map[Part]State{}
	for _, p := range Parts {
		ps := snap[p]
		s := State{OK: true, Since: ps.since, Checked: ps.checked}
		if err := m.PartErr(p); err != nil {
			s.OK, s.Error = false, err.(*UnavailableError).Cause.Error()
		}
		out[p] = s
	}
	return out
}

// Watch proves part p with probe every period until ctx ends. A probe that
// has not answered within timeout fails the part at once, even while it is
// still stuck (a hung TPM or a frozen disk), and no second probe starts
// until it returns.
func (m *Monitor) Watch(ctx context.Context, p Part, period, timeout time.Duration, probe func(context.Context) error) {
	t := time.NewTicker(period)
	defer t.Stop()
	var (
		inflight bool
		started  time.Time
		done     = make(chan error, 1)
	)
	start := func() {
		inflight, started = true, time.Now()
		go func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			done <- probe(pctx)
		}()
	}
	start()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-done:
			inflight = false
			if ctx.Err() == nil {
				m.Set(p, err)
			}
		case <-t.C:
			switch {
			case !inflight:
				start()
			case time.Since(started) > timeout:
				m.Set(p, fmt.Errorf("its health check has not answered for %s", time.Since(started).Round(time.Millisecond)))
			}
		}
	}
}
