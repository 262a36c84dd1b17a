// Package relay lets members without a direct path reach each other
// through relay members, over several hops.
//
// A relay is a member that accepts a TCP connection on its "relay"
// endpoint, reads a small header naming the remaining hops, connects to the
// next one (another relay, or the final target's endpoint) and from then on
// copies bytes both ways. The end-to-end protocol (transport/framed: the
// handshake with identity verification, requests, bulk reads) runs over the
// spliced stream unchanged, so relays see only bytes and the two ends
// verify each other exactly as over a direct connection.
//
// The path comes from a reachability graph (Graph, ShortestPath): each
// member publishes which relay endpoints it reaches; a dialer that cannot
// reach its target directly asks a Router for the shortest path.
//
// Loops and runaway paths are refused at every relay: a header carries a
// hop limit that each relay decrements, and the trail of members already
// passed; a relay that finds itself in the trail or among the hops still
// ahead, or a member named twice, refuses with ErrLoop.
package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire constants. Never change one: relays of other versions read them.
const (
	// Magic opens every relay header, so a relay port that receives
	// something else (a transport handshake sent to the wrong port) refuses
	// it at once with a clear error.
	Magic = "FXRL"
	// Version is the header version this package writes and reads.
	Version uint8 = 1
	// MaxHops bounds the trail plus the hops ahead in one header.
	MaxHops = 16
	// DefaultHopLimit is the hop limit a dialer puts in a fresh header:
	// the most relays a path may pass.
	DefaultHopLimit = 8
	// maxField bounds an id or an address (one length byte).
	maxField = 255
	// prefixLen is magic, version and the body length.
	prefixLen = len(Magic) + 1 + 2
	// maxBody bounds a header's body: MaxHops ids and addresses, plus the
	// target, plus fixed fields; far below 64 KiB.
	maxBody = 1 + 8 + 2 + (MaxHops+1)*2*(1+maxField)
)

// Errors a caller tells apart with errors.Is.
var (
	// ErrBadHeader: the bytes at a relay port are not a valid header.
	ErrBadHeader = errors.New("relay: bad header")
	// ErrHopLimit: the path is longer than its hop limit allows.
	ErrHopLimit = errors.New("relay: hop limit reached")
	// ErrLoop: the path passes a member twice.
	ErrLoop = errors.New("relay: loop in path")
	// ErrNextHop: a relay could not connect to the next hop.
	ErrNextHop = errors.New("relay: next hop unreachable")
	// ErrNoRoute: the reachability graph holds no path to the target.
	ErrNoRoute = errors.New("relay: no route")
)

// Hop is one member on a path: its member id (for loop detection) and the
// address the previous hop connects to.
type Hop struct {
	ID   string
	Addr string
}

// Header is what a relay reads first on a connection.
type Header struct {
	// HopLimit is how many more relays this connection may pass, this one
	// included. A relay that receives 0 refuses with ErrHopLimit.
	HopLimit uint8
	// PathID identifies one relayed connection in every relay's logs.
	PathID uint64
	// Trail is the members the connection has passed, the dialer first.
	Trail []string
	// Via is the relays still to pass after the receiving one, in order.
	Via []Hop
	// Target is the final endpoint, which the last relay connects to.
	Target Hop
}

// Check applies the rules every relay enforces, as seen by the relay
// whose member id is self: a hop left, no member twice on the path, self
// not in the trail nor ahead (it may be the target only as the last relay,
// delivering to its own endpoint).
func (h *Header) Check(self string) error {
	if h.HopLimit == 0 {
		return fmt.Errorf("%w: path %x arrived at %s with no hops left; the route is longer than the dialer's hop limit", ErrHopLimit, h.PathID, self)
	}
	if len(h.Via)+1 > int(h.HopLimit) {
		return fmt.Errorf("%w: path %x needs %d more relays at %s, hop limit %d", ErrHopLimit, h.PathID, len(h.Via)+1, self, h.HopLimit)
	}
	seen := make(map[string]bool, len(h.Trail)+len(h.Via)+1)
	add := func(id string) error {
		if id == "" {
			return nil
		}
		if seen[id] {
			return fmt.Errorf("%w: path %x passes member %q twice (at relay %s)", ErrLoop, h.PathID, id, self)
		}
		seen[id] = true
		return nil
	}
	for _, id := range h.Trail {
		if err := add(id); err != nil {
			return err
		}
	}
	if err := add(self); err != nil {
		return err
	}
	for _, v := range h.Via {
		if err := add(v.ID); err != nil {
			return err
		}
	}
	if h.Target.ID != "" && seen[h.Target.ID] && !(h.Target.ID == self && len(h.Via) == 0) {
		return fmt.Errorf("%w: path %x reaches target %q through itself (at relay %s)", ErrLoop, h.PathID, h.Target.ID, self)
	}
	return nil
}

// Forward is the header the relay self sends to the next hop: one hop
// less, self added to the trail, the next relay taken off Via.
func (h *Header) Forward(self string) Header {
	return Header{
		HopLimit: h.HopLimit - 1,
		PathID:   h.PathID,
		Trail:    append(append([]string(nil), h.Trail...), self),
		Via:      append([]Hop(nil), h.Via[1:]...),
		Target:   h.Target,
	}
}

// AppendTo appends the encoded header to b. Layout: magic, version, body
// length (uint16 BE), then hop limit, path id (uint64 BE), the trail (a
// count byte, then each id as a length byte and bytes), Via (a count byte,
// then id and addr per hop), and the target's id and addr.
func (h *Header) AppendTo(b []byte) ([]byte, error) {
	if len(h.Trail)+len(h.Via) > MaxHops {
		return nil, fmt.Errorf("%w: %d hops, at most %d", ErrHopLimit, len(h.Trail)+len(h.Via), MaxHops)
	}
	start := len(b)
	b = append(b, Magic...)
	b = append(b, Version, 0, 0)
	b = append(b, h.HopLimit)
	b = binary.BigEndian.AppendUint64(b, h.PathID)
	var err error
	b = append(b, byte(len(h.Trail)))
	for _, id := range h.Trail {
		if b, err = appendField(b, id); err != nil {
			return nil, err
		}
	}
	b = append(b, byte(len(h.Via)))
	for _, v := range h.Via {
		if b, err = appendHop(b, v); err != nil {
			return nil, err
		}
	}
	if b, err = appendHop(b, h.Target); err != nil {
		return nil, err
	}
	if h.Target.Addr == "" {
		return nil, fmt.Errorf("%w: no target address", ErrBadHeader)
	}
	binary.BigEndian.PutUint16(b[start+len(Magic)+1:], uint16(len(b)-start-prefixLen))
	return b, nil
}

func appendHop(b []byte, h Hop) ([]byte, error) {
	b, err := appendField(b, h.ID)
	if err != nil {
		return nil, err
	}
	return appendField(b, h.Addr)
}

func appendField(b []byte, s string) ([]byte, error) {
	if len(s) > maxField {
		return nil, fmt.Errorf("%w: field of %d bytes, at most %d", ErrBadHeader, len(s), maxField)
	}
	return append(append(b, byte(len(s))), s...), nil
}

// ReadHeader reads exactly one header from r and not a byte more, so the
// stream that follows is untouched.
func ReadHeader(r io.Reader) (Header, error) {
	var p [prefixLen]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return Header{}, fmt.Errorf("%w: reading the prefix: %w", ErrBadHeader, err)
	}
	if string(p[:len(Magic)]) != Magic {
		return Header{}, fmt.Errorf("%w: no relay magic (got %q); is a transport dialing the relay port?", ErrBadHeader, p[:len(Magic)])
	}
	if v := p[len(Magic)]; v != Version {
		return Header{}, fmt.Errorf("%w: version %d, this relay speaks %d", ErrBadHeader, v, Version)
	}
	n := int(binary.BigEndian.Uint16(p[len(Magic)+1:]))
	if n > maxBody {
		return Header{}, fmt.Errorf("%w: body of %d bytes, at most %d", ErrBadHeader, n, maxBody)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Header{}, fmt.Errorf("%w: reading %d bytes of body: %w", ErrBadHeader, n, err)
	}
	return DecodeBody(body)
}

// DecodeBody decodes a header body (what follows the prefix).
func DecodeBody(b []byte) (Header, error) {
	d := decoder{b: b}
	var h Header
	h.HopLimit = d.byte()
	h.PathID = d.uint64()
	nt := int(d.byte())
	if nt > MaxHops {
		return Header{}, fmt.Errorf("%w: trail of %d, at most %d", ErrBadHeader, nt, MaxHops)
	}
	for range nt {
		h.Trail = append(h.Trail, d.field())
	}
	nv := int(d.byte())
	if nt+nv > MaxHops {
		return Header{}, fmt.Errorf("%w: %d hops, at most %d", ErrBadHeader, nt+nv, MaxHops)
	}
	for range nv {
		h.Via = append(h.Via, Hop{ID: d.field(), Addr: d.field()})
	}
	h.Target = Hop{ID: d.field(), Addr: d.field()}
	if d.short {
		return Header{}, fmt.Errorf("%w: body ends early", ErrBadHeader)
	}
	if len(d.b) != 0 {
		return Header{}, fmt.Errorf("%w: %d bytes after the header", ErrBadHeader, len(d.b))
	}
	if h.Target.Addr == "" {
		return Header{}, fmt.Errorf("%w: no target address", ErrBadHeader)
	}
	for _, v := range h.Via {
		if v.Addr == "" {
			return Header{}, fmt.Errorf("%w: a relay hop without an address", ErrBadHeader)
		}
	}
	return h, nil
}

type decoder struct {
	b     []byte
	short bool
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.short = true
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uint64() uint64 {
	if len(d.b) < 8 {
		d.short = true
		d.b = nil
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) field() string {
	n := int(d.byte())
	if len(d.b) < n {
		d.short = true
		d.b = nil
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// Reply statuses, the first byte a relay writes back. Never renumber.
const (
	statusOK       byte = 0
	statusBad      byte = 1
	statusHopLimit byte = 2
	statusLoop     byte = 3
	statusNextHop  byte = 4
)

// maxReplyMsg bounds a refusal's message.
const maxReplyMsg = 1024

// writeReply writes a status byte, a message length (uint16 BE) and the
// message: statusOK with no message once the whole path is connected, or
// the refusal's reason.
func writeReply(w io.Writer, err error) error {
	status, msg := statusOK, ""
	if err != nil {
		msg = err.Error()
		if len(msg) > maxReplyMsg {
			msg = msg[:maxReplyMsg]
		}
		switch {
		case errors.Is(err, ErrHopLimit):
			status = statusHopLimit
		case errors.Is(err, ErrLoop):
			status = statusLoop
		case errors.Is(err, ErrNextHop):
			status = statusNextHop
		default:
			status = statusBad
		}
	}
	b := make([]byte, 0, 3+len(msg))
	b = append(b, status)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	b = append(b, msg...)
	_, werr := w.Write(b)
	return werr
}

// refusal is a reply's error as the dialer sees it: the sentinel of its
// status and the relay's message, which already names the sentinel.
type refusal struct {
	sentinel error
	msg      string
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.sentinel }

// readReply reads exactly one reply and returns the refusal it carries.
func readReply(r io.Reader) error {
	var p [3]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return fmt.Errorf("%w: the relay closed before replying: %w", ErrNextHop, err)
	}
	n := int(binary.BigEndian.Uint16(p[1:]))
	if n > maxReplyMsg {
		return fmt.Errorf("%w: reply of %d bytes", ErrBadHeader, n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return fmt.Errorf("%w: reading the relay's reply: %w", ErrNextHop, err)
	}
	var s error
	switch p[0] {
	case statusOK:
		return nil
	case statusHopLimit:
		s = ErrHopLimit
	case statusLoop:
		s = ErrLoop
	case statusNextHop:
		s = ErrNextHop
	default:
		s = ErrBadHeader
	}
	return &refusal{sentinel: s, msg: string(msg)}
}
