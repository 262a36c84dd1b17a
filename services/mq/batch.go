package mq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/fluxon-dev/fluxon/services/kv"
)

// A batch object holds consecutive messages of one producer:
//
//	"FXMQ" | version u8 | 0 u8 | 0 u16 | first offset u64 | count u32
//	count × ( kind u8 | produced-at unix ns i64 | length u32 | payload )
//
// little endian. Its KV key is mq/<chan_id>/<producer>/<batch seq, 16 hex>.
const (
	batchMagic   = "FXMQ"
	batchVersion = 1
	batchHeader  = 4 + 1 + 1 + 2 + 8 + 4
	msgHeader    = 1 + 8 + 4
	kindBytes    = 0
	kindDict     = 1
)

// ErrBadBatch: a batch object that does not parse.
var ErrBadBatch = errors.New("mq: malformed batch object")

// batchKey is the KV key of a producer's batch.
func batchKey(chanID, producer string, seq uint64) string {
	return fmt.Sprintf("mq/%s/%s/%016x", chanID, producer, seq)
}

// outMsg is a message a producer accepted.
type outMsg struct {
	kind byte
	at   time.Time
	data []byte
	done *pending
}

func encodedSize(msgs []*outMsg) int {
	n := batchHeader
	for _, m := range msgs {
		n += msgHeader + len(m.data)
	}
	return n
}

// encodeBatch encodes msgs as a fresh object.
func encodeBatch(first uint64, msgs []*outMsg) []byte { return encodeBatchInto(nil, first, msgs) }

// encodeBatchInto encodes msgs into buf's room (reallocated when short)
// and returns the encoded object.
func encodeBatchInto(buf []byte, first uint64, msgs []*outMsg) []byte {
	n := encodedSize(msgs)
	if cap(buf) < n {
		buf = make([]byte, 0, n)
	}
	b := buf[:batchHeader]
	clear(b)
	copy(b, batchMagic)
	b[4] = batchVersion
	binary.LittleEndian.PutUint64(b[8:], first)
	binary.LittleEndian.PutUint32(b[16:], uint32(len(msgs)))
	for _, m := range msgs {
		b = append(b, m.kind)
		b = binary.LittleEndian.AppendUint64(b, uint64(m.at.UnixNano()))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(m.data)))
		b = append(b, m.data...)
	}
	return b
}

// Message is one delivered message.
type Message struct {
	// Producer is the producer's id; Offset the message's place in that
	// producer's stream (0, 1, 2, …).
	Producer string
	Offset   uint64
	// ProducedAt is when the producer accepted it (its clock).
	ProducedAt time.Time
	// Redelivered: delivered before to a consumer that did not acknowledge
	// it (it died, or gave the stream up unacknowledged).
	Redelivered bool
	// Data is the payload: the bytes put, or the encoded dict (see Dict).
	Data []byte

	kind  byte
	batch uint64
	index uint32
	st    *stream
	epoch int
}

// IsDict says whether the message was put as a dict.
func (m *Message) IsDict() bool { return m.kind == kindDict }

// Dict decodes a message put with PutDict.
func (m *Message) Dict() (kv.Dict, error) {
	if m.kind != kindDict {
		return nil, fmt.Errorf("%w: message %s/%d holds bytes, not a dict", kv.ErrBadValue, m.Producer, m.Offset)
	}
	return kv.DecodeDict(m.Data)
}

// decodeBatch parses a batch object; the messages' Data alias b.
func decodeBatch(b []byte, producer string, seq uint64) (first uint64, msgs []Message, err error) {
	if len(b) < batchHeader || string(b[:4]) != batchMagic {
		return 0, nil, fmt.Errorf("%w: %s batch %d: no header", ErrBadBatch, producer, seq)
	}
	if b[4] != batchVersion {
		return 0, nil, fmt.Errorf("%w: %s batch %d: version %d, this build reads %d", ErrBadBatch, producer, seq, b[4], batchVersion)
	}
	first = binary.LittleEndian.Uint64(b[8:])
	n := binary.LittleEndian.Uint32(b[16:])
	if uint64(n) > uint64(len(b)-batchHeader)/msgHeader {
		return 0, nil, fmt.Errorf("%w: %s batch %d: %d messages cannot fit in %d bytes", ErrBadBatch, producer, seq, n, len(b))
	}
	msgs = make([]Message, n)
	at := batchHeader
	for i := range msgs {
		if len(b)-at < msgHeader {
			return 0, nil, fmt.Errorf("%w: %s batch %d: message %d truncated", ErrBadBatch, producer, seq, i)
		}
		kind := b[at]
		if kind != kindBytes && kind != kindDict {
			return 0, nil, fmt.Errorf("%w: %s batch %d: message %d of unknown kind %d", ErrBadBatch, producer, seq, i, kind)
		}
		ts := int64(binary.LittleEndian.Uint64(b[at+1:]))
		l := binary.LittleEndian.Uint32(b[at+9:])
		at += msgHeader
		if uint64(l) > uint64(len(b)-at) {
			return 0, nil, fmt.Errorf("%w: %s batch %d: message %d of %d bytes overruns the object", ErrBadBatch, producer, seq, i, l)
		}
		msgs[i] = Message{Producer: producer, Offset: first + uint64(i), ProducedAt: time.Unix(0, ts),
			Data: b[at : at+int(l) : at+int(l)], kind: kind, batch: seq, index: uint32(i)}
		at += int(l)
	}
	if at != len(b) {
		return 0, nil, fmt.Errorf("%w: %s batch %d: %d trailing bytes", ErrBadBatch, producer, seq, len(b)-at)
	}
	return first, msgs, nil
}
