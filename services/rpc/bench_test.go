package rpc_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

const (
	// benchPayload is the echo size of BenchmarkEcho4KiB.
	benchPayload = 4 << 10
	// benchRound is how many calls per caller one round of rpc (then of
	// the floor) makes.
	benchRound = 200
)

// BenchmarkEcho4KiB: a 4 KiB echo round trip between two nodes over TCP on
// 127.0.0.1, with 1 and 8 concurrent callers, in both reactor modes. Each
// run also times the same number of raw transport Requests of the same
// size over one transport.Conn (no rpc layer) as the floor, and reports:
//
//	calls/s        rpc calls per second
//	floor-calls/s  raw transport requests per second
//	rpc/floor      the ratio of the two (1.0 = no rpc overhead)
//	us/call        one rpc call's latency as a caller sees it
//
// The reference implementation does 3,500 calls/s at 1.9 ms with one
// caller and 21,000 calls/s with eight.
func BenchmarkEcho4KiB(b *testing.B) {
	for _, mode := range []tcp.ReactorMode{tcp.ReactorEventDriven, tcp.ReactorBusyPoll} {
		for _, callers := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/callers=%d", mode, callers), func(b *testing.B) { benchEcho(b, mode, callers) })
		}
	}
}

func benchTransport(b *testing.B, mode tcp.ReactorMode) transport.Transport {
	tr, err := tcp.New(tcp.Options{Options: transport.Options{Log: quiet}, Reactor: mode})
	if err != nil {
		b.Fatal(err)
	}
	return tr
}

func benchEcho(b *testing.B, mode tcp.ReactorMode, callers int) {
	ctx := context.Background()
	res := rpc.NewStaticResolver(nil)
	start := time.Now()
	srvID, cliID := ident("srv", start), ident("cli", start)
	srv, err := rpc.New(rpc.Options{Local: srvID, Transport: benchTransport(b, mode), ListenAddr: "127.0.0.1:0", Log: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	echo := func(_ context.Context, _ transport.Identity, p []byte) ([]byte, error) { return p, nil }
	if err := srv.Register("/bench/echo", echo); err != nil {
		b.Fatal(err)
	}
	addr, err := srv.Start(ctx)
	if err != nil {
		b.Fatal(err)
	}
	res.Set("srv", addr, srvID)
	cli, err := rpc.New(rpc.Options{Local: cliID, Transport: benchTransport(b, mode), Resolver: res, Log: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()

	// The floor: the same transport, no rpc layer.
	rawTr := benchTransport(b, mode)
	ln, err := rawTr.Listen(ctx, "127.0.0.1:0", srvID, transport.HandlerFuncs{
		Request: func(_ context.Context, _ transport.Identity, _ string, p []byte) ([]byte, error) { return p, nil },
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	raw, err := rawTr.Dial(ctx, ln.Addr(), cliID, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()

	payload := bytes.Repeat([]byte{'x'}, benchPayload)
	rpcCall := func() error {
		got, err := cli.Call(ctx, "srv", "/bench/echo", payload)
		if err == nil && len(got) != benchPayload {
			err = fmt.Errorf("reply of %d bytes", len(got))
		}
		return err
	}
	rawCall := func() error {
		got, err := raw.Request(ctx, "/bench/echo", payload)
		if err == nil && len(got) != benchPayload {
			err = fmt.Errorf("reply of %d bytes", len(got))
		}
		return err
	}
	// Warm both paths up (connections, buffers) outside the timing.
	for range 100 {
		if err := rpcCall(); err != nil {
			b.Fatal(err)
		}
		if err := rawCall(); err != nil {
			b.Fatal(err)
		}
	}

	// rpc and floor alternate in rounds, so that a change of the machine's
	// load during the run weighs on both alike.
	b.ResetTimer()
	var rpcTook, rawTook time.Duration
	for done := 0; done < b.N; {
		n := min(b.N-done, benchRound*callers)
		rpcTook += runCallers(b, n, callers, rpcCall)
		rawTook += runCallers(b, n, callers, rawCall)
		done += n
	}
	b.StopTimer()

	rpcRate := float64(b.N) / rpcTook.Seconds()
	rawRate := float64(b.N) / rawTook.Seconds()
	b.ReportMetric(float64(rpcTook.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(rpcRate, "calls/s")
	b.ReportMetric(rawRate, "floor-calls/s")
	b.ReportMetric(rpcRate/rawRate, "rpc/floor")
	b.ReportMetric(float64(callers)*rpcTook.Seconds()*1e6/float64(b.N), "us/call")
}

// runCallers makes n calls of f from callers goroutines and returns how
// long they took.
func runCallers(b *testing.B, n, callers int, f func() error) time.Duration {
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	start := time.Now()
	for c := range callers {
		calls := n / callers
		if c < n%callers {
			calls++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				if err := f(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return took
}
