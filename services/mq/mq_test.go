package mq_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxon-dev/fluxon/control/meta/metatest"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/mq"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "bind":
		os.Exit(childBind())
	case "consumer":
		os.Exit(childConsumer())
	}
	os.Exit(m.Run())
}

// tag is what producer p puts as its i-th message.
func tag(p, i int) string { return fmt.Sprintf("p%d/%d", p, i) }

// TestOrderAndAccounting: 4 producers and 3 consumers (joining at
// different moments, so streams move between them), every message tagged:
// each tag is delivered exactly once, in each producer's order, and none is
// marked redelivered.
func TestOrderAndAccounting(t *testing.T) {
	e := newEnv(t)
	const producers, consumers, each = 4, 3, 1500
	cfg := e.cfg()
	// A consumer whose lease ends counts as crashed (its streams move on
	// with unacknowledged messages): give a loaded machine room.
	cfg.MemberTTL = 5 * time.Second
	var wg sync.WaitGroup
	type got struct {
		consumer int
		m        *mq.Message
	}
	var mu sync.Mutex
	var all []got
	stop := make(chan struct{})
	for ci := 0; ci < consumers; ci++ {
		ch := bind(t, e.client(t), "acct", cfg, mq.MPMC, mq.Consumer)
		wg.Add(1)
		go func(ci int, ch *mq.Chan) {
			defer wg.Done()
			for {
				msgs, err := ch.Get(context.Background(), 64, 50*time.Millisecond, 0)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, m := range msgs {
					all = append(all, got{ci, m})
				}
				mu.Unlock()
				require.NoError(t, ch.Ack(msgs...))
				select {
				case <-stop:
					if len(msgs) == 0 {
						return
					}
				default:
				}
			}
		}(ci, ch)
		time.Sleep(100 * time.Millisecond)
	}
	var pwg sync.WaitGroup
	for p := 0; p < producers; p++ {
		ch := bind(t, e.client(t), "acct", cfg, mq.MPMC, mq.Producer)
		pwg.Add(1)
		go func(p int, ch *mq.Chan) {
			defer pwg.Done()
			var pend []mq.Pending
			for i := 0; i < each; i++ {
				pd, err := ch.PutAsync(context.Background(), []byte(tag(p, i)))
				require.NoError(t, err)
				pend = append(pend, pd)
			}
			for _, pd := range pend {
				require.NoError(t, pd.Wait(ctxT(t, 30*time.Second)))
			}
		}(p, ch)
	}
	pwg.Wait()
	metatest.WaitFor(t, 60*time.Second, "every message delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(all) >= producers*each
	})
	time.Sleep(300 * time.Millisecond) // a duplicate would show up by now
	close(stop)
	wg.Wait()

	seen := map[string]int{}
	last := map[[2]string]uint64{}
	for _, g := range all {
		s := string(g.m.Data)
		seen[s]++
		assert.False(t, g.m.Redelivered, "%s marked redelivered without a crash", s)
		p, i, _ := strings.Cut(s, "/")
		assert.Equal(t, "p", p[:1])
		n, _ := strconv.Atoi(i)
		assert.Equal(t, uint64(n), g.m.Offset, "offset of %s", s)
		k := [2]string{strconv.Itoa(g.consumer), g.m.Producer}
		if prev, ok := last[k]; ok {
			assert.Greater(t, g.m.Offset, prev, "consumer %d got %s out of order", g.consumer, s)
		}
		last[k] = g.m.Offset
	}
	for p := 0; p < producers; p++ {
		for i := 0; i < each; i++ {
			assert.Equal(t, 1, seen[tag(p, i)], "deliveries of %s", tag(p, i))
		}
	}
	assert.Len(t, seen, producers*each)
}

// TestExactCapacity: with capacity 10 and the Fail policy, producers get
// exactly 10 messages in, however they interleave; consuming 3 makes room
// for exactly 3 more; with Block, a Put waits for room until its context
// ends, and goes through once a consumer acknowledges.
func TestExactCapacity(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg()
	cfg.Capacity, cfg.FullPolicy = 10, mq.Fail
	p1 := bind(t, e.client(t), "cap", cfg, mq.MPSC, mq.Producer)
	p2 := bind(t, e.client(t), "cap", cfg, mq.MPSC, mq.Producer)
	ctx := ctxT(t, 30*time.Second)
	fill := func() int {
		n := 0
		open := map[*mq.Chan]bool{p1: true, p2: true}
		for i := 0; len(open) > 0; i++ {
			p := p1
			if i%2 == 1 {
				p = p2
			}
			if !open[p] {
				continue
			}
			err := p.Put(ctx, []byte("x"))
			if errors.Is(err, mq.ErrChannelFull) {
				delete(open, p)
				continue
			}
			require.NoError(t, err)
			n++
		}
		return n
	}
	assert.Equal(t, 10, fill(), "messages accepted into an empty channel of capacity 10")
	st, err := p1.Stat(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 10, st.Backlog)

	c := bind(t, e.client(t), "cap", cfg, mq.MPSC, mq.Consumer)
	msgs := getN(t, c, 3)
	require.NoError(t, c.Ack(msgs...))
	metatest.WaitFor(t, 10*time.Second, "the 3 acknowledgements committed", func() bool {
		st, err := p1.Stat(ctx)
		return err == nil && st.Backlog == 7
	})
	assert.Equal(t, 3, fill(), "messages accepted after 3 were consumed")

	// Block: waits until its context ends...
	cfg.FullPolicy = mq.Block
	pb := bind(t, e.client(t), "cap", cfg, mq.MPSC, mq.Producer)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, pb.Put(short, []byte("y")), context.DeadlineExceeded)
	// ...or until a consumer makes room.
	done := make(chan error, 1)
	go func() { done <- pb.Put(ctx, []byte("y")) }()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Put into a full channel returned %v before any room was made", err)
	default:
	}
	msgs = getN(t, c, 1)
	require.NoError(t, c.Ack(msgs...))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("a blocked Put did not go through after a consumer made room")
	}
	st, err = pb.Stat(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 10, st.Backlog)
}

// TestCapacityNeverExceeded: 4 producers pushing as fast as they can into a
// channel of capacity 50 while a consumer drains it: every sample of the
// channel's state (one etcd revision) shows at most 50 unconsumed.
func TestCapacityNeverExceeded(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg()
	cfg.Capacity = 50
	ctx := ctxT(t, 60*time.Second)
	const producers, each = 4, 300
	var wg sync.WaitGroup
	var ps []*mq.Chan
	for p := 0; p < producers; p++ {
		ch := bind(t, e.client(t), "capmax", cfg, mq.MPMC, mq.Producer)
		ps = append(ps, ch)
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				pd, err := ch.PutAsync(ctx, []byte(tag(p, i)))
				require.NoError(t, err)
				_ = pd
			}
			require.NoError(t, ch.Flush(ctx))
		}(p)
	}
	c := bind(t, e.client(t), "capmax", cfg, mq.MPMC, mq.Consumer)
	var maxSeen int64
	samples := 0
	got := 0
	for got < producers*each {
		msgs, err := c.Get(ctx, 7, 100*time.Millisecond, 20)
		require.NoError(t, err)
		require.NoError(t, c.Ack(msgs...))
		got += len(msgs)
		st, err := ps[0].Stat(ctx)
		require.NoError(t, err)
		maxSeen = max(maxSeen, st.Backlog)
		samples++
	}
	wg.Wait()
	assert.LessOrEqual(t, maxSeen, int64(50), "unconsumed messages over %d samples", samples)
	assert.Greater(t, maxSeen, int64(10), "the producers never filled the channel: the test proves nothing")
}

// TestTTLReclaim: a channel outlives its last member by its TTL, then it
// and its messages are gone and the unique_key binds a new chan_id; while a
// member lives it stays however long.
func TestTTLReclaim(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	cfg := e.cfg()
	cfg.TTL = 2 * time.Second
	ctx := ctxT(t, 60*time.Second)

	live, err := mq.NewOrBind(ctx, c, "kept", cfg, mq.MPSC, mq.Producer)
	require.NoError(t, err)
	time.Sleep(3 * cfg.TTL)
	again := bind(t, c, "kept", cfg, mq.MPSC, mq.Consumer)
	assert.Equal(t, live.ID(), again.ID(), "a channel with a live member was reclaimed")
	require.NoError(t, live.Close(ctx))

	p, err := mq.NewOrBind(ctx, c, "gone", cfg, mq.MPSC, mq.Producer)
	require.NoError(t, err)
	require.NoError(t, p.Put(ctx, []byte("left behind")))
	first := p.ID()
	require.NoError(t, p.Close(ctx))
	key := fmt.Sprintf("mq/%s/%s/%016x", first, p.MemberID(), 0)
	_, _, err = c.GetCopy(ctx, key)
	require.NoError(t, err, "the unconsumed message must outlive its producer for the TTL")
	metatest.WaitFor(t, 20*time.Second, "the channel reclaimed", func() bool {
		ls, err := mq.List(ctx, mq.Config{EtcdEndpoints: []string{e.etcd}, ClusterName: e.cluster})
		require.NoError(t, err)
		for _, s := range ls {
			if s.UniqueKey == "gone" {
				return false
			}
		}
		return true
	})
	metatest.WaitFor(t, 20*time.Second, "the message's lease ended", func() bool {
		_, _, err := c.GetCopy(ctx, key)
		return errors.Is(err, kv.ErrNotFound)
	})
	n := bind(t, c, "gone", cfg, mq.MPSC, mq.Consumer)
	assert.NotEqual(t, first, n.ID(), "binding a reclaimed channel's unique_key makes a new chan_id")
	msgs, err := n.Get(ctx, 10, 300*time.Millisecond, 0)
	require.NoError(t, err)
	assert.Empty(t, msgs)
}

// TestBindRace: 20 processes race NewOrBind on one unique_key: one chan_id.
func TestBindRace(t *testing.T) {
	e := newEnv(t)
	const n = 20
	out := make([]string, n)
	var wg sync.WaitGroup
	start := time.Now().Add(1500 * time.Millisecond).UnixNano()
	for i := 0; i < n; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = e.childEnv("bind", strconv.FormatInt(start, 10))
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			b, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", b)
			out[i] = strings.TrimSpace(string(b))
		}(i)
	}
	wg.Wait()
	created := 0
	for i, o := range out {
		id, how, ok := strings.Cut(o, " ")
		require.True(t, ok, "child %d said %q", i, o)
		assert.Equal(t, strings.Fields(out[0])[0], id, "child %d bound another channel", i)
		if how == "created" {
			created++
		}
	}
	assert.Equal(t, 1, created, "children that created the channel")
}

// childBind binds at the agreed moment and prints the chan_id and whether
// it created the channel (its record's creation time is the one it wrote).
func childBind() int {
	e := envFromChild()
	at, _ := strconv.ParseInt(os.Getenv(envArg), 10, 64)
	c, err := e.open()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	cfg := e.cfg()
	time.Sleep(time.Until(time.Unix(0, at)))
	ch, err := mq.NewOrBind(context.Background(), c, "race", cfg, mq.MPMC, mq.Producer)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	how := "bound"
	if ch.Created() {
		how = "created"
	}
	fmt.Println(ch.ID(), how)
	_ = ch.Close(context.Background())
	return 0
}

// TestConsumerKilledRedelivers: a consumer process gets 100 messages,
// acknowledges 40 and is killed -9. The standby consumer takes over once
// the dead one's lease ends and delivers everything from message 40 on: no
// message is lost, and the only ones delivered twice are among those the
// dead consumer held unacknowledged, marked Redelivered.
func TestConsumerKilledRedelivers(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg()
	ctx := ctxT(t, 60*time.Second)
	p := bind(t, e.client(t), "crash", cfg, mq.MPSC, mq.Producer)
	const total = 500
	for i := 0; i < total; i++ {
		_, err := p.PutAsync(ctx, []byte(tag(0, i)))
		require.NoError(t, err)
	}
	require.NoError(t, p.Flush(ctx))

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = e.childEnv("consumer", "100,40")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	require.True(t, sc.Scan(), "child said nothing")
	require.Equal(t, "ready", sc.Text())

	standby := bind(t, e.client(t), "crash", cfg, mq.MPSC, mq.Consumer)
	msgs, err := standby.Get(ctx, 10, 300*time.Millisecond, 0)
	require.NoError(t, err)
	assert.Empty(t, msgs, "an MPSC standby got messages while the first consumer lived")

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	got := drain(t, standby, total-40, 30*time.Second)
	require.Len(t, got, total-40)
	for i, m := range got {
		assert.Equal(t, tag(0, 40+i), string(m.Data))
		assert.Equal(t, m.Offset < 100, m.Redelivered, "message %d: redelivered flag", m.Offset)
	}
	st, err := standby.Stat(ctx)
	require.NoError(t, err)
	metatest.WaitFor(t, 5*time.Second, "everything committed", func() bool {
		st, err = standby.Stat(ctx)
		return err == nil && st.Backlog == 0
	})
}

// childConsumer gets N messages, acknowledges the first K, says ready once
// that is committed and waits to be killed.
func childConsumer() int {
	e := envFromChild()
	var n, k int
	fmt.Sscanf(os.Getenv(envArg), "%d,%d", &n, &k)
	c, err := e.open()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ch, err := mq.NewOrBind(context.Background(), c, "crash", e.cfg(), mq.MPSC, mq.Consumer)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var got []*mq.Message
	for len(got) < n {
		msgs, err := ch.Get(context.Background(), n-len(got), time.Second, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		got = append(got, msgs...)
	}
	if err := ch.Ack(got[:k]...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for {
		st, err := ch.Stat(context.Background())
		if err == nil && st.Producers[0].ConsumeOffset == uint64(k) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("ready")
	select {}
}

// TestClose: Put after Close is ErrProducerClosed, Get after Close is
// ErrChannelClosed; a consumer that closes with messages unacknowledged
// hands them to the next consumer; Close itself returns nil.
func TestClose(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg()
	ctx := ctxT(t, 30*time.Second)
	c := e.client(t)
	p, err := mq.NewOrBind(ctx, c, "closing", cfg, mq.MPMC, mq.Producer)
	require.NoError(t, err)
	for i := 0; i < 10; i++ {
		require.NoError(t, p.Put(ctx, []byte(tag(0, i))))
	}
	require.NoError(t, p.Close(ctx))
	require.NoError(t, p.Close(ctx), "a second Close")
	assert.ErrorIs(t, p.Put(ctx, []byte("late")), mq.ErrProducerClosed)

	c1, err := mq.NewOrBind(ctx, c, "closing", cfg, mq.MPMC, mq.Consumer)
	require.NoError(t, err)
	msgs := getN(t, c1, 4)
	require.NoError(t, c1.Ack(msgs[:2]...))
	require.NoError(t, c1.Close(ctx))
	_, err = c1.Get(ctx, 1, 0, 0)
	assert.ErrorIs(t, err, mq.ErrChannelClosed)
	assert.ErrorIs(t, c1.Put(ctx, nil), mq.ErrWrongRole)

	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	c2 := bind(t, c, "closing", cfg, mq.MPMC, mq.Consumer)
	got := drain(t, c2, 8, 10*time.Second)
	require.Len(t, got, 8)
	for i, m := range got {
		assert.Equal(t, tag(0, i+2), string(m.Data))
		assert.Equal(t, i < 2, m.Redelivered, "message %d", m.Offset)
	}
	assert.Equal(t, 2.0, metric(t, reg, "fluxon_mq_redeliveries_total"))
	assert.Equal(t, 8.0, metric(t, reg, "fluxon_mq_get_messages_total"))
	assert.Equal(t, 8.0, metric(t, reg, "fluxon_mq_delivery_latency_seconds"), "one latency sample per delivery")
}

// TestReplay: with Retain, a consumer starting at the earliest retained
// message gets the acknowledged ones again; one starting at the tail skips
// the backlog and gets only what comes after.
func TestReplay(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg()
	cfg.Retain = 100
	ctx := ctxT(t, 30*time.Second)
	c := e.client(t)
	p := bind(t, c, "replay", cfg, mq.MPSC, mq.Producer)
	for i := 0; i < 10; i++ {
		require.NoError(t, p.Put(ctx, []byte(tag(0, i))))
	}
	first, err := mq.NewOrBind(ctx, c, "replay", cfg, mq.MPSC, mq.Consumer)
	require.NoError(t, err)
	require.Len(t, drain(t, first, 10, 10*time.Second), 10)
	require.NoError(t, first.Close(ctx))

	cfg.Start = mq.StartEarliest
	again, err := mq.NewOrBind(ctx, c, "replay", cfg, mq.MPSC, mq.Consumer)
	require.NoError(t, err)
	got := drain(t, again, 10, 10*time.Second)
	require.Len(t, got, 10)
	for i, m := range got {
		assert.Equal(t, tag(0, i), string(m.Data))
	}
	require.NoError(t, again.Close(ctx))

	for i := 10; i < 15; i++ {
		require.NoError(t, p.Put(ctx, []byte(tag(0, i))))
	}
	cfg.Start = mq.StartTail
	tail := bind(t, c, "replay", cfg, mq.MPSC, mq.Consumer)
	msgs, err := tail.Get(ctx, 100, 500*time.Millisecond, 0)
	require.NoError(t, err)
	assert.Empty(t, msgs, "a tail consumer got the backlog")
	require.NoError(t, p.Put(ctx, []byte(tag(0, 15))))
	got = drain(t, tail, 1, 10*time.Second)
	require.Len(t, got, 1)
	assert.Equal(t, tag(0, 15), string(got[0].Data))
}

// TestDictAndAutoAck: a dict goes through typed; AutoAck acknowledges the
// previous Get's messages at the next Get.
func TestDictAndAutoAck(t *testing.T) {
	e := newEnv(t)
	cfg := e.cfg()
	cfg.AutoAck = true
	ctx := ctxT(t, 30*time.Second)
	c := e.client(t)
	p := bind(t, c, "dict", cfg, mq.MPSC, mq.Producer)
	require.NoError(t, p.PutDict(ctx, kv.Dict{kv.Int("n", 7), kv.String("s", "seven")}))
	require.NoError(t, p.Put(ctx, []byte("raw")))
	k := bind(t, c, "dict", cfg, mq.MPSC, mq.Consumer)
	msgs, err := k.Get(ctx, 1, 5*time.Second, 0)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.True(t, msgs[0].IsDict())
	d, err := msgs[0].Dict()
	require.NoError(t, err)
	f, _ := d.Get("s")
	assert.Equal(t, "seven", f.Str)
	msgs, err = k.Get(ctx, 1, 5*time.Second, 0)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	_, err = msgs[0].Dict()
	assert.ErrorIs(t, err, kv.ErrBadValue)
	metatest.WaitFor(t, 5*time.Second, "the auto-acknowledged first message committed", func() bool {
		st, err := k.Stat(ctx)
		return err == nil && st.Producers[0].ConsumeOffset == 1
	})
}

// TestBadInput: bad names, configs and types get clear errors.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	ctx := ctxT(t, 30*time.Second)
	for _, tc := range []struct {
		name string
		uk   string
		cfg  func(*mq.Config)
		typ  mq.Type
		role mq.Role
		want error
	}{
		{"empty name", "", nil, mq.MPSC, mq.Producer, mq.ErrBadConfig},
		{"bad type", "x", nil, "fifo", mq.Producer, mq.ErrBadConfig},
		{"bad role", "x", nil, mq.MPSC, "reader", mq.ErrBadConfig},
		{"negative capacity", "x", func(c *mq.Config) { c.Capacity = -1 }, mq.MPSC, mq.Producer, mq.ErrBadConfig},
		{"short member ttl", "x", func(c *mq.Config) { c.MemberTTL = time.Second }, mq.MPSC, mq.Producer, mq.ErrBadConfig},
		{"slash in id", "x", func(c *mq.Config) { c.ID = "a/b" }, mq.MPSC, mq.Producer, mq.ErrBadConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.cfg()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			_, err := mq.NewOrBind(ctx, c, tc.uk, cfg, tc.typ, tc.role)
			assert.ErrorIs(t, err, tc.want)
		})
	}
	bind(t, c, "typed", e.cfg(), mq.MPSC, mq.Producer)
	_, err := mq.NewOrBind(ctx, c, "typed", e.cfg(), mq.MPMC, mq.Consumer)
	assert.ErrorIs(t, err, mq.ErrTypeMismatch)
	cfg := e.cfg()
	cfg.ID = "twin"
	bind(t, c, "typed", cfg, mq.MPSC, mq.Producer)
	_, err = mq.NewOrBind(ctx, c, "typed", cfg, mq.MPSC, mq.Producer)
	assert.ErrorIs(t, err, mq.ErrIDInUse)
	p := bind(t, c, "typed", e.cfg(), mq.MPSC, mq.Producer)
	assert.ErrorIs(t, p.Put(ctx, make([]byte, mq.MaxMessageSize+1)), mq.ErrMessageTooLarge)
	_, err = p.Get(ctx, 1, 0, 0)
	assert.ErrorIs(t, err, mq.ErrWrongRole)
}
