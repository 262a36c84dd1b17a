package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/services/kv"
)

type kvInput struct {
	op    string // get, put, remove
	key   string
	value string
}

type kvOutput struct {
	value string
	found bool
}

// kvModel is a map of registers, one per key, checked key by key.
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(kvInput).key
			by[k] = append(by[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(by))
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return kvOutput{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(kvOutput), input.(kvInput), output.(kvOutput)
		switch in.op {
		case "get":
			return out == st, st
		case "put":
			return true, kvOutput{value: in.value, found: true}
		default: // remove
			return true, kvOutput{}
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		if in.op == "get" {
			return fmt.Sprintf("get(%s) -> %q %v", in.key, out.value, out.found)
		}
		return fmt.Sprintf("%s(%s, %q)", in.op, in.key, in.value)
	},
}

// Concurrent clients on three owners read, overwrite and remove a few keys;
// porcupine checks that the history is linearizable: no read returns a
// value after an overwrite or remove of it has returned.
func TestLinearizableAcrossOwners(t *testing.T) {
	owners := startCluster(t, 3, 2*time.Second)
	keys := []string{"x", "y", "z"}
	start := time.Now()
	ts := func() int64 { return int64(time.Since(start)) }
	var mu sync.Mutex
	var history []porcupine.Operation
	var wg sync.WaitGroup
	const clients, opsPerClient = 6, 80
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 7))
			o := owners[c%len(owners)]
			for i := 0; i < opsPerClient; i++ {
				call := ts()
				in, out, err := randomOp(r, o, keys, fmt.Sprintf("c%d-%d", c, i), 20*time.Second)
				ret := ts()
				if err != nil {
					t.Errorf("client %d op %d %s(%s): %v", c, i, in.op, in.key, err)
					return
				}
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}(c)
	}
	wg.Wait()
	require.Len(t, history, clients*opsPerClient)
	res, info := porcupine.CheckOperationsVerbose(kvModel, history, time.Minute)
	if res != porcupine.Ok {
		for _, part := range kvModel.Partition(history) {
			if porcupine.CheckOperations(kvModel, part) {
				continue
			}
			sort.Slice(part, func(i, j int) bool { return part[i].Call < part[j].Call })
			for _, op := range part {
				t.Logf("[%8.3fms %8.3fms] c%d %s", float64(op.Call)/1e6, float64(op.Return)/1e6, op.ClientId, kvModel.DescribeOperation(op.Input, op.Output))
			}
			break
		}
		f, _ := writeVisualization(t, info)
		t.Fatalf("history is not linearizable (%v); visualization: %s", res, f)
	}
	t.Logf("%d operations on %d owners: linearizable", len(history), len(owners))
}

// randomOp runs one random operation on o: half reads, 40 % puts of value,
// 10 % removes. A read of a missing key is a result, not an error.
func randomOp(r *rand.Rand, o *testOwner, keys []string, value string, timeout time.Duration) (kvInput, kvOutput, error) {
	in := kvInput{key: keys[r.IntN(len(keys))]}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out kvOutput
	var err error
	switch p := r.IntN(10); {
	case p < 5:
		in.op = "get"
		var h *kv.Holder
		h, err = o.node.Get(ctx, in.key)
		if err == nil {
			out = kvOutput{value: string(h.Bytes()), found: true}
			h.Close()
		} else if isNotFound(err) {
			err = nil
		}
	case p < 9:
		in.op, in.value = "put", value
		_, err = o.node.Put(ctx, in.key, []byte(in.value), kv.PutOptions{})
	default:
		in.op = "remove"
		err = o.node.Remove(ctx, in.key)
	}
	return in, out, err
}

func isNotFound(err error) bool {
	return err != nil && errorsIs(err, kv.ErrNotFound)
}

func writeVisualization(t *testing.T, info porcupine.LinearizationInfo) (string, error) {
	path := t.TempDir() + "/history.html"
	f, err := createFile(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return path, porcupine.Visualize(kvModel, info, f)
}
