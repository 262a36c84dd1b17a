// Package rel is a reliable, ordered, flow-controlled byte stream over an
// unreliable datagram link (one that may lose, reorder, duplicate or
// corrupt datagrams): the layer that lets the framed transport protocol,
// which needs a TCP-like stream, run over raw DPDK frames.
//
// The design is a small selective-repeat ARQ:
//
//   - Writes are cut into segments of at most MTU payload bytes, each with a
//     sequence number (one per segment, not per byte).
//   - Every datagram carries the receiver's cumulative ack (the next
//     sequence it wants), a 64-bit selective-ack bitmap of the segments
//     after it that already arrived, and its window (how many segments past
//     the cumulative ack it will buffer): flow control.
//   - A segment unacked after the RTO (srtt + 4·rttvar, Karn's rule, backed
//     off exponentially) is sent again; one that later segments were
//     selectively acked past three times is sent again at once (fast
//     retransmit).
//   - Every datagram carries a CRC-32C; a datagram that fails it is
//     dropped as if lost, so corruption becomes loss.
//   - Close sends FIN as the last sequence number; the peer's Read returns
//     io.EOF after every byte before it.
//
// Conn does no I/O of its own: the caller gives it an Output function and
// feeds it received datagrams with Input (a mux demultiplexes by
// connection id), so the state machine is tested over an in-memory lossy
// link without sockets or DPDK.
package rel

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// Packet kinds.
const (
	kindData  = 1 // a segment of stream bytes (maybe empty: a window probe)
	kindAck   = 2 // acks only
	kindFin   = 3 // the end of the stream; carries a sequence number
	kindReset = 4 // the peer has no such connection, or gave up
)

// HeaderSize is the bytes every datagram spends on rel's header:
// kind(1) flags(1) len(2) seq(4) ack(4) wnd(4) sack(8) crc(4).
const HeaderSize = 28

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is a datagram that failed its checksum or is malformed.
var ErrCorrupt = errors.New("rel: corrupt datagram")

type packet struct {
	kind    byte
	flags   byte
	seq     uint32
	ack     uint32
	wnd     uint32
	sack    uint64
	payload []byte
}

// appendPacket encodes p after dst.
func appendPacket(dst []byte, p *packet) []byte {
	off := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	h := dst[off:]
	h[0] = p.kind
	h[1] = p.flags
	binary.LittleEndian.PutUint16(h[2:], uint16(len(p.payload)))
	binary.LittleEndian.PutUint32(h[4:], p.seq)
	binary.LittleEndian.PutUint32(h[8:], p.ack)
	binary.LittleEndian.PutUint32(h[12:], p.wnd)
	binary.LittleEndian.PutUint64(h[16:], p.sack)
	dst = append(dst, p.payload...)
	crc := crc32.Update(0, castagnoli, dst[off:off+24])
	crc = crc32.Update(crc, castagnoli, dst[off+HeaderSize:])
	binary.LittleEndian.PutUint32(dst[off+24:], crc)
	return dst
}

// parsePacket decodes b; the payload aliases b.
func parsePacket(b []byte) (packet, error) {
	if len(b) < HeaderSize {
		return packet{}, ErrCorrupt
	}
	n := int(binary.LittleEndian.Uint16(b[2:]))
	if len(b) < HeaderSize+n {
		return packet{}, ErrCorrupt
	}
	crc := crc32.Update(0, castagnoli, b[:24])
	crc = crc32.Update(crc, castagnoli, b[HeaderSize:HeaderSize+n])
	if crc != binary.LittleEndian.Uint32(b[24:]) {
		return packet{}, ErrCorrupt
	}
	p := packet{
		kind:  b[0],
		flags: b[1],
		seq:   binary.LittleEndian.Uint32(b[4:]),
		ack:   binary.LittleEndian.Uint32(b[8:]),
		wnd:   binary.LittleEndian.Uint32(b[12:]),
		sack:  binary.LittleEndian.Uint64(b[16:]),
	}
	if p.kind < kindData || p.kind > kindReset {
		return packet{}, ErrCorrupt
	}
	p.payload = b[HeaderSize : HeaderSize+n]
	return p, nil
}

// seqLess compares sequence numbers modulo 2^32.
func seqLess(a, b uint32) bool { return int32(a-b) < 0 }
