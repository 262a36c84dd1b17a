package mqgrpc

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/internal/grpcdial"
	"github.com/fluxon-dev/fluxon/services/kv/kvgrpc"
	"github.com/fluxon-dev/fluxon/services/mq"
)

// Client calls an owner's MQ service. Safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	c    fluxonv1.MQClient
}

// Dial connects to an owner's gRPC address and waits until the connection
// is up, so that a wrong address fails here.
func Dial(ctx context.Context, addr string, opts ...grpc.DialOption) (*Client, error) {
	conn, err := grpcdial.Dial(ctx, addr, kvgrpc.MaxMessageSize, "owner", opts...)
	if err != nil {
		return nil, fmt.Errorf("mqgrpc: %w", err)
	}
	return &Client{conn: conn, c: fluxonv1.NewMQClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Create binds or creates a channel.
func (c *Client) Create(ctx context.Context, ch *fluxonv1.MQChannelConfig) (mq.ChannelStat, error) {
	r, err := c.c.Create(ctx, &fluxonv1.MQCreateRequest{Channel: ch})
	if err != nil {
		return mq.ChannelStat{}, fromStatus(err)
	}
	return StatFromProto(r), nil
}

// Put writes messages as producer id ("" : the owner's default producer).
func (c *Client) Put(ctx context.Context, req *fluxonv1.MQPutRequest) (*fluxonv1.MQPutResponse, error) {
	r, err := c.c.Put(ctx, req)
	return r, fromStatus(err)
}

// Get returns messages for a consumer.
func (c *Client) Get(ctx context.Context, req *fluxonv1.MQGetRequest) (*fluxonv1.MQGetResponse, error) {
	r, err := c.c.Get(ctx, req)
	return r, fromStatus(err)
}

// Ack acknowledges messages.
func (c *Client) Ack(ctx context.Context, req *fluxonv1.MQAckRequest) error {
	_, err := c.c.Ack(ctx, req)
	return fromStatus(err)
}

// Stat returns a channel's state.
func (c *Client) Stat(ctx context.Context, uniqueKey string) (mq.ChannelStat, error) {
	r, err := c.c.Stat(ctx, &fluxonv1.MQStatRequest{UniqueKey: uniqueKey})
	if err != nil {
		return mq.ChannelStat{}, fromStatus(err)
	}
	return StatFromProto(r), nil
}

// List returns every channel's state.
func (c *Client) List(ctx context.Context) ([]mq.ChannelStat, error) {
	r, err := c.c.List(ctx, &fluxonv1.MQListRequest{})
	if err != nil {
		return nil, fromStatus(err)
	}
	out := make([]mq.ChannelStat, 0, len(r.GetChannels()))
	for _, p := range r.GetChannels() {
		out = append(out, StatFromProto(p))
	}
	return out, nil
}
