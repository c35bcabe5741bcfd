package tpm

import (
	"context"
	"crypto/sha256"
	"testing"

	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys"
)

// The benchmarks run against swtpm over its Unix socket, but once Open has
// unsealed the root none of these operations talks to the TPM: they measure
// AES-256-GCM and ECDSA P-256 in Go over keys held in locked memory.

func benchBackend(b *testing.B) keys.Backend {
	b.Helper()
	sw := testhw.StartSwtpm(b)
	be, _ := provisioned(b, Options{Device: sw.Device, PCRs: []int{16}})
	return be
}

func BenchmarkSeal(b *testing.B) {
	be := benchBackend(b)
	ctx := context.Background()
	pt, aad := make([]byte, 64), []byte("wallet-id")
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(int64(len(pt)))
		for b.Loop() {
			if _, err := be.Seal(ctx, keys.PurposeWallet, pt, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(int64(len(pt)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := be.Seal(ctx, keys.PurposeWallet, pt, aad); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkUnseal(b *testing.B) {
	be := benchBackend(b)
	ctx := context.Background()
	pt, aad := make([]byte, 64), []byte("wallet-id")
	blob, err := be.Seal(ctx, keys.PurposeWallet, pt, aad)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(int64(len(pt)))
		for b.Loop() {
			if _, err := be.Unseal(ctx, keys.PurposeWallet, blob, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(int64(len(pt)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := be.Unseal(ctx, keys.PurposeWallet, blob, aad); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkSignAuth(b *testing.B) {
	be := benchBackend(b)
	ctx := context.Background()
	digest := sha256.Sum256([]byte("request"))
	if _, err := be.AuthKey(ctx, "auth/0"); err != nil { // derive outside the timing
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := be.SignAuth(ctx, "auth/0", digest[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := be.SignAuth(ctx, "auth/0", digest[:]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkInfo is the one that reaches the TPM: a connection, one
// TPM2_GetCapability and a close, as /healthz does.
func BenchmarkInfo(b *testing.B) {
	be := benchBackend(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := be.Info(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
