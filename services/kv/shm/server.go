package shm

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/cgo/ring"
	"github.com/fluxon-dev/fluxon/services/kv"
)

// handshakeTimeout bounds an external's hello.
const handshakeTimeout = 5 * time.Second

// ServerOptions configure the owner side.
type ServerOptions struct {
	SocketPath string        // Unix socket externals dial
	RingDir    string        // directory (on tmpfs) for per-attachment ring files
	PoolPath   string        // the pool file externals map
	Owner      string        // owner instance_key, for the handshake
	PollMode   ring.PollMode // how session loops wait on submit rings
	Slots      int           // ring slots per direction (default DefaultSlots)
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// Server accepts externals on the owner's host.
type Server struct {
	o     ServerOptions
	store kv.Backend
	ln    *net.UnixListener
	// ctx ends with Close: it stops requests waiting on other hosts.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	sessions map[uint64]*session
	nextID   atomic.Uint64
	wg       sync.WaitGroup
	closed   atomic.Bool

	mAttached prometheus.Gauge
	mReclaims prometheus.Counter
	mOps      *prometheus.CounterVec
}

// Listen starts serving externals over store: a *kv.Store, or an owner's
// cross-host backend (whose requests may wait on other hosts; a session's
// requests are served in order, so such a wait delays that external only).
func Listen(store kv.Backend, o ServerOptions) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Slots == 0 {
		o.Slots = DefaultSlots
	}
	if err := os.MkdirAll(filepath.Dir(o.SocketPath), 0o755); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if err := os.MkdirAll(o.RingDir, 0o755); err != nil {
		return nil, fmt.Errorf("ring directory: %w", err)
	}
	// A socket file left by a crashed owner would make bind fail: replace it
	// only if nobody answers on it.
	if c, err := net.Dial("unix", o.SocketPath); err == nil {
		c.Close()
		return nil, fmt.Errorf("another owner is serving %s; stop it or use another shared_file_path", o.SocketPath)
	}
	_ = os.Remove(o.SocketPath)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: o.SocketPath, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", o.SocketPath, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{o: o, store: store, ln: ln, ctx: ctx, cancel: cancel, sessions: map[uint64]*session{},
		mAttached: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fluxon_owner_externals_attached", Help: "Externals attached through shared memory."}),
		mReclaims: prometheus.NewCounter(prometheus.CounterOpts{Name: "fluxon_owner_references_reclaimed_total", Help: "References released because their external went away without releasing them."}),
		mOps:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fluxon_owner_shm_ops_total", Help: "Commands served to local externals."}, []string{"op"}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(s.mAttached, s.mReclaims, s.mOps)
	}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Attached returns the number of attached externals.
func (s *Server) Attached() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Close detaches every external (releasing what they held) and stops serving.
func (s *Server) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	err := s.ln.Close()
	s.cancel()
	s.mu.Lock()
	for _, ss := range s.sessions {
		ss.conn.Close()
		ss.sub.ClosePeer()
	}
	s.mu.Unlock()
	s.wg.Wait()
	_ = os.Remove(s.o.SocketPath)
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if !s.closed.Load() {
				s.o.Log.Error("control socket accept failed", "err", err)
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}
}

// session is one attached external.
type session struct {
	id     uint64
	hello  hello
	conn   *net.UnixConn
	region *ring.Region
	sub    *ring.Ring // external -> owner
	comp   *ring.Ring // owner -> external
	compMu sync.Mutex // socket-path handlers and the ring loop both complete
	// ctx ends when the external goes away or the server closes: it stops
	// the session's requests that wait on other hosts.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	nextH  uint64
	holds  map[uint64]*kv.Holder
	writes map[uint64]*kv.Reservation
}

func (s *Server) serve(c *net.UnixConn) {
	defer c.Close()
	ss, err := s.handshake(c)
	if err != nil {
		if errors.Is(err, io.EOF) {
			// A liveness probe (another owner checking the socket) says nothing.
			s.o.Log.Debug("control socket probed", "err", err)
		} else {
			s.o.Log.Warn("external attach refused", "err", err)
		}
		return
	}
	s.mu.Lock()
	s.sessions[ss.id] = ss
	s.mu.Unlock()
	s.mAttached.Inc()
	s.o.Log.Info("external attached", "session", ss.id, "pid", ss.hello.PID, "name", ss.hello.Name)

	ringDone := make(chan struct{})
	go func() {
		defer close(ringDone)
		s.ringLoop(ss)
	}()
	s.socketLoop(ss) // returns when the external closes the socket or dies
	ss.cancel()
	ss.sub.ClosePeer()
	ss.comp.ClosePeer()
	<-ringDone
	s.detach(ss)
}

func (s *Server) handshake(c *net.UnixConn) (*session, error) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	defer c.SetDeadline(time.Time{})
	line, err := bufio.NewReaderSize(c, 4096).ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("reading hello: %w", err)
	}
	var h hello
	reply := func(w welcome) error {
		w.Version = ProtocolVersion
		b, _ := json.Marshal(w)
		_, err := c.Write(append(b, '\n'))
		return err
	}
	if err := json.Unmarshal(line, &h); err != nil {
		_ = reply(welcome{Error: "malformed hello"})
		return nil, fmt.Errorf("malformed hello: %w", err)
	}
	if h.Version != ProtocolVersion {
		_ = reply(welcome{Error: fmt.Sprintf("protocol version %d; this owner speaks %d: upgrade the client or the owner", h.Version, ProtocolVersion)})
		return nil, fmt.Errorf("external pid %d speaks protocol %d", h.PID, h.Version)
	}
	id := s.nextID.Add(1)
	ringBytes := alignUp(ring.Size(SlotSize, s.o.Slots), 4096)
	path := filepath.Join(s.o.RingDir, fmt.Sprintf("ring-%d-%d", os.Getpid(), id))
	region, err := ring.Map(path, 2*ringBytes, true)
	if err != nil {
		_ = reply(welcome{Error: "owner cannot create rings: " + err.Error()})
		return nil, err
	}
	mem := region.Bytes()
	sub, err1 := ring.Init(mem[:ringBytes], SlotSize, s.o.Slots)
	comp, err2 := ring.Init(mem[ringBytes:], SlotSize, s.o.Slots)
	if err := errors.Join(err1, err2); err != nil {
		region.Close()
		region.Unlink()
		_ = reply(welcome{Error: "owner cannot create rings"})
		return nil, err
	}
	ss := &session{id: id, hello: h, conn: c, region: region, sub: sub, comp: comp, holds: map[uint64]*kv.Holder{}, writes: map[uint64]*kv.Reservation{}}
	ss.ctx, ss.cancel = context.WithCancel(s.ctx)
	if err := reply(welcome{Session: id, PoolPath: s.o.PoolPath, RingPath: path, SlotSize: SlotSize, Slots: s.o.Slots, RingBytes: ringBytes, Owner: s.o.Owner}); err != nil {
		s.detach(ss)
		return nil, err
	}
	return ss, nil
}

func alignUp(n, a int) int { return (n + a - 1) / a * a }

// detach releases everything an external held: its references, its
// unfinished writes, its rings.
func (s *Server) detach(ss *session) {
	ss.cancel()
	ss.mu.Lock()
	held, writes := len(ss.holds), len(ss.writes)
	for h, hold := range ss.holds {
		_ = hold.Close()
		delete(ss.holds, h)
	}
	for h, r := range ss.writes {
		_ = s.store.Abort(r)
		delete(ss.writes, h)
	}
	ss.mu.Unlock()
	// Out of the session table before the rings are unmapped: Close touches
	// the rings of the sessions it finds there, under s.mu.
	s.mu.Lock()
	if _, ok := s.sessions[ss.id]; ok {
		delete(s.sessions, ss.id)
		s.mAttached.Dec()
	}
	s.mu.Unlock()
	_ = ss.region.Close()
	_ = ss.region.Unlink()
	if held+writes > 0 {
		s.mReclaims.Add(float64(held + writes))
		s.o.Log.Warn("external went away holding references; released them", "session", ss.id, "pid", ss.hello.PID, "references", held, "unfinished_writes", writes)
	} else {
		s.o.Log.Info("external detached", "session", ss.id, "pid", ss.hello.PID)
	}
}

// socketLoop serves framed requests on the socket (keys too long for a slot)
// until it closes. Frame: u32 length, request bytes; reply the same way.
func (s *Server) socketLoop(ss *session) {
	r := bufio.NewReader(ss.conn)
	var hdr [4]byte
	out := make([]byte, SlotSize)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(hdr[:])
		if n < reqHeader || n > maxFrame {
			s.o.Log.Warn("external sent a bad frame; detaching it", "session", ss.id, "bytes", n)
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		req, err := decodeRequest(buf, true)
		var resp response
		if err != nil {
			resp = response{status: stBadRequest, msg: err.Error()}
		} else {
			resp = s.handle(ss, &req)
		}
		m := resp.encode(out)
		binary.LittleEndian.PutUint32(hdr[:], uint32(m))
		if _, err := ss.conn.Write(append(hdr[:], out[:m]...)); err != nil {
			return
		}
	}
}

// ringLoop serves the submit ring until it is closed.
func (s *Server) ringLoop(ss *session) {
	const batch = 32
	in := make([]byte, batch*SlotSize)
	out := make([]byte, batch*SlotSize)
	ctx := context.Background()
	for {
		n, err := ss.sub.PopBatch(in, batch)
		if err != nil {
			return // closed and drained
		}
		if n == 0 {
			if err := ss.sub.WaitNonEmpty(ctx, s.o.PollMode); err != nil {
				return
			}
			continue
		}
		for i := 0; i < n; i++ {
			slot := in[i*SlotSize : (i+1)*SlotSize]
			req, err := decodeRequest(slot, false)
			var resp response
			if err != nil {
				resp = response{status: stBadRequest, msg: err.Error()}
			} else {
				resp = s.handle(ss, &req)
			}
			clear(out[i*SlotSize : (i+1)*SlotSize])
			resp.encode(out[i*SlotSize : (i+1)*SlotSize])
		}
		for done := 0; done < n; {
			m, err := ss.comp.PushBatch(out[done*SlotSize : n*SlotSize])
			if err != nil {
				return
			}
			done += m
			if done < n {
				if err := ss.comp.WaitNonFull(ctx, s.o.PollMode); err != nil {
					return
				}
			}
		}
	}
}

// handle runs one request against the store.
func (s *Server) handle(ss *session, req *request) response {
	resp := response{op: req.op, id: req.id}
	fail := func(err error) response {
		resp.status, resp.msg = statusOf(err), err.Error()
		return resp
	}
	s.mOps.WithLabelValues(opName(req.op)).Inc()
	switch req.op {
	case OpPing:
		return resp
	case OpGet:
		h, err := s.store.GetContext(ss.ctx, req.key)
		if err != nil {
			return fail(err)
		}
		ss.mu.Lock()
		ss.nextH++
		id := ss.nextH
		ss.holds[id] = h
		ss.mu.Unlock()
		resp.handle, resp.off, resp.size, resp.version, resp.kind, resp.extra = id, uint64(h.Offset()), h.Size, h.Version, uint32(h.Kind), uint64(h.Lease)
		return resp
	case OpRelease:
		ss.mu.Lock()
		h := ss.holds[req.a1]
		delete(ss.holds, req.a1)
		ss.mu.Unlock()
		if h == nil {
			return fail(fmt.Errorf("%w: release of unknown handle %d", ErrProtocol, req.a1))
		}
		if err := h.Close(); err != nil {
			return fail(err)
		}
		return resp
	case OpReserve:
		o := kv.PutOptions{Lease: kv.LeaseID(req.a2), TTL: time.Duration(req.a3) * time.Millisecond,
			IfAbsent: req.flags&flagIfAbsent != 0, IfPresent: req.flags&flagIfPresent != 0, RejectInflight: req.flags&flagRejectInflight != 0}
		if req.flags&flagDict != 0 {
			o.Kind = kv.KindDict
		}
		r, err := s.store.Reserve(ss.ctx, req.key, req.a1, o)
		if err != nil {
			return fail(err)
		}
		ss.mu.Lock()
		ss.nextH++
		id := ss.nextH
		ss.writes[id] = r
		ss.mu.Unlock()
		resp.handle, resp.off, resp.size, resp.version = id, uint64(r.Off), r.Size, r.Version
		return resp
	case OpCommit, OpAbort:
		ss.mu.Lock()
		r := ss.writes[req.a1]
		delete(ss.writes, req.a1)
		ss.mu.Unlock()
		if r == nil {
			return fail(fmt.Errorf("%w: unknown write handle %d", ErrProtocol, req.a1))
		}
		if req.op == OpAbort {
			if err := s.store.Abort(r); err != nil {
				return fail(err)
			}
			return resp
		}
		v, err := s.store.CommitContext(ss.ctx, r)
		if err != nil {
			return fail(err)
		}
		resp.version = v
		return resp
	case OpRemove:
		if err := s.store.RemoveContext(ss.ctx, req.key); err != nil {
			return fail(err)
		}
		return resp
	case OpStat:
		info, err := s.store.StatContext(ss.ctx, req.key)
		if err != nil {
			return fail(err)
		}
		resp.size, resp.version, resp.kind, resp.handle, resp.extra = info.Size, info.Version, uint32(info.Kind), uint64(info.Lease), uint64(info.TTL/time.Millisecond)
		return resp
	case OpGrant:
		id, err := s.store.Grant(time.Duration(req.a1) * time.Millisecond)
		if err != nil {
			return fail(err)
		}
		resp.extra = uint64(id)
		return resp
	case OpKeepAlive:
		ttl, err := s.store.KeepAlive(kv.LeaseID(req.a1))
		if err != nil {
			return fail(err)
		}
		resp.extra = uint64(ttl / time.Millisecond)
		return resp
	case OpRevoke:
		if err := s.store.Revoke(kv.LeaseID(req.a1)); err != nil {
			return fail(err)
		}
		return resp
	}
	return fail(fmt.Errorf("%w: unknown op %d", ErrProtocol, req.op))
}

func opName(op Op) string {
	names := [...]string{OpGet: "get", OpRelease: "release", OpReserve: "reserve", OpCommit: "commit", OpAbort: "abort",
		OpRemove: "remove", OpStat: "stat", OpPing: "ping", OpGrant: "grant", OpKeepAlive: "keepalive", OpRevoke: "revoke"}
	if int(op) < len(names) && names[op] != "" {
		return names[op]
	}
	return "unknown"
}
