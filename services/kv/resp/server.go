package resp

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon/cgo/pool"
	"github.com/fluxon-dev/fluxon/services/kv"
)

// Defaults for Options.
const (
	DefaultMaxClients   = 10_000
	DefaultMaxBulkLen   = 512 << 20 // Redis's proto-max-bulk-len
	DefaultMaxArgs      = 1 << 20
	DefaultMaxInlineLen = 64 << 10 // Redis's PROTO_INLINE_MAX_SIZE
	DefaultMaxQueryLen  = 1 << 30  // Redis's client-query-buffer-limit
)

// Tuning that is not an option.
const (
	readBufSize  = 16 << 10
	writeBufSize = 16 << 10
	// writePiece is the most written under one deadline when IdleTimeout is set.
	writePiece = 1 << 20
	// directSetMin: the value of a plain "SET key value" this long or longer
	// is read from the socket straight into a store reservation (one copy);
	// shorter ones go through the argument buffer, which is cheaper than a
	// reservation held open across reads.
	directSetMin = 16 << 10
	// lingerTimeout and lingerMax bound how long and how much a connection
	// the server closes (protocol error, QUIT, too many clients) keeps
	// reading after its last reply. Closing with unread input makes the
	// kernel send RST, which can destroy that reply before the client reads it.
	lingerTimeout = time.Second
	lingerMax     = 1 << 20
	// acceptBackoffMax caps the wait between retries of a failing Accept.
	acceptBackoffMax = time.Second
)

// ErrServerClosed is returned by Serve and ListenAndServe after Close.
var ErrServerClosed = errors.New("resp: server closed")

// Options configure a Server. Zero values take the defaults.
type Options struct {
	// MaxClients is how many connections are served at once; one more is
	// told "-ERR max number of clients reached" and closed.
	MaxClients int
	// MaxBulkLen is the longest bulk string accepted. It is lowered to what
	// the store can ever hold.
	MaxBulkLen int64
	// MaxArgs is the most arguments in one command.
	MaxArgs int
	// MaxInlineLen is the longest inline (telnet style) command line.
	MaxInlineLen int
	// MaxQueryLen is the most argument bytes of one command held in memory;
	// a large SET value read straight into the store does not count.
	MaxQueryLen int64
	// IdleTimeout closes a connection that sends nothing, or does not take
	// its replies, for this long. 0: never.
	IdleTimeout time.Duration
	Log         *slog.Logger
	// Registerer, when set, receives the server's metrics: commands by name,
	// errors by kind and connected clients.
	Registerer prometheus.Registerer
}

func (o Options) withDefaults(st kv.Stats) Options {
	if o.MaxClients <= 0 {
		o.MaxClients = DefaultMaxClients
	}
	if o.MaxBulkLen <= 0 {
		o.MaxBulkLen = DefaultMaxBulkLen
	}
	// A value the pool can never hold is refused before it is read.
	if fit := int64(st.PoolCapacity) - int64(pool.ObjectHeaderSize); st.PoolCapacity > 0 && o.MaxBulkLen > fit {
		o.MaxBulkLen = max(fit, 0)
	}
	if o.MaxArgs <= 0 {
		o.MaxArgs = DefaultMaxArgs
	}
	if o.MaxInlineLen <= 0 {
		o.MaxInlineLen = DefaultMaxInlineLen
	}
	if o.MaxQueryLen <= 0 {
		o.MaxQueryLen = DefaultMaxQueryLen
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// Server serves the Redis protocol (RESP2) over a kv store.
//
// Lock order: Server.mu only; it is never held while calling the store or
// doing I/O.
type Server struct {
	store kv.Backend
	opts  Options
	lim   limits
	log   *slog.Logger
	m     *metrics

	ctx    context.Context // canceled by Close: stops waits inside the store
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	addr      net.Addr
	conns     map[*conn]struct{}
	active    int // accepted clients, those being turned away not counted
	wg        sync.WaitGroup

	started    time.Time
	nextID     atomic.Int64
	totalConns atomic.Uint64
	commands   atomic.Uint64
	rejected   atomic.Uint64
}

// NewServer returns a server over store: a *kv.Store, or an owner's
// cross-host backend. Call Serve or ListenAndServe to start it and Close to
// stop it; the store stays the caller's to close, after Close returns. Close
// ends the waits of commands in progress (a read from another host).
func NewServer(store kv.Backend, opts Options) *Server {
	opts = opts.withDefaults(store.Stats())
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		store: store, opts: opts, log: opts.Log, ctx: ctx, cancel: cancel,
		lim: limits{
			maxBulk: opts.MaxBulkLen, maxArgs: opts.MaxArgs,
			maxInline: opts.MaxInlineLen, maxQuery: opts.MaxQueryLen,
		},
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
		started:   time.Now(),
	}
	if opts.Registerer != nil {
		s.m = newMetrics(opts.Registerer)
	}
	return s
}

// Options returns the options in effect, defaults filled in.
func (s *Server) Options() Options { return s.opts }

// ListenAndServe listens on the TCP address addr and serves it until Close.
func (s *Server) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Addr returns the address of the first listener being served, or nil.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Serve accepts connections on ln until Close, which it returns
// ErrServerClosed for, or until ln fails. It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	if s.addr == nil {
		s.addr = ln.Addr()
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				// Out of file descriptors and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), acceptBackoffMax)
				s.log.Error("resp: accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.accept(nc)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) accept(nc net.Conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	c := newConn(s, nc)
	if s.active >= s.opts.MaxClients {
		c.rejected = true
	} else {
		c.counted = true
		s.active++
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.totalConns.Add(1)
	if c.rejected {
		s.rejected.Add(1)
		s.m.reject()
	} else {
		s.m.clientsAdd(1)
	}
	go c.serve()
}

// untrack stops counting c as a client (once); its socket may still linger.
func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	counted := c.counted
	if counted {
		c.counted = false
		s.active--
	}
	s.mu.Unlock()
	if counted {
		s.m.clientsAdd(-1)
	}
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) connectedClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

// Close stops the listeners, closes every connection and waits for their
// goroutines. Commands in progress finish; their replies are lost.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	s.cancel()
	var err error
	for ln := range s.listeners {
		if e := ln.Close(); e != nil && !errors.Is(e, net.ErrClosed) {
			err = e
		}
	}
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// conn is one client connection, served by one goroutine.
type conn struct {
	srv *Server
	nc  net.Conn
	id  int64
	br  *bufio.Reader
	w   *bufio.Writer
	r   replier
	p   *parser

	rejected bool   // over MaxClients: told so and closed
	counted  bool   // counted in Server.active; guarded by Server.mu
	quit     bool   // QUIT: close after the reply
	name     string // CLIENT SETNAME

	// A large SET value being read into the store (see directSetMin), or
	// why it could not be reserved.
	pending    *kv.Reservation
	pendingErr error

	lower [32]byte // scratch for case-folding command names
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{srv: s, nc: nc, id: s.nextID.Add(1)}
	c.w = bufio.NewWriterSize(connWriter{c}, writeBufSize)
	c.br = bufio.NewReaderSize(connReader{c}, readBufSize)
	c.r = replier{w: c.w}
	c.p = newParser(c.br, s.lim)
	c.p.sink, c.p.sinkMin = c.setSink, directSetMin
	return c
}

// connReader flushes pending replies before it waits for input, so replies
// to a pipeline go out in as few writes as possible, once the commands that
// have arrived are all answered.
type connReader struct{ c *conn }

func (r connReader) Read(b []byte) (int, error) {
	if r.c.w.Buffered() > 0 {
		if err := r.c.w.Flush(); err != nil {
			return 0, err
		}
	}
	if t := r.c.srv.opts.IdleTimeout; t > 0 {
		_ = r.c.nc.SetReadDeadline(time.Now().Add(t))
	}
	return r.c.nc.Read(b)
}

// connWriter applies IdleTimeout to writes: a client must keep taking its
// replies. A large value goes out in pieces, each with a fresh deadline, so
// a slow but live reader of a big GET is not cut off.
type connWriter struct{ c *conn }

func (w connWriter) Write(b []byte) (int, error) {
	t := w.c.srv.opts.IdleTimeout
	if t <= 0 {
		return w.c.nc.Write(b)
	}
	n := 0
	for n < len(b) {
		_ = w.c.nc.SetWriteDeadline(time.Now().Add(t))
		m, err := w.c.nc.Write(b[n:min(len(b), n+writePiece)])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *conn) serve() {
	defer c.srv.forget(c)
	log := c.srv.log
	defer func() {
		// A bug in one command must not take the owner down with it; like
		// net/http, drop the connection and log the stack.
		if v := recover(); v != nil {
			c.srv.m.error("panic")
			log.Error("resp: panic serving a client; connection dropped", "id", c.id, "panic", v, "stack", string(debug.Stack()))
			c.abortPending()
			c.srv.untrack(c)
			c.nc.Close()
		}
	}()
	if c.rejected {
		c.r.error("ERR max number of clients reached")
		c.closeAfterReply()
		return
	}
	log.Debug("resp: client connected", "id", c.id, "remote", c.nc.RemoteAddr())
	for {
		args, err := c.p.next()
		if err != nil {
			c.abortPending()
			switch {
			case errors.Is(err, ErrProtocol):
				log.Debug("resp: protocol error; closing", "id", c.id, "remote", c.nc.RemoteAddr(), "err", err)
				c.srv.m.error("protocol")
				c.r.error(protocolReply(err))
				c.closeAfterReply()
			default:
				// End of input, a closed or timed out socket: nothing to say.
				_ = c.w.Flush()
				c.srv.untrack(c)
				c.nc.Close()
			}
			log.Debug("resp: client gone", "id", c.id, "err", err)
			return
		}
		c.dispatch(args)
		c.abortPending()
		if c.quit {
			c.closeAfterReply()
			return
		}
	}
}

// closeAfterReply sends what is buffered, then closes gracefully: it stops
// counting the client, half-closes and drains briefly so the reply is not
// destroyed by an RST.
func (c *conn) closeAfterReply() {
	err := c.w.Flush()
	c.srv.untrack(c)
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && err == nil {
		if cw.CloseWrite() == nil {
			_ = c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
			_, _ = io.CopyN(io.Discard, c.nc, lingerMax)
		}
	}
	c.nc.Close()
}

// setSink places the value of "SET key value" (no options: it is the last
// argument) in a store reservation, so it goes from the socket to the pool
// in one copy.
func (c *conn) setSink(args [][]byte, n int, last bool) ([]byte, bool) {
	if len(args) != 2 || !last || !equalFold(args[0], "set") {
		return nil, false
	}
	r, err := c.srv.store.Reserve(c.srv.ctx, string(args[1]), uint64(n), kv.PutOptions{})
	if err != nil {
		c.pendingErr = err
		return nil, true
	}
	c.pending = r
	return c.srv.store.Bytes(r), false
}

func (c *conn) abortPending() {
	if c.pending != nil {
		if err := c.srv.store.Abort(c.pending); err != nil {
			c.srv.log.Error("resp: aborting a reservation", "key", c.pending.Key, "err", err)
		}
	}
	c.pending, c.pendingErr = nil, nil
}

func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
