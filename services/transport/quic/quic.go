// Package quic is the QUIC transport: the framed protocol (package framed)
// over one bidirectional stream of one QUIC connection per transport Conn,
// using github.com/quic-go/quic-go. QUIC gives what TCP does not: TLS 1.3
// on every connection and no head-of-line blocking below the stream (a
// lost packet delays only the bytes it carried), at the price of doing
// congestion control, ACKs and encryption in user space.
//
// # TLS
//
// QUIC cannot run without TLS 1.3. The ALPN protocol is "fluxon/1". The
// certificates come from one of, in this order:
//
//   - Options.TLS: used as is (cloned) by both the listener and the dialer;
//     the transport only sets NextProtos and the minimum version.
//   - Options.CertFile and KeyFile (PEM): the certificate this member
//     presents, as a server and as a client. With CAFile, the dialer
//     verifies the listener's certificate against that CA (the name or IP
//     in the dialed address must be among its SANs) and the listener
//     requires a client certificate signed by it: mutual TLS. Without
//     CAFile, the dialer verifies against the system roots.
//   - Neither: New generates an in-memory self-signed ECDSA P-256
//     certificate and the dialer SKIPS CERTIFICATE VERIFICATION. The
//     connection is still encrypted, and the peer's identity is then
//     checked only by Fluxon's own handshake (cluster name and
//     incarnation), which authenticates nothing against an active
//     attacker: anyone on the path can terminate the TLS session and
//     present any identity. This mode is for tests and trusted networks;
//     production configs should give a CA (CAFile with CertFile/KeyFile).
//
// # Errors and liveness
//
// Dialing an address where nothing answers the QUIC handshake ends with
// transport.ErrUnreachable after HandshakeTimeout (UDP gives no connection
// refused to an unconnected socket, so this takes the whole timeout where
// TCP fails at once). A TLS failure (untrusted certificate, wrong ALPN) is
// transport.ErrRefused. Dead peers are found by the framed keepalive
// (pings after KeepaliveInterval of silence, ErrPeerGone after
// KeepaliveTimeout); QUIC's own keepalive (KeepAlivePeriod =
// KeepaliveInterval) keeps NAT bindings open, and its idle timeout
// (KeepaliveTimeout + KeepaliveInterval) is a backstop behind it.
package quic

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/framed"
)

// Name is the transport's name in configs and endpoint advertisements.
const Name = "quic"

// ALPN is the TLS application protocol both sides must offer.
const ALPN = "fluxon/1"

// Flow-control windows. quic-go's defaults (6 MiB per stream, 15 MiB per
// connection) cap a 16 MiB bulk read's window below one transfer; the
// whole connection is one stream, so the two are set alike. The initial
// windows stay small: quic-go grows them toward the maximum as a transfer
// uses them, starting at the maximum measured no faster (bulk is CPU-bound
// in quic-go, see docs/transport.md), and a connection that never moves
// bulk data is not granted 32 MiB of buffering up front.
const (
	initialStreamWindow = 1 << 20
	maxStreamWindow     = 32 << 20
	initialConnWindow   = 1 << 20
	maxConnWindow       = 32 << 20
)

// selfSignedValidity is how long the generated certificate is valid; it is
// never verified, so the value only has to outlive the process.
const selfSignedValidity = 10 * 365 * 24 * time.Hour

// Options configure the QUIC transport. See the package doc for how TLS
// is chosen.
type Options struct {
	transport.Options
	// TLS, when set, is used (cloned) by the listener and the dialer.
	TLS *tls.Config
	// CertFile and KeyFile are this member's PEM certificate and key.
	CertFile, KeyFile string
	// CAFile is the PEM CA that peers' certificates must chain to; it
	// needs CertFile and KeyFile (both sides present a certificate).
	CAFile string
}

// Transport is the QUIC transport.
type Transport struct {
	opts       Options
	serverTLS  *tls.Config
	clientTLS  *tls.Config
	selfSigned bool
	qconf      *quic.Config
}

var _ transport.Transport = (*Transport)(nil)

// New returns a QUIC transport. It loads or generates its certificate.
func New(o Options) (*Transport, error) {
	o.Options = o.Options.WithDefaults()
	t := &Transport{opts: o}
	if err := t.setupTLS(); err != nil {
		return nil, err
	}
	t.qconf = &quic.Config{
		HandshakeIdleTimeout:           o.HandshakeTimeout,
		MaxIdleTimeout:                 o.KeepaliveTimeout + o.KeepaliveInterval,
		KeepAlivePeriod:                o.KeepaliveInterval,
		InitialStreamReceiveWindow:     initialStreamWindow,
		MaxStreamReceiveWindow:         maxStreamWindow,
		InitialConnectionReceiveWindow: initialConnWindow,
		MaxConnectionReceiveWindow:     maxConnWindow,
		// One stream each way is all a connection carries.
		MaxIncomingStreams:    1,
		MaxIncomingUniStreams: -1,
	}
	return t, nil
}

func (t *Transport) setupTLS() error {
	o := t.opts
	switch {
	case o.TLS != nil:
		if o.CertFile != "" || o.KeyFile != "" || o.CAFile != "" {
			return fmt.Errorf("%w: quic transport: give either TLS or CertFile/KeyFile/CAFile, not both", transport.ErrInvalid)
		}
		t.serverTLS = o.TLS.Clone()
		t.clientTLS = o.TLS.Clone()
	case o.CertFile != "" || o.KeyFile != "":
		if o.CertFile == "" || o.KeyFile == "" {
			return fmt.Errorf("%w: quic transport: CertFile and KeyFile go together (got cert %q, key %q)", transport.ErrInvalid, o.CertFile, o.KeyFile)
		}
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return fmt.Errorf("%w: quic transport: load certificate: %w", transport.ErrInvalid, err)
		}
		t.serverTLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		t.clientTLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return fmt.Errorf("%w: quic transport: read CAFile: %w", transport.ErrInvalid, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%w: quic transport: CAFile %s holds no PEM certificate", transport.ErrInvalid, o.CAFile)
			}
			t.serverTLS.ClientCAs = pool
			t.serverTLS.ClientAuth = tls.RequireAndVerifyClientCert
			t.clientTLS.RootCAs = pool
		}
	case o.CAFile != "":
		return fmt.Errorf("%w: quic transport: CAFile needs CertFile and KeyFile (mutual TLS: both sides present a certificate)", transport.ErrInvalid)
	default:
		cert, err := selfSigned()
		if err != nil {
			return fmt.Errorf("quic transport: generate a self-signed certificate: %w", err)
		}
		t.selfSigned = true
		t.serverTLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		// Identity is checked by Fluxon's handshake instead; see the
		// package doc for what this does not protect against.
		t.clientTLS = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // documented
	}
	for _, c := range []*tls.Config{t.serverTLS, t.clientTLS} {
		c.NextProtos = []string{ALPN}
		c.MinVersion = tls.VersionTLS13
	}
	return nil
}

// selfSigned makes an ECDSA P-256 certificate for this process only.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "fluxon quic (self-signed, unverified)"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(selfSignedValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Name implements transport.Transport.
func (t *Transport) Name() string { return Name }

// SelfSigned reports whether the transport runs on a generated certificate
// without verifying its peers' (no TLS or certificate files were given).
func (t *Transport) SelfSigned() bool { return t.selfSigned }

// Listen implements transport.Transport.
func (t *Transport) Listen(ctx context.Context, addr string, local transport.Identity, h transport.Handler, verify transport.Verify) (transport.Listener, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: Listen needs a Handler", transport.ErrInvalid)
	}
	ln, err := t.listenStreams(ctx, addr)
	if err != nil {
		return nil, err
	}
	return framed.Serve(ln, prepare, local, h, verify, t.opts.Options), nil
}

// listenStreams is a net.Listener of QUIC streams: each accepted
// connection's first bidirectional stream.
func (t *Transport) listenStreams(ctx context.Context, addr string) (*streamListener, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("quic transport: listen on %s: %w", addr, err)
	}
	if len(t.serverTLS.Certificates) == 0 && t.serverTLS.GetCertificate == nil && t.serverTLS.GetConfigForClient == nil {
		return nil, fmt.Errorf("%w: quic transport: listen on %s: the TLS config has no certificate to present", transport.ErrInvalid, addr)
	}
	ql, err := quic.ListenAddr(addr, t.serverTLS, t.qconf)
	if err != nil {
		return nil, fmt.Errorf("quic transport: listen on %s: %w; choose a free UDP address", addr, err)
	}
	return newStreamListener(ql, t.opts.HandshakeTimeout), nil
}

// Dial implements transport.Transport.
func (t *Transport) Dial(ctx context.Context, addr string, local transport.Identity, verify transport.Verify) (transport.Conn, error) {
	sc, err := t.dialStream(ctx, addr)
	if err != nil {
		return nil, err
	}
	s, _ := prepare(sc)
	return framed.Dial(ctx, s, local, verify, t.opts.Options)
}

// dialStream opens a QUIC connection to addr and its stream, within ctx
// and the handshake timeout.
func (t *Transport) dialStream(ctx context.Context, addr string) (*streamConn, error) {
	dctx, cancel := context.WithTimeout(ctx, t.opts.HandshakeTimeout)
	defer cancel()
	tc := t.clientTLS
	if !tc.InsecureSkipVerify && tc.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			tc = tc.Clone()
			tc.ServerName = host
		}
	}
	qc, err := quic.DialAddr(dctx, addr, tc, t.qconf)
	if err != nil {
		return nil, dialError(ctx, addr, t.opts.HandshakeTimeout, err)
	}
	st, err := qc.OpenStreamSync(dctx)
	if err != nil {
		_ = qc.CloseWithError(codeClose, "")
		return nil, dialError(ctx, addr, t.opts.HandshakeTimeout, err)
	}
	return newStreamConn(qc, st), nil
}

// dialError maps a failed QUIC dial to the transport's errors.
func dialError(ctx context.Context, addr string, limit time.Duration, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(cerr, context.DeadlineExceeded) {
			return fmt.Errorf("%w: dial %s: %w", transport.ErrTimeout, addr, cerr)
		}
		return fmt.Errorf("quic transport: dial %s: %w", addr, cerr)
	}
	var te *quic.TransportError
	if errors.As(err, &te) && te.ErrorCode.IsCryptoError() {
		return fmt.Errorf("%w: quic transport: TLS handshake with %s failed: %w; check the certificates (CertFile, KeyFile, CAFile) on both sides", transport.ErrRefused, addr, err)
	}
	var hte *quic.HandshakeTimeoutError
	var ite *quic.IdleTimeoutError
	if errors.As(err, &hte) || errors.As(err, &ite) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: quic transport: nothing answered a QUIC handshake at %s within %v; is a member listening there (UDP)? check the address it advertises", transport.ErrUnreachable, addr, limit)
	}
	return fmt.Errorf("%w: quic transport: dial %s: %w; is a member listening there (UDP)? check the address it advertises", transport.ErrUnreachable, addr, err)
}

// prepare turns an accepted stream into a framed.Stream.
func prepare(nc net.Conn) (framed.Stream, error) {
	sc, ok := nc.(*streamConn)
	if !ok {
		return framed.Stream{}, fmt.Errorf("quic transport: got a %T, want a QUIC stream", nc)
	}
	return framed.Stream{
		Conn:     sc,
		TryWrite: sc.tryWrite,
		// A quic-go stream read cut short by its deadline loses no bytes:
		// they stay in the stream's receive buffer for the next read.
		ResumableDeadlines: true,
	}, nil
}
