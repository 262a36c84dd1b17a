package mq

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

func TestBatchRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 50).Draw(t, "n")
		first := rapid.Uint64Range(0, 1<<40).Draw(t, "first")
		var in []*outMsg
		for i := 0; i < n; i++ {
			kind := byte(rapid.IntRange(0, 1).Draw(t, "kind"))
			data := rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, "data")
			in = append(in, &outMsg{kind: kind, at: time.Unix(0, rapid.Int64Range(0, 1<<62).Draw(t, "at")), data: data})
		}
		b := encodeBatch(first, in)
		got, msgs, err := decodeBatch(b, "p", 7)
		require.NoError(t, err)
		require.Equal(t, first, got)
		require.Len(t, msgs, n)
		for i, m := range msgs {
			require.Equal(t, first+uint64(i), m.Offset)
			require.Equal(t, in[i].kind, m.kind)
			require.True(t, bytes.Equal(in[i].data, m.Data))
			require.Equal(t, in[i].at.UnixNano(), m.ProducedAt.UnixNano())
			require.EqualValues(t, 7, m.batch)
		}
		// Any truncation is an error, never a panic or a short read.
		cut := rapid.IntRange(0, len(b)-1).Draw(t, "cut")
		_, _, err = decodeBatch(b[:cut], "p", 7)
		require.ErrorIs(t, err, ErrBadBatch)
	})
}

// FuzzDecodeBatch: whatever bytes a batch key holds (another program wrote
// it, or it is corrupt), decoding fails cleanly or yields messages that lie
// within the object.
func FuzzDecodeBatch(f *testing.F) {
	f.Add(encodeBatch(3, []*outMsg{{data: []byte("hello")}, {kind: kindDict, data: []byte{1, 2, 3}}}))
	f.Add([]byte("FXMQ"))
	f.Add(append([]byte("FXMQ\x01\x00\x00\x00"), make([]byte, 12)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, msgs, err := decodeBatch(b, "p", 0)
		if err != nil {
			if !errors.Is(err, ErrBadBatch) {
				t.Fatalf("error not ErrBadBatch: %v", err)
			}
			return
		}
		total := batchHeader
		for _, m := range msgs {
			total += msgHeader + len(m.Data)
		}
		if total != len(b) {
			t.Fatalf("messages cover %d of %d bytes", total, len(b))
		}
	})
}

func TestAssignBalancesByWeight(t *testing.T) {
	streams := []string{"a", "b", "c", "d", "e"}
	weights := map[string]int{"a": 4, "b": 1, "c": 1, "d": 1, "e": 1}
	got := assign(streams, weights, []string{"c1", "c2"})
	load := map[string]int{}
	for s, c := range got {
		load[c] += weights[s]
	}
	assert.Equal(t, map[string]int{"c1": 4, "c2": 4}, load, "%v", got)
	// Everyone computes the same, whatever order they list streams in.
	again := assign([]string{"e", "d", "c", "b", "a"}, weights, []string{"c1", "c2"})
	assert.Equal(t, got, again)
	// Each stream goes to exactly one consumer; none with no consumers.
	assert.Len(t, got, 5)
	assert.Empty(t, assign(streams, weights, nil))
	// 16 equal producers over 2 consumers: 8 each.
	var many []string
	for i := 0; i < 16; i++ {
		many = append(many, fmt.Sprintf("p%02d", i))
	}
	load = map[string]int{}
	for _, c := range assign(many, nil, []string{"x", "y"}) {
		load[c]++
	}
	assert.Equal(t, map[string]int{"x": 8, "y": 8}, load)
}
