package tpm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/cachet-custody/cachet/keys"
)

// defaultOpTimeout bounds one high-level operation when the caller's context
// has no deadline. swtpm queues a second client until the first disconnects,
// so without a bound a stuck peer would hang /healthz forever. The slowest
// command Cachet sends (CreatePrimary of an ECC key) takes well under a
// second on real TPMs.
const defaultOpTimeout = 30 * time.Second

// device is one TPM as named by Options.Device.
type device struct {
	name string // as configured, for messages and Info
	kind string // "dev", "unix" or "tcp"
	addr string // path or host:port
	sem  chan struct{}
}

// deviceSems holds one semaphore per device name, shared by every backend and
// by ExtendPCR in this process. A go-tpm transport must not be used by two
// goroutines at once, and swtpm serves one connection at a time, so this is
// the single lock all TPM commands of the process go through.
var (
	deviceSemsMu sync.Mutex
	deviceSems   = map[string]chan struct{}{}
)

func deviceSem(name string) chan struct{} {
	deviceSemsMu.Lock()
	defer deviceSemsMu.Unlock()
	s, ok := deviceSems[name]
	if !ok {
		s = make(chan struct{}, 1)
		deviceSems[name] = s
	}
	return s
}

// parseDevice accepts "unix:PATH", "tcp:HOST:PORT" with a loopback HOST, or a
// path to a character device such as /dev/tpmrm0.
func parseDevice(name string) (*device, error) {
	d := &device{name: name}
	switch {
	case name == "":
		return nil, fmt.Errorf("%w: tpm device is empty (want /dev/tpmrm0, unix:PATH or tcp:HOST:PORT)", keys.ErrInvalidInput)
	case strings.HasPrefix(name, "unix:"):
		d.kind, d.addr = "unix", strings.TrimPrefix(name, "unix:")
		if d.addr == "" {
			return nil, fmt.Errorf("%w: tpm device %q has no socket path", keys.ErrInvalidInput, name)
		}
	case strings.HasPrefix(name, "tcp:"):
		d.kind, d.addr = "tcp", strings.TrimPrefix(name, "tcp:")
		host, _, err := net.SplitHostPort(d.addr)
		if err != nil {
			return nil, fmt.Errorf("%w: tpm device %q: %v", keys.ErrInvalidInput, name, err)
		}
		// TCP is for swtpm in tests and development. A TPM reached over
		// the network is not this machine's hardware, so only loopback
		// is accepted.
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("%w: tpm device %q: TCP is only for a simulator on loopback", keys.ErrInvalidInput, name)
		}
	case strings.HasPrefix(name, "/"):
		d.kind, d.addr = "dev", name
	default:
		return nil, fmt.Errorf("%w: tpm device %q: want /dev/tpmrm0, unix:PATH or tcp:HOST:PORT", keys.ErrInvalidInput, name)
	}
	d.sem = deviceSem(name)
	return d, nil
}

// do runs fn over a fresh connection to the TPM and closes it afterwards, so
// that other processes can reach the TPM between Cachet's operations. Only
// one do per device runs at a time in this process. Connection failures and
// errors from fn that are not already classified are returned wrapping
// keys.ErrUnavailable; fn classifies its own errors where the caller needs to
// branch (see classify).
func (d *device) do(ctx context.Context, op string, fn func(t transport.TPM) error) (err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultOpTimeout)
		defer cancel()
	}
	select {
	case d.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("tpm %s (%s): waiting for the device: %w: %w", op, d.name, keys.ErrUnavailable, ctx.Err())
	}
	defer func() { <-d.sem }()

	t, err := d.connect(ctx)
	if err != nil {
		return fmt.Errorf("tpm %s (%s): connect: %w: %w", op, d.name, keys.ErrUnavailable, err)
	}
	defer func() {
		if cerr := t.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("tpm %s (%s): close: %w: %w", op, d.name, keys.ErrUnavailable, cerr))
		}
	}()
	if err := fn(t); err != nil {
		return classify(op+" ("+d.name+")", err)
	}
	return nil
}

// connect opens the device. Sockets get the context's deadline, and are
// unblocked when the context is cancelled; the character device relies on
// the kernel driver's own command timeouts.
func (d *device) connect(ctx context.Context) (transport.TPMCloser, error) {
	if d.kind == "dev" {
		return linuxtpm.Open(d.addr)
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, d.kind, d.addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			conn.Close()
			return nil, err
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	// Never PowerOn: swtpm runs with not-need-init,startup-clear, and the
	// simulator's platform commands fail against swtpm's control channel.
	return transport.FromReadWriteCloser(&ctxConn{Conn: conn, stop: stop}), nil
}

// ctxConn stops the context watcher when the connection closes.
type ctxConn struct {
	net.Conn
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}
