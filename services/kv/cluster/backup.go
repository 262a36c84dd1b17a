package cluster

import (
	"context"
	"encoding/json"
	"time"

	"github.com/fluxon-dev/fluxon/services/kv/directory"
	"github.com/fluxon-dev/fluxon/services/kv/placement"
)

// Directory backups. A home tells each key's backup owner (the next host in
// the key's rendezvous order) the versions it commits, batched and without
// waiting. A backup is only ever used as a floor without holders when the
// epoch changes: if the home died, it is what says "this key existed at
// version v", so a key whose every holder died with it reads as lost
// (unavailable) instead of silently absent. A backup can never make an old
// value readable: it names no holder, and it only raises versions. A stale
// one (a remove whose backup message was lost) makes a removed key read as
// lost for directory.LostRetention, never as present.

const (
	backupFlush = 5 * time.Millisecond
	backupBatch = 512
)

// backupOfLocked returns the owner that keeps key's directory backup: the
// first owner after its home in rendezvous order on another host, else (all
// on one host) the first other owner; "" when there is none. n.mu held.
func (n *Node) backupOfLocked(key, home string) string {
	homeHost, other := "", ""
	for _, nd := range n.nodes {
		if nd.ID == home {
			homeHost = nd.Host
		}
	}
	for _, i := range placement.Rank(placement.KeyHash(key), n.nodes) {
		nd := n.nodes[i]
		switch {
		case nd.ID == home:
		case nd.Host != homeHost:
			return nd.ID
		case other == "":
			other = nd.ID
		}
	}
	return other
}

// backup queues a floor for key's backup owner (this owner is key's home).
func (n *Node) backup(f directory.Floor) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.member || n.closed {
		return
	}
	to := n.backupOfLocked(f.Key, n.self)
	if to == "" {
		return
	}
	n.backupQ[to] = append(n.backupQ[to], f)
	if !n.backupArmed {
		n.backupArmed = true
		n.wg.Add(1)
		go n.flushBackups()
	}
}

// flushBackups sends the queued floors after backupFlush, one message per
// backup owner (in batches of backupBatch).
func (n *Node) flushBackups() {
	defer n.wg.Done()
	select {
	case <-n.stop:
		return
	case <-time.After(backupFlush):
	}
	n.mu.Lock()
	q := n.backupQ
	n.backupQ = map[string][]directory.Floor{}
	n.backupArmed = false
	epoch := n.epoch
	n.mu.Unlock()
	for to, floors := range q {
		for len(floors) > 0 {
			k := min(len(floors), backupBatch)
			ctx, cancel := context.WithTimeout(context.Background(), n.o.SessionTTL)
			var st statusResp
			_ = n.call(ctx, to, pathBackup, backupReq{Epoch: epoch, Floors: floors[:k]}, &st)
			cancel()
			floors = floors[k:]
		}
	}
}

// takeBackups stores floors a home sent for keys backed up here.
func (n *Node) takeBackups(req backupReq) ([]byte, error) {
	n.bmu.Lock()
	for _, f := range req.Floors {
		old, ok := n.backups[f.Key]
		switch {
		case ok && old.Version > f.Version:
		case f.Removed:
			delete(n.backups, f.Key)
		default:
			f.Lost = true // used only as "it existed", never with holders
			n.backups[f.Key] = f
		}
	}
	n.bmu.Unlock()
	return json.Marshal(statusResp{Status: "ok"})
}

// takeAllBackups empties the backups for an epoch switch.
func (n *Node) takeAllBackups() []directory.Floor {
	n.bmu.Lock()
	defer n.bmu.Unlock()
	out := make([]directory.Floor, 0, len(n.backups))
	for _, f := range n.backups {
		out = append(out, f)
	}
	n.backups = map[string]directory.Floor{}
	return out
}

// backupAll re-establishes the backups of every key homed here after a
// re-homing round.
func (n *Node) backupAll() {
	n.dirMu.Lock()
	floors := n.dir.Floors(time.Now())
	n.dirMu.Unlock()
	for _, f := range floors {
		if !f.Removed {
			n.backup(f)
		}
	}
}
