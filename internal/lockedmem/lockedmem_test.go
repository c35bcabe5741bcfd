//go:build linux

package lockedmem

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// vmLckKB reads the process's locked memory from /proc/self/status.
func vmLckKB(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmLck:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				t.Fatalf("parse VmLck %q: %v", rest, err)
			}
			return kb
		}
	}
	t.Fatal("no VmLck line in /proc/self/status")
	return 0
}

func TestNewWriteDestroy(t *testing.T) {
	for _, size := range []int{1, 32, 4095, 4096, 4097, 3 * 4096} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			b, err := New(size)
			if err != nil {
				t.Fatal(err)
			}
			mem := b.Bytes()
			if len(mem) != size || cap(mem) != size {
				t.Fatalf("len %d cap %d, want %d", len(mem), cap(mem), size)
			}
			if !bytes.Equal(mem, make([]byte, size)) {
				t.Fatal("new buffer is not zeroed")
			}
			for i := range mem {
				mem[i] = byte(i) | 1
			}
			if mem[size-1] == 0 {
				t.Fatal("write did not stick")
			}
			if err := b.Destroy(); err != nil {
				t.Fatalf("Destroy: %v", err)
			}
			if got := b.Bytes(); got != nil {
				t.Fatalf("Bytes after Destroy = %d bytes, want nil", len(got))
			}
			if err := b.Destroy(); err != nil {
				t.Fatalf("second Destroy: %v", err)
			}
		})
	}
}

func TestNewRejectsBadSize(t *testing.T) {
	for _, size := range []int{0, -1} {
		if _, err := New(size); err == nil {
			t.Errorf("New(%d) succeeded", size)
		}
	}
}

// Zero is what Destroy runs over the mapping before unmapping it; reading the
// mapping after munmap would fault, so the zeroing is checked here directly.
func TestZero(t *testing.T) {
	b, err := New(64)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Destroy()
	mem := b.Bytes()
	for i := range mem {
		mem[i] = 0xa5
	}
	Zero(mem[8:40])
	for i, c := range mem {
		want := byte(0xa5)
		if i >= 8 && i < 40 {
			want = 0
		}
		if c != want {
			t.Fatalf("byte %d = %#x, want %#x", i, c, want)
		}
	}
	heap := bytes.Repeat([]byte{0xff}, 100)
	Zero(heap)
	if !bytes.Equal(heap, make([]byte, 100)) {
		t.Fatal("Zero left bytes behind in a heap slice")
	}
}

// Destroy must zero the mapping before munmap; check it by making munmap
// inspect what it is given.
func TestDestroyZeroesBeforeUnmap(t *testing.T) {
	var seen []byte
	orig := munmap
	munmap = func(b []byte) error {
		seen = bytes.Clone(b)
		return orig(b)
	}
	t.Cleanup(func() { munmap = orig })

	b, err := New(100)
	if err != nil {
		t.Fatal(err)
	}
	copy(b.Bytes(), bytes.Repeat([]byte("secret"), 16))
	if err := b.Destroy(); err != nil {
		t.Fatal(err)
	}
	if len(seen) != os.Getpagesize() {
		t.Fatalf("munmap got %d bytes, want a page", len(seen))
	}
	if !bytes.Equal(seen, make([]byte, len(seen))) {
		t.Fatal("memory was not zeroed before munmap")
	}
}

func TestLockedInVmLck(t *testing.T) {
	before := vmLckKB(t)
	const pages = 16
	b, err := New(pages * os.Getpagesize())
	if err != nil {
		t.Fatal(err)
	}
	during := vmLckKB(t)
	if err := b.Destroy(); err != nil {
		t.Fatal(err)
	}
	after := vmLckKB(t)
	wantKB := pages * os.Getpagesize() / 1024
	if during-before < wantKB {
		t.Errorf("VmLck grew by %d kB, want at least %d kB", during-before, wantKB)
	}
	if during-after < wantKB {
		t.Errorf("VmLck fell by %d kB after Destroy, want at least %d kB", during-after, wantKB)
	}
}

// As root mlock does not hit RLIMIT_MEMLOCK, so the failure is injected: New
// must fail closed, name the limit, and unmap what it mapped.
func TestMlockFailureFailsClosed(t *testing.T) {
	var unmapped bool
	origLock, origUnmap := mlock, munmap
	mlock = func([]byte) error { return unix.ENOMEM }
	munmap = func(b []byte) error { unmapped = true; return origUnmap(b) }
	t.Cleanup(func() { mlock, munmap = origLock, origUnmap })

	b, err := New(32)
	if err == nil {
		b.Destroy()
		t.Fatal("New succeeded although mlock failed")
	}
	if !errors.Is(err, unix.ENOMEM) {
		t.Errorf("error %v does not wrap ENOMEM", err)
	}
	if !strings.Contains(err.Error(), "RLIMIT_MEMLOCK") {
		t.Errorf("error %q does not name RLIMIT_MEMLOCK", err)
	}
	if !unmapped {
		t.Error("the mapping was not released")
	}
}

func TestArena(t *testing.T) {
	var a Arena
	before := vmLckKB(t)
	var slices [][]byte
	for i := range 300 { // 300*32 bytes spans several pages
		s, err := a.Alloc(32)
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != 32 || cap(s) != 32 {
			t.Fatalf("alloc %d: len %d cap %d", i, len(s), cap(s))
		}
		for j := range s {
			s[j] = byte(i)
		}
		slices = append(slices, s)
	}
	for i, s := range slices {
		if !bytes.Equal(s, bytes.Repeat([]byte{byte(i)}, 32)) {
			t.Fatalf("slice %d was overwritten by a later allocation", i)
		}
	}
	if grew := vmLckKB(t) - before; grew < 300*32/1024 {
		t.Errorf("VmLck grew by %d kB for 9600 bytes of keys", grew)
	}
	big, err := a.Alloc(3 * os.Getpagesize())
	if err != nil {
		t.Fatal(err)
	}
	if len(big) != 3*os.Getpagesize() {
		t.Fatalf("large alloc len %d", len(big))
	}
	if err := a.Destroy(); err != nil {
		t.Fatal(err)
	}
	if err := a.Destroy(); err != nil {
		t.Fatalf("second Destroy: %v", err)
	}
	if _, err := a.Alloc(1); err == nil {
		t.Fatal("Alloc after Destroy succeeded")
	}
}

func TestArenaConcurrent(t *testing.T) {
	var a Arena
	defer a.Destroy()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for range 100 {
				s, err := a.Alloc(32)
				if err != nil {
					errs <- err
					return
				}
				for j := range s {
					s[j] = byte(g)
				}
				for j := range s {
					if s[j] != byte(g) {
						errs <- errors.New("two goroutines got overlapping slices")
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
