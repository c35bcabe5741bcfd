package daemon

import (
	"context"
	"net/http"
	"time"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/ceremony"
)

// Component health as /healthz reports it.
type componentHealth struct {
	Status string `json:"status"` // "ok" or "failing"
	Error  string `json:"error,omitempty"`
	Kind   string `json:"kind,omitempty"`
	// Audit only.
	HeadSeq        uint64 `json:"head_seq,omitempty"`
	CheckpointSeq  uint64 `json:"last_checkpoint_seq,omitempty"`
	SinceCheckpint uint64 `json:"records_since_checkpoint,omitempty"`
}

type health struct {
	Status  string          `json:"status"` // "ok" or "failing"
	Backend componentHealth `json:"backend"`
	Store   componentHealth `json:"store"`
	Audit   componentHealth `json:"audit"`
}

const healthTimeout = 3 * time.Second

// checkHealth asks each part to do real work: the backend answers a live
// call, the store a read and a write transaction, the audit log its head and
// whether the last checkpoint could be signed.
func (s *Server) checkHealth(ctx context.Context) health {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	h := health{Status: "ok"}
	set := func(c *componentHealth, err error) {
		c.Status = "ok"
		if err != nil {
			c.Status, c.Error, h.Status = "failing", err.Error(), "failing"
		}
	}
	info, err := s.deps.Backend.Info(ctx)
	if err == nil && !info.Provisioned {
		err = errNotProvisioned
	}
	h.Backend.Kind = info.Kind
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
