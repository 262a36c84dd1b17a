package resp

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"strings"
	"testing"
)

var benchPeer = flag.String("resp.peer", "", "also run BenchmarkGetSet against this RESP server (host:port), e.g. a redis-server, for comparison")

// benchDepth is how many commands the benchmark client keeps in flight.
const benchDepth = 16

// BenchmarkGetSet drives the server over loopback with a pipelined client
// (benchDepth commands per write), SET and GET of several value sizes. With
// -resp.peer the same client runs against another server in the same run,
// so the ratio is fair:
//
//	redis-server --port 6399 --save '' --appendonly no &
//	go test ./services/kv/resp -run '^$' -bench GetSet -resp.peer 127.0.0.1:6399
func BenchmarkGetSet(b *testing.B) {
	st := newStore(b, nil)
	srv := startServer(b, st, Options{})
	targets := []struct{ name, addr string }{{"fluxon", srv.Addr().String()}}
	if *benchPeer != "" {
		targets = append(targets, struct{ name, addr string }{"peer", *benchPeer})
	}
	for _, tg := range targets {
		for _, size := range []int{16, 1 << 10, 64 << 10} {
			// Few enough keys that the values fit in the test pool with room.
			nkeys := min(1000, (8<<20)/size)
			keys := make([]string, nkeys)
			for i := range keys {
				keys[i] = fmt.Sprintf("bench:%d", i)
			}
			value := strings.Repeat("v", size)
			for _, op := range []string{"set", "get"} {
				b.Run(fmt.Sprintf("%s/%s/%dB", tg.name, op, size), func(b *testing.B) {
					nc, err := net.Dial("tcp", tg.addr)
					if err != nil {
						b.Fatal(err)
					}
					defer nc.Close()
					c := &client{nc: nc, br: bufio.NewReaderSize(nc, 256<<10), bw: bufio.NewWriterSize(nc, 256<<10)}
					send := func(i int) {
						if op == "get" {
							c.send("GET", keys[i%nkeys])
						} else {
							c.send("SET", keys[i%nkeys], value)
						}
					}
					// Every key exists before GETs are timed.
					for i := range nkeys {
						c.send("SET", keys[i], value)
					}
					if err := c.flush(); err != nil {
						b.Fatal(err)
					}
					for range nkeys {
						if r, err := c.read(); err != nil || r.kind != '+' {
							b.Fatalf("preload: %v %v", r, err)
						}
					}
					b.SetBytes(int64(size))
					b.ResetTimer()
					for i := 0; i < b.N; i += benchDepth {
						n := min(benchDepth, b.N-i)
						for j := range n {
							send(i + j)
						}
						if err := c.flush(); err != nil {
							b.Fatal(err)
						}
						for range n {
							r, err := c.read()
							if err != nil || r.kind == '-' || (op == "get" && len(r.str) != size) {
								b.Fatalf("%s: %v %v", op, r, err)
							}
						}
					}
				})
			}
		}
	}
}
