// Package directory is the key directory a home owner keeps for the keys
// homed on it: which owners hold which version of each key, and the protocol
// state that makes reads across hosts linearizable. It is a pure state
// machine: the caller feeds it requests with the current time and carries out
// the actions it returns (send an invalidation, answer a waiter); it does no
// I/O and reads no clock, so every interleaving is testable.
//
// Consistency rests on holder sessions. An owner that holds replicas of keys
// homed here keeps a session with this home, renewed well within
// SessionTTL. A holder may serve its replica locally only while its session
// is live (measured on its own clock from before it sent the renewal, so it
// always expires there first). An overwrite or remove of a key first
// invalidates every other holder: it completes when each has acknowledged,
// or when the session of each silent holder has ended, after which that
// holder no longer serves anything homed here. Hence once a write returns,
// no holder anywhere can serve the old version. Lookups of a key with a
// write in progress wait for it, so every read is ordered before or after
// each write.
package directory

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// DefaultSessionTTL is how long a holder's session lasts without renewal. It
// bounds how long a write waits for a holder that does not answer.
const DefaultSessionTTL = 3 * time.Second

// LostRetention is how long a key whose every holder is gone reads as lost
// (ErrLost, "unavailable") before it reads as not found.
const LostRetention = 5 * time.Minute

// Errors.
var (
	ErrNotFound     = errors.New("directory: key not found")
	ErrStale        = errors.New("directory: version no longer current")
	ErrNoSession    = errors.New("directory: holder has no live session; renew it first")
	ErrUnknownWrite = errors.New("directory: no such write in progress")
	// ErrLost: the key has a current version but no live holder (its only
	// holders died or were cut off). A write replaces it.
	ErrLost = errors.New("directory: key lost: no live holder")
)

// Holder names an owner incarnation (instance_key@start).
type Holder string

// Location is what a lookup returns: the current version and who holds it.
type Location struct {
	Key     string
	Version uint64
	Size    uint64
	Holders []Holder // sorted
}

// Invalidate is an action: tell holder to drop its replica of key.
type Invalidate struct {
	Key    string
	Holder Holder
	Write  uint64 // the write it serves, for the acknowledgement
}

// Directory holds the entries of the keys homed on one owner.
type Directory struct {
	ttl      time.Duration
	entries  map[string]*entry
	sessions map[Holder]session
	nextSess uint64
	writes   map[uint64]*write
	wseq     uint64 // write ids handed out in this epoch
	epoch    uint64 // routing epoch: versions from a later epoch are always higher
	seq      uint64 // versions handed out in this epoch
	round    round
}

// round is the re-homing after an epoch change (Rehome): the home collects
// every owner's claims, then answers each claimant with the keys it lost.
type round struct {
	collecting bool
	// rejects: per claimant, the keys (and versions) it claimed that lost
	// to a newer version; it must drop them.
	rejects map[Holder]map[string]uint64
	// unacked: claimants with rejects that have not confirmed dropping
	// them. Tombstones are kept (and forwarded by the next Rehome) until
	// none is left, so a stale claim can never revive a removed key.
	unacked map[Holder]struct{}
}

// session is a holder's session: its deadline and its id. A fresh session
// gets a new id, so a holder can tell which of its copies the home still
// counts (those registered under the current id).
type session struct {
	deadline time.Time
	id       uint64
}

type entry struct {
	version uint64
	size    uint64
	// removed: a tombstone; version is the remove's. Kept only while a
	// stale copy of an older version may still be claimed somewhere.
	removed bool
	keep    bool // a tombstone of a remove that skipped a holder: kept until Rehome
	// lostAt: when the last holder of the current version went away by
	// session expiry (not by dropping its copy); zero while it has holders.
	lostAt  time.Time
	holders map[Holder]struct{}
	writing *write // at most one write per key at a time; others queue
	queue   []*write
}

type write struct {
	id       uint64
	key      string
	writer   Holder
	remove   bool
	size     uint64
	pending  map[Holder]struct{} // invalidations not yet acknowledged
	skipped  bool                // a holder's session ended before it acknowledged
	started  bool
	prepared bool // all invalidations done; waiting for Commit
}

// New returns an empty directory with the given holder session TTL for the
// given routing epoch.
func New(sessionTTL time.Duration, epoch uint64) *Directory {
	if sessionTTL <= 0 {
		sessionTTL = DefaultSessionTTL
	}
	return &Directory{ttl: sessionTTL, epoch: epoch, entries: map[string]*entry{}, sessions: map[Holder]session{}, writes: map[uint64]*write{},
		round: round{rejects: map[Holder]map[string]uint64{}, unacked: map[Holder]struct{}{}}}
}

// SetEpoch moves to a later routing epoch: versions handed out from now on
// are higher than any of an earlier epoch, whichever home gave those.
func (d *Directory) SetEpoch(epoch uint64) {
	if epoch > d.epoch {
		d.epoch, d.seq, d.wseq = epoch, 0, 0
	}
}

// Epoch is the routing epoch the directory serves.
func (d *Directory) Epoch() uint64 { return d.epoch }

func (d *Directory) nextVersion() uint64 {
	d.seq++
	return d.epoch<<32 | d.seq
}

// SessionTTL is the holder session length.
func (d *Directory) SessionTTL() time.Duration { return d.ttl }

// Renew starts or extends holder's session until now+ttl and returns the
// session's id. fresh is true when the holder had no live session here (new,
// or ended): the home has counted every copy it held as gone, and the new
// session has a new id. The holder must drop every copy of a key homed here
// registered under an older id before it serves any again; without that, a
// holder whose renewal arrived just too late would revive copies that writes
// in between never invalidated.
func (d *Directory) Renew(now time.Time, h Holder) (deadline time.Time, fresh bool, id uint64) {
	fresh = !d.live(now, h)
	sess := d.sessions[h]
	if fresh {
		// Make sure no entry still lists it (Expire may not have run yet).
		for key, e := range d.entries {
			delete(e.holders, h)
			d.gc(key, e)
		}
		for _, w := range d.writes {
			if _, ok := w.pending[h]; ok && w.started {
				delete(w.pending, h)
				w.skipped = true
				w.prepared = len(w.pending) == 0
			}
		}
		d.ackRound(h) // it dropped every copy homed here
		d.nextSess++
		sess.id = d.nextSess
	}
	sess.deadline = now.Add(d.ttl)
	d.sessions[h] = sess
	return sess.deadline, fresh, sess.id
}

// Keep gives h a session that never ends: the home's own owner, whose
// copies of keys homed here need no lease with itself.
func (d *Directory) Keep(h Holder) {
	d.nextSess++
	d.sessions[h] = session{deadline: time.Unix(1<<62, 0), id: d.nextSess}
}

// Session returns h's live session id, or 0.
func (d *Directory) Session(now time.Time, h Holder) uint64 {
	if !d.live(now, h) {
		return 0
	}
	return d.sessions[h].id
}

// Live reports whether h has a live session.
func (d *Directory) Live(now time.Time, h Holder) bool { return d.live(now, h) }

func (d *Directory) live(now time.Time, h Holder) bool {
	s, ok := d.sessions[h]
	return ok && now.Before(s.deadline)
}

// Lookup returns where key's current version is. blocked is true while a
// write of the key is in progress: the caller retries after the write
// completes (Commit/Abort report the key as released).
func (d *Directory) Lookup(key string) (loc Location, blocked bool, err error) {
	if d.round.collecting {
		return Location{}, true, nil
	}
	e := d.entries[key]
	if e == nil {
		return Location{}, false, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	if e.writing != nil {
		return Location{}, true, nil
	}
	if e.version == 0 || e.removed {
		return Location{}, false, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	if len(e.holders) == 0 {
		return Location{}, false, fmt.Errorf("%w: %q version %d", ErrLost, key, e.version)
	}
	return Location{Key: key, Version: e.version, Size: e.size, Holders: sortedHolders(e.holders)}, false, nil
}

// Exists reports whether key has a current value (a lost one included: it
// exists, unreadable) and whether a write of it is in progress or queued, in
// which case the answer is not settled yet.
func (d *Directory) Exists(key string) (exists, busy bool) {
	if d.round.collecting {
		return false, true
	}
	e := d.entries[key]
	if e == nil {
		return false, false
	}
	if e.writing != nil || len(e.queue) > 0 {
		return false, true
	}
	return e.version != 0 && !e.removed, false
}

// AddHolder records that h now holds version of key (it pulled the bytes).
// It fails with ErrStale when that version is no longer current (a write
// came between the lookup and the pull: the holder must drop its copy) and
// with ErrNoSession when h has no live session.
func (d *Directory) AddHolder(now time.Time, key string, h Holder, version uint64) error {
	if !d.live(now, h) {
		return ErrNoSession
	}
	e := d.entries[key]
	if e == nil || e.version != version || e.removed || e.writing != nil {
		return fmt.Errorf("%w: %q version %d", ErrStale, key, version)
	}
	e.holders[h] = struct{}{}
	e.lostAt = time.Time{}
	return nil
}

// DropHolder records that h no longer holds key at version (evicted
// locally, or found missing by a reader's pull). It does nothing when the
// entry moved to another version or a write of it is in progress: the
// write's invalidation settles h then.
func (d *Directory) DropHolder(key string, h Holder, version uint64) {
	if e := d.entries[key]; e != nil && e.version == version && e.writing == nil {
		delete(e.holders, h)
		d.gc(key, e)
	}
}

// BeginWrite starts an overwrite (remove=false) or a remove of key by
// writer. It returns the write's id and the invalidations to send now. If
// another write of the key is in progress the new one queues and no
// invalidations are returned yet; they come from the Ack/Expire call that
// starts it. A write with nothing to invalidate is prepared at once
// (Prepared reports it).
func (d *Directory) BeginWrite(key string, writer Holder, remove bool, size uint64) (uint64, []Invalidate) {
	e := d.entries[key]
	if e == nil {
		e = &entry{holders: map[Holder]struct{}{}}
		d.entries[key] = e
	}
	d.wseq++
	// Write ids carry the epoch like versions: a writer compares its write's
	// id with the highest id that invalidated its copy, across epochs too.
	w := &write{id: d.epoch<<32 | d.wseq, key: key, writer: writer, remove: remove, size: size}
	d.writes[w.id] = w
	if e.writing != nil {
		e.queue = append(e.queue, w)
		return w.id, nil
	}
	return w.id, d.start(e, w)
}

func (d *Directory) start(e *entry, w *write) []Invalidate {
	e.writing = w
	w.started = true
	w.pending = map[Holder]struct{}{}
	var out []Invalidate
	// The writer is invalidated like everyone else: its copy may be from an
	// earlier write of its own that committed after this one began, and a
	// remove replaces nothing.
	for _, h := range sortedHolders(e.holders) {
		w.pending[h] = struct{}{}
		out = append(out, Invalidate{Key: w.key, Holder: h, Write: w.id})
	}
	w.prepared = len(w.pending) == 0
	return out
}

// Prepared reports whether every other holder has let go of the old
// version, so the write can Commit.
func (d *Directory) Prepared(id uint64) bool {
	w := d.writes[id]
	return w != nil && w.prepared
}

// Waiting reports whether write id still waits for h's acknowledgement.
func (d *Directory) Waiting(id uint64, h Holder) bool {
	w := d.writes[id]
	if w == nil || !w.started {
		return false
	}
	_, ok := w.pending[h]
	return ok
}

// Ack records holder's acknowledgement of an invalidation.
func (d *Directory) Ack(id uint64, h Holder) {
	w := d.writes[id]
	if w == nil || !w.started {
		return
	}
	if e := d.entries[w.key]; e != nil {
		delete(e.holders, h)
	}
	delete(w.pending, h)
	w.prepared = len(w.pending) == 0
}

// Expire ends the sessions that have run out: their holders serve nothing
// homed here any more, so they count as invalidated everywhere and leave
// every entry.
func (d *Directory) Expire(now time.Time) []Holder {
	var gone []Holder
	for h, s := range d.sessions {
		if !now.Before(s.deadline) {
			gone = append(gone, h)
			delete(d.sessions, h)
		}
	}
	for key, e := range d.entries {
		if !e.lostAt.IsZero() && now.Sub(e.lostAt) > LostRetention {
			delete(d.entries, key)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	for key, e := range d.entries {
		had := len(e.holders)
		for _, h := range gone {
			delete(e.holders, h)
		}
		if had > 0 && len(e.holders) == 0 && e.version != 0 && !e.removed {
			e.lostAt = now // its holders died: "lost", not "never existed"
		}
		d.gc(key, e)
	}
	for _, w := range d.writes {
		if !w.started {
			continue
		}
		for _, h := range gone {
			if _, ok := w.pending[h]; ok {
				delete(w.pending, h)
				w.skipped = true
			}
		}
		w.prepared = len(w.pending) == 0
	}
	for _, h := range gone {
		d.ackRound(h)
	}
	slices.Sort(gone)
	return gone
}

// Commit completes a prepared write: the new version is current and the
// writer its only holder (for a remove, the version is the remove's and
// nobody holds the key). It returns the version and the invalidations of the
// next queued write of the key, if one starts.
func (d *Directory) Commit(id uint64) (uint64, []Invalidate, error) {
	w := d.writes[id]
	if w == nil || !w.started {
		return 0, nil, fmt.Errorf("%w: %d", ErrUnknownWrite, id)
	}
	if !w.prepared {
		return 0, nil, fmt.Errorf("directory: write %d of %q still waits for %d holder(s)", id, w.key, len(w.pending))
	}
	e := d.entries[w.key]
	delete(d.writes, id)
	e.writing = nil
	e.holders = map[Holder]struct{}{}
	e.lostAt = time.Time{}
	e.version, e.size, e.removed = d.nextVersion(), w.size, w.remove
	if w.remove {
		e.size = 0
		// A holder skipped by session expiry may have claimed its old copy
		// at a new home already (it did so while its session was live): keep
		// the tombstone until the next Rehome forwards it.
		e.removed, e.keep = w.skipped, w.skipped
		if !w.skipped {
			e.version = 0
		}
		v := d.epoch<<32 | d.seq
		return v, d.next(w.key, e), nil
	}
	e.holders[w.writer] = struct{}{}
	return e.version, d.next(w.key, e), nil
}

// Abort gives up a write (the writer failed before committing): the key
// keeps its old version minus the holders already invalidated.
func (d *Directory) Abort(id uint64) []Invalidate {
	w := d.writes[id]
	if w == nil {
		return nil
	}
	delete(d.writes, id)
	e := d.entries[w.key]
	if !w.started {
		e.queue = slices.DeleteFunc(e.queue, func(q *write) bool { return q == w })
		return nil
	}
	e.writing = nil
	return d.next(w.key, e)
}

func (d *Directory) next(key string, e *entry) []Invalidate {
	if len(e.queue) > 0 {
		w := e.queue[0]
		e.queue = e.queue[1:]
		return d.start(e, w)
	}
	d.gc(key, e)
	return nil
}

// gc forgets an entry with nothing left in it.
func (d *Directory) gc(key string, e *entry) {
	if e.writing != nil || len(e.queue) > 0 || d.round.collecting {
		return
	}
	switch {
	case e.removed:
		if len(d.round.unacked) == 0 && !e.keep {
			delete(d.entries, key)
		}
	case e.version == 0:
		delete(d.entries, key)
	case len(e.holders) == 0 && e.lostAt.IsZero():
		delete(d.entries, key)
	}
}

// Floor is what a home forwards about one of its keys when the epoch
// changes: the newest version it knows, so that no older copy claimed at the
// key's next home can win. A floor names no holder.
type Floor struct {
	Key     string `json:"k"`
	Version uint64 `json:"v"`
	Size    uint64 `json:"s,omitempty"`
	Removed bool   `json:"r,omitempty"`
	Lost    bool   `json:"l,omitempty"`
}

// Rehome moves the directory to a later epoch: it returns the floors of
// every entry (for their homes in the new epoch, this one included) and
// starts empty, collecting claims (Claim, ClaimFloor) until EndRound.
// Sessions carry over. No write may be in progress (the caller stops its
// own operations first).
func (d *Directory) Rehome(now time.Time, epoch uint64) ([]Floor, error) {
	if epoch <= d.epoch {
		return nil, fmt.Errorf("directory: epoch %d is not after %d", epoch, d.epoch)
	}
	if len(d.writes) > 0 {
		return nil, fmt.Errorf("directory: %d write(s) in progress at an epoch change", len(d.writes))
	}
	out := d.Floors(now)
	d.entries = map[string]*entry{}
	d.SetEpoch(epoch)
	d.round = round{collecting: true, rejects: map[Holder]map[string]uint64{}, unacked: map[Holder]struct{}{}}
	return out, nil
}

// Floors returns what the directory knows of its keys as floors: every
// key with a current version (held, removed with a tombstone, or lost within
// LostRetention), sorted by key.
func (d *Directory) Floors(now time.Time) []Floor {
	var out []Floor
	for key, e := range d.entries {
		switch {
		case e.removed:
			out = append(out, Floor{Key: key, Version: e.version, Removed: true})
		case e.version == 0:
		case len(e.holders) > 0:
			out = append(out, Floor{Key: key, Version: e.version, Size: e.size})
		case !e.lostAt.IsZero() && now.Sub(e.lostAt) <= LostRetention:
			out = append(out, Floor{Key: key, Version: e.version, Size: e.size, Lost: true})
		}
	}
	slices.SortFunc(out, func(a, b Floor) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Collecting reports whether the directory is still collecting claims.
func (d *Directory) Collecting() bool { return d.round.collecting }

func (d *Directory) claimEntry(key string) *entry {
	e := d.entries[key]
	if e == nil {
		e = &entry{holders: map[Holder]struct{}{}}
		d.entries[key] = e
	}
	return e
}

func (d *Directory) reject(h Holder, key string, version uint64) {
	m := d.round.rejects[h]
	if m == nil {
		m = map[string]uint64{}
		d.round.rejects[h] = m
	}
	m[key] = version
	d.round.unacked[h] = struct{}{}
}

// raise makes version the entry's current one: every holder of an older
// version is rejected.
func (d *Directory) raise(key string, e *entry, version, size uint64, removed bool) {
	for h := range e.holders {
		d.reject(h, key, e.version)
	}
	e.version, e.size, e.removed = version, size, removed
	e.holders = map[Holder]struct{}{}
}

// Claim records, while collecting, that h holds version of key (an owner's
// copy after an epoch change). The highest version claimed or forwarded
// wins; claimants of older ones are rejected (Rejected). h needs a live
// session: its copies are counted, and invalidated, like any holder's.
func (d *Directory) Claim(now time.Time, key string, h Holder, version, size uint64) error {
	if !d.live(now, h) {
		return ErrNoSession
	}
	if !d.round.collecting {
		return fmt.Errorf("directory: claim of %q after the round of epoch %d ended", key, d.epoch)
	}
	e := d.claimEntry(key)
	switch {
	case version > e.version:
		d.raise(key, e, version, size, false)
		e.holders[h] = struct{}{}
	case version == e.version && !e.removed:
		e.holders[h] = struct{}{}
	case version == e.version: // a copy of a removed version: cannot happen, drop it
		d.reject(h, key, version)
	default:
		d.reject(h, key, version)
	}
	return nil
}

// ClaimFloor records, while collecting, a floor forwarded by a key's
// previous home.
func (d *Directory) ClaimFloor(f Floor) error {
	if !d.round.collecting {
		return fmt.Errorf("directory: floor of %q after the round of epoch %d ended", f.Key, d.epoch)
	}
	e := d.claimEntry(f.Key)
	if f.Version > e.version || (f.Version == e.version && f.Removed && !e.removed) {
		d.raise(f.Key, e, f.Version, f.Size, f.Removed)
	}
	return nil
}

// EndRound ends claim collection: entries whose version nobody holds read
// as lost, tombstones stay until every rejected claimant acknowledged
// (AckRound) or its session ended.
func (d *Directory) EndRound(now time.Time) {
	d.round.collecting = false
	for key, e := range d.entries {
		if !e.removed && e.version != 0 && len(e.holders) == 0 {
			e.lostAt = now
		}
		d.gc(key, e)
	}
}

// Rejected returns the keys (and claimed versions) of h's claims that lost
// in this epoch's round.
func (d *Directory) Rejected(h Holder) map[string]uint64 { return maps.Clone(d.round.rejects[h]) }

// AckRound records that h dropped its rejected copies.
func (d *Directory) AckRound(h Holder) { d.ackRound(h) }

func (d *Directory) ackRound(h Holder) {
	if _, ok := d.round.unacked[h]; !ok {
		return
	}
	delete(d.round.unacked, h)
	if len(d.round.unacked) == 0 && !d.round.collecting {
		for key, e := range d.entries {
			if e.removed {
				d.gc(key, e)
			}
		}
	}
}

// Len returns the number of keys with a directory entry.
func (d *Directory) Len() int { return len(d.entries) }

func sortedHolders(m map[Holder]struct{}) []Holder {
	return slices.Sorted(maps.Keys(m))
}
