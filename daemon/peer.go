package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/cachet-custody/cachet/internal/peercred"
	"github.com/cachet-custody/cachet/metrics"
)

// Peer is the local process at the other end of a connection, as the kernel
// reports it (SO_PEERCRED, SO_PEERGROUPS) at connect time; the signer
// endpoints read the same (package peercred).
type Peer = peercred.Cred

type peerKey struct{}

// PeerFrom returns the connection's peer. It is an error, not a zero Peer
// (uid 0 is root), when the context carries none.
func PeerFrom(ctx context.Context) (Peer, error) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	if !ok {
		return Peer{}, errors.New("no peer credentials on this connection")
	}
	return p, nil
}

// PeerPolicy decides which local users may connect.
type PeerPolicy struct {
	SelfUID uint32
	UIDs    []uint32
	GIDs    []uint32
}

// Allows reports whether p may connect: the daemon's own uid, an allowed
// uid, or an allowed primary or supplementary group.
func (pp PeerPolicy) Allows(p Peer) bool {
	return peercred.Policy(pp).Allows(peercred.Cred(p))
}

// peerListener checks every connection's peer as it is accepted, before the
// HTTP server reads anything from it. A refused peer gets a 403 written
// without reading its request, and the connection is closed.
type peerListener struct {
	net.Listener
	policy PeerPolicy
	log    *slog.Logger
	// refused, when set, counts refused peers for the audit log.
	refused *peerRefusals
	metrics *metrics.Metrics // counts refused peers; nil counts nothing
}

// peerConn carries the checked peer to http.Server.ConnContext.
type peerConn struct {
	net.Conn
	peer Peer
}

const refusedResponse = "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			l.log.Error("refused a connection that is not a Unix socket", "remote", c.RemoteAddr().String())
			continue
		}
		p, err := peercred.Read(uc)
		if err != nil {
			c.Close()
			l.log.Error("refused a connection whose peer credentials cannot be read", "error", err)
			continue
		}
		if !l.policy.Allows(p) {
			l.log.Warn("refused connection from a local user the config does not allow", "uid", p.UID, "gid", p.GID, "pid", p.PID)
			l.metrics.Refusal("peer_not_allowed")
			if l.refused != nil {
				l.refused.add(p)
			}
			go refuse(c)
			continue
		}
		return &peerConn{Conn: c, peer: p}, nil
	}
}

// refuse answers a refused peer. The decision was made before anything was
// read; what follows only gets the answer to the client. HTTP clients (Go's
// among them) fail on a response that arrives before their request is
// written, and a socket closed with unread data resets the peer, so the
// request header is read and discarded (never parsed) before the 403 is
// written, and whatever follows is discarded until the client closes: at
// most 64 KiB in all, for at most 2 seconds.
func refuse(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	limited := io.LimitReader(c, 64<<10)
	discardHeader(limited)
	body := `{"error":"This local user may not use Cachet (see server.allowed_uids and server.allowed_gids).","code":"forbidden"}`
	fmt.Fprintf(c, refusedResponse, len(body), body)
	if uc, ok := c.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	io.Copy(io.Discard, limited)
}

// discardHeader reads until the blank line that ends an HTTP header, an
// error, or the reader's limit.
func discardHeader(r io.Reader) {
	buf := make([]byte, 4096)
	var tail []byte
	for {
		n, err := r.Read(buf)
		tail = append(tail, buf[:n]...)
		if bytes.Contains(tail, []byte("\r\n\r\n")) || err != nil {
			return
		}
		if len(tail) > 3 {
			tail = tail[len(tail)-3:]
		}
	}
}
