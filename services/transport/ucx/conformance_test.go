//go:build ucx

package ucx

import (
	"context"
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
)

// TestMain runs the package's tests once per UCX transport that works on
// any host: UCX reads UCX_TLS when a process opens its first node, so each
// setting gets its own process. tcp is the path between hosts (and network
// namespaces); sm,self the one-host path.
func TestMain(m *testing.M) {
	if os.Getenv(ownerEnv) != "" {
		os.Exit(ownerMain())
	}
	if os.Getenv("UCX_TLS") != "" {
		os.Exit(m.Run())
	}
	for _, tls := range []string{"tcp", "sm,self"} {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Env = append(os.Environ(), "UCX_TLS="+tls, "UCX_WARN_UNUSED_ENV_VARS=n")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			os.Stderr.WriteString("UCX_TLS=" + tls + ": " + err.Error() + "\n")
			os.Exit(1)
		}
	}
	os.Exit(0)
}

// factory builds the transport for the suite. The control path is the
// framed protocol over TCP, so raw dialers and listeners are TCP ones:
// the malformed-frame and dead-peer cases run against the same engine
// the UCX transport uses.
func factory(t *testing.T, o transport.Options) transporttest.Setup {
	tr, err := New(Options{Options: o})
	if err != nil {
		t.Fatal(err)
	}
	return transporttest.Setup{
		Transport: tr,
		Addr:      "127.0.0.1:0",
		RawDial: func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		RawListen: func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) },
		OneSidedBulk: "ucx reads bulk bytes with a UCX get after leasing the range over the control " +
			"stream; a raw TCP peer cannot speak UCX, so it cannot die mid-get (PeerDeath covers an owner going away)",
	}
}

func TestConformance(t *testing.T) {
	t.Logf("UCX_TLS=%s", os.Getenv("UCX_TLS"))
	transporttest.Run(t, factory)
}
