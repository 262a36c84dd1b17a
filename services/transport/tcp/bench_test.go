//go:build unix

package tcp

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
)

// The benchmarks run the same work three ways in one run: over a plain
// net.Conn (the floor: no framing, no multiplexing, no goroutine hand-offs)
// and over this transport in each reactor mode. Each transport result
// reports its ratio to the floor measured just before it:
//
//	go test -run '^$' -bench . -benchtime 2s ./services/transport/tcp
//
// ns/op is per round trip or per 16 MiB read; cpu-ns/op is the process's
// CPU time (user + system, both ends of the connection) per operation,
// which shows what busy_poll's spinning costs.

const (
	rttPayload = 64
	bulkSize   = 16 << 20
)

var benchModes = []ReactorMode{ReactorEventDriven, ReactorBusyPoll}

var benchSpin = flag.Duration("busy-poll-spin", DefaultBusyPollSpin, "BusyPollSpin for the busy_poll benchmarks")

// benchPair listens and dials with the transport in mode, serving an
// echo handler and reads from src.
func benchPair(b *testing.B, mode ReactorMode, src []byte) transport.Conn {
	b.Helper()
	tr, err := New(Options{Options: transport.Options{Log: slog.New(slog.DiscardHandler)}, Reactor: mode, BusyPollSpin: *benchSpin})
	if err != nil {
		b.Fatal(err)
	}
	return transporttest.BenchPair(b, tr, tr, src)
}

// netConnPair is the floor's connection: a client net.Conn whose server
// runs serve on the other end.
func netConnPair(b *testing.B, serve func(net.Conn)) net.Conn {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		serve(s)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = c.Close()
		_ = ln.Close()
	})
	return c
}

// BenchmarkRoundTrip64: one 64-byte request and its 64-byte reply at a
// time on one connection.
func BenchmarkRoundTrip64(b *testing.B) {
	var floor float64
	b.Run("netconn", func(b *testing.B) {
		c := netConnPair(b, func(s net.Conn) {
			buf := make([]byte, rttPayload)
			for {
				if _, err := io.ReadFull(s, buf); err != nil {
					return
				}
				if _, err := s.Write(buf); err != nil {
					return
				}
			}
		})
		msg := make([]byte, rttPayload)
		reply := make([]byte, rttPayload)
		floor = transporttest.Measure(b, func() {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, reply); err != nil {
				b.Fatal(err)
			}
		})
	})
	// "/echo" runs on a goroutine of its own, like any handler; "/inline"
	// on the connection's reader (transport.InlineHandler).
	for _, mode := range benchModes {
		for _, path := range []string{"/echo", "/inline"} {
			name := string(mode)
			if path == "/inline" {
				name += "-inline"
			}
			b.Run(name, func(b *testing.B) {
				c := benchPair(b, mode, nil)
				msg := make([]byte, rttPayload)
				ctx := context.Background()
				ns := transporttest.Measure(b, func() {
					if _, err := c.Request(ctx, path, msg); err != nil {
						b.Fatal(err)
					}
				})
				if floor > 0 {
					b.ReportMetric(ns/floor, "time/floor")
				}
			})
		}
	}
}

// BenchmarkRoundTrip64Concurrent: many goroutines share one connection
// (the multiplexed case; the writer batches their frames).
func BenchmarkRoundTrip64Concurrent(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(string(mode), func(b *testing.B) {
			c := benchPair(b, mode, nil)
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				msg := make([]byte, rttPayload)
				for pb.Next() {
					if _, err := c.Request(context.Background(), "/echo", msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkBulkRead16MiB: pull a 16 MiB range into a caller buffer.
func BenchmarkBulkRead16MiB(b *testing.B) {
	src := make([]byte, bulkSize)
	for i := range src {
		src[i] = byte(i * 7)
	}
	var floor float64
	b.Run("netconn", func(b *testing.B) {
		c := netConnPair(b, func(s net.Conn) {
			var req [1]byte
			for {
				if _, err := io.ReadFull(s, req[:]); err != nil {
					return
				}
				if _, err := s.Write(src); err != nil {
					return
				}
			}
		})
		dst := make([]byte, bulkSize)
		b.SetBytes(bulkSize)
		floor = transporttest.Measure(b, func() {
			if _, err := c.Write([]byte{1}); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, dst); err != nil {
				b.Fatal(err)
			}
		})
	})
	for _, mode := range benchModes {
		b.Run(string(mode), func(b *testing.B) {
			c := benchPair(b, mode, src)
			dst := make([]byte, bulkSize)
			ref := transport.RemoteRef{Length: bulkSize}
			ctx := context.Background()
			b.SetBytes(bulkSize)
			ns := transporttest.Measure(b, func() {
				if err := c.ReadRemote(ctx, ref, dst); err != nil {
					b.Fatal(err)
				}
			})
			if floor > 0 {
				b.ReportMetric(floor/ns, "throughput/floor")
			}
		})
	}
}
