//go:build ucx

package ucx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/internal/proctest"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/transporttest"
)

const (
	ownerEnv    = "FLUXON_UCX_TEST_OWNER"
	ownerRegion = 1 << 20
	ownerByte   = 0x5A
)

// ownerMain is the owner process of TestReadFromStoppedOwner: it serves a
// region over the ucx transport, prints its address and serves until its
// stdin closes.
func ownerMain() int {
	tr, err := New(Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	region := bytes.Repeat([]byte{ownerByte}, ownerRegion)
	h := transport.HandlerFuncs{Read: func(_ context.Context, _ transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
		if ref.Offset+ref.Length > ownerRegion {
			return nil, nil, transport.ErrInvalid
		}
		return region[ref.Offset : ref.Offset+ref.Length], nil, nil
	}}
	l, err := tr.Listen(context.Background(), "127.0.0.1:0", transporttest.BenchServer, h, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println(l.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = l.Close()
	return 0
}

// A read whose owner stops answering after granting the lease (SIGSTOP:
// a hung or paused process, or a lane that never completes) returns at its
// context's deadline with ErrTimeout, never writes dst afterwards, and the
// connection reads again once the owner is back (a fresh UCX endpoint).
// Before the get took a deadline, such a read waited in C for ever.
func TestReadFromStoppedOwner(t *testing.T) {
	owner, line := proctest.StartSelf(t, ownerEnv)
	if !line.Scan() {
		t.Fatalf("owner printed no address: %v", line.Err())
	}
	addr := line.Text()

	tr, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := tr.Dial(ctx, addr, transporttest.BenchClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ref := transport.RemoteRef{Length: ownerRegion}
	want := bytes.Repeat([]byte{ownerByte}, ownerRegion)
	dst := make([]byte, ownerRegion)
	if err := c.ReadRemote(ctx, ref, dst); err != nil || !bytes.Equal(dst, want) {
		t.Fatalf("read from the running owner: %v (bytes equal: %v)", err, bytes.Equal(dst, want))
	}

	var stop sync.Once
	testHookBeforeGet = func() {
		stop.Do(func() {
			if err := proctest.Stop(owner); err != nil {
				t.Error(err)
			}
		})
	}
	defer func() { testHookBeforeGet = nil }()
	clear(dst)
	rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	start := time.Now()
	err = c.ReadRemote(rctx, ref, dst)
	rcancel()
	took := time.Since(start)
	if !errors.Is(err, transport.ErrTimeout) {
		t.Fatalf("read from a stopped owner = %v after %v, want ErrTimeout", err, took)
	}
	if took > 10*time.Second {
		t.Fatalf("the read gave up after %v", took)
	}
	t.Logf("read from a stopped owner: %v after %v", err, took)
	testHookBeforeGet = nil

	if err := owner.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if !bytes.Equal(dst, make([]byte, ownerRegion)) {
		t.Fatal("dst was written after ReadRemote returned")
	}
	if err := c.ReadRemote(ctx, ref, dst); err != nil || !bytes.Equal(dst, want) {
		t.Fatalf("read after the owner came back: %v (bytes equal: %v)", err, bytes.Equal(dst, want))
	}
}
