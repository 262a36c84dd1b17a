package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// exampleNode starts a node named key on 127.0.0.1 and adds it to res.
func exampleNode(res *rpc.StaticResolver, key string) *rpc.Node {
	tr, err := tcp.New(tcp.Options{Options: transport.Options{Log: slog.New(slog.DiscardHandler)}})
	if err != nil {
		panic(err)
	}
	id := transport.Identity{ClusterName: "demo", InstanceKey: key, StartTime: time.Now(), Role: "owner"}
	n, err := rpc.New(rpc.Options{Local: id, Transport: tr, ListenAddr: "127.0.0.1:0", Resolver: res, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	addr, err := n.Start(context.Background())
	if err != nil {
		panic(err)
	}
	res.Set(key, addr, id)
	return n
}

// Two members: owner-1 serves a method, worker-7 calls it with a deadline.
func Example() {
	res := rpc.NewStaticResolver(nil) // in a cluster: rpc.NewMetaResolver
	owner, worker := exampleNode(res, "owner-1"), exampleNode(res, "worker-7")
	defer owner.Close()
	defer worker.Close()

	_ = owner.Register("/greeter/hello", func(_ context.Context, from transport.Identity, name []byte) ([]byte, error) {
		if len(name) == 0 {
			return nil, rpc.Errorf(400, "say who you are")
		}
		return fmt.Appendf(nil, "hello %s, from %s", name, from.InstanceKey), nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	reply, err := worker.Call(ctx, "owner-1", "/greeter/hello", []byte("Ada"))
	fmt.Println(string(reply), err)

	_, err = worker.Call(ctx, "owner-1", "/greeter/hello", nil)
	fmt.Println(errors.Is(err, rpc.ErrHandler), rpc.Code(err))

	_, err = worker.Call(ctx, "owner-1", "/greeter/bye", nil)
	fmt.Println(errors.Is(err, rpc.ErrUnknownPath))
	// Output:
	// hello Ada, from worker-7 <nil>
	// true 400
	// true
}

// Handlers of flat dicts.
func ExampleDictHandler() {
	res := rpc.NewStaticResolver(nil)
	a, b := exampleNode(res, "a"), exampleNode(res, "b")
	defer a.Close()
	defer b.Close()
	_ = a.Register("/math/add", rpc.DictHandler(func(_ context.Context, _ transport.Identity, req kv.Dict) (kv.Dict, error) {
		x, _ := req.Get("x")
		y, _ := req.Get("y")
		return kv.Dict{kv.Int("sum", x.Int+y.Int)}, nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	reply, err := b.CallDict(ctx, "a", "/math/add", kv.Dict{kv.Int("x", 2), kv.Int("y", 40)})
	if err != nil {
		panic(err)
	}
	sum, _ := reply.Get("sum")
	fmt.Println(sum.Int)
	// Output: 42
}
