//go:build linux && cgo

package pool_test

import (
	"fmt"
	"os"

	"github.com/fluxon-dev/fluxon/cgo/pool"
)

// The owner creates a pool and writes an object; an external attaches, pins it with a
// reference and reads it in place; the owner removes it, and the external's last unref
// tells it to free the memory.
func Example() {
	path := fmt.Sprintf("/dev/shm/flx-example-%d", os.Getpid())
	owner, err := pool.CreateWith(path, 64<<20, 0, pool.Options{Sparse: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer owner.Destroy()

	msg := []byte("hello, shared memory")
	off, _ := owner.Alloc(uint64(len(msg)), 0x1234, 1)
	copy(owner.Bytes(off), msg)
	_ = owner.Seal(off)
	_, _ = owner.Unref(off) // the writer is done; the object stays READY

	ext, err := pool.Attach(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ext.Close()
	_ = ext.Ref(off)
	fmt.Printf("%s\n", ext.Bytes(off))

	released, _ := owner.Remove(off)
	fmt.Println("freed at remove:", released)
	released, _ = ext.Unref(off)
	fmt.Println("external released the last reference:", released)
	fmt.Println("owner frees it:", owner.Free(off) == nil)
	// Output:
	// hello, shared memory
	// freed at remove: false
	// external released the last reference: true
	// owner frees it: true
}
