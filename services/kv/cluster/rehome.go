package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fluxon-dev/fluxon/services/kv/directory"
	"github.com/fluxon-dev/fluxon/services/kv/placement"
)

// Re-homing. At every epoch switch each owner
//   - stops between operations (epochMu),
//   - turns its directory into floors for the keys' new homes and starts
//     collecting claims for the keys homed on it in the new epoch,
//   - reports to every member of the new table its copies of the keys homed
//     there (possibly none) with those floors, and
//   - serves none of its copies until their new home has confirmed them.
// A home answers for its keys only once every member has reported: then it
// knows each key's newest version and every holder of it. A write of the
// old epoch either finished before its home switched (and its writer
// reports the new version, or the home forwards it as a floor) or waits
// for the new epoch. The architecture doc has the argument in full.

// claimsTimeout bounds one claims exchange; the home holds the answer up to
// claimsPoll while its round is not over.
const (
	claimsTimeout = 5 * time.Second
	claimsPoll    = time.Second
)

// SetRouting installs the routing table of epoch; a table of an earlier or
// the same epoch is ignored. It waits for the operations in progress here
// to reach the end of their current attempt.
func (n *Node) SetRouting(epoch uint64, peers []Peer) error {
	if epoch == 0 {
		return errors.New("cluster: routing epoch 0")
	}
	n.epochMu.Lock()
	defer n.epochMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if epoch <= n.epoch {
		return nil
	}
	n.epoch = epoch
	n.peers = append([]Peer(nil), peers...)
	n.byName = map[string]Peer{}
	n.nodes = make([]placement.Node, len(peers))
	n.member = false
	for i, p := range peers {
		n.byName[p.Name()] = p
		n.nodes[i] = placement.Node{ID: p.Name(), Host: p.Host}
		if p.Name() == n.self {
			n.member = true
		}
	}
	close(n.epochCh)
	n.epochCh = make(chan struct{})

	now := time.Now()
	n.dirMu.Lock()
	floors, err := n.dir.Rehome(now, epoch)
	n.roundHave = map[string]bool{}
	select {
	case <-n.roundDone:
	default:
		close(n.roundDone) // answers waiting for the old round: it is over
	}
	n.roundDone = make(chan struct{})
	n.dirChangedLocked()
	n.dirMu.Unlock()
	if err != nil {
		return fmt.Errorf("cluster: switching to epoch %d: %w", epoch, err)
	}
	if !n.member {
		// Out of the table: this owner homes nothing and may serve nothing
		// (nobody would invalidate its copies).
		for k := range n.local {
			n.dropLocked(k)
		}
		n.o.Log.Warn("this owner is not in the routing table; its copies are dropped", "epoch", epoch)
		return nil
	}
	// Every copy this owner may still serve is claimed at its new home; a
	// copy whose session with its home lapsed may have been skipped by a
	// write there, so it goes.
	floorsTo := map[string][]directory.Floor{}
	// The backups kept here for other homes go to the keys' new homes too:
	// if a home died, they are all that says its keys existed.
	floors = append(floors, n.takeAllBackups()...)
	for _, f := range floors {
		h := n.homeLocked(f.Key)
		floorsTo[h] = append(floorsTo[h], f)
	}
	for k, lc := range n.local {
		if !n.sessionLive(lc.home) || (!lc.confirmed && lc.claimEpoch == 0) || !n.o.Store.Exists(k) {
			n.dropLocked(k)
			continue
		}
		lc.home = n.homeLocked(k)
		lc.confirmed, lc.claimEpoch, lc.claimGen, lc.session, lc.sent = false, epoch, n.gen[k], 0, false
		n.local[k] = lc
	}
	for _, p := range peers {
		if n.closed {
			break
		}
		n.wg.Add(1)
		go n.sendClaims(epoch, p.Name(), floorsTo[p.Name()])
	}
	go n.renewAll()
	return nil
}

// pauseUnlessStopped backs off, or returns at once when the node stops.
func (n *Node) pauseUnlessStopped(w *waiter) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	_ = w.wait(ctx, pause{})
}

// homeOf returns key's home in the current epoch and the epoch.
func (n *Node) homeOf(key string) (string, uint64, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.member {
		if n.epoch == 0 {
			return "", 0, ErrNoRouting
		}
		return "", 0, fmt.Errorf("%w: this owner is not in the routing table of epoch %d", ErrNoRouting, n.epoch)
	}
	return n.homeLocked(key), n.epoch, nil
}

// homeLocked: n.mu held, a routing table with this owner installed.
func (n *Node) homeLocked(key string) string {
	return n.nodes[placement.Home(placement.KeyHash(key), n.nodes)].ID
}

// Epoch returns the routing epoch this owner is in.
func (n *Node) Epoch() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.epoch
}

func (n *Node) epochIs(epoch uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.epoch == epoch
}

// claimsFor lists this owner's copies claimed at home in epoch and marks
// them as sent under the current session with home. n.mu held.
func (n *Node) claimsForLocked(epoch uint64, home string) []claim {
	var out []claim
	sid := n.sessIDs[home]
	for k, lc := range n.local {
		if lc.home != home || lc.claimEpoch != epoch || lc.confirmed || lc.claimGen != n.gen[k] {
			continue
		}
		if !lc.sent {
			lc.session, lc.sent = sid, true
			n.local[k] = lc
		}
		out = append(out, claim{Key: k, Version: lc.version, Size: lc.size})
	}
	return out
}

// sendClaims reports to home this owner's claims and floors for epoch until
// home's round is over, then applies its answer.
func (n *Node) sendClaims(epoch uint64, home string, floors []directory.Floor) {
	defer n.wg.Done()
	var w waiter
	for {
		select {
		case <-n.stop:
			return
		default:
		}
		if !n.epochIs(epoch) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), claimsTimeout)
		resp, err := n.claimOnce(ctx, epoch, home, floors)
		cancel()
		if err == nil && resp.Status == "done" {
			n.applyClaims(epoch, home, resp)
			ctx, cancel := context.WithTimeout(context.Background(), claimsTimeout)
			var st statusResp
			_ = n.call(ctx, home, pathClaimAck, claimAckReq{Epoch: epoch, Holder: n.self}, &st)
			cancel()
			return
		}
		if err == nil && resp.Status == stStale {
			return
		}
		if err == nil && resp.Status == stPending {
			w.backoff = 0 // the home held the answer for claimsPoll: ask again at once
			continue
		}
		if err != nil {
			n.o.Log.Debug("claims not delivered", "home", home, "epoch", epoch, "err", err)
		}
		n.pauseUnlessStopped(&w)
	}
}

func (n *Node) claimOnce(ctx context.Context, epoch uint64, home string, floors []directory.Floor) (claimsResp, error) {
	var resp claimsResp
	if home != n.self && !n.liveSession(home) {
		if err := n.renew(ctx, home); err != nil {
			return resp, err
		}
	}
	n.mu.Lock()
	if n.epoch != epoch {
		n.mu.Unlock()
		return claimsResp{Status: stStale}, nil
	}
	req := claimsReq{Epoch: epoch, Holder: n.self, Claims: n.claimsForLocked(epoch, home), Floors: floors}
	n.mu.Unlock()
	err := n.call(ctx, home, pathClaims, req, &resp)
	if err == nil && resp.Status == "nosession" {
		n.mu.Lock()
		delete(n.sessions, home)
		n.mu.Unlock()
	}
	return resp, err
}

// applyClaims confirms this owner's copies that home counted and drops the
// ones that lost to a newer version.
func (n *Node) applyClaims(epoch uint64, home string, resp claimsResp) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.epoch != epoch {
		return
	}
	if home != n.self {
		n.adoptSessionLocked(home, resp.Session)
	}
	for k, lc := range n.local {
		if lc.home != home || lc.claimEpoch != epoch || lc.confirmed {
			continue
		}
		if v, lost := resp.Rejected[k]; lost && v == lc.version {
			n.dropLocked(k)
			continue
		}
		if lc.claimGen != n.gen[k] || !lc.sent || (home != n.self && lc.session != resp.Session) {
			// Invalidated since, never sent, or claimed under a session the
			// home has since replaced.
			n.dropLocked(k)
			continue
		}
		lc.confirmed, lc.claimEpoch, lc.sent = true, 0, false
		n.local[k] = lc
	}
}
