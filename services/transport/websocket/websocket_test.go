package websocket

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

var (
	testServer = transport.Identity{ClusterName: "ws", InstanceKey: "owner", StartTime: time.Unix(10, 0), Role: "owner"}
	testClient = transport.Identity{ClusterName: "ws", InstanceKey: "client", StartTime: time.Unix(20, 0), Role: "external"}
)

const testLimit = 30 * time.Second

func quiet() transport.Options { return transport.Options{Log: slog.New(slog.DiscardHandler)} }

// testPool is what the test handler serves to ReadRemote.
var testPool = func() []byte {
	b := make([]byte, 3<<20)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

func testHandler() transport.Handler {
	return transport.HandlerFuncs{
		Request: func(_ context.Context, _ transport.Identity, path string, p []byte) ([]byte, error) {
			return append([]byte(path+":"), p...), nil
		},
		Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
			return testPool[ref.Offset : ref.Offset+ref.Length], nil, nil
		},
	}
}

func newTransport(t *testing.T, o Options) *Transport {
	t.Helper()
	if o.Log == nil {
		o.Options = quiet()
	}
	tr, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func listen(t *testing.T, tr *Transport) transport.Listener {
	t.Helper()
	l, err := tr.Listen(context.Background(), "127.0.0.1:0", testServer, testHandler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// exercise runs a request and a 3 MiB bulk read over c.
func exercise(t *testing.T, c transport.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testLimit)
	defer cancel()
	got, err := c.Request(ctx, "/echo", []byte("hello"))
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	if string(got) != "/echo:hello" {
		t.Fatalf("Request answered %q", got)
	}
	ref := transport.RemoteRef{Offset: 1, Length: uint64(len(testPool) - 1)}
	dst := make([]byte, ref.Length)
	if err := c.ReadRemote(ctx, ref, dst); err != nil {
		t.Fatalf("ReadRemote: %v", err)
	}
	if !bytes.Equal(dst, testPool[1:]) {
		t.Fatal("ReadRemote returned the wrong bytes")
	}
}

func dial(t *testing.T, tr *Transport, addr string) transport.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testLimit)
	defer cancel()
	c, err := tr.Dial(ctx, addr, testClient, nil)
	if err != nil {
		t.Fatalf("Dial(%s): %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestThroughReverseProxy puts net/http/httputil.ReverseProxy (which
// passes Upgrade requests through) in front of a listener, routed by the
// path prefix as a load balancer would, and runs a Conn through it.
func TestThroughReverseProxy(t *testing.T) {
	tr := newTransport(t, Options{PathPrefix: "/edge/"})
	if got, want := tr.Path(), "/edge/fluxon/v1/transport"; got != want {
		t.Fatalf("Path() = %q, want %q", got, want)
	}
	l := listen(t, tr)
	backend, err := url.Parse("http://" + l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var proxied atomic.Int64
	rp := httputil.NewSingleHostReverseProxy(backend)
	mux := http.NewServeMux()
	mux.HandleFunc("/edge/", func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		rp.ServeHTTP(w, r)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not routed", http.StatusBadGateway)
	})
	proxy := httptest.NewServer(mux)
	t.Cleanup(proxy.Close)
	proxyAddr := strings.TrimPrefix(proxy.URL, "http://")

	// host:port of the proxy: the path comes from the dialer's prefix.
	exercise(t, dial(t, tr, proxyAddr))
	// A full URL carries its own path; the dialer's prefix does not matter.
	plain := newTransport(t, Options{})
	exercise(t, dial(t, plain, "ws://"+proxyAddr+"/edge/fluxon/v1/transport"))
	if n := proxied.Load(); n != 2 {
		t.Fatalf("the proxy saw %d requests, want 2: the connections did not go through it", n)
	}
	// Without the prefix the proxy does not route to the member.
	ctx, cancel := context.WithTimeout(context.Background(), testLimit)
	defer cancel()
	_, err = plain.Dial(ctx, proxyAddr, testClient, nil)
	if !errors.Is(err, transport.ErrUnreachable) || !strings.Contains(err.Error(), "502") {
		t.Fatalf("dial without the prefix: got %v, want ErrUnreachable naming HTTP 502", err)
	}
}

func TestHTTPAnswers(t *testing.T) {
	tr := newTransport(t, Options{PathPrefix: "/p"})
	l := listen(t, tr)
	base := "http://" + l.Addr()
	get := func(path string, hdr map[string]string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	code, body := get("/p/fluxon/v1/transport", nil)
	if code != http.StatusUpgradeRequired || !strings.Contains(body, Subprotocol) || strings.Contains(body, "\n") {
		t.Errorf("plain GET of the endpoint: %d %q, want 426 and one line naming %s", code, body, Subprotocol)
	}
	code, body = get("/fluxon/v1/transport", nil)
	if code != http.StatusNotFound || !strings.Contains(body, "/p/fluxon/v1/transport") {
		t.Errorf("GET of another path: %d %q, want 404 naming the endpoint", code, body)
	}
	code, body = get("/p/fluxon/v1/transport", map[string]string{
		"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
		"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "chat",
	})
	if code != http.StatusBadRequest || !strings.Contains(body, Subprotocol) || !strings.Contains(body, "chat") {
		t.Errorf("upgrade offering another subprotocol: %d %q, want 400 naming both", code, body)
	}
}

func TestDialErrors(t *testing.T) {
	tr := newTransport(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), testLimit)
	defer cancel()
	for _, addr := range []string{"http://127.0.0.1:1/x", "ws://"} {
		if _, err := tr.Dial(ctx, addr, testClient, nil); !errors.Is(err, ErrBadAddress) {
			t.Errorf("Dial(%q): %v, want ErrBadAddress", addr, err)
		}
	}
	// An HTTP server that is not a fluxon member.
	other := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(other.Close)
	addr := strings.TrimPrefix(other.URL, "http://")
	if _, err := tr.Dial(ctx, addr, testClient, nil); !errors.Is(err, transport.ErrUnreachable) || !strings.Contains(err.Error(), "404") {
		t.Errorf("Dial of a plain HTTP server: %v, want ErrUnreachable naming HTTP 404", err)
	}
	// A caller's deadline that passes during the dial.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Close() })
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := tr.Dial(short, silent.Addr().String(), testClient, nil); !errors.Is(err, transport.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial of a listener that never answers: %v, want ErrTimeout", err)
	}
}

// TestTLS serves wss with CertFile/KeyFile and dials with CAFile; a dialer
// that does not trust the certificate is refused.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	srv := newTransport(t, Options{CertFile: certFile, KeyFile: keyFile})
	l := listen(t, srv)
	cli := newTransport(t, Options{CAFile: certFile})
	exercise(t, dial(t, cli, l.Addr()))
	exercise(t, dial(t, cli, "wss://"+l.Addr()))

	ctx, cancel := context.WithTimeout(context.Background(), testLimit)
	defer cancel()
	if _, err := newTransport(t, Options{}).Dial(ctx, l.Addr(), testClient, nil); err == nil {
		t.Error("a ws:// dial of a wss listener succeeded")
	}
	untrusting := newTransport(t, Options{})
	if _, err := untrusting.Dial(ctx, "wss://"+l.Addr(), testClient, nil); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("a dialer without the CA: %v, want ErrUnreachable (certificate not trusted)", err)
	}
	if _, err := New(Options{CertFile: certFile}); !errors.Is(err, ErrTLSConfig) {
		t.Errorf("CertFile without KeyFile: %v, want ErrTLSConfig", err)
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fluxon test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
