package meta

import (
	"fmt"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// embedStartTimeout bounds how long an embedded etcd may take to serve.
const embedStartTimeout = 60 * time.Second

// Embedded is an etcd server running inside this process, used by `fluxon up`
// so that a single host needs no separate etcd.
type Embedded struct {
	e         *embed.Etcd
	clientURL string
}

// StartEmbedded starts a single-member etcd with its data under dir, serving
// clients on clientAddr and peers on peerAddr (host:port each). Starting again
// on the same dir and addresses resumes the same state.
func StartEmbedded(dir, clientAddr, peerAddr string) (*Embedded, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd data directory: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "fluxon-embedded"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{dir + "/etcd.log"}
	cu, err := url.Parse("http://" + clientAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd client address %q: %w", clientAddr, err)
	}
	pu, err := url.Parse("http://" + peerAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd peer address %q: %w", peerAddr, err)
	}
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Small machines: keep the backend small and snapshots frequent enough.
	cfg.QuotaBackendBytes = 2 << 30
	cfg.AutoCompactionMode = "revision"
	cfg.AutoCompactionRetention = "10000"

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting embedded etcd in %s (client %s, peer %s): %w (if the address is in use, pick others with --etcd-client/--etcd-peer)", dir, clientAddr, peerAddr, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-time.After(embedStartTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s did not become ready in %s", dir, embedStartTimeout)
	}
	return &Embedded{e: e, clientURL: "http://" + clientAddr}, nil
}

// ClientURL is the address clients use (http://host:port).
func (m *Embedded) ClientURL() string { return m.clientURL }

// Err reports a fatal server error.
func (m *Embedded) Err() <-chan error { return m.e.Err() }

// Close stops the server and waits for it to release its files.
func (m *Embedded) Close() { m.e.Close() }
