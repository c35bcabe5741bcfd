package daemon

import (
	"context"
	"net/http"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/ceremony"
	"github.com/cachet-custody/cachet/health"
)

// Component health as /healthz reports it.
type componentHealth struct {
	Status string `json:"status"` // "ok" or "failing"
	Error  string `json:"error,omitempty"`
	Kind   string `json:"kind,omitempty"`
	// Store only: the whole-file check (store.Integrity).
	Integrity string `json:"integrity,omitempty"`
	// Audit only.
	HeadSeq        uint64 `json:"head_seq,omitempty"`
	CheckpointSeq  uint64 `json:"last_checkpoint_seq,omitempty"`
	SinceCheckpint uint64 `json:"records_since_checkpoint,omitempty"`
}

type healthReport struct {
	Status  string          `json:"status"` // "ok" or "failing"
	Backend componentHealth `json:"backend"`
	Store   componentHealth `json:"store"`
	Audit   componentHealth `json:"audit"`
}

const healthTimeout = 3 * time.Second

// healthErr is the release gate: nil while every part is healthy, else an
// error wrapping *health.UnavailableError naming the first failing part.
// Without a monitor (tests of the HTTP layer) nothing is gated.
func (s *Server) healthErr() error {
	if s.deps.Health == nil {
		return nil
	}
	return s.deps.Health.Err()
}

// checkHealth reports each part. With a monitor the states are those its
// probes proved last (the backend every 200 ms, the store by a durable
// write every 250 ms), so /healthz costs no hardware call; without one, each
// part is asked live.
func (s *Server) checkHealth(ctx context.Context) healthReport {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	h := healthReport{Status: "ok"}
	set := func(c *componentHealth, err error) {
		c.Status = "ok"
		if err != nil {
			c.Status, c.Error, h.Status = "failing", err.Error(), "failing"
		}
	}
	if m := s.deps.Health; m != nil {
		st := m.States()
		errOf := func(p health.Part) error {
			if st[p].OK {
				return nil
			}
			return healthError(st[p].Error)
		}
		h.Backend.Kind, h.Store.Kind = s.kind, s.deps.Store.Kind()
		set(&h.Backend, errOf(health.Backend))
		set(&h.Store, errOf(health.Store))
		h.Store.Integrity = s.deps.Store.Integrity()
		set(&h.Audit, errOf(health.Record))
		if head, err := audit.ReadHead(ctx, s.deps.Store.DB()); err == nil {
			h.Audit.HeadSeq, h.Audit.CheckpointSeq, h.Audit.SinceCheckpint = head.Seq, head.CheckpointSeq, head.UncheckpointedN
		}
		return h
	}
	info, err := s.deps.Backend.Info(ctx)
	if err == nil && !info.Provisioned {
		err = errNotProvisioned
	}
	h.Backend.Kind, h.Store.Kind = info.Kind, s.deps.Store.Kind()
	set(&h.Backend, err)
	set(&h.Store, s.deps.Store.Ping(ctx))
	head, err := audit.ReadHead(ctx, s.deps.Store.DB())
	if err == nil {
		err = s.deps.Audit.LastCheckpointError()
	}
	h.Audit.HeadSeq, h.Audit.CheckpointSeq, h.Audit.SinceCheckpint = head.Seq, head.CheckpointSeq, head.UncheckpointedN
	set(&h.Audit, err)
	return h
}

type healthError string

func (e healthError) Error() string { return string(e) }

const errNotProvisioned = healthError("the hardware holds no root")

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	h := s.checkHealth(r.Context())
	code := http.StatusOK
	if h.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
	return nil
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	st, err := ceremony.ReadStatus(r.Context(), s.deps.Backend, s.deps.Store)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Version string `json:"version"`
		ceremony.Status
	}{s.deps.Version, st})
	return nil
}
