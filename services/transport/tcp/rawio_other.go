//go:build !unix

package tcp

import "net"

const busyPollSupported = false

// rawStream: without raw sockets the connection is used as it is, with
// neither busy polling nor a producer's own write.
func rawStream(tc *net.TCPConn) (net.Conn, func([]byte) (int, error), func([]byte) (int, error), error) {
	return tc, nil, nil, nil
}
