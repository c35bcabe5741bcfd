// Package peercred reads the credentials of the process at the other end of
// a Unix socket connection, as the kernel recorded them at connect time
// (SO_PEERCRED, SO_PEERGROUPS). The API socket (package daemon) and the
// JSON-RPC signer endpoints (package signer) decide who may connect from
// them, the same way.
package peercred

import (
	"fmt"
	"net"
	"slices"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Cred is a connection's peer.
type Cred struct {
	PID    int32
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups
}

func (c Cred) String() string { return fmt.Sprintf("uid=%d gid=%d pid=%d", c.UID, c.GID, c.PID) }

// Read reads the peer of a Unix socket connection.
func Read(c *net.UnixConn) (Cred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Cred{}, err
	}
	var p Cred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		var uc *unix.Ucred
		uc, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if cerr != nil {
			return
		}
		p = Cred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}
		p.Groups, cerr = groups(int(fd))
	})
	if err == nil {
		err = cerr
	}
	return p, err
}

// groups reads SO_PEERGROUPS (Linux 4.13+). x/sys has the constant but no
// wrapper for this array-valued option, so the getsockopt call is made here.
func groups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for {
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch errno {
		case 0:
			return buf[:size/4], nil
		case syscall.ERANGE:
			if size <= uint32(len(buf)*4) || size > 1<<20 {
				return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
			}
			buf = make([]uint32, size/4)
		case syscall.ENOPROTOOPT:
			return nil, nil // older kernel: primary gid only
		default:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
	}
}

// Policy decides which local users may connect.
type Policy struct {
	SelfUID uint32
	UIDs    []uint32
	GIDs    []uint32
}

// Allows reports whether p may connect: the daemon's own uid, an allowed
// uid, or an allowed primary or supplementary group.
func (pp Policy) Allows(p Cred) bool {
	if p.UID == pp.SelfUID || slices.Contains(pp.UIDs, p.UID) || slices.Contains(pp.GIDs, p.GID) {
		return true
	}
	for _, g := range p.Groups {
		if slices.Contains(pp.GIDs, g) {
			return true
		}
	}
	return false
}
