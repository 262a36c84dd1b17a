//go:build linux && cgo

package resp_test

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/fluxon-dev/fluxon/cgo/pool"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/kv/resp"
)

// ExampleServer serves a kv store over RESP on a loopback port and talks to
// it as redis-cli would.
func ExampleServer() {
	path := fmt.Sprintf("/dev/shm/flx-resp-example-%d", os.Getpid())
	p, err := pool.CreateWith(path, 64<<20, 0, pool.Options{Replace: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Destroy()
	st, err := kv.New(p, kv.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()

	srv := resp.NewServer(st, resp.Options{Log: slog.New(slog.DiscardHandler)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(ln)
	defer srv.Close()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	// Two commands in one write: an inline one and a multibulk one.
	fmt.Fprint(conn, "SET greeting hello\r\n*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\n")
	r := bufio.NewReader(conn)
	for range 3 {
		line, _ := r.ReadString('\n')
		fmt.Printf("%q\n", line)
	}
	// Output:
	// "+OK\r\n"
	// "$5\r\n"
	// "hello\r\n"
}
