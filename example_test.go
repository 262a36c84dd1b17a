package fluxon_test

import (
	"context"
	"fmt"

	"github.com/fluxon-dev/fluxon"
	"github.com/fluxon-dev/fluxon/services/kv"
)

// Attach to the owner on this host and share a value through its pool.
func ExampleOpen() {
	ctx := context.Background()
	c, err := fluxon.Open(ctx, fluxon.Config{ClusterName: "example", SharedFilePath: exampleShared})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	if _, err := c.Put(ctx, "greeting", []byte("hello from shared memory")); err != nil {
		fmt.Println(err)
		return
	}
	v, err := c.Get(ctx, "greeting")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Mode(), string(v.Bytes())) // v.Bytes() is the owner's pool memory
	v.Close()
	// Output: local hello from shared memory
}

// Store a tensor as a flat dict: metadata fields plus the raw bytes.
func ExampleClient_PutDict() {
	ctx := context.Background()
	c, err := fluxon.Open(ctx, fluxon.Config{ClusterName: "example", SharedFilePath: exampleShared})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	d := fluxon.Dict{kv.String("dtype", "float16"), kv.Int("rows", 2), kv.Int("cols", 2), kv.Bytes("data", make([]byte, 8))}
	if _, err := c.PutDict(ctx, "tensor/0", d); err != nil {
		fmt.Println(err)
		return
	}
	v, _ := c.Get(ctx, "tensor/0")
	defer v.Close()
	got, _ := v.Dict()
	rows, _ := got.Get("rows")
	data, _ := got.Get("data")
	fmt.Println(rows.Int, len(data.Bytes))
	// Output: 2 8
}
