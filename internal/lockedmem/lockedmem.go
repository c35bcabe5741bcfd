//go:build linux

// Package lockedmem holds secrets in memory that the kernel keeps out of swap
// and out of core dumps: anonymous pages outside the Go heap, locked with
// mlock(2) and marked MADV_DONTDUMP with madvise(2).
//
// The Go heap offers neither guarantee, and the garbage collector may copy or
// leave behind old copies of a slice, so a secret that must outlive one
// operation (the TPM backend's root and the keys derived from it) lives here.
// Memory from this package is zeroed before it is unmapped.
//
// What this package does not do: it cannot stop Go code from copying the bytes
// to the heap (crypto/aes key schedules, big.Int scalars, HMAC states do), and
// it is no defence against a process that can read this one's memory (root,
// ptrace). It adds no guard pages and does not encrypt the pages.
//
// Locking needs RLIMIT_MEMLOCK headroom (or CAP_IPC_LOCK). When mlock fails the
// allocation fails: callers fail closed rather than hold a secret in pageable
// memory.
package lockedmem

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Indirections over the system calls, so that tests can make them fail: as
// root (CAP_IPC_LOCK) mlock never hits RLIMIT_MEMLOCK.
var (
	mmap    = unix.Mmap
	munmap  = unix.Munmap
	mlock   = unix.Mlock
	munlock = unix.Munlock
	madvise = unix.Madvise
)

// Buffer is a fixed-size region of locked memory.
//
// Bytes and Destroy must not race: a slice obtained from Bytes points into
// memory that Destroy unmaps, and touching it afterwards faults. Callers that
// share a Buffer between goroutines guard it with their own lock.
type Buffer struct {
	mu   sync.Mutex
	mem  []byte // the whole mapping, a multiple of the page size
	size int    // the length callers asked for
}

// New maps size bytes (rounded up to whole pages) of anonymous memory, locks
// it and excludes it from core dumps. The memory starts zeroed. If mlock fails,
// New unmaps the region and returns an error that names RLIMIT_MEMLOCK.
func New(size int) (*Buffer, error) {
	if size <= 0 {
		return nil, fmt.Errorf("lockedmem: size %d, want > 0", size)
	}
	page := os.Getpagesize()
	length := (size + page - 1) / page * page
	mem, err := mmap(-1, 0, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("lockedmem: mmap %d bytes: %w", length, err)
	}
	if err := mlock(mem); err != nil {
		return nil, errors.Join(
			fmt.Errorf("lockedmem: mlock %d bytes: %w (raise RLIMIT_MEMLOCK, e.g. LimitMEMLOCK= in the systemd unit, or grant CAP_IPC_LOCK)", length, err),
			wrapErr("munmap", munmap(mem)))
	}
	// A core dump of the daemon must not carry the root: MADV_DONTDUMP
	// (Linux 3.4) leaves these pages out.
	if err := madvise(mem, unix.MADV_DONTDUMP); err != nil {
		return nil, errors.Join(
			fmt.Errorf("lockedmem: madvise MADV_DONTDUMP: %w", err),
			wrapErr("munlock", munlock(mem)),
			wrapErr("munmap", munmap(mem)))
	}
	return &Buffer{mem: mem, size: size}, nil
}

func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("lockedmem: %s: %w", op, err)
}

// Bytes returns the buffer's memory, len equal to the size given to New. It
// returns nil after Destroy.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mem == nil {
		return nil
	}
	return b.mem[:b.size:b.size]
}

// Destroy zeroes the whole region, unlocks and unmaps it. It returns the
// errors of munlock and munmap joined; the memory is zeroed either way.
// Calling Destroy again does nothing and returns nil.
func (b *Buffer) Destroy() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mem == nil {
		return nil
	}
	mem := b.mem
	b.mem = nil
	Zero(mem)
	return errors.Join(wrapErr("munlock", munlock(mem)), wrapErr("munmap", munmap(mem)))
}

// Zero overwrites b with zeros in a way the compiler does not remove, even
// when b is not read again before it is freed or unmapped.
//
//go:noinline
func Zero(b []byte) {
	clear(b)
	runtime.KeepAlive(b)
}

// Arena hands out small slices of locked memory, so that many 32-byte keys
// share pages instead of costing a locked page each. Slices live until the
// arena is destroyed; there is no per-slice free.
//
// Arena is safe for concurrent Alloc; as with Buffer, no slice may be used
// once Destroy has started.
type Arena struct {
	mu        sync.Mutex
	bufs      []*Buffer
	free      []byte // the unused tail of the last buffer
	destroyed bool
}

// errDestroyed is returned by Alloc after Destroy.
var errDestroyed = errors.New("lockedmem: arena destroyed")

// Alloc returns n zeroed bytes of locked memory. Allocations are 8-byte aligned.
func (a *Arena) Alloc(n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("lockedmem: alloc %d bytes, want > 0", n)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.destroyed {
		return nil, errDestroyed
	}
	rounded := (n + 7) &^ 7
	if rounded > len(a.free) {
		size := max(rounded, os.Getpagesize())
		buf, err := New(size)
		if err != nil {
			return nil, err
		}
		a.bufs = append(a.bufs, buf)
		mem := buf.Bytes()
		a.free = mem[:len(mem):len(mem)]
	}
	out := a.free[:n:n]
	a.free = a.free[rounded:]
	return out, nil
}

// Destroy destroys every buffer of the arena (see Buffer.Destroy) and joins
// their errors. Calling it again does nothing and returns nil.
func (a *Arena) Destroy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.destroyed {
		return nil
	}
	a.destroyed = true
	var errs []error
	for _, b := range a.bufs {
		errs = append(errs, b.Destroy())
	}
	a.bufs, a.free = nil, nil
	return errors.Join(errs...)
}
