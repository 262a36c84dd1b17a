package cluster

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"
)

// absent is the model's value of a key that is not there.
const absent = "∅"

// lossyModel is kvModel with owner crashes: a crash may lose any key (its
// only holder may have been the owner that died), so afterwards a key reads
// as its last value or as absent, but never as an older value. The state
// is the set of values a read may return, as a sorted "\n"-joined string.
var lossyModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var crashes []porcupine.Operation
		for _, op := range history {
			in := op.Input.(kvInput)
			if in.op == "crash" {
				crashes = append(crashes, op)
				continue
			}
			by[in.key] = append(by[in.key], op)
		}
		out := make([][]porcupine.Operation, 0, len(by))
		for _, ops := range by {
			out = append(out, append(ops, crashes...))
		}
		return out
	},
	Init: func() any { return absent },
	Step: func(state, input, output any) (bool, any) {
		set, in := strings.Split(state.(string), "\n"), input.(kvInput)
		switch in.op {
		case "get":
			out := output.(kvOutput)
			v := absent
			if out.found {
				v = out.value
			}
			return slices.Contains(set, v), v
		case "put":
			return true, in.value
		case "remove":
			return true, absent
		default: // crash
			if !slices.Contains(set, absent) {
				set = append(set, absent)
			}
			slices.Sort(set)
			return true, strings.Join(set, "\n")
		}
	},
	DescribeOperation: func(input, output any) string {
		in := input.(kvInput)
		switch in.op {
		case "get":
			out := output.(kvOutput)
			return fmt.Sprintf("get(%s) -> %q %v", in.key, out.value, out.found)
		case "crash":
			return "crash"
		}
		return fmt.Sprintf("%s(%s, %q)", in.op, in.key, in.value)
	},
}

// Concurrent clients on three owner slots read, overwrite and remove a few
// keys while the routing table changes under them: an owner joins, one is
// restarted (a new incarnation with an empty pool), and the epoch moves on
// with the same members; each owner learns each table at its own moment.
// Porcupine checks the history against a register per key that a crash may
// empty: no read ever returns a value older than the last completed write.
func TestLinearizableAcrossEpochChanges(t *testing.T) {
	const ttl = 2 * time.Second
	var mu sync.Mutex // guards slots
	slots := []*testOwner{
		startOwner(t, "o0", time.Unix(1000, 0), "h0", ttl),
		startOwner(t, "o1", time.Unix(1001, 0), "h1", ttl),
		startOwner(t, "o2", time.Unix(1002, 0), "h2", ttl),
	}
	owner := func(i int) *testOwner { mu.Lock(); defer mu.Unlock(); return slots[i] }
	start := time.Now()
	ts := func() int64 { return int64(time.Since(start)) }
	var hmu sync.Mutex
	var history []porcupine.Operation
	record := func(op porcupine.Operation) { hmu.Lock(); history = append(history, op); hmu.Unlock() }

	// route installs a table on every owner, in a random order with small
	// gaps, so owners are in different epochs for a while.
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	route := func(epoch uint64, members ...*testOwner) {
		var peers []Peer
		for _, o := range members {
			peers = append(peers, o.peer)
		}
		all := []*testOwner{owner(0), owner(1), owner(2)}
		r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		for _, o := range all {
			require.NoError(t, o.node.SetRouting(epoch, peers))
			time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
		}
	}
	route(1, owner(0), owner(1))

	keys := []string{"x", "y", "z", "w"}
	stop := make(chan struct{})
	var failures atomic.Int64
	var wg sync.WaitGroup
	const clients = 6
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 11))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				o := owner(c % 3)
				call := ts()
				in, out, err := randomOp(r, o, keys, fmt.Sprintf("c%d-%d", c, i), 10*time.Second)
				ret := ts()
				switch {
				case errors.Is(err, ErrNoRouting):
					// Refused before doing anything (its owner is not in
					// the table): no effect, nothing to record.
					time.Sleep(time.Millisecond)
					continue
				case err != nil && in.op == "get":
					failures.Add(1) // a failed read has no effect
					continue
				case err != nil:
					// A failed write may or may not have happened, at any
					// time after its call.
					failures.Add(1)
					ret = math.MaxInt64
				}
				record(porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
			}
		}(c)
	}

	time.Sleep(100 * time.Millisecond)
	route(2, owner(0), owner(1), owner(2)) // o2 joins
	time.Sleep(150 * time.Millisecond)
	// o1 dies: the table drops it, then it comes back as a new incarnation.
	crash := ts()
	route(3, owner(0), owner(2))
	old := owner(1)
	require.NoError(t, old.node.Close())
	fresh := startOwner(t, "o1", time.Unix(2001, 0), "h1", ttl)
	mu.Lock()
	slots[1] = fresh
	mu.Unlock()
	record(porcupine.Operation{ClientId: clients, Input: kvInput{op: "crash"}, Call: crash, Output: kvOutput{}, Return: ts()})
	route(4, owner(0), owner(1), owner(2))
	time.Sleep(150 * time.Millisecond)
	route(5, owner(0), owner(1), owner(2)) // same members, new epoch
	time.Sleep(150 * time.Millisecond)
	close(stop)
	wg.Wait()

	var gets, writes int
	for _, op := range history {
		switch op.Input.(kvInput).op {
		case "get":
			gets++
		case "put", "remove":
			writes++
		}
	}
	t.Logf("%d reads, %d writes, %d failed operations across 5 epochs", gets, writes, failures.Load())
	require.Greater(t, gets, 100, "the clients must have worked through the epoch changes")
	require.Greater(t, writes, 100)
	require.Less(t, failures.Load(), int64((gets+writes)/10), "failures are the exception")
	res, info := porcupine.CheckOperationsVerbose(lossyModel, history, time.Minute)
	if res != porcupine.Ok {
		for _, part := range lossyModel.Partition(history) {
			if porcupine.CheckOperations(lossyModel, part) {
				continue
			}
			sort.Slice(part, func(i, j int) bool { return part[i].Call < part[j].Call })
			for _, op := range part {
				t.Logf("[%8.3fms %8.3fms] c%d %s", float64(op.Call)/1e6, float64(op.Return)/1e6, op.ClientId, lossyModel.DescribeOperation(op.Input, op.Output))
			}
			break
		}
		path := t.TempDir() + "/history.html"
		if f, err := createFile(path); err == nil {
			_ = porcupine.Visualize(lossyModel, info, f)
			f.Close()
		}
		t.Fatalf("history is not linearizable (%v); visualization: %s", res, path)
	}
}
