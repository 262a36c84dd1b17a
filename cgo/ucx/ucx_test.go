//go:build linux && cgo && ucx

package ucx

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/fluxon-dev/fluxon/cgo/core"
)

// TestMain runs the package's tests once per UCX transport (UCX_TLS is read
// when a node opens, so each setting gets its own process).
func TestMain(m *testing.M) {
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

func TestOneSidedGet(t *testing.T) {
	owner, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	reader, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	region := make([]byte, 4<<20)
	for i := range region {
		region[i] = byte(i*131 + 7)
	}
	m, err := owner.Map(region)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := owner.Address()
	if err != nil {
		t.Fatal(err)
	}
	ep, err := reader.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := ep.Unpack(m.RKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ off, n int }{{0, 1}, {3, 4093}, {0, len(region)}, {len(region) - 1, 1}} {
		dst := make([]byte, r.n)
		if err := ep.Get(rk, m.Addr()+uint64(r.off), dst); err != nil {
			t.Fatalf("get [%d,+%d): %v", r.off, r.n, err)
		}
		if !bytes.Equal(dst, region[r.off:r.off+r.n]) {
			t.Fatalf("get [%d,+%d): wrong bytes", r.off, r.n)
		}
	}
	if _, err := ep.Unpack(nil); !errors.Is(err, &core.Error{Code: core.EINVAL}) {
		t.Fatalf("Unpack(nil) = %v, want EINVAL", err)
	}
	for _, c := range []interface{ Close() error }{rk, ep, m, reader, owner} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := owner.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
	if n := Live(); n != 0 {
		t.Fatalf("%d handles leaked", n)
	}
}
