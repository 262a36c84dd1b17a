package kvbench

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// A Result crosses processes as JSON: the multi-host benchmark runs one
// worker process per host and merges what they print (MergeHosts).

// recorderWire is a Recorder on the wire: only the non-empty buckets, as
// [bucket, count] pairs, so a run of a few latencies stays a few bytes.
type recorderWire struct {
	Buckets  [][2]uint64 `json:"buckets"`
	Count    uint64      `json:"count"`
	Sum      float64     `json:"sum"`
	Min, Max int64
}

// ErrWire reports JSON that does not describe a Recorder or Result.
var ErrWire = errors.New("kvbench: bad result encoding")

// MarshalJSON implements json.Marshaler.
func (r *Recorder) MarshalJSON() ([]byte, error) {
	w := recorderWire{Count: r.count, Sum: r.sum, Min: r.min, Max: r.max}
	for i, c := range r.counts {
		if c > 0 {
			w.Buckets = append(w.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON implements json.Unmarshaler. The recorder is replaced, not
// added to.
func (r *Recorder) UnmarshalJSON(b []byte) error {
	var w recorderWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = *NewRecorder()
	var n uint64
	for _, bc := range w.Buckets {
		if bc[0] >= numBuckets {
			return fmt.Errorf("%w: latency bucket %d of %d", ErrWire, bc[0], numBuckets)
		}
		r.counts[bc[0]] += bc[1]
		n += bc[1]
	}
	if n != w.Count {
		return fmt.Errorf("%w: buckets hold %d latencies, count says %d", ErrWire, n, w.Count)
	}
	r.count, r.sum = w.Count, w.Sum
	if w.Count > 0 {
		r.min, r.max = w.Min, w.Max
	}
	return nil
}

// resultWire is a Result on the wire; the error travels as its message.
type resultWire struct {
	Workload, Target string
	Mode             GetMode
	Threads, Round   int

	Ops, Gets, Puts, Misses, Bytes int64
	Elapsed                        time.Duration
	ServerCores                    float64

	Latency, GetLatency, PutLatency *Recorder
	Err                             string `json:",omitempty"`
}

// MarshalJSON implements json.Marshaler.
func (r Result) MarshalJSON() ([]byte, error) {
	w := resultWire{Workload: r.Workload, Target: r.Target, Mode: r.Mode, Threads: r.Threads, Round: r.Round,
		Ops: r.Ops, Gets: r.Gets, Puts: r.Puts, Misses: r.Misses, Bytes: r.Bytes, Elapsed: r.Elapsed,
		ServerCores: r.ServerCores, Latency: orEmpty(r.Latency), GetLatency: orEmpty(r.GetLatency), PutLatency: orEmpty(r.PutLatency)}
	if r.Err != nil {
		w.Err = r.Err.Error()
	}
	return json.Marshal(w)
}

// UnmarshalJSON implements json.Unmarshaler. An error comes back as a plain
// error with the same message (errors.Is against sentinels does not cross
// processes).
func (r *Result) UnmarshalJSON(b []byte) error {
	var w resultWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Result{Workload: w.Workload, Target: w.Target, Mode: w.Mode, Threads: w.Threads, Round: w.Round,
		Ops: w.Ops, Gets: w.Gets, Puts: w.Puts, Misses: w.Misses, Bytes: w.Bytes, Elapsed: w.Elapsed,
		ServerCores: w.ServerCores, Latency: orEmpty(w.Latency), GetLatency: orEmpty(w.GetLatency), PutLatency: orEmpty(w.PutLatency)}
	if w.Err != "" {
		r.Err = errors.New(w.Err)
	}
	return nil
}

func orEmpty(r *Recorder) *Recorder {
	if r == nil {
		return NewRecorder()
	}
	return r
}

// MergeHosts merges the results of one run that several hosts made at the
// same time (one per host, same workload, target and mode) into one: counts,
// bytes and threads add up, latencies merge, and Elapsed is the longest
// host's measured time, so OpsPerSec is every host's operations over the
// window they ran in together. The first host's error, if any, is kept,
// prefixed with the host. Rounds combine afterwards with Combine.
func MergeHosts(hosts []Result) (Result, error) {
	if len(hosts) == 0 {
		return Result{}, errors.New("kvbench: no host results to merge")
	}
	m := hosts[0]
	m.Threads, m.Ops, m.Gets, m.Puts, m.Misses, m.Bytes, m.Elapsed, m.ServerCores, m.Err = 0, 0, 0, 0, 0, 0, 0, 0, nil
	m.Latency, m.GetLatency, m.PutLatency = NewRecorder(), NewRecorder(), NewRecorder()
	for i, h := range hosts {
		if h.Workload != m.Workload || h.Target != m.Target || h.Mode != m.Mode || h.Round != m.Round {
			return Result{}, fmt.Errorf("kvbench: host %d ran %s/%s/%s round %d, not %s/%s/%s round %d",
				i+1, h.Workload, h.Target, h.Mode, h.Round, m.Workload, m.Target, m.Mode, m.Round)
		}
		m.Threads += h.Threads
		m.Ops += h.Ops
		m.Gets += h.Gets
		m.Puts += h.Puts
		m.Misses += h.Misses
		m.Bytes += h.Bytes
		m.Elapsed = max(m.Elapsed, h.Elapsed)
		m.Latency.Merge(h.Latency)
		m.GetLatency.Merge(h.GetLatency)
		m.PutLatency.Merge(h.PutLatency)
		if h.Err != nil && m.Err == nil {
			m.Err = fmt.Errorf("host %d: %w", i+1, h.Err)
		}
	}
	return m, nil
}
