package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fluxon-dev/fluxon/cgo/pool"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/kv/placement"
	"github.com/fluxon-dev/fluxon/services/transport"
)

// Every operation runs as attempts. An attempt holds epochMu shared, so an
// epoch switch happens between attempts, never inside one; whenever an
// attempt has to wait (a write in progress, a re-homing round, another
// epoch), it returns what to wait for and the wait happens without the lock.

// pause is what an attempt asks to wait for before the next one.
type pause struct {
	ch <-chan struct{} // wait for this (a write of ours, an epoch switch) ...
	// ... or, without ch, back off (busy home).
}

// waiter paces the attempts of one operation.
type waiter struct{ backoff time.Duration }

func (w *waiter) wait(ctx context.Context, p pause) error {
	if p.ch != nil {
		select {
		case <-p.ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if w.backoff == 0 {
		w.backoff = busyRetryMin
	}
	err := sleepCtx(ctx, w.backoff)
	w.backoff = min(w.backoff*2, busyRetryMax)
	return err
}

// epochPause: the home answered from another epoch. When it is ahead, wait
// for this owner's switch; when behind, back off until it catches up.
func (n *Node) epochPause(homeEpoch, ours uint64) pause {
	if homeEpoch > ours {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.epoch == ours {
			return pause{ch: n.epochCh}
		}
	}
	return pause{}
}

// firstTable: before this owner's first routing table, operations wait for
// it (the owner is starting) instead of failing.
func (n *Node) firstTable() pause {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.epoch != 0 {
		return pause{} // it just came: look again
	}
	return pause{ch: n.epochCh}
}

// noTableYet passes err on, except ErrNoRouting before the first table: then
// the operation waits (firstTable) within its context.
func (n *Node) noTableYet(err error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.epoch == 0 && errors.Is(err, ErrNoRouting) {
		return nil
	}
	return err
}

// Get returns key's current value from this owner's pool, pulling it from a
// holder first when this owner has no valid copy.
func (n *Node) Get(ctx context.Context, key string) (*kv.Holder, error) {
	if err := kv.CheckKey(key); err != nil {
		return nil, err
	}
	var w waiter
	for {
		h, p, err := n.getOnce(ctx, key)
		if h != nil || err != nil {
			return h, err
		}
		if err := w.wait(ctx, p); err != nil {
			return nil, err
		}
	}
}

func (n *Node) getOnce(ctx context.Context, key string) (*kv.Holder, pause, error) {
	n.epochMu.RLock()
	defer n.epochMu.RUnlock()
	home, epoch, err := n.homeOf(key)
	if err != nil {
		return nil, n.firstTable(), n.noTableYet(err)
	}
	if h := n.servable(key, home); h != nil {
		return h, pause{}, nil
	}
	loc, p, err := n.lookup(ctx, key, home, epoch)
	if err != nil || loc == nil {
		return nil, p, err
	}
	return n.pull(ctx, key, home, epoch, *loc)
}

// servable returns this owner's copy of key when it may serve it.
func (n *Node) servable(key, home string) *kv.Holder {
	n.mu.Lock()
	defer n.mu.Unlock()
	lc, ok := n.local[key]
	if !ok || !lc.confirmed || lc.home != home || !n.sessionLive(home) {
		return nil
	}
	h, err := n.o.Store.Get(key)
	if err != nil {
		return nil
	}
	return h
}

// lookup asks key's home where its current version is. nil location and no
// error: wait as the pause says and try again.
func (n *Node) lookup(ctx context.Context, key, home string, epoch uint64) (*lookupResp, pause, error) {
	if !n.liveSession(home) {
		if err := n.renew(ctx, home); err != nil {
			return nil, pause{}, fmt.Errorf("%w: home of %q unreachable: %v", ErrUnavailable, key, err)
		}
	}
	var loc lookupResp
	if err := n.call(ctx, home, pathLookup, keyReq{Key: key, Epoch: epoch}, &loc); err != nil {
		return nil, pause{}, fmt.Errorf("%w: looking up %q at its home: %v", ErrUnavailable, key, err)
	}
	switch loc.Status {
	case "ok":
		return &loc, pause{}, nil
	case "notfound":
		return nil, pause{}, fmt.Errorf("%w: %q", kv.ErrNotFound, key)
	case stLost:
		return nil, pause{}, fmt.Errorf("%w: %q: every owner that held it is gone", ErrUnavailable, key)
	case stEpoch:
		return nil, n.epochPause(loc.Epoch, epoch), nil
	}
	return nil, pause{}, nil // busy
}

// Stat describes key's current value (size and cluster version) without
// copying it here: from this owner's copy when it may serve one, else from
// the key's home.
func (n *Node) Stat(ctx context.Context, key string) (kv.Info, error) {
	if err := kv.CheckKey(key); err != nil {
		return kv.Info{}, err
	}
	var w waiter
	for {
		info, ok, p, err := n.statOnce(ctx, key)
		if ok || err != nil {
			return info, err
		}
		if err := w.wait(ctx, p); err != nil {
			return kv.Info{}, err
		}
	}
}

func (n *Node) statOnce(ctx context.Context, key string) (kv.Info, bool, pause, error) {
	n.epochMu.RLock()
	defer n.epochMu.RUnlock()
	home, epoch, err := n.homeOf(key)
	if err != nil {
		return kv.Info{}, false, n.firstTable(), n.noTableYet(err)
	}
	if h := n.servable(key, home); h != nil {
		size := h.Info.Size
		_ = h.Close()
		n.mu.Lock()
		v := n.local[key].version
		n.mu.Unlock()
		return kv.Info{Key: key, Size: size, Version: v}, true, pause{}, nil
	}
	loc, p, err := n.lookup(ctx, key, home, epoch)
	if err != nil || loc == nil {
		return kv.Info{}, false, p, err
	}
	return kv.Info{Key: key, Size: loc.Size, Version: loc.Version}, true, pause{}, nil
}

// dropAt tells home that holder does not have version of key (a reader
// found it missing). The home ignores it when the entry moved on.
func (n *Node) dropAt(ctx context.Context, home, key, holder string, epoch, version uint64) {
	var st statusResp
	_ = n.call(ctx, home, pathDropHolder, holderReq{Key: key, Epoch: epoch, Holder: holder, Version: version}, &st)
}

// pull copies the current version from a holder into this pool and
// registers this owner as a holder, and returns it to serve; otherwise
// what to wait for before looking again.
func (n *Node) pull(ctx context.Context, key, home string, epoch uint64, loc lookupResp) (*kv.Holder, pause, error) {
	var lastErr error
	for _, holder := range loc.Holders {
		if holder == n.self {
			n.mu.Lock()
			ch := n.writing[key]
			lc, ok := n.local[key]
			n.mu.Unlock()
			if ch != nil {
				return nil, pause{ch: ch}, nil // our own write of the key is committing: read after it
			}
			if ok && lc.version == loc.Version && n.o.Store.Exists(key) {
				// Confirmed: the next attempt serves it. Unconfirmed: a pull
				// or the re-homing round is about to confirm it.
				return nil, pause{}, nil
			}
			// The home lists a copy this owner does not have (evicted, or
			// dropped after a stale claim): correct the home, look again.
			n.mu.Lock()
			if lc, ok := n.local[key]; ok && lc.version == loc.Version {
				n.dropLocked(key)
			}
			n.mu.Unlock()
			n.dropAt(ctx, home, key, n.self, epoch, loc.Version)
			return nil, pause{}, nil
		}
		var pin pinResp
		if err := n.call(ctx, holder, pathPin, pinReq{Key: key, Version: loc.Version, PoolRefs: true}, &pin); err != nil {
			lastErr = err
			continue
		}
		switch pin.Status {
		case stRetry:
			return nil, pause{}, nil
		case stStale:
			n.dropAt(ctx, home, key, holder, epoch, loc.Version)
			return nil, pause{}, nil
		}
		n.mu.Lock()
		gen := n.gen[key]
		n.mu.Unlock()
		r, err := n.o.Store.Reserve(ctx, key, pin.Size, kv.PutOptions{})
		if err != nil {
			return nil, pause{}, err
		}
		err = n.readPinned(ctx, holder, pin, n.o.Store.Bytes(r))
		if err != nil {
			_ = n.o.Store.Abort(r)
			lastErr = err
			continue
		}
		// Install the bytes unconfirmed (others may pin them; this owner
		// serves them once the home counts it), then register.
		n.mu.Lock()
		if _, exists := n.local[key]; exists || n.gen[key] != gen || n.writing[key] != nil {
			// Invalidated while we pulled, or another copy got here first
			// (a write or pull of ours, perhaps newer): never replace it.
			n.mu.Unlock()
			_ = n.o.Store.Abort(r)
			return nil, pause{}, nil
		}
		if _, err := n.o.Store.Commit(r); err != nil {
			n.mu.Unlock()
			return nil, pause{}, err
		}
		n.local[key] = localCopy{version: loc.Version, size: pin.Size, home: home}
		n.mu.Unlock()
		var st statusResp
		err = n.call(ctx, home, pathAddHolder, holderReq{Key: key, Epoch: epoch, Holder: n.self, Version: loc.Version}, &st)
		n.mu.Lock()
		defer n.mu.Unlock()
		lc, ok := n.local[key]
		ours := ok && !lc.confirmed && lc.claimEpoch == 0 && lc.version == loc.Version && n.gen[key] == gen
		if err != nil || st.Status != "ok" {
			if ours {
				n.dropLocked(key)
			}
			if err != nil {
				return nil, pause{}, fmt.Errorf("%w: registering a copy of %q at its home: %v", ErrUnavailable, key, err)
			}
			if st.Status == "nosession" {
				delete(n.sessions, home)
			}
			return nil, pause{}, nil
		}
		if home != n.self {
			n.adoptSessionLocked(home, st.Session)
		}
		lc, ok = n.local[key]
		ours = ok && !lc.confirmed && lc.claimEpoch == 0 && lc.version == loc.Version && n.gen[key] == gen
		if !ours || (home != n.self && st.Session != n.sessIDs[home]) {
			if ours {
				n.dropLocked(key) // registered under a session since replaced
			}
			return nil, pause{}, nil
		}
		lc.confirmed, lc.session = true, st.Session
		n.local[key] = lc
		// Serve it at once, as the next attempt would (still under n.mu, so
		// no invalidation slips in between confirming and handing it out).
		if n.sessionLive(home) {
			if h, err := n.o.Store.Get(key); err == nil {
				return h, pause{}, nil
			}
		}
		return nil, pause{}, nil
	}
	return nil, pause{}, fmt.Errorf("%w: %q: %v", ErrUnavailable, key, lastErr)
}

// Striped bulk reads: a copy of at least stripeMin bytes is read in
// several ranges at once, each on its own connection to the holder, one
// lane per stripeMin/2 bytes up to maxStripes. One TCP stream leaves a fast
// link part idle (a single flow's receive path runs on one core): over a
// veth link one reached about 75 % of single-stream iperf3 and two 94 %;
// a 16 MiB value took 11.1 ms to read over four lanes (median per run,
// averaged over 7 runs, 8.0-14.0) against 13.4 ms over two (4 runs,
// 12.4-14.3), interleaved runs on a busy 2-core VM.
const (
	stripeMin  = 8 << 20
	maxStripes = 4
)

// stripesFor is how many lanes read a copy of size bytes.
func stripesFor(size uint64) int {
	if size < stripeMin {
		return 1
	}
	return int(min(size/(stripeMin/2), maxStripes))
}

// readPinned copies a pinned copy from holder into dst.
func (n *Node) readPinned(ctx context.Context, holder string, pin pinResp, dst []byte) error {
	plan, err := readPlan(pin)
	if err != nil {
		return fmt.Errorf("reading pinned copy %d from %s: %w", pin.Pin, holder, err)
	}
	errs := make([]error, len(plan))
	oneSided := make([]bool, len(plan))
	var wg sync.WaitGroup
	for i, p := range plan {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := n.connN(ctx, holder, p.lane)
			if err == nil {
				oneSided[i] = transport.IsOneSided(c)
				err = c.ReadRemote(ctx, p.ref, dst[p.at:p.at+p.ref.Length])
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	err = errors.Join(errs...)
	// The holder releases the pin once its ServeRead has sent every byte.
	// One-sided reads never reach ServeRead, and a failed pull may stop
	// short: then say so (best effort: a pin left behind expires after
	// pinTimeout). Otherwise the extra message would only find it gone.
	if err != nil || slices.Contains(oneSided, true) {
		if c, cerr := n.conn(ctx, holder); cerr == nil {
			if b, merr := json.Marshal(unpinReq{Pin: pin.Pin}); merr == nil {
				_ = c.Send(ctx, pathUnpin, b)
			}
		}
	}
	return err
}

// errNoPoolPosition: a pin reply without the object's pool position, from
// a holder that predates segment-absolute reads (or a broken one).
var errNoPoolPosition = errors.New("the holder's pin reply has no valid pool position (it predates segment-absolute reads); upgrade it")

// piece is one ReadRemote of a pull: the object's bytes [at, at+ref.Length)
// over the holder's lane lane.
type piece struct {
	lane int
	at   uint64
	ref  transport.RemoteRef
}

// readPlan cuts the read of a pinned copy into ReadRemotes: a stripe per
// lane (stripesFor), each cut at the holder's segment boundaries. Refs are
// segment-absolute, the form a one-sided rdma read takes (it reads inside
// the memory region registered for one segment), and an object larger
// than a segment spans several (pool.Offset.In). A zero-length copy still
// gets one (empty) read: serving it releases the pin.
func readPlan(pin pinResp) ([]piece, error) {
	at := pin.At
	if at == nil || at.SegmentSize == 0 || at.SegmentSize > pool.MaxSegmentSize || at.Offset >= at.SegmentSize {
		return nil, errNoPoolPosition
	}
	seg := at.SegmentSize
	start := uint64(at.Segment)*seg + at.Offset
	k := stripesFor(pin.Size)
	part := (pin.Size + uint64(k) - 1) / uint64(k)
	var plan []piece
	for i := 0; i < k; i++ {
		off := uint64(i) * part
		end := min(off+part, pin.Size)
		for {
			pos := start + off
			n := min(end-off, seg-pos%seg)
			plan = append(plan, piece{lane: i, at: off, ref: transport.RemoteRef{Segment: uint32(pos / seg), Offset: pos % seg, Length: n, Tag: pin.Pin}})
			if off += n; off >= end {
				break
			}
		}
	}
	return plan, nil
}

// Put stores value under key: written into this owner's pool, made current
// at the key's home once every other copy is gone. IfAbsent and IfPresent
// are decided by the home, against the whole cluster.
func (n *Node) Put(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error) {
	if err := kv.CheckKey(key); err != nil {
		return 0, err
	}
	r, err := n.Reserve(ctx, key, uint64(len(value)), o)
	if err != nil {
		return 0, err
	}
	copy(n.o.Store.Bytes(r), value)
	return n.Commit(ctx, r)
}

// cond is a put's condition, checked at the home rather than in this
// owner's store (which only knows its own copies).
type cond struct{ ifAbsent, ifPresent bool }

// Reserve makes room for a value of key in this owner's pool (fill it
// through Store.Bytes, then Commit or Abort here).
func (n *Node) Reserve(ctx context.Context, key string, size uint64, o kv.PutOptions) (*kv.Reservation, error) {
	if o.IfAbsent && o.IfPresent {
		return nil, errors.New("cluster: PutOptions.IfAbsent and IfPresent together can never succeed")
	}
	c := cond{o.IfAbsent, o.IfPresent}
	o.IfAbsent, o.IfPresent = false, false
	r, err := n.o.Store.Reserve(ctx, key, size, o)
	if err != nil {
		return nil, err
	}
	if c != (cond{}) {
		n.mu.Lock()
		n.conds[r] = c
		n.mu.Unlock()
	}
	return r, nil
}

// Abort gives up a reservation made by Reserve.
func (n *Node) Abort(r *kv.Reservation) error {
	n.mu.Lock()
	delete(n.conds, r)
	n.mu.Unlock()
	return n.o.Store.Abort(r)
}

// Commit makes a reservation of this owner's store (Reserve, filled
// through Store.Bytes) the key's current value across the cluster, as Put
// does with a copy. The reservation is consumed, committed or aborted.
func (n *Node) Commit(ctx context.Context, r *kv.Reservation) (uint64, error) {
	n.mu.Lock()
	c := n.conds[r]
	delete(n.conds, r)
	n.mu.Unlock()
	return n.write(ctx, r.Key, r, c, r.Options())
}

// Remove deletes key everywhere; when it returns no owner serves it.
func (n *Node) Remove(ctx context.Context, key string) error {
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	_, err := n.write(ctx, key, nil, cond{}, kv.PutOptions{})
	return err
}

// writeState is one write's progress across its attempts.
type writeState struct {
	key  string
	r    *kv.Reservation // nil: a remove
	done chan struct{}   // set once this write owns writing[key]
	cond cond
	// old is the copy this owner stopped serving when the write began,
	// restored when the home refuses a conditional write without having
	// touched the key (gen unchanged since).
	old    localCopy
	hadOld bool
	gen    uint64
}

// restoreOld serves the writer's old copy again after a refused
// conditional write, unless anything invalidated it meanwhile.
func (n *Node) restoreOld(ws *writeState) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, now := n.local[ws.key]; ws.hadOld && !now && n.gen[ws.key] == ws.gen && n.o.Store.Exists(ws.key) {
		n.local[ws.key] = ws.old
	}
}

// write runs an overwrite (r != nil) or a remove (r == nil) of key, then
// makes the replicas a put asked for.
func (n *Node) write(ctx context.Context, key string, r *kv.Reservation, c cond, o kv.PutOptions) (uint64, error) {
	v, err := n.writeOnly(ctx, key, r, c)
	if err != nil || r == nil || (o.Replicas <= 1 && len(o.Placement) == 0) {
		return v, err
	}
	return v, n.replicate(ctx, key, o.Replicas, o.Placement)
}

// ErrReplicas: the put is committed, but fewer copies than asked exist.
var ErrReplicas = kv.ErrReplicas

// replicate asks the owners of the next hosts in key's rendezvous order to
// pull a copy, and waits for them. It runs outside any operation attempt:
// the owners asked take their own epoch locks.
func (n *Node) replicate(ctx context.Context, key string, replicas int, hint []string) error {
	n.mu.Lock()
	self := -1
	for i, nd := range n.nodes {
		if nd.ID == n.self {
			self = i
		}
	}
	var targets []string
	var failed []error
	chosen := map[string]bool{n.self: true}
	hosts := map[string]bool{}
	if self >= 0 {
		hosts[n.nodes[self].Host] = true
	}
	for _, want := range hint {
		found := false
		for _, nd := range n.nodes {
			if nd.ID == want || strings.HasPrefix(nd.ID, want+"@") {
				found = true
				if !chosen[nd.ID] {
					chosen[nd.ID] = true
					hosts[nd.Host] = true
					targets = append(targets, nd.ID)
				}
			}
		}
		if !found {
			failed = append(failed, fmt.Errorf("placement %q: no such owner in the routing table", want))
		}
	}
	// The rest on the next hosts in the key's rendezvous order.
	for _, i := range placement.Replicas(placement.KeyHash(key), n.nodes, len(n.nodes), self) {
		if 1+len(targets) >= replicas {
			break
		}
		if nd := n.nodes[i]; !chosen[nd.ID] && !hosts[nd.Host] {
			chosen[nd.ID] = true
			hosts[nd.Host] = true
			targets = append(targets, nd.ID)
		}
	}
	n.mu.Unlock()
	replicas = max(replicas, 1+len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, to := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st statusResp
			errs[i] = n.call(ctx, to, pathReplicate, keyReq{Key: key}, &st)
			if errs[i] == nil && st.Status != "ok" {
				errs[i] = fmt.Errorf("%s: %s", to, st.Status)
			}
		}()
	}
	wg.Wait()
	made := 1
	for _, err := range errs {
		if err == nil {
			made++
		} else {
			failed = append(failed, err)
		}
	}
	if made < replicas || len(failed) > 0 {
		return fmt.Errorf("%w: %q has %d of %d copies: %v", ErrReplicas, key, made, replicas, errors.Join(failed...))
	}
	return nil
}

// writeOnly runs the write itself.
func (n *Node) writeOnly(ctx context.Context, key string, r *kv.Reservation, c cond) (uint64, error) {
	ws := &writeState{key: key, r: r, cond: c}
	defer func() {
		if ws.done != nil {
			n.mu.Lock()
			delete(n.writing, key)
			close(ws.done)
			n.mu.Unlock()
		}
	}()
	var w waiter
	for {
		v, ok, p, err := n.writeOnce(ctx, ws)
		if err == nil && !ok {
			err = w.wait(ctx, p)
		}
		if err != nil {
			if ws.r != nil {
				_ = n.o.Store.Abort(ws.r)
			}
			return 0, err
		}
		if ok {
			return v, nil
		}
	}
}

func (n *Node) writeOnce(ctx context.Context, ws *writeState) (uint64, bool, pause, error) {
	n.epochMu.RLock()
	defer n.epochMu.RUnlock()
	key := ws.key
	home, epoch, err := n.homeOf(key)
	if err != nil {
		return 0, false, n.firstTable(), n.noTableYet(err)
	}
	if ws.done == nil {
		// One write of a key at a time on this owner; then stop serving our
		// old copy before the home orders anything.
		n.mu.Lock()
		if ch := n.writing[key]; ch != nil {
			n.mu.Unlock()
			return 0, false, pause{ch: ch}, nil
		}
		ws.done = make(chan struct{})
		n.writing[key] = ws.done
		n.gen[key]++
		ws.old, ws.hadOld, ws.gen = n.local[key], n.local[key].home != "", n.gen[key]
		delete(n.local, key)
		n.mu.Unlock()
	}
	// The home records the writer as the new holder: that needs a live session.
	if !n.liveSession(home) {
		if err := n.renew(ctx, home); err != nil {
			return 0, false, pause{}, fmt.Errorf("%w: writing %q: its home is unreachable: %v", ErrUnavailable, key, err)
		}
	}
	var size uint64
	if ws.r != nil {
		size = ws.r.Size
	}
	var resp writeResp
	if err := n.call(ctx, home, pathWrite, writeReq{Key: key, Epoch: epoch, Writer: n.self, Remove: ws.r == nil, Size: size, IfAbsent: ws.cond.ifAbsent, IfPresent: ws.cond.ifPresent}, &resp); err != nil {
		return 0, false, pause{}, fmt.Errorf("%w: writing %q through its home: %v", ErrUnavailable, key, err)
	}
	switch resp.Status {
	case "ok":
	case stBusy:
		return 0, false, pause{}, nil
	case stEpoch:
		return 0, false, n.epochPause(resp.Epoch, epoch), nil
	case "nosession":
		n.mu.Lock()
		delete(n.sessions, home)
		n.mu.Unlock()
		return 0, false, pause{}, nil
	case stExists:
		n.restoreOld(ws)
		return 0, false, pause{}, fmt.Errorf("%w: %q", kv.ErrExists, key)
	case "notfound":
		n.restoreOld(ws)
		return 0, false, pause{}, fmt.Errorf("%w: %q", kv.ErrNotFound, key)
	default:
		return 0, false, pause{}, fmt.Errorf("%w: writing %q: its home refused: %s", ErrUnavailable, key, resp.Status)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	r := ws.r
	ws.r = nil // consumed here, whatever happens
	if r == nil {
		_ = n.o.Store.Remove(key)
		return resp.Version, true, pause{}, nil
	}
	if n.invalidated[key] > resp.Write {
		// A later write already took over (and invalidated us) before this
		// reply came: our value is committed, and superseded. Never serve it.
		_ = n.o.Store.Abort(r)
		_ = n.o.Store.Remove(key) // our old copy, if the store still has it
		return resp.Version, true, pause{}, nil
	}
	if home != n.self {
		n.adoptSessionLocked(home, resp.Session)
		if resp.Session != n.sessIDs[home] {
			// Registered under a session that has since been replaced: the
			// home no longer counts this copy.
			_ = n.o.Store.Abort(r)
			_ = n.o.Store.Remove(key)
			return resp.Version, true, pause{}, nil
		}
	}
	if _, err := n.o.Store.Commit(r); err != nil {
		return 0, false, pause{}, err
	}
	n.local[key] = localCopy{version: resp.Version, size: r.Size, home: home, session: resp.Session, confirmed: true}
	return resp.Version, true, pause{}, nil
}
