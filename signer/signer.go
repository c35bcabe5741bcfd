// Package signer serves JSON-RPC signer endpoints: Unix sockets speaking
// Ethereum's JSON-RPC 2.0, newline-delimited as geth's IPC is, so that geth
// (--signer), ethers, viem, web3.py and Foundry (--unlocked) use Cachet's
// wallets unchanged, as Clef's successor.
//
// An endpoint is one [[signer]] section of the configuration: its socket,
// the app it acts for, the wallets it exposes (every other wallet is
// invisible through it), the local uids and gids that may connect (checked
// from the kernel's peer credentials before anything is read, as on the API
// socket) and the appliance-held authorization key that approves each
// request on the caller's behalf.
//
// Each signing call (account_signTransaction, eth_sendTransaction,
// personal_sign, ...) becomes the equivalent wallet API request,
// POST /v1/wallets/{id}/rpc with Privy's body. That key signs it (package
// authkeys: the caller must also be one of the key's allowed callers, and
// the use is recorded) with a one-minute privy-request-expiry and a fresh
// privy-idempotency-key, and custody runs it exactly as it runs a request
// from the API socket: the wallet's quorum, its policies, replay
// protection, and the durable audit record before the signature leaves. A
// wallet whose quorum needs more approvals than the key gives, and a policy
// denial, come back as JSON-RPC errors naming the reason.
//
// There is no HTTP listener: a loopback TCP port cannot tell which local
// user connects (no peer credentials), and a browser on the same machine
// can reach it, so it could not be kept as safe as the socket.
package signer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/authkeys"
	"github.com/cachet-custody/cachet/config"
	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/internal/peercred"
)

// Version is what account_version answers: the external API version of
// Clef that this endpoint implements.
const Version = "6.1.0"

// Options configures an endpoint.
type Options struct {
	Config config.Signer
	// PublicBase is the daemon's public URL: the wallet API requests are
	// built (and signed) for it, as a client of the API socket would.
	PublicBase string
	// MaxRequestExpiry is api.max_request_expiry; requests are given an
	// expiry of one minute or this, whichever is shorter.
	MaxRequestExpiry time.Duration
	// MaxMessageBytes bounds one JSON-RPC message (server.max_body_bytes).
	MaxMessageBytes int64
	// Timeout bounds one signing call, which runs to its end whatever the
	// client does with its connection (server.write_timeout).
	Timeout  time.Duration
	Custody  *custody.Service
	AuthKeys *authkeys.Service
	// Audit records the refusals custody does not record itself; nil
	// records none (tests).
	Audit *audit.Log
	// RPCURL is the chain's JSON-RPC node from [[chains]], "" for none:
	// other methods are forwarded there when other_methods = "forward".
	RPCURL string
	Logger *slog.Logger
	// Refused, if set, is told of each peer refused at connect (the
	// daemon aggregates them into audit records per uid and minute).
	Refused func(peercred.Cred)
}

// Endpoint is one signer endpoint.
type Endpoint struct {
	opts    Options
	policy  peercred.Policy
	chainID *big.Int
	http    *http.Client
	log     *slog.Logger
	now     func() time.Time

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	byAddr map[common.Address]string // exposed wallets found by address
}

// New checks the options and returns the endpoint.
func New(o Options) (*Endpoint, error) {
	c := o.Config
	if o.Custody == nil || o.AuthKeys == nil {
		return nil, errors.New("signer: custody and authorization keys are required")
	}
	num, isEVM := strings.CutPrefix(c.CAIP2, "eip155:")
	ref, ok := new(big.Int).SetString(num, 10)
	if !isEVM || !ok || ref.Sign() <= 0 {
		return nil, fmt.Errorf("signer %s: caip2 %q is not an EVM chain", c.Name, c.CAIP2)
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 1 << 20
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	if o.MaxRequestExpiry <= 0 {
		o.MaxRequestExpiry = 24 * time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	pol := peercred.Policy{SelfUID: uint32(os.Getuid())}
	for _, u := range c.AllowedUIDs {
		pol.UIDs = append(pol.UIDs, uint32(u))
	}
	for _, g := range c.AllowedGIDs {
		pol.GIDs = append(pol.GIDs, uint32(g))
	}
	return &Endpoint{opts: o, policy: pol, chainID: ref, http: &http.Client{Timeout: o.Timeout},
		log: o.Logger.With("signer", c.Name), now: time.Now, conns: map[net.Conn]struct{}{}, byAddr: map[common.Address]string{}}, nil
}

// Serve accepts connections on ln until ln is closed or ctx ends; then it
// closes the open connections, lets the requests in progress finish (each
// runs to its end and is recorded) and returns.
func (e *Endpoint) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer func() {
		e.mu.Lock()
		for c := range e.conns {
			c.Close()
		}
		e.mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("signer %s: accept: %w", e.opts.Config.Name, err)
		}
		e.mu.Lock()
		e.conns[c] = struct{}{}
		e.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				e.mu.Lock()
				delete(e.conns, c)
				e.mu.Unlock()
				c.Close()
			}()
			e.serveConn(ctx, c)
		}()
	}
}

// serveConn checks the peer before reading anything, then answers the
// connection's messages in order, one line each.
func (e *Endpoint) serveConn(ctx context.Context, c net.Conn) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		e.log.Error("refused a connection that is not a Unix socket")
		return
	}
	cred, err := peercred.Read(uc)
	if err != nil {
		e.log.Error("refused a connection whose peer credentials cannot be read", "error", err)
		return
	}
	if !e.policy.Allows(cred) {
		e.log.Warn("refused connection from a local user the endpoint does not allow", "uid", cred.UID, "gid", cred.GID, "pid", cred.PID)
		if e.opts.Refused != nil {
			e.opts.Refused(cred)
		}
		c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		line, _ := marshalResponse(response{ID: nullID, Error: &rpcError{Code: codeUnauthorized,
			Message: fmt.Sprintf("uid %d may not use signer endpoint %s (see allowed_uids and allowed_gids of its [[signer]] section)", cred.UID, e.opts.Config.Name)}})
		c.Write(append(line, '\n'))
		return
	}
	w := bufio.NewWriter(c)
	br := &boundedReader{r: c, max: e.opts.MaxMessageBytes}
	msgs := newMessageReader(br)
	for {
		raw, err := msgs.next()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				line, _ := marshalResponse(response{ID: nullID, Error: &rpcError{Code: codeParseError, Message: err.Error()}})
				w.Write(append(line, '\n'))
				w.Flush()
			}
			return
		}
		out := e.handleMessage(ctx, cred, raw)
		if out == nil {
			continue // notifications only
		}
		// A client that stops reading does not hold the connection's
		// goroutine beyond the timeout.
		c.SetWriteDeadline(time.Now().Add(e.opts.Timeout))
		if _, err := w.Write(append(out, '\n')); err != nil {
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

// boundedReader fails once more than max bytes were read since the last
// reset: no message may make the endpoint buffer without bound.
type boundedReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n > b.max {
		return 0, fmt.Errorf("a message is larger than %d bytes", b.max)
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}

func (e *Endpoint) actor(cred peercred.Cred) string {
	return "signer=" + e.opts.Config.Name + " " + cred.String() + " app=" + e.opts.Config.App
}

// expiry is how long a request the endpoint builds stays valid.
func (e *Endpoint) expiry() time.Duration {
	return min(time.Minute, e.opts.MaxRequestExpiry)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
