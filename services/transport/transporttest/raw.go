package transporttest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/services/transport"
)

// rawPeer speaks the protocol by hand over a bare stream.
type rawPeer struct {
	t testing.TB
	c net.Conn
}

func (e *env) rawDial(t testing.TB, addr string) *rawPeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := e.setup.RawDial(ctx, addr)
	if err != nil {
		t.Fatalf("raw dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return newRawPeer(t, c)
}

func newRawPeer(t testing.TB, c net.Conn) *rawPeer {
	_ = c.SetDeadline(time.Now().Add(waitLimit)) // a hang guard
	return &rawPeer{t: t, c: c}
}

// rawFrame builds a frame, header fields as given (no validation), so the
// suite can build wrong ones.
func rawFrame(magic uint16, version, typ uint8, flags, reserved uint16, stream uint64, length uint32, payload []byte) []byte {
	b := make([]byte, transport.HeaderSize, transport.HeaderSize+len(payload))
	binary.BigEndian.PutUint16(b[0:], magic)
	b[2] = version
	b[3] = typ
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], reserved)
	binary.BigEndian.PutUint64(b[8:], stream)
	binary.BigEndian.PutUint32(b[16:], length)
	return append(b, payload...)
}

func frameBytes(t transport.FrameType, fl transport.Flags, stream uint64, payload []byte) []byte {
	return transport.AppendFrame(nil, transport.Frame{Header: transport.Header{Type: t, Flags: fl, Stream: stream}, Payload: payload})
}

// helloBytes is a HELLO (or HELLO_ACK) of id at the current protocol.
func helloBytes(t transport.FrameType, id transport.Identity) []byte {
	id.Protocol = transport.ProtocolVersion
	p, err := transport.AppendHello(nil, transport.Hello{Identity: id, MaxMessage: transport.DefaultMaxMessageSize})
	if err != nil {
		panic(err)
	}
	return frameBytes(t, 0, 0, p)
}

func requestBytes(stream uint64, fl transport.Flags, path string, body []byte) []byte {
	p := transport.AppendRequestHead(nil, transport.RequestHead{Total: uint64(len(body)), Path: path})
	return frameBytes(transport.FrameRequest, fl, stream, append(p, body...))
}

func (p *rawPeer) write(b []byte) error {
	_, err := p.c.Write(b)
	return err
}

// readFrame reads one frame (any size up to MaxFramePayload).
func (p *rawPeer) readFrame() (transport.Header, []byte, error) {
	var hb [transport.HeaderSize]byte
	if _, err := io.ReadFull(p.c, hb[:]); err != nil {
		return transport.Header{}, nil, err
	}
	h, err := transport.DecodeHeader(hb[:], transport.MaxFramePayload)
	if err != nil {
		return h, nil, err
	}
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(p.c, payload); err != nil {
		return h, nil, err
	}
	return h, payload, nil
}

// helloAsDialer sends a HELLO and reads the answer.
func (p *rawPeer) helloAsDialer(id transport.Identity) (transport.Header, []byte) {
	p.t.Helper()
	if err := p.write(helloBytes(transport.FrameHello, id)); err != nil {
		p.t.Fatalf("raw hello: %v", err)
	}
	h, payload, err := p.readFrame()
	if err != nil {
		p.t.Fatalf("raw hello answer: %v", err)
	}
	return h, payload
}

// handshakeAsDialer completes a handshake as a dialer.
func (p *rawPeer) handshakeAsDialer() {
	p.t.Helper()
	h, payload := p.helloAsDialer(clientID)
	if h.Type != transport.FrameHelloAck {
		p.t.Fatalf("raw handshake: got %s (%q), want hello-ack", h, payload)
	}
}

// handshakeAsListener answers a dialer's HELLO.
func (p *rawPeer) handshakeAsListener() error {
	h, _, err := p.readFrame()
	if err != nil {
		return err
	}
	if h.Type != transport.FrameHello {
		return fmt.Errorf("got %s, want hello", h)
	}
	return p.write(helloBytes(transport.FrameHelloAck, serverID))
}

// drain reads frames until the peer closes the connection, answering
// nothing; it returns the frames seen (ERROR payloads kept) and the error
// that ended the stream (io.EOF or a reset).
func (p *rawPeer) drain() ([]transport.Header, []*transport.RemoteError, error) {
	var hs []transport.Header
	var errs []*transport.RemoteError
	for {
		h, payload, err := p.readFrame()
		if err != nil {
			return hs, errs, err
		}
		hs = append(hs, h)
		if h.Type == transport.FrameError || h.Type == transport.FrameClose {
			re, derr := transport.DecodeErrorPayload(payload)
			if derr != nil {
				return hs, errs, derr
			}
			errs = append(errs, re)
		}
	}
}

// endedByPeer reports an error that means the other side closed.
func endedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// rawServer accepts one connection on a raw listener and hands it to f.
func (e *env) rawServer(f func(p *rawPeer)) string {
	e.t.Helper()
	ln, err := e.setup.RawListen(e.setup.Addr)
	if err != nil {
		e.t.Fatalf("raw listen: %v", err)
	}
	done := make(chan struct{})
	e.t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		f(newRawPeer(e.t, c))
	}()
	return ln.Addr().String()
}
