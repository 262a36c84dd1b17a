//go:build linux && cgo && ucx

package ucx

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/cgo/core"
	"github.com/fluxon-dev/fluxon/internal/proctest"
)

// TestMain runs the package's tests once per UCX transport (UCX_TLS is read
// when a node opens, so each setting gets its own process).
func TestMain(m *testing.M) {
	if os.Getenv(peerEnv) != "" {
		os.Exit(peerMain())
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
		if err := ep.Get(context.Background(), rk, m.Addr()+uint64(r.off), dst); err != nil {
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

const (
	peerEnv    = "FLUXON_UCX_TEST_PEER"
	peerRegion = 1 << 20
	peerByte   = 0xAB
)

// peerMain is the peer process of TestGetFromStoppedPeer: it maps a region,
// prints its address, rkey and worker address (hex, a line each) and
// serves until its stdin closes.
func peerMain() int {
	n, err := Open()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	region := bytes.Repeat([]byte{peerByte}, peerRegion)
	m, err := n.Map(region)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	addr, err := n.Address()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Printf("%d\n%s\n%s\n", m.Addr(), hex.EncodeToString(m.RKey()), hex.EncodeToString(addr))
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// A get from a peer that stopped answering (SIGSTOP: a hung or paused
// process; over tcp it looks like a lane that never completes) returns at
// ctx's deadline or on its cancel, and never writes dst afterwards. Before
// Get took a context, such a get waited in C forever.
func TestGetFromStoppedPeer(t *testing.T) {
	peer, lines := proctest.StartSelf(t, peerEnv)
	var got []string
	for len(got) < 3 && lines.Scan() {
		got = append(got, lines.Text())
	}
	if len(got) < 3 {
		t.Fatalf("peer said %q", got)
	}
	raddr, err := strconv.ParseUint(got[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	rkey, err := hex.DecodeString(got[1])
	if err != nil {
		t.Fatal(err)
	}
	waddr, err := hex.DecodeString(got[2])
	if err != nil {
		t.Fatal(err)
	}

	n, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	connect := func() (*Endpoint, *RKey) {
		ep, err := n.Connect(waddr)
		if err != nil {
			t.Fatal(err)
		}
		rk, err := ep.Unpack(rkey)
		if err != nil {
			t.Fatal(err)
		}
		return ep, rk
	}
	ep, rk := connect()
	dst := make([]byte, peerRegion)
	if err := ep.Get(context.Background(), rk, raddr, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, bytes.Repeat([]byte{peerByte}, peerRegion)) {
		t.Fatal("wrong bytes from the running peer")
	}

	if err := proctest.Stop(peer); err != nil {
		t.Fatal(err)
	}
	clear(dst)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	start := time.Now()
	err = ep.Get(ctx, rk, raddr, dst)
	cancel()
	if !errors.Is(err, &core.Error{Code: core.ETIMEDOUT}) && !errors.Is(err, &core.Error{Code: core.ECANCELED}) {
		t.Fatalf("get from a stopped peer with a 300ms deadline = %v after %v, want ETIMEDOUT", err, time.Since(start))
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the get gave up after %v", took)
	}
	if err := ep.Get(context.Background(), rk, raddr, dst[:1]); err == nil {
		t.Fatal("a get on the endpoint a timed-out get closed succeeded")
	}
	_ = rk.Close()
	_ = ep.Close()

	ep, rk = connect()
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if err := ep.Get(ctx, rk, raddr, dst); !errors.Is(err, &core.Error{Code: core.ECANCELED}) {
		t.Fatalf("cancelled get from a stopped peer = %v, want ECANCELED", err)
	}
	_ = rk.Close()
	_ = ep.Close()

	// The peer wakes and may serve the abandoned gets: dst stays untouched.
	if err := peer.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if !bytes.Equal(dst, make([]byte, peerRegion)) {
		t.Fatal("dst was written after Get returned")
	}
}
