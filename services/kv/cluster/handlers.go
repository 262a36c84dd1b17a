package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fluxon-dev/fluxon/services/kv/directory"
	"github.com/fluxon-dev/fluxon/services/transport"
)

// handle serves control requests from other owners (and this one).
func (n *Node) handle(ctx context.Context, peer transport.Identity, path string, payload []byte) ([]byte, error) {
	bad := func(err error) ([]byte, error) {
		return nil, &transport.RemoteError{Code: transport.CodeInvalid, Message: err.Error()}
	}
	switch path {
	case pathRenew:
		var req renewReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		n.dirMu.Lock()
		_, fresh, sid := n.dir.Renew(time.Now(), directory.Holder(req.Holder))
		n.dirChangedLocked()
		n.dirMu.Unlock()
		return json.Marshal(renewResp{Fresh: fresh, Session: sid})
	case pathLookup:
		var req keyReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		release, st, ep := n.homeGate(req.Epoch)
		if release == nil {
			return json.Marshal(lookupResp{Status: st, Epoch: ep})
		}
		n.dirMu.Lock()
		loc, busy, err := n.dir.Lookup(req.Key)
		n.dirMu.Unlock()
		release()
		switch {
		case busy:
			return json.Marshal(lookupResp{Status: stBusy})
		case errors.Is(err, directory.ErrNotFound):
			return json.Marshal(lookupResp{Status: "notfound"})
		case errors.Is(err, directory.ErrLost):
			return json.Marshal(lookupResp{Status: stLost})
		}
		hs := make([]string, len(loc.Holders))
		for i, h := range loc.Holders {
			hs[i] = string(h)
		}
		return json.Marshal(lookupResp{Status: "ok", Version: loc.Version, Size: loc.Size, Holders: hs})
	case pathAddHolder:
		var req holderReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		release, st, ep := n.homeGate(req.Epoch)
		if release == nil {
			return json.Marshal(statusResp{Status: st, Epoch: ep})
		}
		n.dirMu.Lock()
		now := time.Now()
		err := n.dir.AddHolder(now, req.Key, directory.Holder(req.Holder), req.Version)
		sid := n.dir.Session(now, directory.Holder(req.Holder))
		n.dirMu.Unlock()
		release()
		switch {
		case err == nil:
			return json.Marshal(statusResp{Status: "ok", Session: sid})
		case errors.Is(err, directory.ErrNoSession):
			return json.Marshal(statusResp{Status: "nosession"})
		}
		return json.Marshal(statusResp{Status: "stale"})
	case pathDropHolder:
		var req holderReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		release, st, ep := n.homeGate(req.Epoch)
		if release == nil {
			return json.Marshal(statusResp{Status: st, Epoch: ep})
		}
		n.dirMu.Lock()
		n.dir.DropHolder(req.Key, directory.Holder(req.Holder), req.Version)
		n.dirChangedLocked()
		n.dirMu.Unlock()
		release()
		return json.Marshal(statusResp{Status: "ok"})
	case pathWrite:
		var req writeReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		// The gate is held for the whole write: the epoch cannot switch
		// under it (it waits for the invalidations, bounded by the TTL).
		release, st, ep := n.homeGate(req.Epoch)
		if release == nil {
			return json.Marshal(writeResp{Status: st, Epoch: ep})
		}
		defer release()
		if req.Writer != n.self {
			n.dirMu.Lock()
			live := n.dir.Live(time.Now(), directory.Holder(req.Writer))
			n.dirMu.Unlock()
			if !live {
				return json.Marshal(writeResp{Status: "nosession"})
			}
		}
		v, id, sid, status, err := n.homeWrite(ctx, req)
		if status != "" {
			return json.Marshal(writeResp{Status: status})
		}
		if err != nil {
			return nil, &transport.RemoteError{Code: transport.CodeUnavailable, Message: err.Error()}
		}
		return json.Marshal(writeResp{Status: "ok", Version: v, Write: id, Session: sid})
	case pathInvalidate:
		var req invalidateReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		n.mu.Lock()
		n.gen[req.Key]++
		if req.Write > n.invalidated[req.Key] {
			n.invalidated[req.Key] = req.Write
		}
		if n.writing[req.Key] == nil {
			n.dropLocked(req.Key)
		} else {
			delete(n.local, req.Key) // our own write replaces the store entry at commit
		}
		n.mu.Unlock()
		return json.Marshal(statusResp{Status: "ok"})
	case pathPin:
		var req pinReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		return n.pin(req)
	case pathUnpin:
		var req unpinReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		n.unpin(req.Pin)
		return nil, nil
	case pathClaims:
		var req claimsReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		return json.Marshal(n.takeClaims(ctx, req))
	case pathReplicate:
		var req keyReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		// Pull the current version here as a read would (the handler holds
		// no lock; the read takes this owner's epoch lock per attempt).
		h, err := n.Get(ctx, req.Key)
		if err != nil {
			return nil, &transport.RemoteError{Code: transport.CodeUnavailable, Message: err.Error()}
		}
		_ = h.Close()
		return json.Marshal(statusResp{Status: "ok"})
	case pathBackup:
		var req backupReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		return n.takeBackups(req)
	case pathClaimAck:
		var req claimAckReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		n.dirMu.Lock()
		if n.dir.Epoch() == req.Epoch {
			n.dir.AckRound(directory.Holder(req.Holder))
		}
		n.dirMu.Unlock()
		return json.Marshal(statusResp{Status: "ok"})
	}
	return nil, &transport.RemoteError{Code: transport.CodeNotFound, Message: "no such path " + path}
}

// dirChangedLocked wakes writers waiting on the directory. dirMu held.
func (n *Node) dirChangedLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// homeWrite runs a write of a key homed here: invalidate every holder, wait
// until each let go (or its session ended), commit.
func (n *Node) homeWrite(ctx context.Context, req writeReq) (version, id, session uint64, status string, err error) {
	n.dirMu.Lock()
	if req.IfAbsent || req.IfPresent {
		// The condition is checked and the write begun in one step, with no
		// other write of the key in progress: the write is ordered right
		// after the state it checked.
		exists, busy := n.dir.Exists(req.Key)
		switch {
		case busy:
			n.dirMu.Unlock()
			return 0, 0, 0, stBusy, nil
		case req.IfAbsent && exists:
			n.dirMu.Unlock()
			return 0, 0, 0, stExists, nil
		case req.IfPresent && !exists:
			n.dirMu.Unlock()
			return 0, 0, 0, "notfound", nil
		}
	}
	id, inv := n.dir.BeginWrite(req.Key, directory.Holder(req.Writer), req.Remove, req.Size)
	n.dirMu.Unlock()
	var inv0 = inv
	n.sendInvalidations(inv0)
	for {
		n.dirMu.Lock()
		if n.dir.Prepared(id) {
			v, next, err := n.dir.Commit(id)
			if err == nil {
				defer n.backup(directory.Floor{Key: req.Key, Version: v, Size: req.Size, Removed: req.Remove})
			}
			sid := n.dir.Session(time.Now(), directory.Holder(req.Writer))
			n.dirChangedLocked()
			n.dirMu.Unlock()
			n.sendInvalidations(next)
			return v, id, sid, "", err
		}
		ch := n.changed
		n.dirMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			n.dirMu.Lock()
			next := n.dir.Abort(id)
			n.dirChangedLocked()
			n.dirMu.Unlock()
			n.sendInvalidations(next)
			return 0, 0, 0, "", fmt.Errorf("write of %q abandoned: %w", req.Key, ctx.Err())
		}
	}
}

// sendInvalidations tells holders to drop their copies; each
// acknowledgement is folded into the directory. A holder that cannot be
// reached is asked again until it answers or its session ends here
// (expireLoop), whichever comes first: a live holder is never left out.
func (n *Node) sendInvalidations(inv []directory.Invalidate) {
	for _, i := range inv {
		go func(i directory.Invalidate) {
			for {
				ctx, cancel := context.WithTimeout(context.Background(), n.o.SessionTTL/3)
				var st statusResp
				err := n.call(ctx, string(i.Holder), pathInvalidate, invalidateReq{Key: i.Key, Write: i.Write}, &st)
				cancel()
				n.dirMu.Lock()
				if err == nil {
					n.dir.Ack(i.Write, i.Holder)
					n.dirChangedLocked()
				}
				waiting := n.dir.Waiting(i.Write, i.Holder)
				n.dirMu.Unlock()
				if !waiting {
					return
				}
				select {
				case <-n.stop:
					return
				case <-time.After(invalidateRetry):
				}
			}
		}(i)
	}
}

func (n *Node) expireLoop() {
	defer n.wg.Done()
	t := time.NewTicker(expireTick)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.dirMu.Lock()
		if gone := n.dir.Expire(time.Now()); len(gone) > 0 {
			n.dirChangedLocked()
		}
		n.dirMu.Unlock()
		n.pinMu.Lock()
		now := time.Now()
		for id, p := range n.pins {
			if now.After(p.expires) {
				_ = p.h.Close()
				delete(n.pins, id)
			}
		}
		n.pinMu.Unlock()
	}
}

// pin holds this owner's copy of key at version for a bulk read. A copy
// being confirmed may be pinned (its bytes are that version); while a write
// of the key by this owner is in flight the reader is told to retry, never
// to wait here (the write may itself wait on the reader's owner).
func (n *Node) pin(req pinReq) ([]byte, error) {
	if !req.PoolRefs {
		return nil, &transport.RemoteError{Code: transport.CodeInvalid, Message: fmt.Sprintf("pin of %q: the reader names ranges inside the object, which this owner no longer serves (reads name pool segments since pinReq.pool_refs); upgrade the reader", req.Key)}
	}
	n.mu.Lock()
	lc, ok := n.local[req.Key]
	writing := n.writing[req.Key] != nil
	if !ok || lc.version != req.Version {
		n.mu.Unlock()
		if writing {
			return json.Marshal(pinResp{Status: stRetry})
		}
		return json.Marshal(pinResp{Status: stStale})
	}
	// Check the version and take the store's holder in one step: a write
	// committing in between replaces both together (under n.mu), so the
	// bytes pinned are always the version named.
	h, err := n.o.Store.Get(req.Key)
	n.mu.Unlock()
	if err != nil {
		return json.Marshal(pinResp{Status: stStale})
	}
	id := n.pinID.Add(1)
	n.pinMu.Lock()
	n.pins[id] = pinned{h: h, expires: time.Now().Add(pinTimeout), left: h.Size}
	n.pinMu.Unlock()
	seg, off := h.Offset().In(h.SegmentSize())
	return json.Marshal(pinResp{Status: "ok", Pin: id, Size: h.Size, At: &poolPos{Segment: seg, Offset: off, SegmentSize: h.SegmentSize()}})
}

// unpin releases pin now, or once the reads the transport is still
// sending end; an unknown pin (released after its last byte, or expired)
// is already gone.
func (n *Node) unpin(id uint64) {
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	p, ok := n.pins[id]
	if !ok {
		return
	}
	if p.sending > 0 {
		p.left = 0 // the last release closes it
		n.pins[id] = p
		return
	}
	delete(n.pins, id)
	_ = p.h.Close()
}

// homeGate admits a home-side request of epoch. It never waits: while an
// epoch switch is pending, in another epoch, or during the re-homing round
// it answers busy or epoch (with this owner's epoch).
func (n *Node) homeGate(epoch uint64) (release func(), status string, ours uint64) {
	if !n.epochMu.TryRLock() {
		return nil, stBusy, 0
	}
	n.mu.Lock()
	cur := n.epoch
	n.mu.Unlock()
	if epoch != cur {
		n.epochMu.RUnlock()
		return nil, stEpoch, cur
	}
	n.dirMu.Lock()
	collecting := n.dir.Collecting()
	n.dirMu.Unlock()
	if collecting {
		n.epochMu.RUnlock()
		return nil, stBusy, cur
	}
	return n.epochMu.RUnlock, "", cur
}

// takeClaims folds in one owner's claims and floors for this epoch; the
// round ends when every member reported. The answer waits up to claimsPoll
// for the end of the round.
func (n *Node) takeClaims(ctx context.Context, req claimsReq) claimsResp {
	if !n.epochMu.TryRLock() {
		return claimsResp{Status: stNotYet}
	}
	n.mu.Lock()
	cur, members := n.epoch, make([]string, 0, len(n.peers))
	for _, p := range n.peers {
		members = append(members, p.Name())
	}
	n.mu.Unlock()
	switch {
	case req.Epoch > cur:
		n.epochMu.RUnlock()
		return claimsResp{Status: stNotYet}
	case req.Epoch < cur:
		n.epochMu.RUnlock()
		return claimsResp{Status: stStale}
	}
	now := time.Now()
	h := directory.Holder(req.Holder)
	n.dirMu.Lock()
	if n.dir.Collecting() && !n.roundHave[req.Holder] {
		if len(req.Claims) > 0 && !n.dir.Live(now, h) {
			n.dirMu.Unlock()
			n.epochMu.RUnlock()
			return claimsResp{Status: "nosession"}
		}
		for _, c := range req.Claims {
			_ = n.dir.Claim(now, c.Key, h, c.Version, c.Size)
		}
		for _, f := range req.Floors {
			_ = n.dir.ClaimFloor(f)
		}
		n.roundHave[req.Holder] = true
		all := true
		for _, m := range members {
			all = all && n.roundHave[m]
		}
		if all {
			n.dir.EndRound(now)
			close(n.roundDone)
			n.dirChangedLocked()
			go n.backupAll()
		}
	}
	done := n.roundDone
	n.dirMu.Unlock()
	n.epochMu.RUnlock()

	t := time.NewTimer(claimsPoll)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		return claimsResp{Status: stPending}
	case <-ctx.Done():
		return claimsResp{Status: stPending}
	case <-n.stop:
		return claimsResp{Status: stPending}
	}
	n.dirMu.Lock()
	defer n.dirMu.Unlock()
	if n.dir.Epoch() != req.Epoch {
		return claimsResp{Status: stStale}
	}
	return claimsResp{Status: "done", Session: n.dir.Session(time.Now(), h), Rejected: n.dir.Rejected(h)}
}

// serveRead hands (a range of) a pinned copy's bytes to the transport
// (zero copy on this side); the pin is released once all its bytes are sent.
// ref names pool bytes, segment-absolute (as a one-sided rdma read does,
// which never comes here): Segment and Offset inside it, Tag the pin. It
// must lie inside the pinned object and inside one segment; anything else
// is refused, so a peer reads nothing of the pool but what it pinned.
func (n *Node) serveRead(ctx context.Context, peer transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
	n.pinMu.Lock()
	defer n.pinMu.Unlock()
	p, ok := n.pins[ref.Tag]
	if !ok {
		return nil, nil, &transport.RemoteError{Code: transport.CodeNotFound, Message: fmt.Sprintf("no pinned copy %d", ref.Tag)}
	}
	b := p.h.Bytes()
	segSize := p.h.SegmentSize()
	if ref.Offset >= segSize || ref.Length > segSize-ref.Offset {
		return nil, nil, &transport.RemoteError{Code: transport.CodeInvalid, Message: fmt.Sprintf("%s is not inside one %d-byte pool segment", ref, segSize)}
	}
	// No overflow: Segment < 2^32 and segments are at most 1 GiB.
	abs, start := uint64(ref.Segment)*segSize+ref.Offset, uint64(p.h.Offset())
	if abs < start || abs-start > uint64(len(b)) || ref.Length > uint64(len(b))-(abs-start) || ref.Length > p.left {
		seg, off := p.h.Offset().In(segSize)
		return nil, nil, &transport.RemoteError{Code: transport.CodeInvalid, Message: fmt.Sprintf("%s outside pinned copy %d: %d bytes from segment %d offset %d (%d not yet read)", ref, ref.Tag, len(b), seg, off, p.left)}
	}
	rel := abs - start
	p.left -= ref.Length
	p.sending++
	n.pins[ref.Tag] = p
	release := func() {
		n.pinMu.Lock()
		defer n.pinMu.Unlock()
		p, ok := n.pins[ref.Tag]
		if !ok {
			return // expired meanwhile: already closed
		}
		p.sending--
		n.pins[ref.Tag] = p
		if p.left == 0 && p.sending == 0 {
			delete(n.pins, ref.Tag)
			_ = p.h.Close()
		}
	}
	return b[rel : rel+ref.Length], release, nil
}
