package kvgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"google.golang.org/grpc"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/internal/grpcdial"
	"github.com/fluxon-dev/fluxon/services/kv"
)

// Client is a Go client of the KV service. Its methods mirror kv.Store's;
// the errors they return satisfy errors.Is against kv's sentinels (and
// kvgrpc's), and status.Code gives their gRPC code. Safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	kv   fluxonv1.KVClient
}

// Dial connects to a KV service at addr (host:port) and waits until the
// connection is up, so that a wrong address fails here rather than on the
// first call: it returns an error when the first attempt fails or ctx ends.
//
// Without options the connection is plaintext with message limits of
// MaxMessageSize; options given here come after those defaults and override
// them (pass grpc.WithTransportCredentials for TLS).
func Dial(ctx context.Context, addr string, opts ...grpc.DialOption) (*Client, error) {
	conn, err := grpcdial.Dial(ctx, addr, MaxMessageSize, "owner", opts...)
	if err != nil {
		return nil, fmt.Errorf("kvgrpc: %w", err)
	}
	return &Client{conn: conn, kv: fluxonv1.NewKVClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// protoKind passes unknown kinds through, for the server to refuse.
func protoKind(k kv.ValueKind) fluxonv1.ValueKind { return fluxonv1.ValueKind(int32(k)) }

func protoOptions(o kv.PutOptions) *fluxonv1.PutOptions {
	return &fluxonv1.PutOptions{
		LeaseId: int64(o.Lease), TtlMs: durationMs(o.TTL), IfAbsent: o.IfAbsent,
		IfPresent: o.IfPresent, RejectInflight: o.RejectInflight,
		Replicas: int32(o.Replicas), Placement: o.Placement,
	}
}

func infoFrom(in *fluxonv1.ObjectInfo, key string) kv.Info {
	k := kv.KindBytes
	if in.GetKind() == fluxonv1.ValueKind_VALUE_KIND_DICT {
		k = kv.KindDict
	}
	return kv.Info{
		Key: key, Size: in.GetSize(), Version: in.GetVersion(), Kind: k,
		Lease: kv.LeaseID(in.GetLeaseId()), TTL: msDuration(in.GetTtlMs()),
	}
}

// Put stores value under key and returns its version. Values above
// MaxUnaryValue go through PutStream. TTLs travel in whole milliseconds,
// rounded up.
func (c *Client) Put(ctx context.Context, key string, value []byte, o kv.PutOptions) (uint64, error) {
	if len(value) > MaxUnaryValue {
		return c.putStream(ctx, key, uint64(len(value)), o, func(off uint64, n int) ([]byte, error) {
			return value[off : off+uint64(n)], nil
		})
	}
	resp, err := c.kv.Put(ctx, &fluxonv1.PutRequest{Key: []byte(key), Value: value, Kind: protoKind(o.Kind), Options: protoOptions(o)})
	if err != nil {
		return 0, fromStatus(err)
	}
	return resp.GetVersion(), nil
}

// PutReader stores size bytes read from r under key through PutStream,
// ChunkSize at a time, without holding the value in memory. If r fails or
// ends early, the stream is cut and the server leaves the key as it was.
func (c *Client) PutReader(ctx context.Context, key string, r io.Reader, size uint64, o kv.PutOptions) (uint64, error) {
	return c.putStream(ctx, key, size, o, func(_ uint64, n int) ([]byte, error) {
		// A fresh buffer per chunk: gRPC forbids changing a message after Send.
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("kvgrpc: reading the value of %q: %w", key, err)
		}
		return b, nil
	})
}

// putStream sends the header, then the chunks fill returns, then waits for
// the version. Returning early cancels the stream, which makes the server
// give the reservation back.
func (c *Client) putStream(ctx context.Context, key string, size uint64, o kv.PutOptions, fill func(off uint64, n int) ([]byte, error)) (uint64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.kv.PutStream(ctx)
	if err != nil {
		return 0, fromStatus(err)
	}
	send := func(m *fluxonv1.PutStreamRequest) error {
		err := st.Send(m)
		if errors.Is(err, io.EOF) {
			// The server ended the stream; its status says why.
			if _, err = st.CloseAndRecv(); err == nil {
				err = errors.New("kvgrpc: server ended PutStream before the value was sent")
			}
		}
		return fromStatus(err)
	}
	hdr := &fluxonv1.PutStreamHeader{Key: []byte(key), Size: size, Kind: protoKind(o.Kind), Options: protoOptions(o)}
	if err := send(&fluxonv1.PutStreamRequest{Msg: &fluxonv1.PutStreamRequest_Header{Header: hdr}}); err != nil {
		return 0, err
	}
	for off := uint64(0); off < size; {
		n := int(min(size-off, ChunkSize))
		b, err := fill(off, n)
		if err != nil {
			return 0, err
		}
		if err := send(&fluxonv1.PutStreamRequest{Msg: &fluxonv1.PutStreamRequest_Chunk{Chunk: b}}); err != nil {
			return 0, err
		}
		off += uint64(n)
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		return 0, fromStatus(err)
	}
	return resp.GetVersion(), nil
}

// Get returns a copy of key's value, assembled from the stream into one
// buffer allocated from the size in the first message.
func (c *Client) Get(ctx context.Context, key string) ([]byte, kv.Info, error) {
	var buf []byte
	var n uint64
	info, err := c.get(ctx, key, func(in kv.Info) error {
		if in.Size > math.MaxInt {
			return fmt.Errorf("kvgrpc: %q is %d bytes, too large for one buffer here; use GetTo", key, in.Size)
		}
		buf = make([]byte, in.Size)
		return nil
	}, func(chunk []byte) error {
		n += uint64(copy(buf[n:], chunk))
		return nil
	})
	if err != nil {
		return nil, kv.Info{}, err
	}
	return buf, info, nil
}

// GetTo writes key's value to w as it arrives and returns its info. If w
// fails, the stream is cancelled and the server lets go of the value.
func (c *Client) GetTo(ctx context.Context, key string, w io.Writer) (kv.Info, error) {
	return c.get(ctx, key, func(kv.Info) error { return nil }, func(chunk []byte) error {
		_, err := w.Write(chunk)
		return err
	})
}

// get runs a Get stream: start gets the info before any bytes, each chunk
// goes to sink, and the total is checked against the info's size.
func (c *Client) get(ctx context.Context, key string, start func(kv.Info) error, sink func([]byte) error) (kv.Info, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.kv.Get(ctx, &fluxonv1.GetRequest{Key: []byte(key)})
	if err != nil {
		return kv.Info{}, fromStatus(err)
	}
	first, err := st.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return kv.Info{}, fmt.Errorf("kvgrpc: Get %q: the server sent nothing", key)
		}
		return kv.Info{}, fromStatus(err)
	}
	if first.GetInfo() == nil {
		return kv.Info{}, fmt.Errorf("kvgrpc: Get %q: the first message has no info", key)
	}
	info := infoFrom(first.GetInfo(), key)
	if err := start(info); err != nil {
		return kv.Info{}, err
	}
	var got uint64
	for m := first; ; {
		chunk := m.GetChunk()
		if uint64(len(chunk)) > info.Size-got {
			return kv.Info{}, fmt.Errorf("kvgrpc: Get %q: the server sent more than the %d bytes it announced", key, info.Size)
		}
		if err := sink(chunk); err != nil {
			return kv.Info{}, err
		}
		got += uint64(len(chunk))
		if m, err = st.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return kv.Info{}, fromStatus(err)
		}
	}
	if got != info.Size {
		return kv.Info{}, fmt.Errorf("kvgrpc: Get %q: stream ended after %d of %d bytes: %w", key, got, info.Size, io.ErrUnexpectedEOF)
	}
	return info, nil
}

// Remove deletes key.
func (c *Client) Remove(ctx context.Context, key string) error {
	_, err := c.kv.Remove(ctx, &fluxonv1.RemoveRequest{Key: []byte(key)})
	return fromStatus(err)
}

// Exists reports whether key is stored.
func (c *Client) Exists(ctx context.Context, key string) (bool, error) {
	resp, err := c.kv.Exists(ctx, &fluxonv1.ExistsRequest{Key: []byte(key)})
	if err != nil {
		return false, fromStatus(err)
	}
	return resp.GetExists(), nil
}

// Stat describes key.
func (c *Client) Stat(ctx context.Context, key string) (kv.Info, error) {
	resp, err := c.kv.Stat(ctx, &fluxonv1.StatRequest{Key: []byte(key)})
	if err != nil {
		return kv.Info{}, fromStatus(err)
	}
	return infoFrom(resp.GetInfo(), key), nil
}

// PutItem is one value of a BatchPut.
type PutItem struct {
	Key     string
	Value   []byte
	Options kv.PutOptions
}

// PutResult is one BatchPut outcome.
type PutResult struct {
	Version uint64
	Err     error
}

// GetResult is one BatchGet outcome.
type GetResult struct {
	Value []byte
	Info  kv.Info
	Err   error
}

// BatchPut stores items, each independently and in order; results are in
// item order and carry each item's error. Items too large for a batch are Put
// on their own. The returned error is for a call that failed as a whole.
func (c *Client) BatchPut(ctx context.Context, items []PutItem) ([]PutResult, error) {
	out := make([]PutResult, len(items))
	var pending []int // indexes of the items in the batch being built
	size := 0
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		req := &fluxonv1.BatchPutRequest{Items: make([]*fluxonv1.PutRequest, len(pending))}
		for j, i := range pending {
			it := items[i]
			req.Items[j] = &fluxonv1.PutRequest{Key: []byte(it.Key), Value: it.Value, Kind: protoKind(it.Options.Kind), Options: protoOptions(it.Options)}
		}
		resp, err := c.kv.BatchPut(ctx, req)
		if err != nil {
			return fromStatus(err)
		}
		if len(resp.GetResults()) != len(pending) {
			return fmt.Errorf("kvgrpc: BatchPut: %d results for %d items", len(resp.GetResults()), len(pending))
		}
		for j, res := range resp.GetResults() {
			out[pending[j]] = PutResult{Version: res.GetVersion(), Err: fromItem(res.GetStatus())}
		}
		pending, size = pending[:0], 0
		return nil
	}
	for i, it := range items {
		n := len(it.Key) + len(it.Value)
		if n > MaxBatchBytes {
			if err := flush(); err != nil {
				return nil, err
			}
			out[i].Version, out[i].Err = c.Put(ctx, it.Key, it.Value, it.Options)
			continue
		}
		if len(pending) == MaxBatchItems || size+n > MaxBatchBytes {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		pending = append(pending, i)
		size += n
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// batches splits n items into runs of at most MaxBatchItems whose sizes add
// up to at most limit; one item above limit is a run of its own.
func batches(n, limit int, size func(int) int) [][2]int {
	var out [][2]int
	start, total := 0, 0
	for i := range n {
		s := size(i)
		if i > start && (i-start == MaxBatchItems || total+s > limit) {
			out = append(out, [2]int{start, i})
			start, total = i, 0
		}
		total += s
	}
	if start < n {
		out = append(out, [2]int{start, n})
	}
	return out
}

func keyBatches(keys []string) [][2]int {
	return batches(len(keys), MaxBatchKeyBytes, func(i int) int { return len(keys[i]) })
}

func keyBytes(keys []string) [][]byte {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = []byte(k)
	}
	return out
}

// BatchGet reads keys, each independently; results are in key order and
// carry each key's error. Values that do not fit in a batch response are
// fetched with Get. The returned error is for a call that failed as a whole.
func (c *Client) BatchGet(ctx context.Context, keys []string) ([]GetResult, error) {
	out := make([]GetResult, len(keys))
	for _, r := range keyBatches(keys) {
		resp, err := c.kv.BatchGet(ctx, &fluxonv1.BatchGetRequest{Keys: keyBytes(keys[r[0]:r[1]])})
		if err != nil {
			return nil, fromStatus(err)
		}
		if len(resp.GetResults()) != r[1]-r[0] {
			return nil, fmt.Errorf("kvgrpc: BatchGet: %d results for %d keys", len(resp.GetResults()), r[1]-r[0])
		}
		for j, res := range resp.GetResults() {
			i := r[0] + j
			err := fromItem(res.GetStatus())
			switch {
			case errors.Is(err, ErrUseGet):
				out[i].Value, out[i].Info, out[i].Err = c.Get(ctx, keys[i])
			case err != nil:
				out[i].Err = err
			default:
				out[i] = GetResult{Value: res.GetValue(), Info: infoFrom(res.GetInfo(), keys[i])}
				if out[i].Value == nil {
					out[i].Value = []byte{} // found, and empty
				}
			}
		}
	}
	return out, nil
}

// BatchRemove deletes keys, each independently; the errors are in key order
// (nil for removed keys). The returned error is for a call that failed as a
// whole.
func (c *Client) BatchRemove(ctx context.Context, keys []string) ([]error, error) {
	out := make([]error, len(keys))
	for _, r := range keyBatches(keys) {
		resp, err := c.kv.BatchRemove(ctx, &fluxonv1.BatchRemoveRequest{Keys: keyBytes(keys[r[0]:r[1]])})
		if err != nil {
			return nil, fromStatus(err)
		}
		if len(resp.GetResults()) != r[1]-r[0] {
			return nil, fmt.Errorf("kvgrpc: BatchRemove: %d results for %d keys", len(resp.GetResults()), r[1]-r[0])
		}
		for j, res := range resp.GetResults() {
			out[r[0]+j] = fromItem(res)
		}
	}
	return out, nil
}

// Scan walks the keys in hash order, as kv.Store.Scan: start with cursor 0
// and pass back the returned cursor until it is 0. count is how many keys to
// examine (0: 10, at most MaxScanCount); prefix, when not empty, keeps only
// keys that start with it.
func (c *Client) Scan(ctx context.Context, cursor uint64, count int, prefix string) ([]string, uint64, error) {
	resp, err := c.kv.Scan(ctx, &fluxonv1.ScanRequest{Cursor: cursor, Count: uint32(min(max(count, 0), MaxScanCount)), Prefix: []byte(prefix)})
	if err != nil {
		return nil, 0, fromStatus(err)
	}
	keys := make([]string, len(resp.GetKeys()))
	for i, k := range resp.GetKeys() {
		keys[i] = string(k)
	}
	return keys, resp.GetCursor(), nil
}

// Grant creates a lease of ttl (whole milliseconds, rounded up).
func (c *Client) Grant(ctx context.Context, ttl time.Duration) (kv.LeaseID, error) {
	resp, err := c.kv.LeaseGrant(ctx, &fluxonv1.LeaseGrantRequest{TtlMs: durationMs(ttl)})
	if err != nil {
		return 0, fromStatus(err)
	}
	return kv.LeaseID(resp.GetLeaseId()), nil
}

// KeepAlive renews a lease and returns its TTL.
func (c *Client) KeepAlive(ctx context.Context, id kv.LeaseID) (time.Duration, error) {
	resp, err := c.kv.LeaseKeepAlive(ctx, &fluxonv1.LeaseKeepAliveRequest{LeaseId: int64(id)})
	if err != nil {
		return 0, fromStatus(err)
	}
	return msDuration(resp.GetTtlMs()), nil
}

// Revoke ends a lease now and removes its values.
func (c *Client) Revoke(ctx context.Context, id kv.LeaseID) error {
	_, err := c.kv.LeaseRevoke(ctx, &fluxonv1.LeaseRevokeRequest{LeaseId: int64(id)})
	return fromStatus(err)
}

// LeaseTTL returns the time left on a lease.
func (c *Client) LeaseTTL(ctx context.Context, id kv.LeaseID) (time.Duration, error) {
	resp, err := c.kv.LeaseTTL(ctx, &fluxonv1.LeaseTTLRequest{LeaseId: int64(id)})
	if err != nil {
		return 0, fromStatus(err)
	}
	return msDuration(resp.GetTtlMs()), nil
}

// Stats returns the store's counters.
func (c *Client) Stats(ctx context.Context) (kv.Stats, error) {
	r, err := c.kv.Stats(ctx, &fluxonv1.StatsRequest{})
	if err != nil {
		return kv.Stats{}, fromStatus(err)
	}
	return kv.Stats{
		PoolSize: r.GetPoolSize(), PoolCapacity: r.GetPoolCapacity(), Used: r.GetUsed(), Free: r.GetFree(),
		Objects: r.GetObjects(), Leases: r.GetLeases(), Evictions: r.GetEvictions(), Hits: r.GetHits(),
		Misses: r.GetMisses(), Puts: r.GetPuts(), Removes: r.GetRemoves(), Expired: r.GetExpired(),
	}, nil
}
