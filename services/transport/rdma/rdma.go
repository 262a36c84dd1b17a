// Package rdma is the RDMA transport: reliable-connected queue pairs over
// rdma-core's libibverbs (cgo/rdma), one-sided RDMA READ for bulk reads of a
// peer's registered pool segments, and a TCP control channel (the tcp
// transport) for the handshake, the QP address exchange and, in this
// version, messages.
//
// On a host without an RDMA device (or a build without -tags rdma) New
// fails with cgo/rdma.ErrNoDevice and logs "no RDMA device" once per
// process, so a connector falls back (transport.FirstAvailable) instead of
// pretending.
//
// UNTESTED WITHOUT HARDWARE: everything below New's device probe (QP
// setup through the control channel, ReadRemote, the completion poller)
// has only been compiled, never run: no machine this was written on had an
// RDMA device or Soft-RoCE. scripts/rdma-device-check.sh runs the native
// loopback on a host that has one.
package rdma

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
	"github.com/fluxon-dev/fluxon/services/transport"
)

// Name is the transport's name in configs and endpoint advertisements.
const Name = "rdma"

// Defaults.
const (
	DefaultPort       = 1
	DefaultCQDepth    = 4096
	DefaultSendDepth  = 128
	DefaultMRCacheLen = 4096
	// DefaultPollSpin is how many empty CQ polls the poller makes before
	// sleeping on the completion channel: a few microseconds, longer than a
	// same-rack READ of a small object.
	DefaultPollSpin = 2000
	// pollWaitMS bounds one sleep on the completion channel so Close is
	// noticed.
	pollWaitMS = 100
	// bounceSize is each connection's registered staging buffer: READs into
	// a caller's Go buffer (which may not be registered: the GC may move it)
	// land there, readDepth slots of readChunk, and are copied out.
	bounceSize = 4 << 20
	// connectPath is the control-channel request that exchanges QP records.
	connectPath = "\x00rdma/connect"
)

// Segment is a local pool segment the peer may read.
type Segment struct {
	ID   uint32
	Base unsafe.Pointer // mmap'd pool memory, never Go memory
	Len  uint64
}

// Options configure the RDMA transport.
type Options struct {
	transport.Options
	// DeviceNames is network.rdma_device_names (empty: any device).
	DeviceNames []string
	// Control carries the handshake, the address exchange and messages.
	Control transport.Transport
	// Segments lists the segments a listener offers to one-sided reads.
	Segments func() []Segment
	Port     uint8
	GIDIndex uint32
}

// devices is cgo/rdma.Devices, replaced in tests.
var devices = cgordma.Devices

var noDeviceOnce sync.Once

// Transport is the RDMA transport.
type Transport struct {
	opts   Options
	dev    cgordma.DeviceInfo
	ctx    *cgordma.Context
	mrs    *cgordma.MRCache
	poller *poller
}

var _ transport.Transport = (*Transport)(nil)

// New probes the devices and opens the first selected one. Without one it
// returns an error matching cgo/rdma.ErrNoDevice and logs "no RDMA device"
// the first time only.
func New(o Options) (*Transport, error) {
	o.Options = o.Options.WithDefaults()
	have, err := devices()
	if err == nil {
		have, err = cgordma.Select(have, o.DeviceNames)
	}
	if err != nil {
		noDeviceOnce.Do(func() {
			o.Log.Warn("rdma transport: no RDMA device; falling back to the next transport in network.transports", "err", err)
		})
		return nil, fmt.Errorf("rdma transport: %w", err)
	}
	if o.Control == nil {
		return nil, fmt.Errorf("%w: the rdma transport needs a control transport (tcp)", transport.ErrInvalid)
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	// UNTESTED WITHOUT HARDWARE from here on.
	dev := have[0]
	ctx, err := cgordma.Open(dev.Name, o.Port, DefaultCQDepth)
	if err != nil {
		return nil, mapError("open "+dev.Name, err)
	}
	t := &Transport{opts: o, dev: dev, ctx: ctx}
	t.mrs = cgordma.NewMRCache(DefaultMRCacheLen,
		func(addr uintptr, n uint64) (cgordma.Region, error) {
			mr, err := ctx.Register(poolPointer(addr), n, true)
			if err != nil {
				return cgordma.Region{}, err
			}
			return cgordma.Region{LKey: mr.LKey(), RKey: mr.RKey(), Handle: mr}, nil
		},
		func(r cgordma.Region) error { return r.Handle.(*cgordma.MR).Deregister() })
	t.poller = startPoller(ctx)
	return t, nil
}

// poolPointer turns a pool segment's address back into a pointer. Safe
// because pool memory is an mmap the GC does not manage or move.
func poolPointer(addr uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&addr)) }

// Name implements transport.Transport.
func (t *Transport) Name() string { return Name }

// Device is the device in use.
func (t *Transport) Device() cgordma.DeviceInfo { return t.dev }

func (t *Transport) usable() error {
	if t == nil || t.ctx == nil {
		return fmt.Errorf("rdma transport: %w", cgordma.ErrNoDevice)
	}
	return nil
}

// Close stops the poller and releases the device.
func (t *Transport) Close() error {
	if err := t.usable(); err != nil {
		return err
	}
	t.poller.stop()
	err := t.mrs.Close()
	return errors.Join(err, t.ctx.Close())
}

// regions registers the listener's segments (once each) and lists them.
func (t *Transport) regions() ([]cgordma.RemoteRegion, error) {
	if t.opts.Segments == nil {
		return nil, nil
	}
	var out []cgordma.RemoteRegion
	for _, s := range t.opts.Segments() {
		r, release, err := t.mrs.Acquire(uintptr(s.Base), s.Len, uintptr(s.Base), s.Len)
		if err != nil {
			return nil, mapError("register segment", err)
		}
		release()
		out = append(out, cgordma.RemoteRegion{Segment: s.ID, RKey: r.RKey, Addr: uint64(uintptr(s.Base)), Len: s.Len})
	}
	return out, nil
}

// newQP creates a QP and its local record.
func (t *Transport) newQP() (*cgordma.QP, cgordma.Addr, error) {
	qp, err := t.ctx.CreateQP(DefaultSendDepth, DefaultSendDepth)
	if err != nil {
		return nil, cgordma.Addr{}, mapError("create qp", err)
	}
	local, err := qp.Local(t.opts.GIDIndex, rand.Uint32()&0xffffff)
	if err != nil {
		_ = qp.Close()
		return nil, cgordma.Addr{}, mapError("query port", err)
	}
	return qp, local, nil
}

// Listen implements transport.Transport: the control listener answers
// connectPath with this side's QP record, then serves h.
func (t *Transport) Listen(ctx context.Context, addr string, local transport.Identity, h transport.Handler, verify transport.Verify) (transport.Listener, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var qps []*cgordma.QP
	wrapped := transport.HandlerFuncs{
		Read: h.ServeRead,
		Request: func(rctx context.Context, peer transport.Identity, path string, payload []byte) ([]byte, error) {
			if path != connectPath {
				return h.HandleRequest(rctx, peer, path, payload)
			}
			var remote cgordma.Addr
			if err := remote.UnmarshalBinary(payload); err != nil {
				return nil, &transport.RemoteError{Code: transport.CodeInvalid, Message: err.Error()}
			}
			qp, mine, err := t.newQP()
			if err != nil {
				return nil, err
			}
			if mine.Regions, err = t.regions(); err == nil {
				err = qp.Connect(&mine, &remote)
			}
			if err != nil {
				_ = qp.Close()
				return nil, mapError("connect qp", err)
			}
			mu.Lock()
			qps = append(qps, qp)
			mu.Unlock()
			return mine.MarshalBinary()
		},
	}
	ln, err := t.opts.Control.Listen(ctx, addr, local, wrapped, verify)
	if err != nil {
		return nil, err
	}
	return &listener{Listener: ln, close: func() {
		mu.Lock()
		defer mu.Unlock()
		for _, q := range qps {
			_ = q.Close()
		}
		qps = nil
	}}, nil
}

type listener struct {
	transport.Listener
	close func()
}

func (l *listener) Close() error {
	err := l.Listener.Close()
	l.close()
	return err
}

// Dial implements transport.Transport: control connection, QP record
// exchange over it, then both QPs to RTS.
func (t *Transport) Dial(ctx context.Context, addr string, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	cc, err := t.opts.Control.Dial(ctx, addr, local, verify)
	if err != nil {
		return nil, err
	}
	c, err := t.connect(ctx, cc)
	if err != nil {
		_ = cc.Close()
		return nil, err
	}
	return c, nil
}

func (t *Transport) connect(ctx context.Context, cc transport.Conn) (*conn, error) {
	qp, mine, err := t.newQP()
	if err != nil {
		return nil, err
	}
	rec, _ := mine.MarshalBinary()
	reply, err := cc.Request(ctx, connectPath, rec)
	var peer cgordma.Addr
	if err == nil {
		err = peer.UnmarshalBinary(reply)
	}
	if err == nil {
		err = mapError("connect qp", qp.Connect(&mine, &peer))
	}
	if err != nil {
		_ = qp.Close()
		return nil, err
	}
	mem, err := syscall.Mmap(-1, 0, bounceSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		_ = qp.Close()
		return nil, fmt.Errorf("rdma transport: bounce buffer: %w", err)
	}
	mr, err := t.ctx.Register(unsafe.Pointer(&mem[0]), bounceSize, false)
	if err != nil {
		_ = syscall.Munmap(mem)
		_ = qp.Close()
		return nil, mapError("register bounce buffer", err)
	}
	return &conn{Conn: cc, t: t, qp: qp, peer: peer, bounce: mem, bounceMR: mr,
		credits: cgordma.NewCredits(DefaultSendDepth)}, nil
}

// conn is a control connection plus an RC QP for one-sided reads.
type conn struct {
	transport.Conn // Request, Send, Peer, Done, Err over the control channel
	t              *Transport
	qp             *cgordma.QP
	peer           cgordma.Addr
	credits        *cgordma.Credits

	mu       sync.Mutex // one read (pipelined READs) at a time
	bounce   []byte
	bounceMR *cgordma.MR
	closed   bool
}

// OneSided implements transport.OneSided: reads are RDMA READs, which
// never reach the peer's ServeRead.
func (c *conn) OneSided() bool { return true }

// ReadRemote implements transport.Conn with RDMA READs of the peer's
// registered segment, pipelined (pipelineRead). A dst inside one of this
// side's registered pool segments (an owner pulling into its own pool)
// takes the READs straight; any other dst, Go memory the GC may move,
// goes through the connection's registered bounce buffer, one slot per
// READ in flight, and is copied out in order.
// UNTESTED WITHOUT HARDWARE: pipelineRead is tested with an in-memory NIC.
func (c *conn) ReadRemote(ctx context.Context, ref transport.RemoteRef, dst []byte) error {
	if uint64(len(dst)) != ref.Length {
		return fmt.Errorf("%w: dst is %d bytes, ref %s", transport.ErrInvalid, len(dst), ref)
	}
	reg, ok := c.peer.Region(ref.Segment)
	if !ok || ref.Offset > reg.Len || ref.Length > reg.Len-ref.Offset {
		return fmt.Errorf("%w: %s is not inside a segment the peer registered", transport.ErrInvalid, ref)
	}
	if ref.Length == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return transport.ErrClosed
	}
	raddr := reg.Addr + ref.Offset
	ops := readOps{settle: func() { _ = c.credits.Release(1) }}
	if local, release, ok := c.t.localRegion(dst); ok {
		defer release()
		mr := local.Handle.(*cgordma.MR)
		base := unsafe.Pointer(&dst[0])
		ops.post = func(_ int, off, n uint64) (<-chan cgordma.Completion, error) {
			return c.postRead(ctx, mr, unsafe.Add(base, off), n, raddr+off, reg.RKey)
		}
		ops.land = func(int, uint64, uint64) {}
	} else {
		ops.post = func(slot int, off, n uint64) (<-chan cgordma.Completion, error) {
			return c.postRead(ctx, c.bounceMR, unsafe.Pointer(&c.bounce[uint64(slot)*readChunk]), n, raddr+off, reg.RKey)
		}
		ops.land = func(slot int, off, n uint64) {
			copy(dst[off:off+n], c.bounce[uint64(slot)*readChunk:][:n])
		}
	}
	err := pipelineRead(ctx, ref.Length, readChunk, readDepth, ops)
	var wce *cgordma.WCError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &wce):
		return mapError("read "+ref.String(), err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: rdma read %s: %w", transport.ErrTimeout, ref, err)
	}
	return err
}

// postRead posts one READ of n bytes at the peer's raddr into addr (inside
// mr) under a send-queue credit, and returns the channel its completion
// comes on.
func (c *conn) postRead(ctx context.Context, mr *cgordma.MR, addr unsafe.Pointer, n, raddr uint64, rkey uint32) (<-chan cgordma.Completion, error) {
	if err := c.credits.Acquire(ctx, 1); err != nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrTimeout, err)
	}
	id, ch := c.t.poller.expect()
	if err := c.qp.PostRead(id, mr, addr, uint32(n), raddr, rkey); err != nil {
		c.t.poller.forget(id)
		_ = c.credits.Release(1)
		return nil, mapError("post read", err)
	}
	return ch, nil
}

// localRegion returns the registered pool segment that holds all of dst,
// pinned until release, if there is one.
func (t *Transport) localRegion(dst []byte) (cgordma.Region, func(), bool) {
	addr, n := uintptr(unsafe.Pointer(&dst[0])), uint64(len(dst))
	r, ok := t.mrs.Lookup(addr, n)
	if !ok {
		return cgordma.Region{}, nil, false
	}
	r, release, err := t.mrs.Acquire(addr, n, r.Addr, r.Len)
	if err != nil {
		return cgordma.Region{}, nil, false
	}
	return r, release, true
}

// Close closes the QP and the control connection.
func (c *conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.credits.Close(transport.ErrClosed)
	err := c.Conn.Close()
	return errors.Join(err, c.qp.Close(), c.bounceMR.Deregister(), syscall.Munmap(c.bounce))
}

// poller owns a context's CQ: one goroutine polls (spin, then the
// completion channel) and hands each completion to the waiter of its wr_id.
type poller struct {
	ctx     *cgordma.Context
	next    atomic.Uint64
	mu      sync.Mutex
	waiters map[uint64]chan cgordma.Completion
	quit    chan struct{}
	done    chan struct{}
}

func startPoller(ctx *cgordma.Context) *poller {
	p := &poller{ctx: ctx, waiters: map[uint64]chan cgordma.Completion{}, quit: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *poller) expect() (uint64, chan cgordma.Completion) {
	id := p.next.Add(1)
	ch := make(chan cgordma.Completion, 1)
	p.mu.Lock()
	p.waiters[id] = ch
	p.mu.Unlock()
	return id, ch
}

func (p *poller) forget(id uint64) {
	p.mu.Lock()
	delete(p.waiters, id)
	p.mu.Unlock()
}

func (p *poller) run() {
	defer close(p.done)
	var wcs [32]cgordma.Completion
	for {
		select {
		case <-p.quit:
			return
		default:
		}
		n, err := p.ctx.Poll(wcs[:], DefaultPollSpin, pollWaitMS)
		if err != nil {
			slog.Error("rdma transport: polling the completion queue failed; connections on this device will stall", "err", err)
			return
		}
		p.mu.Lock()
		for _, wc := range wcs[:n] {
			if ch, ok := p.waiters[wc.WRID]; ok {
				delete(p.waiters, wc.WRID)
				ch <- wc
			}
		}
		p.mu.Unlock()
	}
}

func (p *poller) stop() {
	close(p.quit)
	<-p.done
}
