// Package shm connects external processes on the owner's host to the owner's
// KV store through shared memory: the external maps the owner's pool and a
// pair of rings (submit, complete) made for it, sends commands on the submit
// ring and reads values in place in the pool (zero copy). A Unix socket
// carries the handshake, requests whose key is too long for a ring slot, and
// liveness: when it closes, the owner releases everything the external held.
package shm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/fluxon-dev/fluxon/services/kv"
)

// ProtocolVersion is checked in the handshake.
const ProtocolVersion = 1

// Ring geometry for each attachment.
const (
	SlotSize     = 256
	DefaultSlots = 1024
	reqHeader    = 48
	respHeader   = 56
	// MaxInlineKey is the longest key carried in a ring slot; longer keys go
	// over the socket.
	MaxInlineKey = SlotSize - reqHeader
	// maxFrame bounds a socket frame (a request with a MaxKeyLen key).
	maxFrame = reqHeader + kv.MaxKeyLen
)

// Op is a command.
type Op uint8

// Commands.
const (
	OpGet Op = iota + 1
	OpRelease
	OpReserve
	OpCommit
	OpAbort
	OpRemove
	OpStat
	OpPing
	OpGrant
	OpKeepAlive
	OpRevoke
)

// Request flags.
const (
	flagIfAbsent uint8 = 1 << iota
	flagIfPresent
	flagRejectInflight
	flagDict
)

// request is one command. Layout (little-endian): op u8, flags u8, keyLen u16,
// pad u32, id u64, a1 u64, a2 u64, a3 u64, pad u64, key bytes.
type request struct {
	op         Op
	flags      uint8
	id         uint64
	a1, a2, a3 uint64
	key        string
}

func (r *request) size() int { return reqHeader + len(r.key) }

func (r *request) encode(b []byte) int {
	b[0], b[1] = byte(r.op), r.flags
	binary.LittleEndian.PutUint16(b[2:], uint16(len(r.key)))
	binary.LittleEndian.PutUint32(b[4:], 0)
	binary.LittleEndian.PutUint64(b[8:], r.id)
	binary.LittleEndian.PutUint64(b[16:], r.a1)
	binary.LittleEndian.PutUint64(b[24:], r.a2)
	binary.LittleEndian.PutUint64(b[32:], r.a3)
	binary.LittleEndian.PutUint64(b[40:], 0)
	return reqHeader + copy(b[reqHeader:], r.key)
}

// decodeRequest parses b; over the socket keyLen is the frame's rest, so
// keys longer than 65535 bytes need the explicit length from the frame.
func decodeRequest(b []byte, frame bool) (request, error) {
	if len(b) < reqHeader {
		return request{}, fmt.Errorf("request of %d bytes is shorter than its %d-byte header", len(b), reqHeader)
	}
	r := request{op: Op(b[0]), flags: b[1], id: binary.LittleEndian.Uint64(b[8:]),
		a1: binary.LittleEndian.Uint64(b[16:]), a2: binary.LittleEndian.Uint64(b[24:]), a3: binary.LittleEndian.Uint64(b[32:])}
	kl := int(binary.LittleEndian.Uint16(b[2:]))
	if frame {
		kl = len(b) - reqHeader
	}
	if reqHeader+kl > len(b) {
		return request{}, fmt.Errorf("request key of %d bytes overruns its %d-byte slot", kl, len(b))
	}
	r.key = string(b[reqHeader : reqHeader+kl])
	return r, nil
}

// Status codes in responses; each maps to a kv sentinel error.
const (
	stOK uint8 = iota
	stNotFound
	stExists
	stInflight
	stEmptyKey
	stKeyTooLong
	stValueTooLarge
	stPoolFull
	stLeaseNotFound
	stLeaseTTL
	stClosed
	stBadRequest
	stInternal
	// stUnavailable: the key's owners cannot be reached now (a cross-host
	// read or write of an owner in a cluster); appended so that the codes
	// before it keep their values.
	stUnavailable
)

var statusErrors = map[uint8]error{
	stNotFound: kv.ErrNotFound, stExists: kv.ErrExists, stInflight: kv.ErrInflight, stEmptyKey: kv.ErrEmptyKey,
	stKeyTooLong: kv.ErrKeyTooLong, stValueTooLarge: kv.ErrValueTooLarge, stPoolFull: kv.ErrPoolFull,
	stLeaseNotFound: kv.ErrLeaseNotFound, stLeaseTTL: kv.ErrLeaseTTL, stClosed: kv.ErrClosed,
	stBadRequest: ErrProtocol, stInternal: ErrOwner, stUnavailable: kv.ErrUnavailable,
}

// Errors of this package.
var (
	// ErrProtocol: a malformed request or response.
	ErrProtocol = errors.New("shm protocol error")
	// ErrOwner: the owner failed the request for an internal reason.
	ErrOwner = errors.New("owner error")
	// ErrNoOwner: no owner is reachable on this host.
	ErrNoOwner = errors.New("no local owner")
	// ErrClientClosed: the client was closed.
	ErrClientClosed = errors.New("shm client closed")
)

func statusOf(err error) uint8 {
	for st, e := range statusErrors {
		if errors.Is(err, e) {
			return st
		}
	}
	if err != nil {
		return stInternal
	}
	return stOK
}

// response answers one request. Layout: op u8, status u8, msgLen u16,
// kind u32, id u64, handle u64, off u64, size u64, version u64, extra u64,
// message bytes (truncated to fit).
type response struct {
	op      Op
	status  uint8
	kind    uint32
	id      uint64
	handle  uint64
	off     uint64
	size    uint64
	version uint64
	extra   uint64 // lease id, ttl in ms
	msg     string
}

func (r *response) encode(b []byte) int {
	msg := r.msg
	if len(msg) > len(b)-respHeader {
		msg = msg[:len(b)-respHeader]
	}
	b[0], b[1] = byte(r.op), r.status
	binary.LittleEndian.PutUint16(b[2:], uint16(len(msg)))
	binary.LittleEndian.PutUint32(b[4:], r.kind)
	binary.LittleEndian.PutUint64(b[8:], r.id)
	binary.LittleEndian.PutUint64(b[16:], r.handle)
	binary.LittleEndian.PutUint64(b[24:], r.off)
	binary.LittleEndian.PutUint64(b[32:], r.size)
	binary.LittleEndian.PutUint64(b[40:], r.version)
	binary.LittleEndian.PutUint64(b[48:], r.extra)
	return respHeader + copy(b[respHeader:], msg)
}

func decodeResponse(b []byte) (response, error) {
	if len(b) < respHeader {
		return response{}, fmt.Errorf("%w: response of %d bytes", ErrProtocol, len(b))
	}
	r := response{op: Op(b[0]), status: b[1], kind: binary.LittleEndian.Uint32(b[4:]),
		id: binary.LittleEndian.Uint64(b[8:]), handle: binary.LittleEndian.Uint64(b[16:]),
		off: binary.LittleEndian.Uint64(b[24:]), size: binary.LittleEndian.Uint64(b[32:]),
		version: binary.LittleEndian.Uint64(b[40:]), extra: binary.LittleEndian.Uint64(b[48:])}
	ml := int(binary.LittleEndian.Uint16(b[2:]))
	if respHeader+ml > len(b) {
		return response{}, fmt.Errorf("%w: response message overruns its slot", ErrProtocol)
	}
	r.msg = string(b[respHeader : respHeader+ml])
	return r, nil
}

// err turns a response into the caller's error.
func (r *response) err() error {
	if r.status == stOK {
		return nil
	}
	base, ok := statusErrors[r.status]
	if !ok {
		return fmt.Errorf("%w: unknown status %d: %s", ErrProtocol, r.status, r.msg)
	}
	return &remoteError{base: base, msg: r.msg}
}

// remoteError keeps the owner's message and matches the kv sentinel.
type remoteError struct {
	base error
	msg  string
}

func (e *remoteError) Error() string {
	if e.msg == "" {
		return e.base.Error()
	}
	return e.msg
}
func (e *remoteError) Unwrap() error { return e.base }

// hello is the handshake, one JSON line each way over the socket.
type hello struct {
	Version  int    `json:"version"`
	PID      int    `json:"pid"`
	Name     string `json:"name"`
	PollMode string `json:"poll_mode"`
}

type welcome struct {
	Version   int    `json:"version"`
	Error     string `json:"error,omitempty"`
	Session   uint64 `json:"session"`
	PoolPath  string `json:"pool_path"`
	RingPath  string `json:"ring_path"`
	SlotSize  int    `json:"slot_size"`
	Slots     int    `json:"slots"`
	RingBytes int    `json:"ring_bytes"` // offset of the complete ring in the ring file
	Owner     string `json:"owner"`
}
