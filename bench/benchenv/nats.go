package benchenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// natsStartTimeout bounds how long nats-server may take to accept
// connections.
const natsStartTimeout = 15 * time.Second

// ErrNoNATS reports that nats-server is not installed.
var ErrNoNATS = errors.New("nats-server not found on PATH; run `make deps` (it installs Debian's nats-server)")

// NATSOptions configure a nats-server with JetStream for a benchmark.
type NATSOptions struct {
	// Bin is the server binary; default "nats-server" from PATH.
	Bin string
	// Dir is the work directory (config, JetStream store, log); it must exist.
	Dir string
	// MaxMemoryStore caps JetStream's memory storage; 0: the server's default.
	MaxMemoryStore uint64
	// MaxPayload is the largest message; 0: the server's 1 MB.
	MaxPayload int
}

// NATSConfig is nats-server's config: loopback on addr, JetStream on with
// its store under dir.
func NATSConfig(addr string, o NATSOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %q\n", addr)
	if o.MaxPayload > 0 {
		fmt.Fprintf(&b, "max_payload: %d\n", o.MaxPayload)
	}
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n", filepath.Join(o.Dir, "jetstream"))
	if o.MaxMemoryStore > 0 {
		fmt.Fprintf(&b, "  max_memory_store: %d\n", o.MaxMemoryStore)
	}
	b.WriteString("}\n")
	return b.String()
}

// NATS is a running nats-server.
type NATS struct {
	*Proc
	URL     string
	Version string
}

// StartNATS starts nats-server -js on a free loopback port and waits until
// it accepts connections.
func StartNATS(ctx context.Context, o NATSOptions) (*NATS, error) {
	bin := o.Bin
	if bin == "" {
		bin = "nats-server"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%w (looked for %q)", ErrNoNATS, bin)
	}
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(o.Dir, "nats.conf")
	if err := os.WriteFile(cfgPath, []byte(NATSConfig(addr, o)), 0o644); err != nil {
		return nil, err
	}
	ver, _ := exec.Command(path, "--version").Output()
	p, err := Start("nats-server", filepath.Join(o.Dir, "nats.log"), nil, path, "-js", "-c", cfgPath)
	if err != nil {
		return nil, err
	}
	n := &NATS{Proc: p, URL: "nats://" + addr, Version: strings.TrimSpace(string(ver))}
	err = p.WaitFor(ctx, natsStartTimeout, "listener on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return strings.Contains(p.Output(), "Server is ready")
	})
	if err != nil {
		_ = p.Stop()
		return nil, err
	}
	return n, nil
}

// Stop stops nats-server; it exits with status 1 after a clean shutdown on
// SIGTERM ("Server Exiting.."), which counts as clean.
func (n *NATS) Stop() error {
	err := n.Proc.Stop()
	if err != nil && strings.Contains(n.Output(), "Server Exiting..") {
		return nil
	}
	return err
}
