//go:build linux && cgo

package kvgrpc

import (
	"context"
	"fmt"
	"testing"

	"github.com/fluxon-dev/fluxon/services/kv"
)

// benchSizes: a small value (one unary message) and a large one (PutStream
// and a 16-chunk Get).
var benchSizes = []struct {
	name string
	n    int
}{{"4KiB", 4 << 10}, {"16MiB", 16 << 20}}

// Each benchmark runs over gRPC on loopback and, as the peer to compare it
// with, against the same store in process ("store"): the ratio is what the
// wire costs.
func BenchmarkGet(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			e := newEnv(b, 256*mib)
			ctx := context.Background()
			if _, err := e.client.Put(ctx, "k", randomBytes(sz.n, 1), kv.PutOptions{}); err != nil {
				b.Fatal(err)
			}
			b.Run("grpc", func(b *testing.B) {
				b.SetBytes(int64(sz.n))
				for b.Loop() {
					if _, _, err := e.client.Get(ctx, "k"); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("store", func(b *testing.B) {
				b.SetBytes(int64(sz.n))
				for b.Loop() {
					if _, _, err := e.store.GetCopy("k", nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func BenchmarkPut(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			e := newEnv(b, 256*mib)
			ctx := context.Background()
			v := randomBytes(sz.n, 2)
			// A few keys in rotation, so an overwrite never waits on the
			// previous value of the same key.
			key := func(i int) string { return fmt.Sprintf("k%d", i%4) }
			b.Run("grpc", func(b *testing.B) {
				b.SetBytes(int64(sz.n))
				i := 0
				for b.Loop() {
					if _, err := e.client.Put(ctx, key(i), v, kv.PutOptions{}); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run("store", func(b *testing.B) {
				b.SetBytes(int64(sz.n))
				i := 0
				for b.Loop() {
					if _, err := e.store.Put(ctx, key(i), v, kv.PutOptions{}); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		})
	}
}
