package rpcgrpc_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/rpc/rpcgrpc"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// waitLimit guards every call against hangs; never a timing assertion.
const waitLimit = 30 * time.Second

var quiet = slog.New(slog.DiscardHandler)

func startNode(t *testing.T, res *rpc.StaticResolver, key string) *rpc.Node {
	t.Helper()
	tr, err := tcp.New(tcp.Options{Options: transport.Options{Log: quiet}})
	if err != nil {
		t.Fatal(err)
	}
	id := transport.Identity{ClusterName: "grpctest", InstanceKey: key, StartTime: time.Now(), Role: "owner"}
	n, err := rpc.New(rpc.Options{Local: id, Transport: tr, ListenAddr: "127.0.0.1:0", Resolver: res, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	addr, err := n.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	res.Set(key, addr, id)
	return n
}

// serve starts a gRPC server on 127.0.0.1 with register applied.
func serve(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(rpcgrpc.ServerOptions()...)
	register(gs)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) *rpcgrpc.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := rpcgrpc.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// setup: owner a serves the RPC service and forwards to b.
func setup(t *testing.T) (*rpcgrpc.Client, string, chan error) {
	t.Helper()
	res := rpc.NewStaticResolver(nil)
	a := startNode(t, res, "a")
	b := startNode(t, res, "b")
	ended := make(chan error, 4)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.Register("/t/echo", func(_ context.Context, _ transport.Identity, p []byte) ([]byte, error) { return p, nil }))
	must(b.Register("/t/fail", func(context.Context, transport.Identity, []byte) ([]byte, error) {
		return nil, rpc.Errorf(42, "quota of %d exceeded", 7)
	}))
	must(b.Register("/t/panic", func(context.Context, transport.Identity, []byte) ([]byte, error) { panic("kaboom") }))
	must(b.Register("/t/block", func(ctx context.Context, _ transport.Identity, _ []byte) ([]byte, error) {
		<-ctx.Done()
		ended <- ctx.Err()
		return nil, ctx.Err()
	}))
	must(b.Register("/t/dict", rpc.DictHandler(func(_ context.Context, from transport.Identity, d kv.Dict) (kv.Dict, error) {
		return append(d, kv.String("via", from.InstanceKey)), nil
	})))
	addr := serve(t, rpcgrpc.NewServer(a).Register)
	return dial(t, addr), addr, ended
}

func ctxLimit(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func reasonOf(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			return i.GetReason()
		}
	}
	return ""
}

func TestForwarding(t *testing.T) {
	c, _, _ := setup(t)
	ctx := ctxLimit(t)
	got, err := c.Call(ctx, "b", "/t/echo", []byte("through a"))
	if err != nil || string(got) != "through a" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	big := make([]byte, 4<<20)
	got, err = c.Call(ctx, "b", "/t/echo", big)
	if err != nil || len(got) != len(big) {
		t.Fatalf("4 MiB echo: %d bytes, %v", len(got), err)
	}
	d, err := c.CallDict(ctx, "b", "/t/dict", kv.Dict{kv.Int("n", 3)})
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := d.Get("via"); !ok || f.Str != "a" {
		t.Fatalf("dict reply %v: the handler should see the forwarding member a as the caller", d)
	}
	if rtt, err := c.Ping(ctx, "b", []byte("12345678")); err != nil || rtt <= 0 {
		t.Fatalf("ping: %v, %v", rtt, err)
	}
	info, err := c.Info(ctx, "b")
	if err != nil || info.InstanceKey != "b" || !strings.Contains(strings.Join(info.Paths, " "), "/t/echo") {
		t.Fatalf("info: %+v, %v", info, err)
	}
}

func TestErrorsAcrossGRPC(t *testing.T) {
	c, _, ended := setup(t)
	ctx := ctxLimit(t)
	for _, tc := range []struct {
		node, path string
		target     error
		code       codes.Code
		reason     fluxonv1.RPCErrorReason
	}{
		{"nobody", "/t/echo", rpc.ErrUnknownNode, codes.NotFound, fluxonv1.RPCErrorReason_RPC_UNKNOWN_NODE},
		{"b", "/t/missing", rpc.ErrUnknownPath, codes.Unimplemented, fluxonv1.RPCErrorReason_RPC_UNKNOWN_PATH},
		{"b", "/t/fail", rpc.ErrHandler, codes.Unknown, fluxonv1.RPCErrorReason_RPC_HANDLER_ERROR},
		{"b", "/t/panic", rpc.ErrHandlerPanic, codes.Internal, fluxonv1.RPCErrorReason_RPC_HANDLER_PANIC},
		{"b", "no-slash", rpc.ErrInvalidPath, codes.InvalidArgument, fluxonv1.RPCErrorReason_RPC_INVALID_PATH},
		{"", "/t/echo", rpcgrpc.ErrBadRequest, codes.InvalidArgument, fluxonv1.RPCErrorReason_RPC_BAD_REQUEST},
	} {
		_, err := c.Call(ctx, tc.node, tc.path, nil)
		if !errors.Is(err, tc.target) || status.Code(err) != tc.code || reasonOf(err) != tc.reason.String() {
			t.Errorf("%s %s: %v (code %s, reason %q), want %v, %s, %s", tc.node, tc.path, err, status.Code(err), reasonOf(err), tc.target, tc.code, tc.reason)
		}
	}
	_, err := c.Call(ctx, "b", "/t/fail", nil)
	var he *rpc.Error
	if !errors.As(err, &he) || he.Code != 42 || he.Message != "quota of 7 exceeded" || rpc.Code(err) != 42 {
		t.Fatalf("handler error across gRPC: %v → %+v", err, he)
	}
	_, err = c.Call(ctx, "b", "/t/panic", nil)
	if !strings.Contains(err.Error(), "kaboom") {
		t.Errorf("panic error %q lacks the panic value", err)
	}

	// The client's deadline.
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = c.Call(tctx, "b", "/t/block", nil)
	if !errors.Is(err, rpc.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("50 ms deadline: %v", err)
	}
	select {
	case <-ended:
	case <-time.After(waitLimit):
		t.Fatal("the handler's context did not end after the gRPC deadline")
	}
}

// TestTimeoutMs: a raw client (like a non-Go one) sets timeout_ms instead
// of a deadline.
func TestTimeoutMs(t *testing.T) {
	_, addr, ended := setup(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stub := fluxonv1.NewRPCClient(conn)
	ctx := ctxLimit(t)
	_, err = stub.Call(ctx, &fluxonv1.CallRequest{NodeId: "b", Path: "/t/block", TimeoutMs: 50})
	if status.Code(err) != codes.DeadlineExceeded || reasonOf(err) != fluxonv1.RPCErrorReason_RPC_TIMEOUT.String() {
		t.Fatalf("timeout_ms 50: %v (reason %q)", err, reasonOf(err))
	}
	select {
	case <-ended:
	case <-time.After(waitLimit):
		t.Fatal("the handler's context did not end after timeout_ms")
	}
	_, err = stub.Call(ctx, &fluxonv1.CallRequest{NodeId: "b", Path: "/t/echo", TimeoutMs: -1})
	if status.Code(err) != codes.InvalidArgument || reasonOf(err) != fluxonv1.RPCErrorReason_RPC_BAD_REQUEST.String() {
		t.Fatalf("timeout_ms -1: %v", err)
	}
}

// TestServiceMissing: a member whose gRPC server lacks the RPC service.
func TestServiceMissing(t *testing.T) {
	addr := serve(t, func(*grpc.Server) {})
	c := dial(t, addr)
	_, err := c.Call(ctxLimit(t), "b", "/t/echo", nil)
	if status.Code(err) != codes.Unimplemented || errors.Is(err, rpc.ErrUnknownPath) || !strings.Contains(err.Error(), "does not serve the fluxon.v1.RPC service") {
		t.Fatalf("service missing: %v", err)
	}
}
