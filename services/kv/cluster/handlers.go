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
		n.dirMu.Lock()
		loc, busy, err := n.dir.Lookup(req.Key)
		n.dirMu.Unlock()
		switch {
		case busy:
			return json.Marshal(lookupResp{Status: "busy"})
		case errors.Is(err, directory.ErrNotFound):
			return json.Marshal(lookupResp{Status: "notfound"})
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
		n.dirMu.Lock()
		now := time.Now()
		err := n.dir.AddHolder(now, req.Key, directory.Holder(req.Holder), req.Version)
		sid := n.dir.Session(now, directory.Holder(req.Holder))
		n.dirMu.Unlock()
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
		n.dirMu.Lock()
		n.dir.DropHolder(req.Key, directory.Holder(req.Holder))
		n.dirMu.Unlock()
		return json.Marshal(statusResp{Status: "ok"})
	case pathWrite:
		var req writeReq
		if err := json.Unmarshal(payload, &req); err != nil {
			return bad(err)
		}
		if req.Writer != n.self {
			n.dirMu.Lock()
			live := n.dir.Live(time.Now(), directory.Holder(req.Writer))
			n.dirMu.Unlock()
			if !live {
				return json.Marshal(writeResp{Status: "nosession"})
			}
		}
		v, id, sid, err := n.homeWrite(ctx, req)
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
		return n.pin(ctx, req)
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
func (n *Node) homeWrite(ctx context.Context, req writeReq) (version, id, session uint64, err error) {
	n.dirMu.Lock()
	id, inv := n.dir.BeginWrite(req.Key, directory.Holder(req.Writer), req.Remove, req.Size)
	n.dirMu.Unlock()
	var inv0 = inv
	n.sendInvalidations(inv0)
	for {
		n.dirMu.Lock()
		if n.dir.Prepared(id) {
			v, next, err := n.dir.Commit(id)
			sid := n.dir.Session(time.Now(), directory.Holder(req.Writer))
			n.dirChangedLocked()
			n.dirMu.Unlock()
			n.sendInvalidations(next)
			return v, id, sid, err
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
			return 0, 0, 0, fmt.Errorf("write of %q abandoned: %w", req.Key, ctx.Err())
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

// pin holds this owner's copy of key at version for a bulk read.
func (n *Node) pin(ctx context.Context, req pinReq) ([]byte, error) {
	for {
		n.mu.Lock()
		ch := n.writing[req.Key]
		lc, ok := n.local[req.Key]
		n.mu.Unlock()
		if ch != nil && (!ok || lc.version != req.Version) {
			// Our own write of this version may be committing right now.
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		// Check the version and take the store's holder in one step: a write
		// committing in between replaces both together (under n.mu), so the
		// bytes pinned are always the version named.
		n.mu.Lock()
		lc, ok = n.local[req.Key]
		if !ok || lc.version != req.Version {
			n.mu.Unlock()
			return json.Marshal(pinResp{Status: "stale"})
		}
		h, err := n.o.Store.Get(req.Key)
		n.mu.Unlock()
		if err != nil {
			return json.Marshal(pinResp{Status: "stale"})
		}
		id := n.pinID.Add(1)
		n.pinMu.Lock()
		n.pins[id] = pinned{h: h, expires: time.Now().Add(pinTimeout)}
		n.pinMu.Unlock()
		return json.Marshal(pinResp{Status: "ok", Pin: id, Size: h.Size})
	}
}

// serveRead hands a pinned copy's bytes to the transport (zero copy on
// this side); the pin is released once they are sent.
func (n *Node) serveRead(ctx context.Context, peer transport.Identity, ref transport.RemoteRef) ([]byte, func(), error) {
	n.pinMu.Lock()
	p, ok := n.pins[ref.Tag]
	delete(n.pins, ref.Tag)
	n.pinMu.Unlock()
	if !ok {
		return nil, nil, &transport.RemoteError{Code: transport.CodeNotFound, Message: fmt.Sprintf("no pinned copy %d", ref.Tag)}
	}
	b := p.h.Bytes()
	if uint64(len(b)) != ref.Length {
		_ = p.h.Close()
		return nil, nil, &transport.RemoteError{Code: transport.CodeInvalid, Message: fmt.Sprintf("pinned copy has %d bytes, %d asked", len(b), ref.Length)}
	}
	return b, func() { _ = p.h.Close() }, nil
}
