package hsm_test

import (
	"testing"

	"github.com/cachet-custody/cachet/keys/keystest"
)

// The shared keys.Backend benchmarks on a SoftHSM token with the default pool
// of sessions: one hardware call per operation, serially and with
// b.RunParallel. They report costs; they assert none.

func BenchmarkSeal(b *testing.B)     { keystest.BenchSeal(b, softHSM{}) }
func BenchmarkUnseal(b *testing.B)   { keystest.BenchUnseal(b, softHSM{}) }
func BenchmarkSignAuth(b *testing.B) { keystest.BenchSignAuth(b, softHSM{}) }
