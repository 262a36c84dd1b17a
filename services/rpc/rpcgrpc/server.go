// Package rpcgrpc exposes services/rpc over gRPC (the fluxon.v1.RPC service
// in api/proto/fluxon/v1): a member serving it (an owner) forwards each
// Call to its rpc.Node, which calls the target node's handler. It is how
// tools (`fluxon rpc call`) and non-Go programs reach any member's
// handlers. Client is the Go client; its errors match services/rpc's
// sentinels. docs/rpc.md has the error codes.
package rpcgrpc

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/services/rpc"
)

// MaxMessageSize bounds one gRPC message each way, so a payload or reply
// is a little less than that. It is the KV service's limit too
// (kvgrpc.MaxMessageSize): an owner serves both on one grpc.Server.
const MaxMessageSize = 8 << 20

// ServerOptions are the options a grpc.Server serving only this service
// needs (an owner's server built with kvgrpc.ServerOptions has them).
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize)}
}

// Server is the fluxon.v1.RPC service over a Node.
type Server struct {
	fluxonv1.UnimplementedRPCServer
	node *rpc.Node
}

// NewServer returns the service forwarding to node.
func NewServer(node *rpc.Node) *Server { return &Server{node: node} }

// Register adds the service to gs.
func (s *Server) Register(gs *grpc.Server) { fluxonv1.RegisterRPCServer(gs, s) }

// Call forwards to the node. The deadline is the gRPC call's, shortened
// to timeout_ms when that is set and shorter.
func (s *Server) Call(ctx context.Context, req *fluxonv1.CallRequest) (*fluxonv1.CallResponse, error) {
	switch {
	case req.GetNodeId() == "":
		return nil, toStatus(fmt.Errorf("%w: node_id is empty; name the member to call (`fluxon status` lists them)", ErrBadRequest))
	case req.GetTimeoutMs() < 0:
		return nil, toStatus(fmt.Errorf("%w: timeout_ms is %d; use a positive number of milliseconds, or 0 for the call's own deadline", ErrBadRequest, req.GetTimeoutMs()))
	case req.GetTimeoutMs() > 0:
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.GetTimeoutMs())*time.Millisecond)
		defer cancel()
	}
	reply, err := s.node.Call(ctx, req.GetNodeId(), req.GetPath(), req.GetPayload())
	if err != nil {
		return nil, toStatus(err)
	}
	return &fluxonv1.CallResponse{Payload: reply}, nil
}
