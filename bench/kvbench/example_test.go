package kvbench_test

import (
	"fmt"

	"github.com/fluxon-dev/fluxon/bench/kvbench"
)

// A reduced READ_ZIPF: the generator gives every target the same operations
// for the same seed, group and thread.
func ExampleWorkload_Generator() {
	s := kvbench.ReadZipf()
	s.Keys, s.Sizes = 8, []int{1 << 20, 2 << 20}
	w, err := kvbench.Compile(s, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	a, b := w.Generator(1, 0, 0), w.Generator(1, 0, 0)
	same := true
	for range 1000 {
		if a.Next() != b.Next() {
			same = false
		}
	}
	fmt.Println("same operations:", same)
	fmt.Println("key 3 preloaded with", kvbench.FormatSize(w.PreloadSize(3)), "as", w.Key(3))
	// Output:
	// same operations: true
	// key 3 preloaded with 2MiB as kvb/READ_ZIPF/3
}
