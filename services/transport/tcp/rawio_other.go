//go:build !unix

package tcp

import (
	"errors"
	"net"
	"time"
)

const busyPollSupported = false

func busyPollReader(*net.TCPConn, time.Duration) (func([]byte) (int, error), error) {
	return nil, errors.New("tcp transport: busy_poll is not supported on this platform")
}

func tryWriter(*net.TCPConn) (func([]byte) (int, error), error) { return nil, nil }
