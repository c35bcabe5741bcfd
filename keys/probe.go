package keys

import "context"

// Prober is the optional interface of a backend that can prove, cheaply and
// often, that its hardware is still there and still holds the root it was
// opened with. A backend that keeps keys in memory after start (the TPM)
// must implement it: without it, losing the device would not stop
// signatures. The daemon finds it by type assertion and falls back to Info.
//
// Probe returns an error wrapping ErrUnavailable when the device does not
// answer, and one wrapping ErrNotProvisioned when it answers but no longer
// holds the root (another device, or it was cleared).
type Prober interface {
	Probe(ctx context.Context) error
}
