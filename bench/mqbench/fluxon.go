package mqbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fluxon-dev/fluxon"
	"github.com/fluxon-dev/fluxon/services/mq"
)

// Fluxon is fluxon's MQ: an MPMC channel; every producer and consumer has
// its own *fluxon.Client attached to the local owner through shared memory.
type Fluxon struct {
	ClusterName, SharedFilePath string
	Logger                      *slog.Logger
	// PID is `fluxon up`'s (owner and embedded etcd).
	PID int
}

// ServerPID is `fluxon up`'s pid.
func (f *Fluxon) ServerPID() int { return f.PID }

// Name is the system's column name.
func (f *Fluxon) Name() string { return "fluxon" }

// Prefetch is how many messages a fluxon consumer reads ahead in a cell:
// the cell's backlog shared by its consumers, at least two batches.
func (c Cell) Prefetch() int { return max(2*c.Batch, c.Backlog/c.Consumers) }

// Open binds the consumers, then the producers, each on a client of its own.
func (f *Fluxon) Open(ctx context.Context, c Cell, id string) ([]Producer, []Consumer, func() error, error) {
	name := "mqbench-" + id
	reg := prometheus.NewRegistry()
	cfg := mq.Config{TTL: 30 * time.Second, Logger: f.Logger, Registerer: reg,
		// The harness bounds the backlog; the channel's exact capacity
		// sits above it so that it never blocks first.
		Capacity: int64(c.Backlog) * 2}
	var ps []Producer
	var cs []Consumer
	closeAll := func() error {
		var errs []error
		for _, p := range ps {
			errs = append(errs, p.Close())
		}
		for _, k := range cs {
			errs = append(errs, k.Close())
		}
		return errors.Join(errs...)
	}
	open := func(role mq.Role, i int) (*fluxon.Client, *mq.Chan, error) {
		cl, err := fluxon.Open(ctx, fluxon.Config{ClusterName: f.ClusterName, SharedFilePath: f.SharedFilePath, Name: fmt.Sprintf("mqbench-%s%d", role, i)})
		if err != nil {
			return nil, nil, err
		}
		ccfg := cfg
		ccfg.ID = fmt.Sprintf("%s%d", role, i)
		ccfg.Prefetch = c.Prefetch()
		ch, err := mq.NewOrBind(ctx, cl, name, ccfg, mq.MPMC, role)
		if err != nil {
			cl.Close()
			return nil, nil, err
		}
		return cl, ch, nil
	}
	for i := range c.Consumers {
		cl, ch, err := open(mq.Consumer, i)
		if err != nil {
			return nil, nil, nil, errors.Join(err, closeAll())
		}
		cs = append(cs, &fluxonConsumer{cl: cl, ch: ch, batch: c.Batch, prefetch: c.Prefetch()})
	}
	for i := range c.Producers {
		cl, ch, err := open(mq.Producer, i)
		if err != nil {
			return nil, nil, nil, errors.Join(err, closeAll())
		}
		ps = append(ps, &fluxonProducer{cl: cl, ch: ch, window: c.Window})
	}
	return ps, cs, func() error { return nil }, nil
}

type fluxonProducer struct {
	cl      *fluxon.Client
	ch      *mq.Chan
	window  int
	pending []mq.Pending
	closed  bool
}

func (p *fluxonProducer) Send(ctx context.Context, data []byte) error {
	if len(p.pending) >= p.window {
		if err := p.pending[0].Wait(ctx); err != nil {
			return err
		}
		p.pending = p.pending[1:]
	}
	pd, err := p.ch.PutAsync(ctx, data)
	if err != nil {
		return err
	}
	p.pending = append(p.pending, pd)
	return nil
}

func (p *fluxonProducer) Flush(ctx context.Context) error {
	for _, pd := range p.pending {
		if err := pd.Wait(ctx); err != nil {
			return err
		}
	}
	p.pending = nil
	return nil
}

func (p *fluxonProducer) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(p.ch.Close(ctx), p.cl.Close())
}

type fluxonConsumer struct {
	cl              *fluxon.Client
	ch              *mq.Chan
	batch, prefetch int
	closed          bool
}

// receiveWait is how long a Receive waits for the first message (both
// systems).
const receiveWait = 100 * time.Millisecond

func (k *fluxonConsumer) Receive(ctx context.Context, fn func([]byte)) (int, error) {
	msgs, err := k.ch.Get(ctx, k.batch, receiveWait, k.prefetch)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		return 0, err
	}
	for _, m := range msgs {
		fn(m.Data)
	}
	return len(msgs), k.ch.Ack(msgs...)
}

func (k *fluxonConsumer) Close() error {
	if k.closed {
		return nil
	}
	k.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(k.ch.Close(ctx), k.cl.Close())
}
