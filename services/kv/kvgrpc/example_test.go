//go:build linux && cgo

package kvgrpc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"

	"github.com/fluxon-dev/fluxon/cgo/pool"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/kv/kvgrpc"
)

// An owner serves its store over gRPC; a remote client puts and gets a value,
// and a missing key is kv.ErrNotFound on the client as in the store.
func Example() {
	p, err := pool.CreateWith(fmt.Sprintf("/dev/shm/flx-kvgrpc-example-%d", os.Getpid()), 64<<20, 0, pool.Options{Replace: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Destroy()
	store, err := kv.New(p, kv.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()

	// The owner's side.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	gs := grpc.NewServer(kvgrpc.ServerOptions()...)
	kvgrpc.NewServer(store, nil).Register(gs)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	// A remote client.
	ctx := context.Background()
	c, err := kvgrpc.Dial(ctx, lis.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	if _, err := c.Put(ctx, "greeting", []byte("hello over gRPC"), kv.PutOptions{}); err != nil {
		fmt.Println(err)
		return
	}
	v, info, err := c.Get(ctx, "greeting")
	fmt.Printf("%s (%d bytes) %v\n", v, info.Size, err)

	_, _, err = c.Get(ctx, "missing")
	fmt.Println(errors.Is(err, kv.ErrNotFound), err)
	// Output:
	// hello over gRPC (15 bytes) <nil>
	// true key not found: "missing"
}
