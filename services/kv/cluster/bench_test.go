package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/kv"
)

// BenchmarkCrossOwnerGet16MiB: owner 1 reads values of 16 MiB that only
// owner 0 holds (each read pulls the bytes across loopback TCP into owner
// 1's pool); b.SetBytes makes the MB/s the pull's throughput.
func BenchmarkCrossOwnerGet16MiB(b *testing.B) {
	os := startCluster(b, 2, 2*time.Second)
	ctx := context.Background()
	val := make([]byte, 16<<20)
	b.SetBytes(int64(len(val)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		key := fmt.Sprint("v", i)
		if _, err := os[0].node.Put(ctx, key, val, kv.PutOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		h, err := os[1].node.Get(ctx, key)
		if err != nil {
			b.Fatal(err)
		}
		h.Close()
		b.StopTimer()
		_ = os[0].node.Remove(ctx, key)
		b.StartTimer()
	}
}
