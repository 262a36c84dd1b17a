package mqbench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// JetStream is NATS JetStream through the legacy nats.JetStreamContext API
// (nats-server 2.9 speaks it): a stream with memory storage and work-queue
// retention (a message goes once acknowledged, as fluxon deletes consumed
// batches), one durable pull consumer with explicit acks that every
// consumer goroutine pulls from (each message to one of them: MPMC). Every
// producer and consumer has its own connection.
type JetStream struct {
	URL string
	PID int
}

// ServerPID is nats-server's pid.
func (j *JetStream) ServerPID() int { return j.PID }

// Name is the system's column name.
func (j *JetStream) Name() string { return "jetstream" }

const natsDurable = "bench"

// natsMaxWaiting is the pull requests the server keeps waiting (its
// default): a FetchBatch that returned at its MaxWait leaves its request
// pending a little longer, so quick re-fetches pile a few up.
const natsMaxWaiting = 512

// transient says whether a pull error only means "pull again": no
// message in time, or too many requests waiting at the server (a 409 the
// server sends when pull requests pile up faster than they expire).
func transient(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || strings.Contains(err.Error(), "Exceeded MaxWaiting")
}

// Open makes the stream and the durable consumer, then the consumers'
// and producers' connections.
func (j *JetStream) Open(ctx context.Context, c Cell, id string) ([]Producer, []Consumer, func() error, error) {
	stream, subj := "MQBENCH_"+id, "mqbench."+id
	admin, err := nats.Connect(j.URL, nats.Name("mqbench-admin"))
	if err != nil {
		return nil, nil, nil, err
	}
	ajs, err := admin.JetStream()
	if err != nil {
		admin.Close()
		return nil, nil, nil, err
	}
	cleanup := func() error {
		defer admin.Close()
		err := ajs.DeleteStream(stream)
		if errors.Is(err, nats.ErrStreamNotFound) {
			err = nil
		}
		return err
	}
	if _, err := ajs.AddStream(&nats.StreamConfig{Name: stream, Subjects: []string{subj},
		Storage: nats.MemoryStorage, Retention: nats.WorkQueuePolicy}, nats.Context(ctx)); err != nil {
		return nil, nil, nil, errors.Join(fmt.Errorf("creating stream: %w", err), cleanup())
	}
	if _, err := ajs.AddConsumer(stream, &nats.ConsumerConfig{Durable: natsDurable, AckPolicy: nats.AckExplicitPolicy,
		AckWait: time.Minute, MaxAckPending: -1, MaxWaiting: natsMaxWaiting}, nats.Context(ctx)); err != nil {
		return nil, nil, nil, errors.Join(fmt.Errorf("creating consumer: %w", err), cleanup())
	}
	var ps []Producer
	var cs []Consumer
	closeAll := func() error {
		for _, p := range ps {
			p.Close()
		}
		for _, k := range cs {
			k.Close()
		}
		return cleanup()
	}
	for i := range c.Consumers {
		nc, err := nats.Connect(j.URL, nats.Name(fmt.Sprintf("mqbench-consumer%d", i)))
		if err != nil {
			return nil, nil, nil, errors.Join(err, closeAll())
		}
		js, err := nc.JetStream()
		if err == nil {
			var sub *nats.Subscription
			sub, err = js.PullSubscribe(subj, natsDurable, nats.Bind(stream, natsDurable))
			if err == nil {
				// A fetch of Batch messages must never count as a slow consumer.
				err = sub.SetPendingLimits(-1, -1)
				cs = append(cs, &natsConsumer{nc: nc, sub: sub, batch: c.Batch})
			}
		}
		if err != nil {
			nc.Close()
			return nil, nil, nil, errors.Join(err, closeAll())
		}
	}
	for i := range c.Producers {
		nc, err := nats.Connect(j.URL, nats.Name(fmt.Sprintf("mqbench-producer%d", i)))
		if err != nil {
			return nil, nil, nil, errors.Join(err, closeAll())
		}
		p := &natsProducer{nc: nc, subj: subj}
		p.js, err = nc.JetStream(nats.PublishAsyncMaxPending(c.Window),
			nats.PublishAsyncErrHandler(func(_ nats.JetStream, _ *nats.Msg, err error) { p.failed.Add(1); p.lastErr.Store(&err) }))
		if err != nil {
			nc.Close()
			return nil, nil, nil, errors.Join(err, closeAll())
		}
		ps = append(ps, p)
	}
	return ps, cs, closeAll, nil
}

type natsProducer struct {
	nc      *nats.Conn
	js      nats.JetStreamContext
	subj    string
	failed  atomic.Int64
	lastErr atomic.Pointer[error]
}

// Send publishes asynchronously; PublishAsyncMaxPending holds it while the
// window is full (the payload is copied into the connection's buffer
// before PublishAsync returns). A stall past StallWait is waited out.
func (p *natsProducer) Send(ctx context.Context, data []byte) error {
	for {
		_, err := p.js.PublishAsync(p.subj, data, nats.StallWait(time.Second))
		if !errors.Is(err, nats.ErrTooManyStalledMsgs) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func (p *natsProducer) Flush(ctx context.Context) error {
	select {
	case <-p.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	if n := p.failed.Load(); n > 0 {
		return fmt.Errorf("%d publishes failed, the last: %v", n, *p.lastErr.Load())
	}
	return nil
}

func (p *natsProducer) Close() error {
	p.nc.Close()
	return nil
}

type natsConsumer struct {
	nc    *nats.Conn
	sub   *nats.Subscription
	batch int
}

// Receive pulls up to batch messages with FetchBatch (they are handed on as
// they arrive, as fluxon's Get hands on what is ready) and acknowledges
// each with Ack: an explicit ack the server is not asked to confirm, as
// fluxon's Ack commits in the background.
func (k *natsConsumer) Receive(ctx context.Context, fn func([]byte)) (int, error) {
	b, err := k.sub.FetchBatch(k.batch, nats.MaxWait(receiveWait))
	if err != nil {
		if ctx.Err() != nil || transient(err) {
			return 0, nil
		}
		return 0, err
	}
	n := 0
	for m := range b.Messages() {
		fn(m.Data)
		if err := m.Ack(); err != nil {
			return n, err
		}
		n++
	}
	if err := b.Error(); err != nil && !transient(err) && ctx.Err() == nil {
		return n, err
	}
	return n, nil
}

func (k *natsConsumer) Close() error {
	k.nc.Close()
	return nil
}
