package tpm

import (
	"path/filepath"
	"testing"

	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/keys/keystest"
)

// swtpm is keystest.Hardware over swtpm: each New starts a new swtpm (on a
// Unix socket or loopback TCP, as start does) and opens it bound to PCR 16,
// with a state file.
type swtpm struct {
	start func(testing.TB) *testhw.Swtpm
}

func (h swtpm) New(t testing.TB) (keys.Backend, func(testing.TB) keys.Backend) {
	t.Helper()
	sw := h.start(t)
	// Registered after swtpm's stop and before any Close: it runs once the
	// backends are closed, while swtpm still runs. swtpm keeps what a client
	// leaves loaded, so every operation must have flushed its objects.
	t.Cleanup(func() { checkNoLeaks(t, sw.Device) })
	opts := Options{Device: sw.Device, PCRs: []int{16}, StateFile: filepath.Join(t.TempDir(), "tpm-state.json")}
	reopen := func(t testing.TB) keys.Backend { return open(t, opts) }
	return reopen(t), reopen
}

// TestConformance runs the keys.Backend conformance suite on swtpm over both
// transports.
func TestConformance(t *testing.T) {
	t.Run("unix", func(t *testing.T) { keystest.Run(t, swtpm{testhw.StartSwtpm}) })
	t.Run("tcp", func(t *testing.T) { keystest.Run(t, swtpm{testhw.StartSwtpmTCP}) })
}
