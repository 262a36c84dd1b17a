package quic_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/quic"
)

// An owner serves requests and bulk reads over QUIC; another member dials
// it. With no TLS options both run on generated certificates that nobody
// verifies (see the package doc): give CertFile, KeyFile and CAFile in
// production.
func Example() {
	pool := []byte("0123456789abcdef")
	tr, err := quic.New(quic.Options{Options: transport.Options{Log: slog.New(slog.DiscardHandler)}})
	if err != nil {
		panic(err)
	}
	owner := transport.Identity{ClusterName: "demo", InstanceKey: "owner-1", StartTime: time.Unix(1700000000, 0), Role: "owner"}
	h := transport.HandlerFuncs{
		Request: func(_ context.Context, peer transport.Identity, _ string, payload []byte) ([]byte, error) {
			return fmt.Appendf(nil, "hello %s, you sent %q", peer.InstanceKey, payload), nil
		},
		Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
			return pool[ref.Offset : ref.Offset+ref.Length], nil, nil
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
	fmt.Println(string(dst), err, tr.Name(), tr.SelfSigned())
	// Output:
	// hello external-7, you sent "hi" <nil>
	// abcdef <nil> quic true
}
