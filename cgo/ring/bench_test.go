//go:build linux && cgo

package ring

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

const benchSlot = 64

// BenchmarkPingPong measures one round trip of a 64-byte slot: push on submit, the peer
// pops it (PopBatchWait) and pushes it back on complete, pop: two cgo calls per side. Peers: a goroutine over a ring pair in
// each poll mode, another process (the test binary re-executed) over a ring pair in a
// /dev/shm file, and, as the comparison, a goroutine over two unbuffered-in-effect Go
// channels in the same process.
func BenchmarkPingPong(b *testing.B) {
	for _, mode := range []PollMode{BusyPoll, EventDriven} {
		b.Run("ring-goroutine/"+mode.String(), func(b *testing.B) {
			_, sub, comp := newPair(b, benchSlot, 64)
			done := make(chan struct{})
			go func() {
				defer close(done)
				slot := make([]byte, benchSlot)
				for {
					if _, err := sub.PopBatchWait(context.Background(), mode, slot, 1); err != nil {
						return
					}
					if comp.Push(slot) != nil {
						return
					}
				}
			}()
			pingPong(b, sub, comp, mode)
			<-done // the peer must leave the ring before the region is unmapped
		})
	}
	for _, mode := range []PollMode{BusyPoll, EventDriven} {
		b.Run("ring-process/"+mode.String(), func(b *testing.B) {
			reg, sub, comp := newPair(b, benchSlot, 64)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=echo "+reg.Path()+" "+mode.String())
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			pingPong(b, sub, comp, mode)
			if err := cmd.Wait(); err != nil {
				b.Fatalf("echo process: %v", err)
			}
		})
	}
	b.Run("chan", func(b *testing.B) {
		ping, pong := make(chan [benchSlot]byte, 1), make(chan [benchSlot]byte, 1)
		go func() {
			for s := range ping {
				pong <- s
			}
		}()
		var s [benchSlot]byte
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			s[0] = byte(i)
			ping <- s
			s = <-pong
		}
		b.StopTimer()
		close(ping)
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/roundtrip")
	})
}

// pingPong drives round trips over sub/comp against an echo peer, then closes sub so
// the peer ends.
func pingPong(b *testing.B, sub, comp *Ring, mode PollMode) {
	ctx := context.Background()
	slot := make([]byte, benchSlot)
	// Warm up: the first round trip also waits for the peer to start.
	warm, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := sub.Push(slot); err != nil {
		b.Fatal(err)
	}
	if err := comp.WaitNonEmpty(warm, mode); err != nil {
		b.Fatalf("peer did not answer: %v", err)
	}
	if err := comp.Pop(slot); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		slot[0] = byte(i)
		if err := sub.Push(slot); err != nil {
			b.Fatal(err)
		}
		if _, err := comp.PopBatchWait(ctx, mode, slot, 1); err != nil {
			b.Fatal(err)
		}
		if slot[0] != byte(i) {
			b.Fatalf("round trip %d came back as %d", i, slot[0])
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/roundtrip")
	if err := sub.ClosePeer(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkThroughput streams 64-byte slots one way from a producer goroutine; one op is
// one slot. Ring batches move up to 64 slots per cgo call on each side (PushBatch,
// PopBatchWait); batch1 pays one cgo call per slot on each side. The Go channel comparison sends the same 64-byte values one at a time, and in
// arrays of 64 (one channel operation per 64 slots).
func BenchmarkThroughput(b *testing.B) {
	for _, c := range []struct {
		mode  PollMode
		batch int
	}{{BusyPoll, 64}, {EventDriven, 64}, {BusyPoll, 1}, {EventDriven, 1}} {
		name := "ring/" + c.mode.String() + "/batch" + map[int]string{1: "1", 64: "64"}[c.batch]
		b.Run(name, func(b *testing.B) {
			reg := mapRegion(b, Size(benchSlot, 1024))
			r, err := Init(reg.Bytes(), benchSlot, 1024)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(benchSlot)
			n := b.N
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, c.batch*benchSlot)
				for sent := 0; sent < n; {
					k := min(c.batch, n-sent)
					pushed, err := r.PushBatch(buf[:k*benchSlot])
					if err != nil {
						return
					}
					sent += pushed
					if pushed < k && r.WaitNonFull(context.Background(), c.mode) != nil {
						return
					}
				}
			}()
			buf := make([]byte, 64*benchSlot)
			for got := 0; got < n; {
				k, err := r.PopBatchWait(context.Background(), c.mode, buf, c.batch)
				if err != nil {
					b.Fatal(err)
				}
				got += k
			}
			b.StopTimer()
			r.ClosePeer()
			<-done // the producer must leave the ring before the region is unmapped
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "slots/s")
		})
	}
	b.Run("chan/single", func(b *testing.B) {
		b.SetBytes(benchSlot)
		ch := make(chan [benchSlot]byte, 1024)
		n := b.N
		go func() {
			var s [benchSlot]byte
			for i := 0; i < n; i++ {
				s[0] = byte(i)
				ch <- s
			}
		}()
		for i := 0; i < n; i++ {
			if s := <-ch; s[0] != byte(i) {
				b.Fatal("out of order")
			}
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "slots/s")
	})
	b.Run("chan/batch64", func(b *testing.B) {
		b.SetBytes(benchSlot)
		ch := make(chan [64][benchSlot]byte, 16)
		n := b.N
		go func() {
			var s [64][benchSlot]byte
			for sent := 0; sent < n; sent += 64 {
				ch <- s
			}
		}()
		for got := 0; got < n; got += 64 {
			<-ch
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "slots/s")
	})
}
