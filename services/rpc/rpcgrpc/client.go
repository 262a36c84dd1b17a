package rpcgrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/internal/grpcdial"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/rpc"
)

// Client calls members' handlers through a member serving the RPC
// service. Safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	rpc  fluxonv1.RPCClient
}

// Dial connects to the RPC service at addr (host:port) and waits until the
// connection is up, so that a wrong address fails here. Without options
// the connection is plaintext with message limits of MaxMessageSize;
// options given here override those defaults.
func Dial(ctx context.Context, addr string, opts ...grpc.DialOption) (*Client, error) {
	conn, err := grpcdial.Dial(ctx, addr, MaxMessageSize, "member", opts...)
	if err != nil {
		return nil, fmt.Errorf("rpcgrpc: %w", err)
	}
	return &Client{conn: conn, rpc: fluxonv1.NewRPCClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Call runs the handler for path on node nodeID and returns its reply. The
// timeout is ctx's deadline. Errors match services/rpc's sentinels (see
// Error).
func (c *Client) Call(ctx context.Context, nodeID, path string, payload []byte) ([]byte, error) {
	resp, err := c.rpc.Call(ctx, &fluxonv1.CallRequest{NodeId: nodeID, Path: path, Payload: payload})
	if err != nil {
		err = fromStatus(err)
		var e *Error
		if errors.As(err, &e) && e.Reason == "" && e.Code == codes.DeadlineExceeded {
			// The deadline passed here before the forwarding member's answer.
			return nil, fmt.Errorf("%w: %s on node %q: no reply within the deadline (%w)", rpc.ErrTimeout, path, nodeID, err)
		}
		return nil, err
	}
	return resp.GetPayload(), nil
}

// CallDict calls with a flat dict and decodes the reply as one (an empty
// reply is an empty dict).
func (c *Client) CallDict(ctx context.Context, nodeID, path string, req kv.Dict) (kv.Dict, error) {
	b, err := kv.EncodeDict(req)
	if err != nil {
		return nil, fmt.Errorf("rpcgrpc: %s on node %q: encoding the request dict: %w", path, nodeID, err)
	}
	reply, err := c.Call(ctx, nodeID, path, b)
	if err != nil || len(reply) == 0 {
		return nil, err
	}
	d, err := kv.DecodeDict(reply)
	if err != nil {
		return nil, fmt.Errorf("rpcgrpc: %s on node %q: the reply is not a flat dict: %w", path, nodeID, err)
	}
	return d, nil
}

// Ping calls rpc.PathPing on the node with payload and returns the round
// trip time (through the member serving this service).
func (c *Client) Ping(ctx context.Context, nodeID string, payload []byte) (time.Duration, error) {
	start := time.Now()
	reply, err := c.Call(ctx, nodeID, rpc.PathPing, payload)
	rtt := time.Since(start)
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(reply, payload) {
		return 0, fmt.Errorf("rpcgrpc: node %q answered a ping of %d bytes with %d other bytes", nodeID, len(payload), len(reply))
	}
	return rtt, nil
}

// Info returns the node's rpc.Info.
func (c *Client) Info(ctx context.Context, nodeID string) (rpc.Info, error) {
	var info rpc.Info
	raw, err := c.Call(ctx, nodeID, rpc.PathInfo, nil)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		return info, fmt.Errorf("rpcgrpc: node %q's info is not JSON: %w", nodeID, err)
	}
	return info, nil
}
