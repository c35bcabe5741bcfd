package tpm

import (
	"context"
	"testing"

	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys/keystest"
)

// The benchmarks run against swtpm over its Unix socket, but once Open has
// unsealed the root none of the shared ones talks to the TPM: they measure
// AES-256-GCM and ECDSA P-256 in Go over keys held in locked memory.

func BenchmarkSeal(b *testing.B)     { keystest.BenchSeal(b, swtpm{testhw.StartSwtpm}) }
func BenchmarkUnseal(b *testing.B)   { keystest.BenchUnseal(b, swtpm{testhw.StartSwtpm}) }
func BenchmarkSignAuth(b *testing.B) { keystest.BenchSignAuth(b, swtpm{testhw.StartSwtpm}) }

// BenchmarkInfo is the one that reaches the TPM: a connection, one
// TPM2_GetCapability and a close, as /healthz does.
func BenchmarkInfo(b *testing.B) {
	be, _ := swtpm{testhw.StartSwtpm}.New(b)
	provision(b, be, newRoot(b), 1, false)
	ctx := context.Background()
	for b.Loop() {
		if _, err := be.Info(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
