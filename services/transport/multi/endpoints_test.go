package multi

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEndpointsRoundTrip(t *testing.T) {
	e := Endpoints{"tcp": "10.0.0.1:7200", "quic": "10.0.0.1:7201", "websocket": "[::1]:7202"}
	s, err := Encode(e)
	require.NoError(t, err)
	require.Equal(t, "quic=10.0.0.1:7201,tcp=10.0.0.1:7200,websocket=[::1]:7202", s)
	back, err := Parse(s)
	require.NoError(t, err)
	require.Equal(t, e, back)
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Endpoints
		err  bool
	}{
		{in: "10.0.0.1:7200", want: Endpoints{"tcp": "10.0.0.1:7200"}},
		{in: "[::1]:1", want: Endpoints{"tcp": "[::1]:1"}},
		{in: "ucx=h:1", want: Endpoints{"ucx": "h:1"}},
		{in: "", err: true},
		{in: "tcp=a:1,tcp=b:2", err: true},
		{in: "tcp=a:1,", err: true},
		{in: "=a:1", err: true},
		{in: "tcp=", err: true},
		{in: "a:1,b:2", err: true},
	} {
		got, err := Parse(tc.in)
		if tc.err {
			require.ErrorIs(t, err, ErrBadEndpoints, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
	_, err := Encode(Endpoints{"tcp": "a,b"})
	require.ErrorIs(t, err, ErrBadEndpoints)
}

// FuzzEndpoints: whatever Parse accepts encodes to a string that parses
// back to the same map, and Encode's output always parses.
func FuzzEndpoints(f *testing.F) {
	for _, s := range []string{"10.0.0.1:7200", "tcp=a:1,quic=a:2", "websocket=ws://h:1/p", "x=y=z", ",", "a=b,,c=d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		if err != nil {
			return
		}
		enc, err := Encode(e)
		if err != nil {
			// Parse takes a value holding '=' after the first, Encode too:
			// nothing Parse accepts may be unencodable.
			t.Fatalf("Parse(%q) = %v, which Encode refuses: %v", s, e, err)
		}
		back, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse(Encode(%v)) = %q: %v", e, enc, err)
		}
		if len(back) != len(e) {
			t.Fatalf("round trip %v -> %q -> %v", e, enc, back)
		}
		for k, v := range e {
			if back[k] != v {
				t.Fatalf("round trip %v -> %q -> %v", e, enc, back)
			}
		}
	})
}
