//go:build !unix

package tcp

import (
	"errors"
	"net"
)

const busyPollSupported = false

func tryReader(*net.TCPConn) (func([]byte) (int, error), error) {
	return nil, errors.New("tcp transport: busy_poll is not supported on this platform")
}

func tryWriter(*net.TCPConn) (func([]byte) (int, error), error) { return nil, nil }
