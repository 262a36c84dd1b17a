package directory

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var t0 = time.Unix(1_000_000, 0)

func TestWriteReadRemove(t *testing.T) {
	d := New(3*time.Second, 1)
	_, _, err := d.Lookup("k")
	require.ErrorIs(t, err, ErrNotFound)

	id, inv := d.BeginWrite("k", "A", false, 10)
	require.Empty(t, inv)
	require.True(t, d.Prepared(id))
	v1, next, err := d.Commit(id)
	require.NoError(t, err)
	require.Empty(t, next)
	require.Equal(t, uint64(1)<<32|1, v1, "epoch 1, first version")
	loc, blocked, err := d.Lookup("k")
	require.NoError(t, err)
	require.False(t, blocked)
	require.Equal(t, Location{Key: "k", Version: v1, Size: 10, Holders: []Holder{"A"}}, loc)

	// B pulls a replica: needs a live session and the current version.
	require.ErrorIs(t, d.AddHolder(t0, "k", "B", v1), ErrNoSession)
	_, fresh, s1 := d.Renew(t0, "B")
	require.True(t, fresh)
	_, fresh, s2 := d.Renew(t0.Add(time.Second), "B")
	require.False(t, fresh, "a renewal within the session continues it")
	require.Equal(t, s1, s2)
	require.Equal(t, s1, d.Session(t0, "B"))
	_, fresh, s3 := d.Renew(t0.Add(time.Hour), "B")
	require.True(t, fresh)
	require.Greater(t, s3, s1, "a fresh session has a new id")
	require.ErrorIs(t, d.AddHolder(t0, "k", "B", v1+1), ErrStale)
	require.NoError(t, d.AddHolder(t0, "k", "B", v1))

	// C overwrites: A and B must let go first; lookups wait meanwhile.
	id, inv = d.BeginWrite("k", "C", false, 20)
	require.Equal(t, []Invalidate{{Key: "k", Holder: "A", Write: id}, {Key: "k", Holder: "B", Write: id}}, inv)
	require.False(t, d.Prepared(id))
	_, blocked, _ = d.Lookup("k")
	require.True(t, blocked)
	require.ErrorIs(t, d.AddHolder(t0, "k", "B", v1), ErrStale, "no new holders of the old version during a write")
	_, _, err = d.Commit(id)
	require.Error(t, err, "not prepared")
	d.Ack(id, "A")
	require.False(t, d.Prepared(id))
	d.Ack(id, "B")
	require.True(t, d.Prepared(id))
	v2, _, err := d.Commit(id)
	require.NoError(t, err)
	require.Greater(t, v2, v1)
	loc, _, _ = d.Lookup("k")
	require.Equal(t, []Holder{"C"}, loc.Holders)

	// Remove.
	id, inv = d.BeginWrite("k", "A", true, 0)
	require.Equal(t, []Invalidate{{Key: "k", Holder: "C", Write: id}}, inv)
	d.Ack(id, "C")
	v, _, err := d.Commit(id)
	require.NoError(t, err)
	require.Greater(t, v, v2, "a remove gets a version too (the writer keeps it as a tombstone)")
	_, _, err = d.Lookup("k")
	require.ErrorIs(t, err, ErrNotFound)
	require.Zero(t, d.Len(), "a removed key leaves no entry")
}

func TestKeptSessionNeverEnds(t *testing.T) {
	d := New(time.Second, 1)
	d.Keep("self")
	require.True(t, d.Live(t0.Add(1000*time.Hour), "self"))
	_, fresh, _ := d.Renew(t0.Add(1000*time.Hour), "self")
	require.False(t, fresh)
	require.Empty(t, d.Expire(t0.Add(1000*time.Hour)))
}

func TestSilentHolderWaitsForSessionEnd(t *testing.T) {
	d := New(3*time.Second, 1)
	id, _ := d.BeginWrite("k", "A", false, 1)
	v, _, _ := d.Commit(id)
	d.Renew(t0, "B")
	require.NoError(t, d.AddHolder(t0, "k", "B", v))

	id, inv := d.BeginWrite("k", "A", false, 1)
	require.Equal(t, []Invalidate{{Key: "k", Holder: "A", Write: id}, {Key: "k", Holder: "B", Write: id}}, inv,
		"the writer drops its own old copy too")
	d.Ack(id, "A")
	require.Empty(t, d.Expire(t0.Add(2*time.Second)), "B's session is still live")
	require.False(t, d.Prepared(id))
	require.Equal(t, []Holder{"B"}, d.Expire(t0.Add(3*time.Second)))
	require.True(t, d.Prepared(id), "B serves nothing homed here any more")
	_, _, err := d.Commit(id)
	require.NoError(t, err)
}

func TestQueuedWritesRunInOrder(t *testing.T) {
	d := New(time.Second, 1)
	d.Renew(t0, "B")
	w1, _ := d.BeginWrite("k", "A", false, 1)
	w2, inv := d.BeginWrite("k", "B", false, 2)
	require.Empty(t, inv, "queued behind w1")
	require.False(t, d.Prepared(w2))
	v1, next, err := d.Commit(w1)
	require.NoError(t, err)
	require.Equal(t, []Invalidate{{Key: "k", Holder: "A", Write: w2}}, next, "w2 starts and invalidates w1's writer")
	d.Ack(w2, "A")
	v2, _, err := d.Commit(w2)
	require.NoError(t, err)
	require.Greater(t, v2, v1)
	loc, _, _ := d.Lookup("k")
	require.Equal(t, Location{Key: "k", Version: v2, Size: 2, Holders: []Holder{"B"}}, loc)

	// Abort keeps the old version; a queued write then starts.
	w3, _ := d.BeginWrite("k", "C", false, 3)
	w4, _ := d.BeginWrite("k", "D", false, 4)
	next = d.Abort(w3)
	require.Len(t, next, 1)
	d.Ack(w4, "B")
	_, _, err = d.Commit(w4)
	require.NoError(t, err)
	require.Nil(t, d.Abort(999))
}

func TestClaimAfterEpochChange(t *testing.T) {
	d := New(time.Second, 5)
	for _, h := range []Holder{"A", "B", "C"} {
		d.Renew(t0, h)
	}
	floors, err := d.Rehome(t0, 6)
	require.NoError(t, err)
	require.Empty(t, floors)
	_, blocked, _ := d.Lookup("k")
	require.True(t, blocked, "no answers while claims are collected")
	require.NoError(t, d.Claim(t0, "k", "A", 3<<32|7, 10))
	require.NoError(t, d.Claim(t0, "k", "B", 3<<32|9, 11))
	require.NoError(t, d.Claim(t0, "k", "C", 3<<32|9, 11))
	require.ErrorIs(t, d.Claim(t0.Add(time.Hour), "k", "A", 1, 1), ErrNoSession)
	// A floor forwarded by the old home: a tombstone newer than any copy.
	require.NoError(t, d.ClaimFloor(Floor{Key: "gone", Version: 4<<32 | 1, Removed: true}))
	require.NoError(t, d.Claim(t0, "gone", "C", 4<<32, 5))
	// A floor of a version nobody claims: the key is lost, not absent.
	require.NoError(t, d.ClaimFloor(Floor{Key: "lost", Version: 5<<32 | 3, Size: 9}))
	d.EndRound(t0)

	loc, _, err := d.Lookup("k")
	require.NoError(t, err)
	require.Equal(t, []Holder{"B", "C"}, loc.Holders, "the newest version wins")
	require.Equal(t, map[string]uint64{"k": 3<<32 | 7}, d.Rejected("A"))
	require.Equal(t, map[string]uint64{"gone": 4 << 32}, d.Rejected("C"))
	_, _, err = d.Lookup("gone")
	require.ErrorIs(t, err, ErrNotFound)
	_, _, err = d.Lookup("lost")
	require.ErrorIs(t, err, ErrLost)

	// The tombstone stays until every rejected claimant let go.
	d.AckRound("A")
	floors, err = d.Rehome(t0, 7)
	require.NoError(t, err)
	require.Contains(t, floors, Floor{Key: "gone", Version: 4<<32 | 1, Removed: true}, "C has not acknowledged: forwarded again")
	require.Contains(t, floors, Floor{Key: "k", Version: 3<<32 | 9, Size: 11})
	require.Contains(t, floors, Floor{Key: "lost", Version: 5<<32 | 3, Size: 9, Lost: true})
	d.EndRound(t0)
	require.Zero(t, d.Len(), "nothing claimed in epoch 7; the tombstone and the empty entries go, the lost key stays lost")
}

func TestRoundOverThenWritesAreNewer(t *testing.T) {
	d := New(time.Second, 5)
	d.Renew(t0, "A")
	_, err := d.Rehome(t0, 6)
	require.NoError(t, err)
	require.NoError(t, d.Claim(t0, "k", "A", 5<<32|9, 11))
	d.EndRound(t0)
	id, inv := d.BeginWrite("k", "A", false, 1)
	require.Equal(t, uint64(6<<32|1), id, "write ids carry the epoch")
	for _, i := range inv {
		d.Ack(id, i.Holder)
	}
	v, _, err := d.Commit(id)
	require.NoError(t, err)
	require.Greater(t, v, uint64(5<<32|9))
	_, err = d.Rehome(t0, 6)
	require.Error(t, err, "epochs only move forward")
}

// A model of the whole protocol with holders that keep replicas, renew
// sessions late or never, and receive invalidations late or never. The
// property: once a write's Commit has happened, no holder other than the
// writer can serve an older version of the key from its own replica.
func TestNoStaleReplicaServedAfterCommit(t *testing.T) {
	var commits, servedChecks int
	for seed := uint64(1); seed <= 200; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			c, s := simulate(t, seed)
			commits += c
			servedChecks += s
		})
	}
	// The property must have been exercised, not vacuously true.
	require.Greater(t, commits, 2000)
	require.Greater(t, servedChecks, 5000)
	t.Logf("%d commits, %d served-replica checks", commits, servedChecks)
}

type holderSim struct {
	name      Holder
	replicas  map[string]uint64
	believes  time.Time // the session deadline on the holder's own clock
	partition bool      // messages to and from it are lost
	inbox     []Invalidate
}

func (h *holderSim) serves(now time.Time, key string) (uint64, bool) {
	v, ok := h.replicas[key]
	return v, ok && now.Before(h.believes)
}

func simulate(t *testing.T, seed uint64) (commits, servedChecks int) {
	r := rand.New(rand.NewPCG(seed, 99))
	ttl := 3 * time.Second
	d := New(ttl, 1)
	now := t0
	hs := []*holderSim{}
	for i := 0; i < 4; i++ {
		hs = append(hs, &holderSim{name: Holder(fmt.Sprint("h", i)), replicas: map[string]uint64{}})
	}
	keys := []string{"a", "b"}
	committed := map[string]uint64{}
	type pending struct {
		id     uint64
		key    string
		writer *holderSim
		remove bool
	}
	var writes []pending
	deliver := func(inv []Invalidate) {
		for _, i := range inv {
			for _, h := range hs {
				if h.name == i.Holder {
					h.inbox = append(h.inbox, i)
				}
			}
		}
	}
	trace := []string{}
	logf := func(f string, a ...any) { trace = append(trace, fmt.Sprintf(f, a...)) }
	defer func() {
		if t.Failed() {
			for _, l := range trace {
				t.Log(l)
			}
		}
	}()
	for step := 0; step < 400; step++ {
		now = now.Add(time.Duration(r.IntN(400)) * time.Millisecond)
		h := hs[r.IntN(len(hs))]
		switch r.IntN(7) {
		case 0: // renew: the holder's belief starts at send time, the home's at receive time
			if !h.partition {
				sent := now
				dl, fresh, _ := d.Renew(now.Add(time.Duration(r.IntN(50))*time.Millisecond), h.name)
				logf("%d %v renew %s fresh=%v home-deadline=%v", step, now.Sub(t0), h.name, fresh, dl.Sub(t0))
				if fresh {
					h.replicas = map[string]uint64{}
				}
				h.believes = sent.Add(ttl)
			}
		case 1: // read through the home: look up, pull, register
			k := keys[r.IntN(len(keys))]
			if h.partition {
				break
			}
			loc, blocked, err := d.Lookup(k)
			if err != nil || blocked {
				break
			}
			if d.AddHolder(now, k, h.name, loc.Version) == nil {
				h.replicas[k] = loc.Version
				logf("%d %v %s holds %s@%d", step, now.Sub(t0), h.name, k, loc.Version)
			}
		case 2: // begin a write
			k := keys[r.IntN(len(keys))]
			if h.partition {
				break
			}
			rm := r.IntN(4) == 0
			id, inv := d.BeginWrite(k, h.name, rm, 1)
			delete(h.replicas, k) // the writer stops serving its own old copy at once
			writes = append(writes, pending{id, k, h, rm})
			logf("%d %v %s begins write %d of %s remove=%v inv=%v", step, now.Sub(t0), h.name, id, k, rm, inv)
			deliver(inv)
		case 3: // a holder processes its inbox (unless cut off)
			if h.partition {
				break
			}
			for _, i := range h.inbox {
				logf("%d %v %s acks %v", step, now.Sub(t0), h.name, i)
				delete(h.replicas, i.Key)
				d.Ack(i.Write, h.name)
			}
			h.inbox = nil
		case 4: // partitions come and go
			h.partition = !h.partition
			logf("%d %v %s partition=%v", step, now.Sub(t0), h.name, h.partition)
		case 5:
			gone := d.Expire(now)
			logf("%d %v expire %v", step, now.Sub(t0), gone)
		case 6: // commit whatever is prepared
			for i := 0; i < len(writes); i++ {
				w := writes[i]
				if !d.Prepared(w.id) {
					continue
				}
				v, next, err := d.Commit(w.id)
				require.NoError(t, err)
				logf("%d %v commit %d of %s by %s -> %d next=%v", step, now.Sub(t0), w.id, w.key, w.writer.name, v, next)
				deliver(next)
				if !w.remove {
					w.writer.replicas[w.key] = v
				}
				committed[w.key] = v
				commits++
				writes = append(writes[:i], writes[i+1:]...)
				i--
				// The property, right at the commit.
				for _, o := range hs {
					if o == w.writer {
						continue
					}
					if got, ok := o.serves(now, w.key); ok && got != v {
						t.Fatalf("step %d: %s serves %q version %d after commit of %d", step, o.name, w.key, got, v)
					}
				}
			}
		}
		// And at every step: nobody serves a version older than the last commit.
		for _, o := range hs {
			for k, v := range committed {
				got, ok := o.serves(now, k)
				if ok {
					servedChecks++
				}
				if ok && got < v {
					t.Fatalf("step %d: %s serves %q version %d, %d is committed", step, o.name, k, got, v)
				}
			}
		}
	}
	return commits, servedChecks
}
