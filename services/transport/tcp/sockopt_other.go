//go:build !linux

package tcp

import (
	"net"
	"time"
)

// setUserTimeout is Linux-only; elsewhere the keepalive pings alone bound
// how long a vanished peer goes unnoticed.
func setUserTimeout(*net.TCPConn, time.Duration) error { return nil }
