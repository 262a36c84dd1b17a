// Package websocket is the WebSocket transport: the framed protocol (the
// same frames, handshake and keepalive as tcp) carried as a byte stream
// over one WebSocket per connection, so that members can reach each other
// through HTTP load balancers and reverse proxies that pass Upgrade
// requests, under a path prefix of the operator's choosing.
//
// A listener serves HTTP on its address with one endpoint,
// PathPrefix + "/fluxon/v1/transport", which accepts WebSocket upgrades
// offering the subprotocol "fluxon.v1". Every other request is answered
// with a 4xx status and a one-line explanation. With TLS configured the
// endpoint is served over HTTPS and dialed as wss://; without, ws://.
//
// Each framed write becomes one binary WebSocket message
// (websocket.NetConn); message boundaries mean nothing to the receiver,
// which reads the messages back as one byte stream.
package websocket

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/framed"
)

// Name is the transport's name in configs and endpoint advertisements.
const Name = "websocket"

// Subprotocol is the WebSocket subprotocol both sides must agree on; a
// future incompatible framing gets a new one rather than a silent mix-up.
const Subprotocol = "fluxon.v1"

// EndpointPath is where, below Options.PathPrefix, a listener accepts
// connections.
const EndpointPath = "/fluxon/v1/transport"

const (
	// closeHandshakeTimeout bounds the WebSocket close handshake. The
	// framed protocol has already said goodbye in its own CLOSE frame by
	// then, so a peer that does not answer the close frame quickly (dead,
	// or behind a proxy that dropped it) is simply cut off.
	closeHandshakeTimeout = 250 * time.Millisecond
	// maxRefusalBody bounds how much of a non-101 answer a dialer quotes.
	maxRefusalBody = 200
)

// Errors of the configuration.
var (
	// ErrBadAddress: a dial address that is neither host:port nor a ws://
	// or wss:// URL.
	ErrBadAddress = errors.New("websocket transport: bad address")
	// ErrTLSConfig: certificate, key or CA files that cannot be loaded.
	ErrTLSConfig = errors.New("websocket transport: bad TLS configuration")
)

// Options configure the WebSocket transport. The zero value serves and
// dials plain ws:// at EndpointPath.
type Options struct {
	transport.Options
	// PathPrefix is put before EndpointPath on both sides ("/edge" serves
	// and dials /edge/fluxon/v1/transport), so that a reverse proxy can
	// route a path to this member. A trailing slash is ignored. Dial
	// addresses given as full URLs carry their own path instead.
	PathPrefix string
	// TLS, when set, is used as is: as the listener's server config (it
	// must hold a certificate) and, cloned, as the dialer's client config.
	// It overrides the file options below.
	TLS *tls.Config
	// CertFile and KeyFile: the listener's certificate and key (PEM); with
	// them the listener serves wss.
	CertFile, KeyFile string
	// CAFile: PEM roots the dialer verifies listeners against (default:
	// the system roots). Setting it (or CertFile) makes the dialer use wss
	// for host:port addresses.
	CAFile string
}

// Transport is the WebSocket transport.
type Transport struct {
	opts      Options
	path      string
	serverTLS *tls.Config // nil: plain ws
	clientTLS *tls.Config // nil: host:port addresses are dialed as ws
}

// New checks o and loads its TLS files.
func New(o Options) (*Transport, error) {
	o.Options = o.Options.WithDefaults()
	t := &Transport{opts: o, path: strings.TrimRight(o.PathPrefix, "/") + EndpointPath}
	if !strings.HasPrefix(t.path, "/") {
		t.path = "/" + t.path
	}
	switch {
	case o.TLS != nil:
		t.serverTLS = o.TLS.Clone()
		t.clientTLS = o.TLS.Clone()
	case o.CertFile != "" || o.KeyFile != "" || o.CAFile != "":
		if (o.CertFile == "") != (o.KeyFile == "") {
			return nil, fmt.Errorf("%w: CertFile and KeyFile go together (got cert %q, key %q)", ErrTLSConfig, o.CertFile, o.KeyFile)
		}
		t.clientTLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if o.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("%w: %w; check CertFile and KeyFile", ErrTLSConfig, err)
			}
			t.serverTLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		}
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrTLSConfig, err)
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%w: no PEM certificate in CAFile %s", ErrTLSConfig, o.CAFile)
			}
			t.clientTLS.RootCAs = roots
		}
	}
	return t, nil
}

// Name implements transport.Transport.
func (t *Transport) Name() string { return Name }

// Path is the HTTP path the listener serves and host:port dials go to.
func (t *Transport) Path() string { return t.path }

// Listen implements transport.Transport. The listener's Addr is host:port.
func (t *Transport) Listen(ctx context.Context, addr string, local transport.Identity, h transport.Handler, verify transport.Verify) (transport.Listener, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: Listen needs a Handler", transport.ErrInvalid)
	}
	ln, err := t.listenWS(ctx, addr)
	if err != nil {
		return nil, err
	}
	return framed.Serve(ln, stream, local, h, verify, t.opts.Options), nil
}

// listenWS serves the endpoint on addr and hands out each accepted
// WebSocket as a net.Conn carrying the byte stream.
func (t *Transport) listenWS(ctx context.Context, addr string) (*wsListener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("websocket transport: listen on %s: %w; choose a free address", addr, err)
	}
	l := &wsListener{
		ln:    ln,
		path:  t.path,
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
		tls:   t.serverTLS != nil,
	}
	l.srv = &http.Server{
		Handler: l,
		// A client that opens a TCP connection and never finishes its
		// upgrade request costs a goroutine only this long.
		ReadHeaderTimeout: t.opts.HandshakeTimeout,
		// Failed TLS handshakes and the like go to the transport's log,
		// at debug: a stranger's bad request is not this member's problem.
		ErrorLog: slog.NewLogLogger(t.opts.Log.Handler(), slog.LevelDebug),
	}
	l.served = make(chan struct{})
	go func() {
		defer close(l.served)
		if t.serverTLS != nil {
			l.srv.TLSConfig = t.serverTLS
			_ = l.srv.ServeTLS(ln, "", "")
		} else {
			_ = l.srv.Serve(ln)
		}
	}()
	return l, nil
}

// wsListener is a net.Listener of WebSocket byte streams: its HTTP server
// upgrades requests to the endpoint and Accept returns them.
type wsListener struct {
	ln     net.Listener
	srv    *http.Server
	path   string
	tls    bool
	conns  chan net.Conn
	done   chan struct{}
	served chan struct{}
	once   sync.Once
}

func (l *wsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops the HTTP server. Connections already upgraded belong to
// whoever accepted them; one upgraded but not yet accepted is closed.
func (l *wsListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.srv.Close()
		<-l.served
	})
	return err
}

func (l *wsListener) Addr() net.Addr { return l.ln.Addr() }

func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != l.path {
		http.Error(w, fmt.Sprintf("no fluxon endpoint at %s: the websocket transport listens at %s", r.URL.Path, l.path), http.StatusNotFound)
		return
	}
	if !isUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, fmt.Sprintf("%s is the fluxon transport endpoint: connect with a WebSocket client offering subprotocol %s", l.path, Subprotocol), http.StatusUpgradeRequired)
		return
	}
	if !offers(r, Subprotocol) {
		http.Error(w, fmt.Sprintf("this endpoint speaks only WebSocket subprotocol %s (offered: %q); upgrade the dialing member or fix its transport", Subprotocol, r.Header.Values("Sec-WebSocket-Protocol")), http.StatusBadRequest)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{Subprotocol},
		// Members authenticate each other in the framed handshake, and
		// dialers are other members or proxies, not browsers: an Origin
		// header, if any, proves nothing either way.
		InsecureSkipVerify: true,
		// Payloads are mostly pool bytes; compressing them costs CPU on
		// the hot path for little gain.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return // Accept has answered the client
	}
	remote, _ := net.ResolveTCPAddr("tcp", r.RemoteAddr)
	var remoteAddr net.Addr = remote
	if remote == nil {
		remoteAddr = strAddr(r.RemoteAddr)
	}
	nc := newStreamConn(ws, l.ln.Addr(), remoteAddr)
	select {
	case l.conns <- nc:
	case <-l.done:
		_ = nc.Close()
	}
}

// isUpgrade reports whether r asks for a WebSocket upgrade.
func isUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

// offers reports whether r offers subprotocol p.
func offers(r *http.Request, p string) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, s := range strings.Split(v, ",") {
			if strings.TrimSpace(s) == p {
				return true
			}
		}
	}
	return false
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, s := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(s), token) {
				return true
			}
		}
	}
	return false
}

type strAddr string

func (a strAddr) Network() string { return "tcp" }
func (a strAddr) String() string  { return string(a) }

// streamConn is one WebSocket as a byte stream, with the real TCP
// addresses (websocket.NetConn knows none on the dialing side), a bounded
// close, and read interrupts that do not end the connection.
//
// The framed engine interrupts a bulk read that its caller abandoned by
// setting a past read deadline, then goes on reading the stream
// (framed.Stream.ResumableDeadlines). websocket.NetConn cannot do that: a
// deadline that fires during a read closes the WebSocket, because the
// library cannot resume a frame it stopped reading. So a past
// SetReadDeadline here does not reach NetConn at once: each Read is capped
// at maxReadChunk, the read in flight finishes its chunk (the peer is
// sending the frame anyway), and the next Read fails with
// os.ErrDeadlineExceeded without touching the stream. Only a read still
// stuck after interruptGrace (a peer that stopped mid-frame) is cut by
// NetConn's deadline, which ends the connection. Future deadlines (the
// handshake's, through SetDeadline) go straight to NetConn: when they fire
// the connection is over anyway.
type streamConn struct {
	net.Conn
	ws            *websocket.Conn
	local, remote net.Addr

	mu sync.Mutex
	// interrupted: a past read deadline is set; Reads fail until it is
	// cleared.
	interrupted bool
	// gen numbers SetReadDeadline calls, so that a grace timer that fires
	// late does not undo a later deadline.
	gen   uint64
	grace *time.Timer
}

const (
	// maxReadChunk caps one Read, so that an interrupt waits for at most
	// this many bytes of the frame in flight (about 1 ms at 2 Gbit/s).
	maxReadChunk = 256 << 10
	// interruptGrace is how long an interrupted read may wait for its
	// chunk before the connection is cut.
	interruptGrace = time.Second
)

func newStreamConn(ws *websocket.Conn, local, remote net.Addr) *streamConn {
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	// NetConn disables the library's read limit (SetReadLimit(-1)); we
	// keep it off on purpose. NetConn streams each message's bytes straight
	// into the framed reader's buffer and never assembles a whole message,
	// so a big message costs no memory; and message boundaries are not
	// frame boundaries. The framed engine bounds every frame itself (a
	// small limit before the handshake, MaxFramePayload after) and answers
	// an oversize frame with a protocol ERROR frame the peer can read,
	// where a WebSocket read limit would kill the connection with close
	// code 1009 and no protocol-level reason.
	ws.SetReadLimit(-1)
	return &streamConn{Conn: nc, ws: ws, local: local, remote: remote}
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

func (c *streamConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	interrupted := c.interrupted
	c.mu.Unlock()
	if interrupted {
		return 0, os.ErrDeadlineExceeded
	}
	if len(p) > maxReadChunk {
		p = p[:maxReadChunk]
	}
	return c.Conn.Read(p)
}

// SetReadDeadline: see streamConn.
func (c *streamConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if c.grace != nil {
		c.grace.Stop()
		c.grace = nil
	}
	if !t.IsZero() && !t.After(time.Now()) {
		c.interrupted = true
		gen := c.gen
		c.grace = time.AfterFunc(interruptGrace, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.gen == gen {
				_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
			}
		})
		return nil
	}
	c.interrupted = false
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines on NetConn itself: they end the
// connection if they fire during a read or write.
func (c *streamConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.gen++
	if c.grace != nil {
		c.grace.Stop()
		c.grace = nil
	}
	c.interrupted = false
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

// Close closes with the WebSocket close handshake, but waits for the peer's
// answer only closeHandshakeTimeout before cutting the TCP connection.
func (c *streamConn) Close() error {
	c.mu.Lock()
	if c.grace != nil {
		c.grace.Stop()
		c.grace = nil
	}
	c.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- c.Conn.Close() }()
	t := time.NewTimer(closeHandshakeTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return c.ws.CloseNow()
	}
}

// stream turns an accepted (or dialed) WebSocket into the framed engine's
// stream; streamConn makes read interrupts resumable.
func stream(nc net.Conn) (framed.Stream, error) {
	return framed.Stream{Conn: nc, ResumableDeadlines: true}, nil
}

// Dial implements transport.Transport. addr is host:port (dialed at this
// transport's Path, wss when TLS is configured) or a ws:// or wss:// URL.
func (t *Transport) Dial(ctx context.Context, addr string, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	nc, err := t.dialWS(ctx, addr)
	if err != nil {
		return nil, err
	}
	s, _ := stream(nc)
	return framed.Dial(ctx, s, local, verify, t.opts.Options)
}

// dialURL is the URL a dial address stands for.
func (t *Transport) dialURL(addr string) (string, error) {
	if strings.HasPrefix(addr, "ws://") || strings.HasPrefix(addr, "wss://") {
		u, err := url.Parse(addr)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("%w: %q: want host:port or a ws:// or wss:// URL", ErrBadAddress, addr)
		}
		if u.Path == "" {
			u.Path = t.path
		}
		return u.String(), nil
	}
	if strings.Contains(addr, "://") {
		return "", fmt.Errorf("%w: %q: want host:port or a ws:// or wss:// URL", ErrBadAddress, addr)
	}
	scheme := "ws"
	if t.clientTLS != nil {
		scheme = "wss"
	}
	return (&url.URL{Scheme: scheme, Host: addr, Path: t.path}).String(), nil
}

// dialWS opens the WebSocket to addr and returns it as a byte stream.
func (t *Transport) dialWS(ctx context.Context, addr string) (net.Conn, error) {
	u, err := t.dialURL(addr)
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, t.opts.HandshakeTimeout)
	defer cancel()
	var mu sync.Mutex
	var local, remote net.Addr
	d := net.Dialer{Timeout: t.opts.HandshakeTimeout}
	ht := &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, a)
			if err == nil {
				mu.Lock()
				local, remote = c.LocalAddr(), c.RemoteAddr()
				mu.Unlock()
			}
			return c, err
		},
		TLSClientConfig: t.clientTLS,
		// The upgraded connection is hijacked; nothing is kept idle.
		DisableKeepAlives: true,
	}
	defer ht.CloseIdleConnections()
	ws, resp, err := websocket.Dial(hctx, u, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: ht},
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, dialError(ctx, hctx, addr, u, resp, err)
	}
	if p := ws.Subprotocol(); p != Subprotocol {
		_ = ws.Close(websocket.StatusProtocolError, "subprotocol "+Subprotocol+" required")
		return nil, fmt.Errorf("%w: %s accepted the WebSocket without subprotocol %s (got %q): not a fluxon endpoint; check the address and path prefix",
			transport.ErrUnreachable, u, Subprotocol, p)
	}
	mu.Lock()
	defer mu.Unlock()
	if remote == nil {
		remote = strAddr(addr)
	}
	return newStreamConn(ws, local, remote), nil
}

// dialError maps a failed WebSocket dial to the transport's errors, as
// tcp does: the caller's context first, then the handshake timeout, then
// an HTTP answer other than 101 or no answer at all (both unreachable:
// no fluxon endpoint accepted the connection there).
func dialError(ctx, hctx context.Context, addr, u string, resp *http.Response, err error) error {
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%w: dial %s: %w", transport.ErrTimeout, addr, ctx.Err())
		}
		return fmt.Errorf("websocket transport: dial %s: %w", addr, ctx.Err())
	}
	if errors.Is(hctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: dial %s: no WebSocket upgrade within the handshake timeout: %w", transport.ErrTimeout, u, context.DeadlineExceeded)
	}
	if resp != nil {
		why := ""
		if resp.Body != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, maxRefusalBody))
			why = strings.TrimSpace(string(b))
		}
		return fmt.Errorf("%w: %s answered HTTP %d (%s) instead of a WebSocket upgrade; check the address and path prefix", transport.ErrUnreachable, u, resp.StatusCode, why)
	}
	return fmt.Errorf("%w: dial %s: %w; is a member listening there? check the address it advertises", transport.ErrUnreachable, addr, err)
}
