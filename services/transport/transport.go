// Package transport is how members (owners, externals, the master) talk to
// each other: messages (RPC requests and responses, control) and bulk reads
// of byte ranges out of a peer's shared-memory pool.
//
// One interface, several implementations (tcp here; quic, websocket, rdma,
// ucx, dpdk later), one frame format and one conformance suite
// (transporttest) that every implementation passes. docs/transport.md
// describes the wire format and the semantics in full.
package transport

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// ProtocolVersion is the version of the message protocol this package
// speaks; it is exchanged in the handshake (Identity.Protocol).
// MinProtocolVersion is the oldest peer version still accepted.
const (
	ProtocolVersion    uint16 = 1
	MinProtocolVersion uint16 = 1
)

// Limits on identity fields: each travels as a length byte and its bytes.
const (
	MaxIdentityField = 255
	// MaxPathLen bounds a request's path.
	MaxPathLen = 1024
)

// Identity is who a member is, exchanged by both sides in the handshake.
type Identity struct {
	// ClusterName is the cluster the member belongs to.
	ClusterName string
	// InstanceKey identifies the member across restarts.
	InstanceKey string
	// StartTime tells incarnations of one instance apart: a restarted member
	// is a new member. It travels as unix nanoseconds (zero as 0).
	StartTime time.Time
	// Role is "master", "owner" or "external" (meta.Role's values).
	Role string
	// Protocol is the sender's ProtocolVersion. The transport fills it in;
	// the value a caller puts in its local Identity is ignored.
	Protocol uint16
}

// Incarnation is "instance_key@start_unix_ns", the form meta.Member uses.
func (id Identity) Incarnation() string {
	return fmt.Sprintf("%s@%d", id.InstanceKey, unixNano(id.StartTime))
}

// String is for logs and error messages.
func (id Identity) String() string {
	return fmt.Sprintf("%s %s (cluster %q)", id.Role, id.Incarnation(), id.ClusterName)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// Verify decides whether to accept the peer a handshake presents. Returning
// an error refuses the connection; the other side receives the refusal with
// a code derived from the error (ErrWrongCluster, ErrStaleMember,
// ErrVersionMismatch, otherwise ErrRefused) and the error's message. A nil
// Verify accepts any peer of the local identity's cluster (VerifyCluster).
type Verify func(peer Identity) error

// VerifyCluster is the Verify used when none is given: it refuses a peer
// whose cluster name differs from local's.
func VerifyCluster(local Identity) Verify {
	return func(peer Identity) error {
		if peer.ClusterName != local.ClusterName {
			return fmt.Errorf("%w: peer %s belongs to cluster %q, this member to %q; check cluster_name in both configs",
				ErrWrongCluster, peer.Incarnation(), peer.ClusterName, local.ClusterName)
		}
		return nil
	}
}

// RemoteRef names a byte range in a peer's pool for ReadRemote. The
// transport does not interpret Segment, Offset or Tag: over TCP (and every
// transport where the owner's CPU serves reads) they reach the owner's
// Handler.ServeRead; a one-sided transport (rdma, ucx) resolves Segment to
// the memory region registered for it and reads Offset..Offset+Length
// without the owner's CPU, so the caller must hold whatever the owner
// requires for the range to stay valid (a pinned reference) until the read
// returns.
type RemoteRef struct {
	// Segment is the pool segment (the unit of RDMA registration).
	Segment uint32
	// Offset is the byte offset inside the segment.
	Offset uint64
	// Length is the number of bytes; ReadRemote's dst must be this long.
	Length uint64
	// Tag is the owner's own check (e.g. the object's version), opaque here.
	Tag uint64
}

func (r RemoteRef) String() string {
	return fmt.Sprintf("segment %d [%d, +%d) tag %d", r.Segment, r.Offset, r.Length, r.Tag)
}

// OneSided is an optional interface of a Conn: OneSided() true says its
// ReadRemote reads the peer's memory without the peer's CPU (rdma), so the
// peer's Handler.ServeRead never sees those reads (and cannot release
// anything it holds for them).
type OneSided interface {
	OneSided() bool
}

// IsOneSided reports whether c's ReadRemote bypasses the peer's ServeRead.
func IsOneSided(c Conn) bool {
	o, ok := c.(OneSided)
	return ok && o.OneSided()
}

// Transport makes connections of one kind (tcp, quic, ...).
type Transport interface {
	// Name is the transport's name as configs and the panel show it ("tcp").
	Name() string
	// Listen serves h on addr until the Listener is closed. ctx bounds the
	// setup only. Every accepted connection completes a handshake first: the
	// dialer's Identity goes to verify (nil: VerifyCluster(local)).
	Listen(ctx context.Context, addr string, local Identity, h Handler, verify Verify) (Listener, error)
	// Dial connects to addr and completes the handshake within ctx and the
	// handshake timeout. The listener's Identity goes to verify (nil:
	// VerifyCluster(local)), so a dialer can refuse a restarted owner
	// (ErrStaleMember) whose address it still had. A refusal by either side
	// is returned with its code (errors.Is with ErrWrongCluster, ...); an
	// address where nobody listens gives ErrUnreachable.
	Dial(ctx context.Context, addr string, local Identity, verify Verify) (Conn, error)
}

// Listener is a serving endpoint.
type Listener interface {
	// Addr is the address dialers use (the bound port when 0 was asked).
	Addr() string
	// Close stops accepting and closes every accepted connection; their
	// handlers' contexts are cancelled. It does not wait for handlers that
	// ignore their context.
	Close() error
}

// Conn is the dialer's side of one connection. All methods are safe for
// concurrent use; many requests and reads run at once over one Conn and
// complete in any order.
//
// Payloads passed to Request and Send (and returned by a Handler) belong to
// the transport from the call on: it may still be writing them after the
// call returns (a cancelled request), so the caller must not modify them.
// Byte slices the transport returns belong to the caller.
type Conn interface {
	// Peer is the identity the listener presented in the handshake.
	Peer() Identity
	// RemoteAddr is the peer's address, for logs.
	RemoteAddr() string
	// Request sends payload to the peer's handler for path and waits for its
	// reply. ctx's deadline travels to the handler's context; cancelling
	// ctx abandons this request only (the peer's handler context is
	// cancelled too) and the Conn stays usable. Errors: ErrRemote (the
	// handler failed; see RemoteError), ErrTimeout with
	// context.DeadlineExceeded, context.Canceled, ErrPeerGone, ErrClosed,
	// ErrFrameTooLarge (payload above the peer's limit), ErrInvalid.
	Request(ctx context.Context, path string, payload []byte) ([]byte, error)
	// Send delivers a one-way message to the peer's handler for path (its
	// reply and error are dropped there). Messages sent one after another
	// on one Conn are handled in that order, one at a time. Send returns
	// once the message is queued for writing; it blocks (within ctx) while
	// the connection's write queue is full.
	Send(ctx context.Context, path string, payload []byte) error
	// ReadRemote copies the peer's range ref into dst, which must be
	// exactly ref.Length bytes. Bytes go straight into dst, never through
	// an intermediate buffer; once ReadRemote returns, dst is not written
	// again, whatever the outcome. Errors as for Request.
	ReadRemote(ctx context.Context, ref RemoteRef, dst []byte) error
	// Close says goodbye to the peer and closes the connection; calls in
	// flight fail with ErrClosed.
	Close() error
	// Done is closed when the connection has ended, for any reason.
	Done() <-chan struct{}
	// Err says why Done was closed (nil while it is open).
	Err() error
}

// Handler serves a listener's connections. Its methods are called
// concurrently, except that one-way messages of one connection are handled
// one at a time in order, and that paths served inline (InlineHandler) run
// on the connection's reader, one at a time per connection.
type Handler interface {
	// HandleRequest answers a request (or handles a one-way message; see
	// IsOneWay). ctx ends when the caller cancels, its deadline passes or
	// the connection ends. An error goes back as ErrRemote: a *RemoteError
	// keeps its code, any other error gets CodeHandler; a panic is recovered
	// into CodePanic and the connection survives.
	HandleRequest(ctx context.Context, peer Identity, path string, payload []byte) ([]byte, error)
	// ServeRead returns the bytes of ref (exactly ref.Length of them) and a
	// release function. The transport writes src straight to the network
	// (zero copy) and calls release once it no longer touches src, on
	// success, cancellation or connection loss alike. release may be nil.
	ServeRead(ctx context.Context, peer Identity, ref RemoteRef) (src []byte, release func(), err error)
}

// InlineHandler is an optional interface of a Handler. ServesInline(path)
// true promises that HandleRequest for path returns quickly and never
// blocks (a table lookup, a counter): the transport may then run it on the
// connection's reader goroutine, which saves a goroutine wake-up per
// request (the largest cost of a small round trip after the syscalls).
// Frames behind it on that connection wait while it runs, cancellation
// included, so a handler that can block (I/O, a contended lock, a call to
// another member) must not be served inline.
type InlineHandler interface {
	ServesInline(path string) bool
}

// HandlerFuncs turns functions into a Handler; a nil Request or Read
// answers with a RemoteError of CodeUnsupported, a nil Inline serves
// nothing inline.
type HandlerFuncs struct {
	Request func(ctx context.Context, peer Identity, path string, payload []byte) ([]byte, error)
	Read    func(ctx context.Context, peer Identity, ref RemoteRef) ([]byte, func(), error)
	Inline  func(path string) bool
}

// ServesInline implements InlineHandler.
func (h HandlerFuncs) ServesInline(path string) bool {
	return h.Inline != nil && h.Inline(path)
}

// HandleRequest implements Handler.
func (h HandlerFuncs) HandleRequest(ctx context.Context, peer Identity, path string, payload []byte) ([]byte, error) {
	if h.Request == nil {
		return nil, &RemoteError{Code: CodeUnsupported, Message: "this member serves no requests"}
	}
	return h.Request(ctx, peer, path, payload)
}

// ServeRead implements Handler.
func (h HandlerFuncs) ServeRead(ctx context.Context, peer Identity, ref RemoteRef) ([]byte, func(), error) {
	if h.Read == nil {
		return nil, nil, &RemoteError{Code: CodeUnsupported, Message: "this member serves no bulk reads"}
	}
	return h.Read(ctx, peer, ref)
}

type oneWayKey struct{}

// WithOneWay marks a handler context as carrying a one-way message; for
// transport implementations.
func WithOneWay(ctx context.Context) context.Context {
	return context.WithValue(ctx, oneWayKey{}, true)
}

// IsOneWay reports whether a HandleRequest call carries a one-way message
// (Conn.Send), whose reply nobody reads.
func IsOneWay(ctx context.Context) bool {
	v, _ := ctx.Value(oneWayKey{}).(bool)
	return v
}

// Defaults for Options.
const (
	DefaultHandshakeTimeout  = 5 * time.Second
	DefaultKeepaliveInterval = 1 * time.Second
	DefaultKeepaliveTimeout  = 5 * time.Second
	DefaultMaxMessageSize    = 256 << 20
	// DefaultMaxQueuedBytes bounds the bytes waiting in one connection's
	// write queue before Request, Send and responses block.
	DefaultMaxQueuedBytes = 64 << 20
)

// Options are the settings every transport shares. The zero value means
// the defaults.
type Options struct {
	// Log receives connection-level events (protocol errors, keepalive
	// timeouts, refused handshakes). Default: slog.Default().
	Log *slog.Logger
	// HandshakeTimeout bounds connect + handshake on both sides.
	HandshakeTimeout time.Duration
	// KeepaliveInterval: after this long without a byte from the peer, a
	// ping is sent (and again every interval).
	KeepaliveInterval time.Duration
	// KeepaliveTimeout: after this long without a byte from the peer, the
	// connection is declared dead (ErrPeerGone). A dead peer is detected
	// between KeepaliveTimeout and KeepaliveTimeout+KeepaliveInterval after
	// the last byte it sent.
	KeepaliveTimeout time.Duration
	// MaxMessageSize bounds one request or response payload this side
	// accepts (announced in the handshake; the peer refuses larger ones
	// locally with ErrFrameTooLarge). Bulk reads are not bounded by it:
	// they land in the caller's buffer.
	MaxMessageSize uint64
	// MaxQueuedBytes bounds one connection's write queue.
	MaxQueuedBytes int
}

// WithDefaults returns o with zero fields set to their defaults.
func (o Options) WithDefaults() Options {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.KeepaliveInterval <= 0 {
		o.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if o.KeepaliveTimeout <= 0 {
		o.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if o.KeepaliveTimeout < o.KeepaliveInterval {
		o.KeepaliveTimeout = o.KeepaliveInterval
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.MaxQueuedBytes <= 0 {
		o.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	return o
}
