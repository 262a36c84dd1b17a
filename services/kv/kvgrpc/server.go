// Package kvgrpc serves a kv.Backend (an owner's store) over gRPC (the fluxon.v1.KV service in
// api/proto/fluxon/v1) for remote and non-Go clients, and is the Go client of
// that service.
//
// Small values travel in one message; large ones in chunks of ChunkSize,
// straight between the pool and the wire: PutStream reserves the whole value
// in the pool up front and copies each chunk into the reservation, Get holds
// the value (kv.Holder) for the whole stream and sends chunks from the pool's
// bytes. Errors carry a google.rpc.ErrorInfo reason, which the client maps
// back to kv's sentinel errors. docs/grpc.md has the message flow, the limits
// and the error codes.
package kvgrpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/services/kv"
)

// Limits. A message is at most MaxMessageSize; everything else is sized so
// that a request or response carrying it, key and framing included, fits.
const (
	// MaxMessageSize bounds one gRPC message each way. ServerOptions and Dial
	// set it; a grpc.Server built without ServerOptions keeps gRPC's 4 MiB
	// default and refuses Puts near MaxUnaryValue.
	MaxMessageSize = 8 << 20
	// MaxUnaryValue is the largest value Put carries in one message; larger
	// values go through PutStream (Client.Put switches by itself).
	MaxUnaryValue = 4 << 20
	// ChunkSize is the most value bytes one PutStream or Get message carries.
	ChunkSize = 1 << 20
	// MaxBatchItems is the most items one BatchPut, BatchGet or BatchRemove
	// carries; the client splits longer batches.
	MaxBatchItems = 1024
	// MaxBatchBytes bounds the keys and values of one BatchPut request and
	// the values of one BatchGet response.
	MaxBatchBytes = 4 << 20
	// MaxBatchKeyBytes bounds the keys of one BatchGet or BatchRemove
	// request, so that the response (values, plus error messages that quote
	// keys) stays under MaxMessageSize.
	MaxBatchKeyBytes = 2 << 20
	// MaxScanCount caps ScanRequest.count (keys examined per call).
	MaxScanCount = 4096
	// defaultScanCount is what count 0 means, as in the store and RESP.
	defaultScanCount = 10
	// scanStep is how many keys one store.Scan call examines, and scanBudget
	// how many key bytes a response collects before it stops early: with
	// keys of up to kv.MaxKeyLen, one response stays under
	// scanBudget + scanStep*kv.MaxKeyLen = 4 MiB.
	scanStep   = 32
	scanBudget = 2 << 20
)

// ServerOptions are the options a grpc.Server serving this service needs:
// message size limits to match MaxMessageSize.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize)}
}

// Server implements fluxonv1.KVServer over a kv.Backend: a *kv.Store, or an
// owner's cross-host backend.
type Server struct {
	fluxonv1.UnimplementedKVServer
	store kv.Backend
	log   *slog.Logger
}

// NewServer serves store. A nil log means slog.Default().
func NewServer(store kv.Backend, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{store: store, log: log}
}

// Register adds the KV service to gs. Build gs with ServerOptions().
func (s *Server) Register(gs *grpc.Server) { fluxonv1.RegisterKVServer(gs, s) }

// fail converts err for the wire, logging what is the server's fault.
func (s *Server) fail(method string, err error) error {
	if code, _ := classify(err); code == codes.Internal {
		s.log.Error("kvgrpc: internal error", "method", method, "err", err)
	}
	return toStatus(err)
}

// msDuration converts milliseconds, saturating instead of overflowing so an
// absurd TTL is reported as out of range rather than wrapped around.
func msDuration(ms int64) time.Duration {
	const maxMs = math.MaxInt64 / int64(time.Millisecond)
	switch {
	case ms > maxMs:
		return math.MaxInt64
	case ms < -maxMs:
		return math.MinInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// durationMs rounds up, so a TTL of 1 ns left does not read as "no TTL".
func durationMs(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func kindFrom(k fluxonv1.ValueKind) (kv.ValueKind, error) {
	switch k {
	case fluxonv1.ValueKind_VALUE_KIND_BYTES:
		return kv.KindBytes, nil
	case fluxonv1.ValueKind_VALUE_KIND_DICT:
		return kv.KindDict, nil
	}
	return 0, fmt.Errorf("%w: unknown value kind %d; use VALUE_KIND_BYTES or VALUE_KIND_DICT", ErrBadRequest, int32(k))
}

func kindTo(k kv.ValueKind) fluxonv1.ValueKind {
	if k == kv.KindDict {
		return fluxonv1.ValueKind_VALUE_KIND_DICT
	}
	return fluxonv1.ValueKind_VALUE_KIND_BYTES
}

// putOptions checks what the store would reject only with an untyped error,
// so the caller gets InvalidArgument rather than Internal.
func putOptions(kind fluxonv1.ValueKind, o *fluxonv1.PutOptions) (kv.PutOptions, error) {
	k, err := kindFrom(kind)
	if err != nil {
		return kv.PutOptions{}, err
	}
	po := kv.PutOptions{
		Lease: kv.LeaseID(o.GetLeaseId()), TTL: msDuration(o.GetTtlMs()), IfAbsent: o.GetIfAbsent(),
		IfPresent: o.GetIfPresent(), RejectInflight: o.GetRejectInflight(), Kind: k,
		Replicas: int(o.GetReplicas()), Placement: o.GetPlacement(),
	}
	if po.Lease != 0 && po.TTL != 0 {
		return kv.PutOptions{}, fmt.Errorf("%w: lease_id and ttl_ms are mutually exclusive; set one", ErrBadRequest)
	}
	if po.IfAbsent && po.IfPresent {
		return kv.PutOptions{}, fmt.Errorf("%w: if_absent and if_present together can never succeed; set one", ErrBadRequest)
	}
	return po, nil
}

// checkValue refuses a dict that does not decode, so that the writer (often
// a non-Go client encoding dicts by hand) hears of it rather than every
// later reader. Bytes values are opaque.
func checkValue(kind kv.ValueKind, b []byte) error {
	if kind != kv.KindDict {
		return nil
	}
	_, err := kv.DecodeDict(b)
	return err
}

func objectInfo(key string, in kv.Info) *fluxonv1.ObjectInfo {
	return &fluxonv1.ObjectInfo{
		Key: []byte(key), Size: in.Size, Version: in.Version, Kind: kindTo(in.Kind),
		LeaseId: int64(in.Lease), TtlMs: durationMs(in.TTL),
	}
}

// Put stores a value of at most MaxUnaryValue bytes.
func (s *Server) Put(ctx context.Context, req *fluxonv1.PutRequest) (*fluxonv1.PutResponse, error) {
	if n := len(req.GetValue()); n > MaxUnaryValue {
		return nil, s.fail("Put", fmt.Errorf("%w: %d bytes, Put carries at most %d; send it with PutStream (the Go client does so by itself)", ErrUsePutStream, n, MaxUnaryValue))
	}
	o, err := putOptions(req.GetKind(), req.GetOptions())
	if err == nil {
		err = checkValue(o.Kind, req.GetValue())
	}
	if err != nil {
		return nil, s.fail("Put", err)
	}
	v, err := s.store.Put(ctx, string(req.GetKey()), req.GetValue(), o)
	if err != nil {
		return nil, s.fail("Put", err)
	}
	return &fluxonv1.PutResponse{Version: v}, nil
}

// PutStream reserves the whole value when the header arrives, copies each
// chunk into the reservation and commits when the client closes its side
// with exactly size bytes sent. Any other end gives the reservation back.
func (s *Server) PutStream(stream grpc.ClientStreamingServer[fluxonv1.PutStreamRequest, fluxonv1.PutResponse]) error {
	const method = "PutStream"
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return s.fail(method, fmt.Errorf("%w: empty PutStream; the first message must be a header", ErrBadRequest))
	}
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return s.fail(method, fmt.Errorf("%w: the first PutStream message must be a header (key, size, options)", ErrBadRequest))
	}
	o, err := putOptions(hdr.GetKind(), hdr.GetOptions())
	if err != nil {
		return s.fail(method, err)
	}
	ctx := stream.Context()
	r, err := s.store.Reserve(ctx, string(hdr.GetKey()), hdr.GetSize(), o)
	if err != nil {
		return s.fail(method, err)
	}
	// Abort is a no-op once Commit has run (Commit gives the reservation
	// back itself when it fails), so every other way out gives it back.
	defer func() {
		if aerr := s.store.Abort(r); aerr != nil {
			s.log.Error("kvgrpc: giving back a PutStream reservation", "key", r.Key, "err", aerr)
		}
	}()

	dst := s.store.Bytes(r)
	var n uint64
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.log.Debug("kvgrpc: PutStream broken, reservation given back", "key", r.Key, "received", n, "size", r.Size, "err", err)
			return err
		}
		if m.GetHeader() != nil {
			return s.fail(method, fmt.Errorf("%w: a second header at byte %d; only the first message is a header", ErrBadRequest, n))
		}
		chunk := m.GetChunk()
		if len(chunk) > ChunkSize {
			return s.fail(method, fmt.Errorf("%w: chunk of %d bytes; chunks are at most %d", ErrBadRequest, len(chunk), ChunkSize))
		}
		if uint64(len(chunk)) > r.Size-n {
			return s.fail(method, fmt.Errorf("%w: chunks add up to more than the header's size %d; send exactly size bytes", ErrSizeMismatch, r.Size))
		}
		n += uint64(copy(dst[n:], chunk))
	}
	if n != r.Size {
		return s.fail(method, fmt.Errorf("%w: stream ended after %d of %d bytes; send exactly size bytes", ErrSizeMismatch, n, r.Size))
	}
	if err := checkValue(o.Kind, dst); err != nil {
		return s.fail(method, err)
	}
	v, err := s.store.CommitContext(ctx, r)
	if err != nil {
		return s.fail(method, err)
	}
	return stream.SendAndClose(&fluxonv1.PutResponse{Version: v})
}

// Get streams a value straight from the pool, holding it until the last
// chunk is sent (or the client goes away).
func (s *Server) Get(req *fluxonv1.GetRequest, stream grpc.ServerStreamingServer[fluxonv1.GetResponse]) error {
	key := string(req.GetKey())
	h, err := s.store.GetContext(stream.Context(), key)
	if err != nil {
		return s.fail("Get", err)
	}
	// Send marshals the chunk into its own buffer before it returns, so the
	// pool bytes are not read after Close.
	defer func() {
		if cerr := h.Close(); cerr != nil {
			s.log.Error("kvgrpc: closing a Get holder", "key", key, "err", cerr)
		}
	}()
	info := h.Info
	if info.Lease != 0 {
		info.TTL, _ = s.store.LeaseTTL(info.Lease) // an ended lease reads as no time left
	}
	b := h.Bytes()
	first := b[:min(len(b), ChunkSize)]
	if err := stream.Send(&fluxonv1.GetResponse{Info: objectInfo(key, info), Chunk: first}); err != nil {
		return err
	}
	for off := len(first); off < len(b); off += ChunkSize {
		// A new message each time: gRPC forbids changing one after Send.
		if err := stream.Send(&fluxonv1.GetResponse{Chunk: b[off:min(len(b), off+ChunkSize)]}); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes a key.
func (s *Server) Remove(ctx context.Context, req *fluxonv1.RemoveRequest) (*fluxonv1.RemoveResponse, error) {
	if err := s.store.RemoveContext(ctx, string(req.GetKey())); err != nil {
		return nil, s.fail("Remove", err)
	}
	return &fluxonv1.RemoveResponse{}, nil
}

// Exists reports whether a key is stored; a malformed key is an error, not
// "absent".
func (s *Server) Exists(ctx context.Context, req *fluxonv1.ExistsRequest) (*fluxonv1.ExistsResponse, error) {
	_, err := s.store.StatContext(ctx, string(req.GetKey()))
	switch {
	case err == nil:
		return &fluxonv1.ExistsResponse{Exists: true}, nil
	case errors.Is(err, kv.ErrNotFound):
		return &fluxonv1.ExistsResponse{}, nil
	}
	return nil, s.fail("Exists", err)
}

// Stat describes a key.
func (s *Server) Stat(ctx context.Context, req *fluxonv1.StatRequest) (*fluxonv1.StatResponse, error) {
	key := string(req.GetKey())
	in, err := s.store.StatContext(ctx, key)
	if err != nil {
		return nil, s.fail("Stat", err)
	}
	return &fluxonv1.StatResponse{Info: objectInfo(key, in)}, nil
}

func checkBatch(n int) error {
	if n > MaxBatchItems {
		return fmt.Errorf("%w: %d items, a batch carries at most %d; split it", ErrBatchTooLarge, n, MaxBatchItems)
	}
	return nil
}

func checkBatchKeys(keys [][]byte) error {
	if err := checkBatch(len(keys)); err != nil {
		return err
	}
	total := 0
	for _, k := range keys {
		total += len(k)
	}
	if total > MaxBatchKeyBytes {
		return fmt.Errorf("%w: %d bytes of keys, a batch carries at most %d; split it", ErrBatchTooLarge, total, MaxBatchKeyBytes)
	}
	return nil
}

// BatchPut stores each item independently.
func (s *Server) BatchPut(ctx context.Context, req *fluxonv1.BatchPutRequest) (*fluxonv1.BatchPutResponse, error) {
	items := req.GetItems()
	if err := checkBatch(len(items)); err != nil {
		return nil, s.fail("BatchPut", err)
	}
	total := 0
	for _, it := range items {
		total += len(it.GetKey()) + len(it.GetValue())
	}
	if total > MaxBatchBytes {
		return nil, s.fail("BatchPut", fmt.Errorf("%w: %d bytes of keys and values, a BatchPut carries at most %d; split it or Put large values", ErrBatchTooLarge, total, MaxBatchBytes))
	}
	resp := &fluxonv1.BatchPutResponse{Results: make([]*fluxonv1.BatchPutResult, len(items))}
	for i, it := range items {
		res := &fluxonv1.BatchPutResult{}
		o, err := putOptions(it.GetKind(), it.GetOptions())
		if err == nil {
			err = checkValue(o.Kind, it.GetValue())
		}
		if err == nil {
			res.Version, err = s.store.Put(ctx, string(it.GetKey()), it.GetValue(), o)
		}
		res.Status = itemStatus(err)
		resp.Results[i] = res
	}
	return resp, nil
}

// BatchGet reads each key independently, copying values into the response
// until MaxBatchBytes; a value that does not fit is reported as ErrUseGet.
func (s *Server) BatchGet(ctx context.Context, req *fluxonv1.BatchGetRequest) (*fluxonv1.BatchGetResponse, error) {
	keys := req.GetKeys()
	if err := checkBatchKeys(keys); err != nil {
		return nil, s.fail("BatchGet", err)
	}
	resp := &fluxonv1.BatchGetResponse{Results: make([]*fluxonv1.BatchGetResult, len(keys))}
	left := MaxBatchBytes
	for i, k := range keys {
		res := &fluxonv1.BatchGetResult{}
		resp.Results[i] = res
		key := string(k)
		h, err := s.store.GetContext(ctx, key)
		if err != nil {
			res.Status = itemStatus(err)
			continue
		}
		info := h.Info
		if info.Lease != 0 {
			info.TTL, _ = s.store.LeaseTTL(info.Lease)
		}
		if b := h.Bytes(); len(b) <= left {
			// A copy: the response is marshalled after the handler returns,
			// when the holder is closed.
			res.Value = bytes.Clone(b)
			left -= len(b)
			res.Info = objectInfo("", info) // results are in request order; no need to echo keys
			res.Status = itemStatus(nil)
		} else {
			res.Status = itemStatus(fmt.Errorf("%w: %q is %d bytes and %d of this response's %d are left; read it with Get", ErrUseGet, key, len(b), left, MaxBatchBytes))
		}
		if err := h.Close(); err != nil {
			s.log.Error("kvgrpc: closing a BatchGet holder", "key", key, "err", err)
		}
	}
	return resp, nil
}

// BatchRemove deletes each key independently.
func (s *Server) BatchRemove(ctx context.Context, req *fluxonv1.BatchRemoveRequest) (*fluxonv1.BatchRemoveResponse, error) {
	keys := req.GetKeys()
	if err := checkBatchKeys(keys); err != nil {
		return nil, s.fail("BatchRemove", err)
	}
	resp := &fluxonv1.BatchRemoveResponse{Results: make([]*fluxonv1.ItemStatus, len(keys))}
	for i, k := range keys {
		resp.Results[i] = itemStatus(s.store.RemoveContext(ctx, string(k)))
	}
	return resp, nil
}

// Scan walks keys in steps of scanStep, so a response of long keys stops
// early (with a cursor to go on from) instead of outgrowing a message.
func (s *Server) Scan(ctx context.Context, req *fluxonv1.ScanRequest) (*fluxonv1.ScanResponse, error) {
	count := int(min(req.GetCount(), MaxScanCount))
	if count == 0 {
		count = defaultScanCount
	}
	prefix := req.GetPrefix()
	var match func(string) bool
	if len(prefix) > 0 {
		p := string(prefix)
		match = func(k string) bool { return len(k) >= len(p) && k[:len(p)] == p }
	}
	resp := &fluxonv1.ScanResponse{}
	cursor, size := req.GetCursor(), 0
	for left := count; left > 0 && size < scanBudget; {
		if err := ctx.Err(); err != nil {
			return nil, s.fail("Scan", err)
		}
		step := min(left, scanStep)
		keys, next := s.store.Scan(cursor, step, match)
		for _, k := range keys {
			resp.Keys = append(resp.Keys, []byte(k))
			size += len(k)
		}
		cursor = next
		left -= step
		if cursor == 0 {
			break
		}
	}
	resp.Cursor = cursor
	return resp, nil
}

// LeaseGrant creates a lease.
func (s *Server) LeaseGrant(_ context.Context, req *fluxonv1.LeaseGrantRequest) (*fluxonv1.LeaseGrantResponse, error) {
	ttl := msDuration(req.GetTtlMs())
	id, err := s.store.Grant(ttl)
	if err != nil {
		return nil, s.fail("LeaseGrant", err)
	}
	return &fluxonv1.LeaseGrantResponse{LeaseId: int64(id), TtlMs: durationMs(ttl)}, nil
}

// LeaseKeepAlive renews a lease.
func (s *Server) LeaseKeepAlive(_ context.Context, req *fluxonv1.LeaseKeepAliveRequest) (*fluxonv1.LeaseKeepAliveResponse, error) {
	ttl, err := s.store.KeepAlive(kv.LeaseID(req.GetLeaseId()))
	if err != nil {
		return nil, s.fail("LeaseKeepAlive", err)
	}
	return &fluxonv1.LeaseKeepAliveResponse{TtlMs: durationMs(ttl)}, nil
}

// LeaseRevoke ends a lease and removes its values.
func (s *Server) LeaseRevoke(_ context.Context, req *fluxonv1.LeaseRevokeRequest) (*fluxonv1.LeaseRevokeResponse, error) {
	if err := s.store.Revoke(kv.LeaseID(req.GetLeaseId())); err != nil {
		return nil, s.fail("LeaseRevoke", err)
	}
	return &fluxonv1.LeaseRevokeResponse{}, nil
}

// LeaseTTL returns the time left on a lease.
func (s *Server) LeaseTTL(_ context.Context, req *fluxonv1.LeaseTTLRequest) (*fluxonv1.LeaseTTLResponse, error) {
	ttl, err := s.store.LeaseTTL(kv.LeaseID(req.GetLeaseId()))
	if err != nil {
		return nil, s.fail("LeaseTTL", err)
	}
	return &fluxonv1.LeaseTTLResponse{TtlMs: durationMs(ttl)}, nil
}

// Stats returns the store's counters.
func (s *Server) Stats(context.Context, *fluxonv1.StatsRequest) (*fluxonv1.StatsResponse, error) {
	st := s.store.Stats()
	return &fluxonv1.StatsResponse{
		PoolSize: st.PoolSize, PoolCapacity: st.PoolCapacity, Used: st.Used, Free: st.Free,
		Objects: st.Objects, Leases: st.Leases, Evictions: st.Evictions, Hits: st.Hits,
		Misses: st.Misses, Puts: st.Puts, Removes: st.Removes, Expired: st.Expired,
	}, nil
}
