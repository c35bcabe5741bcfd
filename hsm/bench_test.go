package hsm_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/cachet-custody/cachet/keys"
)

// The benchmarks measure one hardware call per operation through the pool
// (default size 2), serially and with b.RunParallel. They report costs; they
// assert none.

func BenchmarkSeal(b *testing.B) {
	be, _ := provisioned(b, 0)
	ctx := context.Background()
	pt := bytes.Repeat([]byte{7}, 64)
	aad := []byte("wallet-1")
	sealT(b, be, keys.PurposeWallet, pt, aad) // warm the handle cache
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := be.Seal(ctx, keys.PurposeWallet, pt, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
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
	be, _ := provisioned(b, 0)
	ctx := context.Background()
	aad := []byte("wallet-1")
	blob := sealT(b, be, keys.PurposeWallet, bytes.Repeat([]byte{7}, 64), aad)
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := be.Unseal(ctx, keys.PurposeWallet, blob, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
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
	be, _ := provisioned(b, 0)
	ctx := context.Background()
	d := digest(1)
	if _, err := be.SignAuth(ctx, keys.AuditKeyLabel, d); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := be.SignAuth(ctx, keys.AuditKeyLabel, d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := be.SignAuth(ctx, keys.AuditKeyLabel, d); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
