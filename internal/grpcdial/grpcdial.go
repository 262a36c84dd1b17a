// Package grpcdial opens the gRPC client connections of Fluxon's Go clients
// (kvgrpc, rpcgrpc) the same way: plaintext unless options say otherwise,
// message limits to match the server, and a wait until the connection is up
// so that a wrong address fails at Dial rather than on the first call.
package grpcdial

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

// Dial connects to addr and returns once the connection is ready, or an
// error when the first attempt fails or ctx ends. opts come after the
// defaults and override them (pass grpc.WithTransportCredentials for TLS).
// what names the service in errors ("owner", "member").
func Dial(ctx context.Context, addr string, maxMessage int, what string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	all := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)),
	}, opts...)
	conn, err := grpc.NewClient(addr, all...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn.Connect()
	for {
		st := conn.GetState()
		switch st {
		case connectivity.Ready:
			return conn, nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			_ = conn.Close()
			return nil, fmt.Errorf("cannot connect to %s (%s); check the address and that the %s serves gRPC there", addr, st, what)
		}
		if !conn.WaitForStateChange(ctx, st) {
			_ = conn.Close()
			return nil, fmt.Errorf("connecting to %s: %w", addr, ctx.Err())
		}
	}
}
