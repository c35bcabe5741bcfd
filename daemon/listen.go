package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/cachet-custody/cachet/config"
)

// Listen returns the API listener: the socket systemd handed over (socket
// activation; the one named "api", or the only one), or else a socket of the
// daemon's own at cfg.Socket. cleanup removes a socket Listen created.
func Listen(cfg config.Server) (ln net.Listener, activated bool, cleanup func(), err error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, false, nil, fmt.Errorf("systemd socket activation: %w", err)
	}
	var all []net.Listener
	for _, ls := range named {
		all = append(all, ls...)
	}
	switch {
	case len(named["api"]) == 1:
		ln = named["api"][0]
	case len(all) == 1:
		ln = all[0]
	case len(all) > 1:
		return nil, false, nil, fmt.Errorf("systemd passed %d sockets; name the API socket \"api\" (FileDescriptorName=api)", len(all))
	}
	if ln != nil {
		if _, ok := ln.(*net.UnixListener); !ok {
			return nil, false, nil, fmt.Errorf("systemd passed a %T; Cachet serves only on a Unix socket", ln)
		}
		return ln, true, func() {}, nil
	}
	ln, cleanup, err = listenOwn(cfg)
	return ln, false, cleanup, err
}

// listenOwn creates the socket in a private directory next to its final
// path, sets its mode and group there, and only then renames it into place,
// so no client can connect while its permissions are still the defaults.
func listenOwn(cfg config.Server) (net.Listener, func(), error) {
	path := cfg.Socket
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, nil, err
	}
	gid := -1
	if cfg.SocketGroup != "" {
		g, err := lookupGroup(cfg.SocketGroup)
		if err != nil {
			return nil, nil, err
		}
		gid = g
	}
	tmp, err := os.MkdirTemp(dir, ".cachet-sock-")
	if err != nil {
		return nil, nil, fmt.Errorf("socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	tmpPath := filepath.Join(tmp, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmpPath, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// The file is renamed away from the path Go bound, so Go must not
	// unlink on close; cleanup removes the final path.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, func(), error) {
		ln.Close()
		return nil, nil, err
	}
	if err := os.Chmod(tmpPath, cfg.SocketFileMode()); err != nil {
		return fail(fmt.Errorf("socket mode: %w", err))
	}
	if gid >= 0 {
		if err := os.Chown(tmpPath, -1, gid); err != nil {
			return fail(fmt.Errorf("socket group %s: %w", cfg.SocketGroup, err))
		}
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return fail(fmt.Errorf("socket: %w", err))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	cleanup := func() {
		// Remove the socket only if it is still ours.
		if cur, err := os.Lstat(path); err == nil && os.SameFile(cur, fi) {
			os.Remove(path)
		}
	}
	return ln, cleanup, nil
}

// ListenMetrics creates the metrics socket at cfg.Socket the way the API's
// own socket is created (private directory, mode and group set before it
// appears at its path). It is never socket-activated: the unit gives the
// daemon a runtime directory of its own for it. cleanup removes it.
func ListenMetrics(cfg config.Metrics) (net.Listener, func(), error) {
	return listenOwn(config.Server{Socket: cfg.Socket, SocketMode: cfg.SocketMode, SocketGroup: cfg.SocketGroup})
}

// removeStale removes a socket file left by a daemon that is gone, and
// refuses to start beside one that still answers.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another process is serving on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("check %s: %w", path, err)
	}
	return os.Remove(path)
}

func lookupGroup(g string) (int, error) {
	if n, err := strconv.Atoi(g); err == nil {
		return n, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return -1, fmt.Errorf("socket group: %w", err)
	}
	return strconv.Atoi(grp.Gid)
}
