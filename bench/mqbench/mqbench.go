// Package mqbench is the message-queue benchmark of issue 6: the same
// producers and consumers, as goroutines of one process, drive a fluxon MQ
// channel and a NATS JetStream stream in turn, cell by cell of a matrix of
// producer→consumer counts and message sizes. Every message carries its
// producer, its sequence number and its send time; every delivery is
// counted, so that losses and duplicates show in the table next to the
// throughput and the end-to-end latency.
package mqbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fluxon-dev/fluxon/bench/benchenv"
	"github.com/fluxon-dev/fluxon/bench/kvbench"
)

// Cell is one run: P producers, C consumers, Messages messages of Size
// bytes in all.
type Cell struct {
	Producers, Consumers int
	Size                 int
	Messages             int
	// Window bounds the messages a producer has sent and not yet seen
	// stored (async publish).
	Window int
	// Batch is how many messages a consumer asks for at once.
	Batch int
	// Backlog bounds the messages sent and not yet received, over all
	// producers: the same bound for every system, so that neither piles an
	// unbounded backlog up in memory.
	Backlog int
}

// Key names a cell in the table.
func (c Cell) Key() string {
	return fmt.Sprintf("%d→%d %s", c.Producers, c.Consumers, kvbench.FormatSize(c.Size))
}

// Producer sends messages. Send may return before the message is stored,
// but keeps at most the cell's Window unconfirmed: when it returns, the
// message sent Window+1 sends ago is done with its buffer.
type Producer interface {
	Send(ctx context.Context, data []byte) error
	// Flush waits until every message sent is stored.
	Flush(ctx context.Context) error
	Close() error
}

// Consumer receives a batch (waiting a little for the first message),
// calls fn with each message's payload and acknowledges each. It returns
// how many it received; data must not be kept after fn returns.
type Consumer interface {
	Receive(ctx context.Context, fn func(data []byte)) (int, error)
	Close() error
}

// System is a message queue under test.
type System interface {
	Name() string
	// ServerPID is the server process whose CPU time a run reports.
	ServerPID() int
	// Open makes a fresh channel (stream) for the cell, with its producers
	// and consumers bound and ready; cleanup removes it.
	Open(ctx context.Context, c Cell, id string) (ps []Producer, cs []Consumer, cleanup func() error, err error)
}

// Header of every payload: send time (unix ns), producer, sequence.
const headerLen = 8 + 4 + 8

// MinSize is the smallest message: the header.
const MinSize = headerLen

func stamp(b []byte, prod int, seq uint64, at time.Time) {
	binary.LittleEndian.PutUint64(b, uint64(at.UnixNano()))
	binary.LittleEndian.PutUint32(b[8:], uint32(prod))
	binary.LittleEndian.PutUint64(b[12:], seq)
}

func parse(b []byte) (prod int, seq uint64, at int64, ok bool) {
	if len(b) < headerLen {
		return 0, 0, 0, false
	}
	return int(binary.LittleEndian.Uint32(b[8:])), binary.LittleEndian.Uint64(b[12:]), int64(binary.LittleEndian.Uint64(b)), true
}

// Result is one system's run of one cell.
type Result struct {
	System  string
	Cell    Cell
	Elapsed time.Duration // first send to last first-time receipt
	Unique  int           // distinct messages received
	Dups    int           // receipts beyond the first
	Lost    int           // sent and never received
	Bad     int           // payloads that did not parse or had the wrong size
	P50     time.Duration
	P99     time.Duration
	// ServerCPU and ClientCPU: CPU time of the server process and of this
	// one (producers, consumers, client libraries) during the run.
	ServerCPU, ClientCPU time.Duration
	Err                  error
}

// CPUPerMsg is the CPU time, server and client, per distinct message.
func (r Result) CPUPerMsg() (server, client time.Duration) {
	if r.Unique == 0 {
		return 0, 0
	}
	return r.ServerCPU / time.Duration(r.Unique), r.ClientCPU / time.Duration(r.Unique)
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// MsgsPerSec is the delivered rate.
func (r Result) MsgsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Unique) / r.Elapsed.Seconds()
}

// MBPerSec is the delivered payload rate in MB/s (10^6 bytes).
func (r Result) MBPerSec() float64 { return r.MsgsPerSec() * float64(r.Cell.Size) / 1e6 }

// tally counts receipts per (producer, sequence).
type tally struct {
	counts [][]atomic.Uint32
}

func newTally(c Cell) *tally {
	t := &tally{counts: make([][]atomic.Uint32, c.Producers)}
	for p := range t.counts {
		t.counts[p] = make([]atomic.Uint32, perProducer(c, p))
	}
	return t
}

// mark counts a receipt; first says whether it is the first one; ok false
// for a message that was never sent.
func (t *tally) mark(prod int, seq uint64) (first, ok bool) {
	if prod < 0 || prod >= len(t.counts) || seq >= uint64(len(t.counts[prod])) {
		return false, false
	}
	return t.counts[prod][seq].Add(1) == 1, true
}

func (t *tally) summary() (unique, dups, lost int) {
	for _, cs := range t.counts {
		for i := range cs {
			switch n := int(cs[i].Load()); n {
			case 0:
				lost++
			default:
				unique++
				dups += n - 1
			}
		}
	}
	return unique, dups, lost
}

// perProducer is how many messages producer p sends: Messages shared out,
// the first ones taking the remainder.
func perProducer(c Cell, p int) int {
	n := c.Messages / c.Producers
	if p < c.Messages%c.Producers {
		n++
	}
	return n
}

// StallTimeout ends a run in which no new message arrived for this long:
// what was not received by then counts as lost.
var StallTimeout = 30 * time.Second

// settle is the pause between binding and sending, for both systems: MPMC
// consumers share the streams out once they see every member.
const settle = time.Second

// Run runs one cell on one system.
func Run(ctx context.Context, sys System, c Cell, id string) Result {
	res := Result{System: sys.Name(), Cell: c}
	if c.Size < MinSize {
		res.Err = fmt.Errorf("message size %d is under the %d-byte header", c.Size, MinSize)
		return res
	}
	ps, cs, cleanup, err := sys.Open(ctx, c, id)
	if err != nil {
		res.Err = err
		return res
	}
	defer func() {
		var errs []error
		for _, p := range ps {
			errs = append(errs, p.Close())
		}
		for _, k := range cs {
			errs = append(errs, k.Close())
		}
		errs = append(errs, cleanup())
		if err := errors.Join(errs...); err != nil && res.Err == nil {
			res.Err = fmt.Errorf("closing: %w", err)
		}
	}()
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		res.Err = ctx.Err()
		return res
	}

	t := newTally(c)
	credits := make(chan struct{}, c.Backlog)
	var (
		unique   atomic.Int64
		lastRecv atomic.Int64
		bad      atomic.Int64
		errMu    sync.Mutex
		runErr   error
	)
	fail := func(err error) {
		errMu.Lock()
		if runErr == nil {
			runErr = err
		}
		errMu.Unlock()
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	lats := make([][]int64, len(cs))
	var cwg sync.WaitGroup
	for i, k := range cs {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			mine := make([]int64, 0, c.Messages/len(cs)+1)
			defer func() { lats[i] = mine }()
			for rctx.Err() == nil {
				_, err := k.Receive(rctx, func(data []byte) {
					now := time.Now().UnixNano()
					prod, seq, at, ok := parse(data)
					if ok && len(data) != c.Size {
						ok = false
					}
					first := false
					if ok {
						first, ok = t.mark(prod, seq)
					}
					if !ok {
						bad.Add(1)
						return
					}
					if !first {
						return
					}
					mine = append(mine, now-at)
					lastRecv.Store(now)
					<-credits
					if unique.Add(1) == int64(c.Messages) {
						stop()
					}
				})
				if err != nil && rctx.Err() == nil {
					fail(fmt.Errorf("consumer %d: %w", i, err))
					stop()
				}
			}
		}()
	}

	// Each producer's payload buffers, filled before the clock starts.
	bufs := make([][][]byte, len(ps))
	for i := range bufs {
		bufs[i] = make([][]byte, c.Window+1)
		for j := range bufs[i] {
			b := make([]byte, c.Size)
			for k := headerLen; k < c.Size; k++ {
				b[k] = byte(k)
			}
			bufs[i][j] = b
		}
	}
	srv0, _ := benchenv.CPUTime(sys.ServerPID())
	cli0 := selfCPU()
	start := time.Now()
	var pwg sync.WaitGroup
	for i, p := range ps {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			bufs := bufs[i]
			n := perProducer(c, i)
			for seq := range n {
				select {
				case credits <- struct{}{}:
				case <-rctx.Done():
					return
				}
				b := bufs[seq%len(bufs)]
				stamp(b, i, uint64(seq), time.Now())
				if err := p.Send(rctx, b); err != nil {
					if rctx.Err() == nil {
						fail(fmt.Errorf("producer %d, message %d: %w", i, seq, err))
						stop()
					}
					return
				}
			}
			if err := p.Flush(rctx); err != nil && rctx.Err() == nil {
				fail(fmt.Errorf("producer %d flush: %w", i, err))
				stop()
			}
		}()
	}

	// Watch for a stall: no new message for StallTimeout.
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		last, since := int64(-1), time.Now()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-tick.C:
			}
			if n := unique.Load(); n != last {
				last, since = n, time.Now()
			} else if time.Since(since) > StallTimeout {
				fail(fmt.Errorf("stalled: no new message for %s with %d of %d received", StallTimeout, n, c.Messages))
				stop()
				return
			}
		}
	}()
	pwg.Wait()
	cwg.Wait()
	stop()
	<-watchDone
	srv1, _ := benchenv.CPUTime(sys.ServerPID())
	res.ServerCPU, res.ClientCPU = srv1-srv0, selfCPU()-cli0

	res.Unique, res.Dups, res.Lost = t.summary()
	res.Bad = int(bad.Load())
	if l := lastRecv.Load(); l > 0 {
		res.Elapsed = time.Unix(0, l).Sub(start)
	}
	var all []int64
	for _, l := range lats {
		all = append(all, l...)
	}
	res.P50, res.P99 = percentile(all, 0.50), percentile(all, 0.99)
	res.Err = runErr
	if res.Err == nil && ctx.Err() != nil {
		res.Err = ctx.Err()
	}
	return res
}

// percentile of ns samples (sorts them).
func percentile(ns []int64, q float64) time.Duration {
	if len(ns) == 0 {
		return 0
	}
	slices.Sort(ns)
	i := int(q * float64(len(ns)-1))
	return time.Duration(ns[i])
}
