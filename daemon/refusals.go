package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cachet-custody/cachet/audit"
)

// maxRefusedUIDs bounds the uids one window of peer refusals names one by
// one; refusals of further uids are counted together. A flood of
// connections from any number of local users thus adds at most
// maxRefusedUIDs+1 records a minute to the audit log.
const maxRefusedUIDs = 64

// peerRefusals aggregates the connections the peer check refused, per uid,
// until the next flush: a refused connection is never read (it may be
// anyone's), so it is not worth a record of its own, but a record per uid
// and minute says who knocked and how often.
type peerRefusals struct {
	mu     sync.Mutex
	since  time.Time
	byUID  map[uint32]*refusalCount
	others int // refusals of uids past maxRefusedUIDs
	// action is the records' action: api.peer_refused unless set (a
	// [[signer]] endpoint's are signer.peer_refused, target "<name> uid=…").
	action string
	prefix string
}

type refusalCount struct {
	n    int
	gids map[uint32]bool
}

func newPeerRefusals() *peerRefusals {
	return &peerRefusals{byUID: map[uint32]*refusalCount{}, since: time.Now()}
}

// add counts one refused connection.
func (r *peerRefusals) add(p Peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.byUID[p.UID]
	if !ok {
		if len(r.byUID) >= maxRefusedUIDs {
			r.others++
			return
		}
		c = &refusalCount{gids: map[uint32]bool{}}
		r.byUID[p.UID] = c
	}
	c.n++
	if len(c.gids) < 16 {
		c.gids[p.GID] = true
	}
}

// flush records what was counted since the last flush, one audit record
// per uid (and one for the uids counted together), and starts a new window.
// The context is detached from any request: the record is written whatever
// happens to the caller.
func (r *peerRefusals) flush(ctx context.Context, log *audit.Log) error {
	r.mu.Lock()
	byUID, others, since := r.byUID, r.others, r.since
	r.byUID, r.others, r.since = map[uint32]*refusalCount{}, 0, time.Now()
	r.mu.Unlock()
	if log == nil || (len(byUID) == 0 && others == 0) {
		return nil
	}
	uids := make([]uint32, 0, len(byUID))
	for u := range byUID {
		uids = append(uids, u)
	}
	sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
	window := map[string]any{"from": since.UTC().Format(time.RFC3339), "to": time.Now().UTC().Format(time.RFC3339)}
	record := func(target string, detail map[string]any) error {
		for k, v := range window {
			detail[k] = v
		}
		d, _ := json.Marshal(detail)
		action := r.action
		if action == "" {
			action = "api.peer_refused"
		}
		_, err := log.Record(context.WithoutCancel(ctx), audit.Entry{Actor: "cachet", Action: action, Target: r.prefix + target,
			Decision: audit.DecisionDeny, Detail: string(d)})
		return err
	}
	for _, u := range uids {
		c := byUID[u]
		gids := make([]uint32, 0, len(c.gids))
		for g := range c.gids {
			gids = append(gids, g)
		}
		sort.Slice(gids, func(i, j int) bool { return gids[i] < gids[j] })
		if err := record(fmt.Sprintf("uid=%d", u), map[string]any{"connections": c.n, "gids": gids}); err != nil {
			return err
		}
	}
	if others > 0 {
		return record("other uids", map[string]any{"connections": others, "note": fmt.Sprintf("uids past the first %d of the window", maxRefusedUIDs)})
	}
	return nil
}
