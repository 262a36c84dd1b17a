//go:build linux && cgo

package ring_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fluxon-dev/fluxon/cgo/ring"
)

// An owner lays out a submit/complete pair in a /dev/shm file; the external maps the
// same file and opens the rings. Both sides are shown in one process here.
func Example() {
	path := filepath.Join(os.TempDir(), fmt.Sprintf("fluxon-ring-example-%d", os.Getpid()))
	if _, err := os.Stat("/dev/shm"); err == nil {
		path = filepath.Join("/dev/shm", filepath.Base(path))
	}
	rb := ring.Size(64, 256)

	// Owner: create the region and both rings.
	owner, err := ring.Map(path, 2*rb, true)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer owner.Unlink()
	defer owner.Close()
	submit, _ := ring.Init(owner.Bytes()[:rb], 64, 256)
	complete, _ := ring.Init(owner.Bytes()[rb:], 64, 256)

	// External (normally another process): map the file, open the rings.
	ext, err := ring.Map(path, 0, false)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ext.Close()
	extSubmit, _ := ring.Open(ext.Bytes()[:rb])
	extComplete, _ := ring.Open(ext.Bytes()[rb:])

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	slot := make([]byte, 64)

	_ = extSubmit.Push([]byte("GET user:42"))
	if err := submit.WaitNonEmpty(ctx, ring.EventDriven); err != nil {
		fmt.Println(err)
		return
	}
	_ = submit.Pop(slot)
	fmt.Printf("owner got %q\n", bytes.TrimRight(slot, "\x00"))

	_ = complete.Push([]byte("segment 3 offset 4096 length 512"))
	if err := extComplete.WaitNonEmpty(ctx, ring.EventDriven); err != nil {
		fmt.Println(err)
		return
	}
	_ = extComplete.Pop(slot)
	fmt.Printf("external got %q\n", bytes.TrimRight(slot, "\x00"))

	// The owner notices the external is gone (its socket closed) and closes its rings.
	_ = submit.ClosePeer()
	err = submit.WaitNonEmpty(ctx, ring.EventDriven)
	fmt.Println(errors.Is(err, ring.ErrClosed), extSubmit.Closed())
	// Output:
	// owner got "GET user:42"
	// external got "segment 3 offset 4096 length 512"
	// true true
}
