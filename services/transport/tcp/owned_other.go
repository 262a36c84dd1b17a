//go:build !linux

package tcp

import "net"

// busyStream: elsewhere a busy_poll socket stays in the netpoller (see
// owned_linux.go for what that costs).
func busyStream(tc *net.TCPConn) (net.Conn, func([]byte) (int, error), func([]byte) (int, error), error) {
	return rawStream(tc)
}
