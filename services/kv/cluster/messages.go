package cluster

import "github.com/fluxon-dev/fluxon/services/kv/directory"

// Request paths between owners.
const (
	pathLookup     = "/kv/lookup"
	pathAddHolder  = "/kv/add-holder"
	pathDropHolder = "/kv/drop-holder"
	pathRenew      = "/kv/renew"
	pathWrite      = "/kv/write"
	pathInvalidate = "/kv/invalidate"
	pathPin        = "/kv/pin"
	pathUnpin      = "/kv/unpin" // one-way
	pathClaims     = "/kv/claims"
	pathClaimAck   = "/kv/claim-ack"
	pathReplicate  = "/kv/replicate"
	pathBackup     = "/kv/backup"
)

// Statuses a home answers besides ok/notfound.
const (
	stBusy    = "busy"    // a write of the key, an epoch switch or the re-homing round is in progress
	stEpoch   = "epoch"   // the sender is in another routing epoch (Epoch says the home's)
	stLost    = "lost"    // the key's holders are gone
	stRetry   = "retry"   // pin: this owner is committing a write of the key
	stPending = "pending" // claims: the round is not over yet
	stNotYet  = "notyet"  // claims: the home has not reached that epoch yet
	stStale   = "stale"
	stExists  = "exists" // a put if absent found the key
)

// Control messages are small JSON documents; bulk bytes never travel in
// them (they go by ReadRemote straight between pools).

type keyReq struct {
	Key   string `json:"key"`
	Epoch uint64 `json:"epoch"`
}

type lookupResp struct {
	Status  string   `json:"status"` // ok, notfound, lost, busy, epoch
	Epoch   uint64   `json:"epoch,omitempty"`
	Version uint64   `json:"version,omitempty"`
	Size    uint64   `json:"size,omitempty"`
	Holders []string `json:"holders,omitempty"` // holder names (incarnations)
}

type holderReq struct {
	Key     string `json:"key"`
	Epoch   uint64 `json:"epoch"`
	Holder  string `json:"holder"`
	Version uint64 `json:"version,omitempty"`
}

type statusResp struct {
	Status  string `json:"status"` // ok, stale, nosession, notfound, busy, epoch
	Epoch   uint64 `json:"epoch,omitempty"`
	Session uint64 `json:"session,omitempty"`
}

type renewReq struct {
	Holder string `json:"holder"`
}

type renewResp struct {
	Fresh   bool   `json:"fresh"`
	Session uint64 `json:"session"`
}

type writeReq struct {
	Key    string `json:"key"`
	Epoch  uint64 `json:"epoch"`
	Writer string `json:"writer"`
	Remove bool   `json:"remove,omitempty"`
	// IfAbsent, IfPresent: conditional puts, checked at the home.
	IfAbsent  bool   `json:"if_absent,omitempty"`
	IfPresent bool   `json:"if_present,omitempty"`
	Size      uint64 `json:"size,omitempty"`
}

type writeResp struct {
	Status  string `json:"status"`
	Epoch   uint64 `json:"epoch,omitempty"`
	Version uint64 `json:"version"`
	Write   uint64 `json:"write"`   // the home's id of this write; later writes have higher ids
	Session uint64 `json:"session"` // the writer's session the copy is registered under
}

type invalidateReq struct {
	Key   string `json:"key"`
	Write uint64 `json:"write"` // the write that invalidates
}

type pinReq struct {
	Key     string `json:"key"`
	Version uint64 `json:"version"`
	// PoolRefs: the reader names the pinned bytes by their position in
	// the holder's pool (segment-absolute RemoteRefs, which one-sided rdma
	// can serve). Readers that predate it named ranges inside the object;
	// a holder refuses their pins rather than serve them, since such a
	// range can also lie inside the object read as segment-absolute and
	// would return the wrong bytes.
	PoolRefs bool `json:"pool_refs"`
}

type pinResp struct {
	Status string `json:"status"` // ok, stale, retry
	Pin    uint64 `json:"pin"`
	Size   uint64 `json:"size"`
	// At is where the pinned object's first byte lies in the holder's
	// pool. A holder that predates segment-absolute reads leaves it out,
	// and the reader gives up on it.
	At *poolPos `json:"at,omitempty"`
}

// unpinReq ends a pin once the reader is done with it: one-sided reads
// (rdma) never reach the holder's ServeRead, which releases a pin after its
// last byte, so without it the pin would hold the copy until pinTimeout.
type unpinReq struct {
	Pin uint64 `json:"pin"`
}

// poolPos is a position in an owner's pool: segment Segment (RemoteRef's
// Segment), byte Offset inside it, in a pool of SegmentSize-byte segments
// (owners may be configured with different sizes).
type poolPos struct {
	Segment     uint32 `json:"seg"`
	Offset      uint64 `json:"off"`
	SegmentSize uint64 `json:"seg_size"`
}

// claim is one copy an owner holds, reported to the key's home after an
// epoch change.
type claim struct {
	Key     string `json:"k"`
	Version uint64 `json:"v"`
	Size    uint64 `json:"s"`
}

// claimsReq carries everything one owner reports to one home for an epoch:
// its copies of keys homed there and the floors of the entries it homed
// before. It is sent (again, idempotently) until the home's round is over.
type claimsReq struct {
	Epoch  uint64            `json:"epoch"`
	Holder string            `json:"holder"`
	Claims []claim           `json:"claims,omitempty"`
	Floors []directory.Floor `json:"floors,omitempty"`
}

type claimsResp struct {
	Status   string            `json:"status"` // done, pending, notyet, stale, nosession
	Session  uint64            `json:"session,omitempty"`
	Rejected map[string]uint64 `json:"rejected,omitempty"` // copies to drop: key -> claimed version
}

type claimAckReq struct {
	Epoch  uint64 `json:"epoch"`
	Holder string `json:"holder"`
}

// backupReq carries floors a home sends to the backup owner of those keys.
type backupReq struct {
	Epoch  uint64            `json:"epoch"`
	Floors []directory.Floor `json:"floors"`
}
