package owner

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
	cucx "github.com/fluxon-dev/fluxon/cgo/ucx"
	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/meta/metatest"
	"github.com/fluxon-dev/fluxon/internal/logtest"
	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/transport/multi"
	"github.com/fluxon-dev/fluxon/services/transport/rdma"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// startClusterOwner starts an owner inside a cluster (embedded etcd), so
// that it builds its transports and advertises endpoints; network is the
// YAML of its network section.
func startClusterOwner(t *testing.T, network string) (*Owner, *logtest.Buffer) {
	t.Helper()
	return startClusterOwnerWith(t, network, nil)
}

// startClusterOwnerWith is startClusterOwner with Deps.OpenRDMA set.
func startClusterOwnerWith(t *testing.T, network string, openRDMA func(rdma.Options) (ClosableTransport, error)) (*Owner, *logtest.Buffer) {
	t.Helper()
	url := metatest.Embedded(t)
	shm, err := os.MkdirTemp("/dev/shm", "fluxon-owner-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	cfg, err := config.Parse([]byte(fmt.Sprintf(`cluster_name: tr
instance_key: owner-1
etcd_endpoints: [%q]
shared_memory_path: %s
shared_file_path: %s
contribute_to_cluster_pool_size: {dram: 8MiB}
pool: {segment_size: 1MiB}
network:
%s`, url, shm, t.TempDir(), network)), config.RoleOwner)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logtest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := meta.Connect(ctx, []string{url}, cfg.ClusterName, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	o, err := Start(cfg, "owner-1", log, nil, Deps{Meta: m, StartTime: time.Now(), OpenRDMA: openRDMA})
	if err != nil {
		t.Fatalf("owner with %q: %v\n%s", network, err, logs.String())
	}
	t.Cleanup(func() { o.Close() })
	return o, logs
}

// offered lists the transports an endpoint of o offers.
func offered(t *testing.T, o *Owner, endpoint string) []string {
	t.Helper()
	e, ok := o.Endpoints[endpoint]
	if !ok {
		t.Fatalf("no %q endpoint in %v", endpoint, o.Endpoints)
	}
	return multi.Names(e)
}

// On a host without an RDMA device an owner asked for [rdma, tcp] comes
// up on tcp alone: neither node advertises rdma, and "no RDMA device" is
// logged once although both nodes built their transports.
func TestOwnerWithoutRDMADevice(t *testing.T) {
	if _, err := cgordma.Devices(); err == nil {
		t.Skip("this host has an RDMA device; this test is for hosts without one")
	}
	o, logs := startClusterOwner(t, "  transports: [rdma, tcp]\n")
	for _, ep := range []string{rpc.EndpointKey, KVEndpointKey} {
		if got := offered(t, o, ep); len(got) != 1 || got[0] != "tcp" {
			t.Errorf("endpoint %s offers %v, want [tcp] (no rdma without a device)", ep, got)
		}
	}
	if o.rdma != nil || o.rdmaErr == nil {
		t.Errorf("rdma = %v, err %v; want no transport and the reason", o.rdma, o.rdmaErr)
	}
	if n := logs.Lines("no RDMA device"); n != 1 {
		t.Errorf("%q logged on %d lines, want one:\n%s", "no RDMA device", n, logs.String())
	}
}

// dpdk is offered only when network.dpdk is configured: listed in
// network.transports alone, it is logged as not configured and left out.
func TestOwnerDPDKNeedsConfig(t *testing.T) {
	o, logs := startClusterOwner(t, "  transports: [dpdk, tcp]\n")
	if got := offered(t, o, rpc.EndpointKey); len(got) != 1 || got[0] != "tcp" {
		t.Errorf("rpc endpoint offers %v, want [tcp]: dpdk has no network.dpdk.address", got)
	}
	if n := logs.Lines("set network.dpdk.address"); n != 1 {
		t.Errorf("the reason dpdk is not offered was logged %d times, want once:\n%s", n, logs.String())
	}
}

// ucx in the default transport order is offered only on a host with an
// RDMA device: elsewhere UCX runs over TCP, slower than the tcp transport,
// and the default order would make every peer pair prefer it. A config
// that lists ucx gets it on any host. In a build without the ucx tag it is
// never offered, and the reason says so.
func TestOwnerUCXByDefaultOnlyWithRDMA(t *testing.T) {
	for _, tc := range []struct {
		name, network string
		rdmaHost      bool
		wantUCX       bool
		reason        string
	}{
		{"default order, no device", "", false, false, "without an RDMA device"},
		{"default order, a device", "", true, true, ""},
		{"listed, no device", "  transports: [ucx, tcp]\n", false, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			was := rdmaHost
			rdmaHost = func() bool { return tc.rdmaHost }
			t.Cleanup(func() { rdmaHost = was })
			o, logs := startClusterOwner(t, tc.network)
			got := offered(t, o, rpc.EndpointKey)
			if !cucx.Supported() {
				if slices.Contains(got, "ucx") || logs.Lines("not in this build") != 1 {
					t.Errorf("a build without ucx offers %v, and logged:\n%s", got, logs.String())
				}
				return
			}
			if slices.Contains(got, "ucx") != tc.wantUCX {
				t.Errorf("offers %v; want ucx: %v", got, tc.wantUCX)
			}
			if tc.reason != "" && logs.Lines(tc.reason) != 1 {
				t.Errorf("the reason ucx is not offered (%q) was not logged once:\n%s", tc.reason, logs.String())
			}
			if !slices.Contains(got, "tcp") {
				t.Errorf("offers %v, without tcp", got)
			}
		})
	}
}

// The owner's pool segments, as rdma registers them: one per segment, in
// order, each the segment's memory.
func TestRDMASegmentsArePoolSegments(t *testing.T) {
	o, _ := startClusterOwner(t, "  transports: [tcp]\n")
	segs := o.rdmaSegments()
	info, err := o.Pool.Info()
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(segs)) != info.SegmentCount || len(segs) != 8 {
		t.Fatalf("%d segments for rdma, the pool has %d (8MiB / 1MiB)", len(segs), info.SegmentCount)
	}
	ps, _ := o.Pool.Segments()
	for i, s := range segs {
		if s.ID != uint32(i) || s.Len != info.SegmentSize || s.Base != ps[i].Data {
			t.Errorf("rdma segment %d = %+v, pool segment %+v", i, s, ps[i])
		}
	}
}

// rdmaStandIn is a tcp transport under rdma's name: what an owner gets
// from a device, for the tests on hosts without one (all of them so far).
type rdmaStandIn struct{ *tcp.Transport }

func (rdmaStandIn) Name() string { return "rdma" }

// Close: a tcp transport holds nothing once its listeners are closed.
func (rdmaStandIn) Close() error { return nil }

// With a device, both nodes offer rdma: the RPC node and the cluster KV
// node, whose bulk reads name pinned objects by pool segment and offset,
// which a one-sided read serves. The device is opened once, for both,
// with the pool's segments to register.
func TestRDMAOfferedOnBothEndpoints(t *testing.T) {
	var opened []rdma.Options
	open := func(ro rdma.Options) (ClosableTransport, error) {
		opened = append(opened, ro)
		tc, err := tcp.New(tcp.Options{})
		if err != nil {
			return nil, err
		}
		return rdmaStandIn{tc}, nil
	}
	o, logs := startClusterOwnerWith(t, "  transports: [rdma, tcp]\n", open)
	for _, ep := range []string{rpc.EndpointKey, KVEndpointKey} {
		if got := offered(t, o, ep); !slices.Equal(got, []string{"rdma", "tcp"}) {
			t.Errorf("endpoint %s offers %v, want [rdma tcp]", ep, got)
		}
	}
	if len(opened) != 1 {
		t.Fatalf("rdma opened %d times, want once for both nodes", len(opened))
	}
	if segs := opened[0].Segments(); len(segs) != 8 {
		t.Errorf("rdma got %d segments to register, want the pool's 8", len(segs))
	}
	if n := logs.Lines("transport not offered"); n != 0 {
		t.Errorf("a transport was refused:\n%s", logs.String())
	}
}
