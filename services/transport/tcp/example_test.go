package tcp_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// An owner serves requests and bulk reads of its pool; another member dials
// it, calls it and pulls a range into its own buffer.
func Example() {
	pool := []byte("0123456789abcdef")
	tr, err := tcp.New(tcp.Options{
		Options: transport.Options{Log: slog.New(slog.DiscardHandler)},
		Reactor: tcp.ReactorEventDriven,
	})
	if err != nil {
		panic(err)
	}
	owner := transport.Identity{ClusterName: "demo", InstanceKey: "owner-1", StartTime: time.Unix(1700000000, 0), Role: "owner"}
	h := transport.HandlerFuncs{
		Request: func(_ context.Context, peer transport.Identity, path string, payload []byte) ([]byte, error) {
			if path != "/greet" {
				return nil, &transport.RemoteError{Code: transport.CodeNotFound, Message: "no handler for " + path}
			}
			return fmt.Appendf(nil, "hello %s, you sent %q", peer.InstanceKey, payload), nil
		},
		Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
			return pool[ref.Offset : ref.Offset+ref.Length], func() { /* drop the pool reference */ }, nil
		},
	}
	ctx := context.Background()
	ln, err := tr.Listen(ctx, "127.0.0.1:0", owner, h, nil)
	if err != nil {
		panic(err)
	}
	defer ln.Close()

	me := transport.Identity{ClusterName: "demo", InstanceKey: "external-7", StartTime: time.Now(), Role: "external"}
	conn, err := tr.Dial(ctx, ln.Addr(), me, nil)
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	reply, err := conn.Request(ctx, "/greet", []byte("hi"))
	fmt.Println(string(reply), err)

	dst := make([]byte, 6)
	err = conn.ReadRemote(ctx, transport.RemoteRef{Offset: 10, Length: 6}, dst)
	fmt.Println(string(dst), err)

	_, err = conn.Request(ctx, "/nope", nil)
	var re *transport.RemoteError
	fmt.Println(errors.Is(err, transport.ErrRemote), errors.As(err, &re) && re.Code == transport.CodeNotFound)

	other := me
	other.ClusterName = "elsewhere"
	_, err = tr.Dial(ctx, ln.Addr(), other, nil)
	fmt.Println(errors.Is(err, transport.ErrWrongCluster))
	// Output:
	// hello external-7, you sent "hi" <nil>
	// abcdef <nil>
	// true true
	// true
}
