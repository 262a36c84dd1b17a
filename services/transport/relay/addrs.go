package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// ErrBadAddrs: a relay endpoint string is not a list of host:port.
var ErrBadAddrs = errors.New("relay: bad relay addresses")

// EncodeAddrs writes a member's relay addresses, in order of preference,
// as the one string of its "relay" endpoint: "10.0.1.5:7300,10.0.2.5:7301".
// One address encodes as itself, which is what members advertised before
// they could list several.
func EncodeAddrs(addrs []string) (string, error) {
	if err := checkAddrs(addrs); err != nil {
		return "", err
	}
	return strings.Join(addrs, ","), nil
}

// ParseAddrs reads an EncodeAddrs string: at least one host:port, none
// twice, no spaces.
func ParseAddrs(s string) ([]string, error) {
	addrs := strings.Split(s, ",")
	if err := checkAddrs(addrs); err != nil {
		return nil, fmt.Errorf("%w (in %q)", err, s)
	}
	return addrs, nil
}

func checkAddrs(addrs []string) error {
	if len(addrs) == 0 {
		return fmt.Errorf("%w: no address", ErrBadAddrs)
	}
	seen := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil || strings.ContainsAny(a, ", \t") {
			return fmt.Errorf("%w: %q is not host:port", ErrBadAddrs, a)
		}
		if seen[a] {
			return fmt.Errorf("%w: %q listed twice", ErrBadAddrs, a)
		}
		seen[a] = true
	}
	return nil
}

// candidates lists addresses to try in order: the non-empty ones of
// first, then rest, each once.
func candidates(first []string, rest []string) []string {
	out := make([]string, 0, len(first)+len(rest))
	seen := make(map[string]bool, cap(out))
	for _, list := range [][]string{first, rest} {
		for _, a := range list {
			if a != "" && !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}

// dialAny connects to the first of addrs that accepts, each within
// perTry (so a dropped SYN on one address leaves time for the next), and
// returns which one answered; the error names every failure.
func dialAny(ctx context.Context, dial DialFunc, addrs []string, perTry time.Duration) (net.Conn, string, error) {
	if len(addrs) == 0 {
		return nil, "", errors.New("no address to dial")
	}
	var failed error
	for _, a := range addrs {
		tctx, cancel := context.WithTimeout(ctx, perTry)
		c, err := dial(tctx, a)
		cancel()
		if err == nil {
			return c, a, nil
		}
		if failed == nil {
			failed = fmt.Errorf("%s: %w", a, err)
		} else {
			failed = fmt.Errorf("%w; %s: %w", failed, a, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", failed
}
