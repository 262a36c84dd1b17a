package cluster

// Request paths between owners.
const (
	pathLookup     = "/kv/lookup"
	pathAddHolder  = "/kv/add-holder"
	pathDropHolder = "/kv/drop-holder"
	pathRenew      = "/kv/renew"
	pathWrite      = "/kv/write"
	pathInvalidate = "/kv/invalidate"
	pathPin        = "/kv/pin"
)

// Control messages are small JSON documents; bulk bytes never travel in
// them (they go by ReadRemote straight between pools).

type keyReq struct {
	Key string `json:"key"`
}

type lookupResp struct {
	Status  string   `json:"status"` // ok, notfound, busy
	Version uint64   `json:"version,omitempty"`
	Size    uint64   `json:"size,omitempty"`
	Holders []string `json:"holders,omitempty"` // holder names (incarnations)
}

type holderReq struct {
	Key     string `json:"key"`
	Holder  string `json:"holder"`
	Version uint64 `json:"version,omitempty"`
}

type statusResp struct {
	Status  string `json:"status"` // ok, stale, nosession, notfound
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
	Writer string `json:"writer"`
	Remove bool   `json:"remove,omitempty"`
	Size   uint64 `json:"size,omitempty"`
}

type writeResp struct {
	Status  string `json:"status"`
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
}

type pinResp struct {
	Status string `json:"status"` // ok, stale
	Pin    uint64 `json:"pin"`
	Size   uint64 `json:"size"`
}
