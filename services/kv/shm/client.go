package shm

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxon-dev/fluxon/cgo/pool"
	"github.com/fluxon-dev/fluxon/cgo/ring"
	"github.com/fluxon-dev/fluxon/services/kv"
)

// ClientOptions configure an external's attachment.
type ClientOptions struct {
	SocketPath string
	Name       string        // shown in the owner's logs
	PollMode   ring.PollMode // externals default to EventDriven: idle costs no CPU
}

// Client is an external attached to the local owner.
type Client struct {
	o      ClientOptions
	conn   *net.UnixConn
	pool   *pool.Pool
	region *ring.Region
	sub    *ring.Ring
	comp   *ring.Ring
	owner  string

	subMu   sync.Mutex
	slot    []byte
	nextID  atomic.Uint64
	pendMu  sync.Mutex
	pending map[uint64]chan response

	sockMu   sync.Mutex // one socket request at a time
	sockResp chan response

	dead     chan struct{} // closed when the owner is gone or Close was called
	deadOnce sync.Once
	deadErr  error
	wg       sync.WaitGroup
	cancel   context.CancelFunc
}

// Dial attaches to the owner serving socketPath.
func Dial(ctx context.Context, o ClientOptions) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", o.SocketPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v (is an owner running on this host? `fluxon up` or `fluxon owner` starts one)", ErrNoOwner, o.SocketPath, err)
	}
	conn := nc.(*net.UnixConn)
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	}
	b, _ := json.Marshal(hello{Version: ProtocolVersion, PID: os.Getpid(), Name: o.Name, PollMode: o.PollMode.String()})
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("%w: sending hello: %v", ErrNoOwner, err)
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("%w: reading welcome: %v", ErrNoOwner, err)
	}
	var w welcome
	if err := json.Unmarshal(line, &w); err != nil {
		return nil, fmt.Errorf("%w: malformed welcome: %v", ErrProtocol, err)
	}
	if w.Error != "" {
		return nil, fmt.Errorf("owner refused the attach: %s", w.Error)
	}
	_ = conn.SetDeadline(time.Time{})
	p, err := pool.Attach(w.PoolPath)
	if err != nil {
		return nil, fmt.Errorf("mapping the owner's pool %s: %w", w.PoolPath, err)
	}
	region, err := ring.Map(w.RingPath, 0, false)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("mapping rings %s: %w", w.RingPath, err)
	}
	mem := region.Bytes()
	if len(mem) < 2*w.RingBytes {
		p.Close()
		region.Close()
		return nil, fmt.Errorf("%w: ring file of %d bytes, need %d", ErrProtocol, len(mem), 2*w.RingBytes)
	}
	sub, err1 := ring.Open(mem[:w.RingBytes])
	comp, err2 := ring.Open(mem[w.RingBytes:])
	if err := errors.Join(err1, err2); err != nil {
		p.Close()
		region.Close()
		return nil, err
	}
	c := &Client{o: o, conn: conn, pool: p, region: region, sub: sub, comp: comp, owner: w.Owner,
		slot: make([]byte, SlotSize), pending: map[uint64]chan response{}, sockResp: make(chan response, 1), dead: make(chan struct{})}
	dctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(2)
	go c.dispatch(dctx)
	go c.readSocket(br)
	ok = true
	return c, nil
}

// Owner is the instance_key of the owner this client is attached to.
func (c *Client) Owner() string { return c.owner }

// Pool is the owner's pool as mapped in this process.
func (c *Client) Pool() *pool.Pool { return c.pool }

func (c *Client) die(err error) {
	c.deadOnce.Do(func() {
		c.deadErr = err
		close(c.dead)
		c.comp.ClosePeer() // wakes the dispatcher
	})
}

// dispatch routes completions to their waiters.
func (c *Client) dispatch(ctx context.Context) {
	defer c.wg.Done()
	const batch = 32
	buf := make([]byte, batch*SlotSize)
	for {
		n, err := c.comp.PopBatch(buf, batch)
		if err != nil {
			c.die(fmt.Errorf("%w: the owner closed the rings", ErrNoOwner))
			return
		}
		if n == 0 {
			if err := c.comp.WaitNonEmpty(ctx, c.o.PollMode); err != nil {
				if ctx.Err() == nil {
					c.die(fmt.Errorf("%w: the owner closed the rings", ErrNoOwner))
				}
				return
			}
			continue
		}
		for i := 0; i < n; i++ {
			resp, err := decodeResponse(buf[i*SlotSize : (i+1)*SlotSize])
			if err != nil {
				continue
			}
			c.pendMu.Lock()
			ch := c.pending[resp.id]
			delete(c.pending, resp.id)
			c.pendMu.Unlock()
			if ch != nil {
				ch <- resp
			} else {
				c.orphan(resp)
			}
		}
	}
}

// orphan undoes what a request whose caller gave up left on the owner.
func (c *Client) orphan(resp response) {
	if resp.status != stOK {
		return
	}
	switch resp.op {
	case OpGet:
		go c.do(context.Background(), &request{op: OpRelease, a1: resp.handle})
	case OpReserve:
		go c.do(context.Background(), &request{op: OpAbort, a1: resp.handle})
	}
}

// readSocket reads replies to socket requests and notices the owner's death.
func (c *Client) readSocket(r *bufio.Reader) {
	defer c.wg.Done()
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			c.die(fmt.Errorf("%w: the owner closed the control socket", ErrNoOwner))
			return
		}
		n := binary.LittleEndian.Uint32(hdr[:])
		if n < respHeader || n > SlotSize {
			c.die(fmt.Errorf("%w: bad frame of %d bytes from the owner", ErrProtocol, n))
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			c.die(fmt.Errorf("%w: the owner closed the control socket", ErrNoOwner))
			return
		}
		resp, err := decodeResponse(buf)
		if err != nil {
			c.die(err)
			return
		}
		c.sockResp <- resp
	}
}

// do sends a request and waits for its response.
func (c *Client) do(ctx context.Context, req *request) (response, error) {
	select {
	case <-c.dead:
		return response{}, c.deadErr
	default:
	}
	if req.op == OpGet || req.op == OpReserve || req.op == OpRemove || req.op == OpStat {
		if err := kv.CheckKey(req.key); err != nil {
			return response{}, err
		}
	}
	if len(req.key) > MaxInlineKey {
		return c.doSocket(ctx, req)
	}
	req.id = c.nextID.Add(1)
	ch := make(chan response, 1)
	c.pendMu.Lock()
	c.pending[req.id] = ch
	c.pendMu.Unlock()

	c.subMu.Lock()
	clear(c.slot)
	req.encode(c.slot)
	for {
		err := c.sub.Push(c.slot)
		if err == nil {
			break
		}
		if !errors.Is(err, ring.ErrAgain) {
			c.subMu.Unlock()
			c.forget(req.id)
			return response{}, fmt.Errorf("%w: %v", ErrNoOwner, err)
		}
		if err := c.sub.WaitNonFull(ctx, c.o.PollMode); err != nil {
			c.subMu.Unlock()
			c.forget(req.id)
			return response{}, err
		}
	}
	c.subMu.Unlock()

	select {
	case resp := <-ch:
		return resp, resp.err()
	case <-ctx.Done():
		// The owner will still answer; dispatch undoes it as an orphan.
		c.forget(req.id)
		select {
		case resp := <-ch:
			c.orphan(resp)
		default:
		}
		return response{}, ctx.Err()
	case <-c.dead:
		return response{}, c.deadErr
	}
}

func (c *Client) forget(id uint64) {
	c.pendMu.Lock()
	delete(c.pending, id)
	c.pendMu.Unlock()
}

func (c *Client) doSocket(ctx context.Context, req *request) (response, error) {
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	buf := make([]byte, 4+req.size())
	n := req.encode(buf[4:])
	binary.LittleEndian.PutUint32(buf, uint32(n))
	if _, err := c.conn.Write(buf[:4+n]); err != nil {
		return response{}, fmt.Errorf("%w: %v", ErrNoOwner, err)
	}
	// Socket requests are not abandoned midway: the reply must be read to keep
	// the stream in step, so ctx is not consulted here.
	select {
	case resp := <-c.sockResp:
		return resp, resp.err()
	case <-c.dead:
		return response{}, c.deadErr
	}
}

// Value is a value read in place from the owner's pool. Bytes stay valid and
// unchanged until Close.
type Value struct {
	kv.Info
	c      *Client
	handle uint64
	b      []byte
	closed atomic.Bool
}

// Bytes returns the value in shared memory. Read only.
func (v *Value) Bytes() []byte { return v.b }

// Handle identifies the reference on the owner.
func (v *Value) Handle() uint64 { return v.handle }

// Close releases the reference.
func (v *Value) Close() error {
	if v.closed.Swap(true) {
		return errors.New("shm: value closed twice")
	}
	return v.c.Release(v.handle)
}

// Release drops the reference behind a handle (Value.Close does it).
func (c *Client) Release(handle uint64) error {
	_, err := c.do(context.Background(), &request{op: OpRelease, a1: handle})
	return err
}

// Get returns key's value in place (zero copy).
func (c *Client) Get(ctx context.Context, key string) (*Value, error) {
	resp, err := c.do(ctx, &request{op: OpGet, key: key})
	if err != nil {
		return nil, err
	}
	b := c.pool.Bytes(pool.Offset(resp.off))
	if uint64(len(b)) < resp.size {
		_ = c.Release(resp.handle)
		return nil, fmt.Errorf("%w: object at %d is shorter than %d bytes", ErrProtocol, resp.off, resp.size)
	}
	return &Value{Info: kv.Info{Key: key, Size: resp.size, Version: resp.version, Kind: kv.ValueKind(resp.kind), Lease: kv.LeaseID(resp.extra)},
		c: c, handle: resp.handle, b: b[:resp.size:resp.size]}, nil
}

// Writer is a value being written in place in the pool.
type Writer struct {
	c       *Client
	handle  uint64
	b       []byte
	Version uint64
	done    bool
}

// Bytes is the memory to fill.
func (w *Writer) Bytes() []byte { return w.b }

// Commit makes the value visible.
func (w *Writer) Commit(ctx context.Context) (uint64, error) {
	if w.done {
		return 0, errors.New("shm: writer already committed or aborted")
	}
	w.done = true
	resp, err := w.c.do(ctx, &request{op: OpCommit, a1: w.handle})
	return resp.version, err
}

// Abort gives the memory back.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	_, err := w.c.do(context.Background(), &request{op: OpAbort, a1: w.handle})
	return err
}

// ErrNoReplicasHere: the shared-memory protocol does not carry
// PutOptions.Replicas and Placement (yet); a put that needs them goes over
// gRPC (kvgrpc, `fluxon kv put --replicas`).
var ErrNoReplicasHere = errors.New("shm: PutOptions.Replicas and Placement are not carried over shared memory yet; put through gRPC (fluxon kv put --replicas/--placement)")

func putFlags(o kv.PutOptions) uint8 {
	var f uint8
	if o.IfAbsent {
		f |= flagIfAbsent
	}
	if o.IfPresent {
		f |= flagIfPresent
	}
	if o.RejectInflight {
		f |= flagRejectInflight
	}
	if o.Kind == kv.KindDict {
		f |= flagDict
	}
	return f
}

// Reserve starts writing a value of size bytes in place.
func (c *Client) Reserve(ctx context.Context, key string, size uint64, o kv.PutOptions) (*Writer, error) {
	if o.Replicas > 1 || len(o.Placement) > 0 {
		return nil, ErrNoReplicasHere
	}
	resp, err := c.do(ctx, &request{op: OpReserve, key: key, flags: putFlags(o), a1: size, a2: uint64(o.Lease), a3: uint64(o.TTL / time.Millisecond)})
	if err != nil {
		return nil, err
	}
	b := c.pool.Bytes(pool.Offset(resp.off))
	if uint64(len(b)) < size {
		w := &Writer{c: c, handle: resp.handle}
		_ = w.Abort()
		return nil, fmt.Errorf("%w: reserved object at %d is shorter than %d bytes", ErrProtocol, resp.off, size)
	}
	return &Writer{c: c, handle: resp.handle, b: b[:size:size], Version: resp.version}, nil
}

// Put copies value into the pool and commits it.
func (c *Client) Put(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error) {
	w, err := c.Reserve(ctx, key, uint64(len(value)), o)
	if err != nil {
		return 0, err
	}
	copy(w.b, value)
	v, err := w.Commit(ctx)
	if err != nil {
		return 0, err
	}
	return v, nil
}

// Remove deletes key.
func (c *Client) Remove(ctx context.Context, key string) error {
	_, err := c.do(ctx, &request{op: OpRemove, key: key})
	return err
}

// Stat describes key.
func (c *Client) Stat(ctx context.Context, key string) (kv.Info, error) {
	resp, err := c.do(ctx, &request{op: OpStat, key: key})
	if err != nil {
		return kv.Info{}, err
	}
	return kv.Info{Key: key, Size: resp.size, Version: resp.version, Kind: kv.ValueKind(resp.kind),
		Lease: kv.LeaseID(resp.handle), TTL: time.Duration(resp.extra) * time.Millisecond}, nil
}

// Ping checks the owner answers on the rings.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.do(ctx, &request{op: OpPing})
	return err
}

// Grant creates a lease on the owner.
func (c *Client) Grant(ctx context.Context, ttl time.Duration) (kv.LeaseID, error) {
	resp, err := c.do(ctx, &request{op: OpGrant, a1: uint64(ttl / time.Millisecond)})
	return kv.LeaseID(resp.extra), err
}

// KeepAlive renews a lease.
func (c *Client) KeepAlive(ctx context.Context, id kv.LeaseID) (time.Duration, error) {
	resp, err := c.do(ctx, &request{op: OpKeepAlive, a1: uint64(id)})
	return time.Duration(resp.extra) * time.Millisecond, err
}

// Revoke ends a lease and removes its objects.
func (c *Client) Revoke(ctx context.Context, id kv.LeaseID) error {
	_, err := c.do(ctx, &request{op: OpRevoke, a1: uint64(id)})
	return err
}

// Close detaches: the owner releases whatever this client still holds.
func (c *Client) Close() error {
	c.die(ErrClientClosed)
	c.cancel()
	c.sub.ClosePeer()
	err := c.conn.Close()
	c.wg.Wait()
	return errors.Join(err, c.region.Close(), c.pool.Close())
}
