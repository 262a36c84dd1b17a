package quic

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

var (
	testServer = transport.Identity{ClusterName: "q", InstanceKey: "owner", StartTime: time.Unix(1, 0), Role: "owner"}
	testClient = transport.Identity{ClusterName: "q", InstanceKey: "client", StartTime: time.Unix(2, 0), Role: "external"}
	quiet      = transport.Options{Log: slog.New(slog.DiscardHandler)}
)

// testCA is a CA that signs leaf certificates for 127.0.0.1, written as
// PEM files in a temp dir.
type testCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key}
	ca.file = ca.write(name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(name, typ string, der []byte) string {
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return p
}

// leaf issues a certificate for 127.0.0.1 and returns its cert and key files.
func (ca *testCA) leaf(name string) (string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return ca.write(name+".pem", "CERTIFICATE", der), ca.write(name+"-key.pem", "EC PRIVATE KEY", kder)
}

func (ca *testCA) transport(name string) *Transport {
	ca.t.Helper()
	cert, key := ca.leaf(name)
	tr, err := New(Options{Options: quiet, CertFile: cert, KeyFile: key, CAFile: ca.file})
	if err != nil {
		ca.t.Fatal(err)
	}
	if tr.SelfSigned() {
		ca.t.Fatal("a transport with a CA reports SelfSigned")
	}
	return tr
}

func echoHandler() transport.Handler {
	return transport.HandlerFuncs{Request: func(_ context.Context, _ transport.Identity, _ string, p []byte) ([]byte, error) { return p, nil }}
}

func listen(t *testing.T, tr *Transport) transport.Listener {
	t.Helper()
	l, err := tr.Listen(context.Background(), "127.0.0.1:0", testServer, echoHandler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestMutualTLSWithCA(t *testing.T) {
	ca := newTestCA(t, "cluster")
	l := listen(t, ca.transport("owner"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ca.transport("client").Dial(ctx, l.Addr(), testClient, nil)
	if err != nil {
		t.Fatalf("dial with a certificate of the same CA: %v", err)
	}
	defer c.Close()
	if got, err := c.Request(ctx, "/echo", []byte("hi")); err != nil || string(got) != "hi" {
		t.Fatalf("echo: %q, %v", got, err)
	}

	// A member of another CA is refused by TLS, in both directions.
	other := newTestCA(t, "other")
	_, err = other.transport("stranger").Dial(ctx, l.Addr(), testClient, nil)
	if !errors.Is(err, transport.ErrRefused) {
		t.Fatalf("dial with another CA's certificate: %v, want ErrRefused", err)
	}
	// A self-signed dialer presents no certificate: the listener needs one.
	self, err := New(Options{Options: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if !self.SelfSigned() {
		t.Fatal("a transport without TLS options does not report SelfSigned")
	}
	c2, err := self.Dial(ctx, l.Addr(), testClient, nil)
	if err == nil {
		_ = c2.Close()
		t.Fatal("a dialer without a client certificate got through mutual TLS")
	}
	if !errors.Is(err, transport.ErrRefused) {
		t.Fatalf("dial without a client certificate: %v, want ErrRefused", err)
	}
}

func TestSelfSignedDialerAcceptsAnyCertificate(t *testing.T) {
	// The self-signed mode verifies nothing: a listener with a CA-issued
	// certificate is as good as a self-signed one (see the package doc).
	ca := newTestCA(t, "cluster")
	cert, key := ca.leaf("owner")
	srv, err := New(Options{Options: quiet, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t, srv)
	cli, err := New(Options{Options: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cli.Dial(ctx, l.Addr(), testClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
}

func TestOptionErrors(t *testing.T) {
	ca := newTestCA(t, "cluster")
	cert, key := ca.leaf("m")
	for name, o := range map[string]Options{
		"cert without key": {CertFile: cert},
		"key without cert": {KeyFile: key},
		"CA without cert":  {CAFile: ca.file},
		"missing files":    {CertFile: cert + ".nope", KeyFile: key},
		"CA not PEM":       {CertFile: cert, KeyFile: key, CAFile: key + ".nope"},
	} {
		o.Options = quiet
		if _, err := New(o); !errors.Is(err, transport.ErrInvalid) {
			t.Errorf("%s: New = %v, want ErrInvalid", name, err)
		}
	}
}

func TestName(t *testing.T) {
	tr, err := New(Options{Options: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Name() != "quic" {
		t.Fatalf("Name() = %q", tr.Name())
	}
}
