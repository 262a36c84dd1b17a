package owner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/meta/metatest"
	"github.com/fluxon-dev/fluxon/internal/logtest"
	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/transport"
	"github.com/fluxon-dev/fluxon/services/transport/multi"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// startClusterOwner starts an owner inside a cluster (embedded etcd), so
// that it builds its transports and advertises endpoints; network is the
// YAML of its network section.
func startClusterOwner(t *testing.T, network string) (*Owner, *logtest.Buffer) {
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
	o, err := Start(cfg, "owner-1", log, nil, Deps{Meta: m, StartTime: time.Now()})
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

// With a device, rdma goes to the RPC node (requests only, over rdma's
// control channel) and not to the cluster KV node, whose object-relative
// bulk reads one-sided rdma would resolve against the wrong memory.
// Without one, the missing device is the reason on both.
func TestRDMAOnlyWhereReadsNameSegments(t *testing.T) {
	dev := tcp.Name // any transport stands in for an opened device
	opened := func() (transport.Transport, error) { return tcp.New(tcp.Options{}) }
	noDevice := func() (transport.Transport, error) { return nil, cgordma.ErrNoDevice }

	tr, err := rdmaForNode(nodeTransports{}, opened)
	if err != nil || tr.Name() != dev {
		t.Fatalf("RPC node with a device: %v, %v; want the transport", tr, err)
	}
	if _, err := rdmaForNode(nodeTransports{objectReads: true}, opened); !errors.Is(err, errOneSidedObjectReads) {
		t.Fatalf("KV node with a device: %v, want errOneSidedObjectReads", err)
	}
	for _, node := range []nodeTransports{{}, {objectReads: true}} {
		if _, err := rdmaForNode(node, noDevice); !errors.Is(err, cgordma.ErrNoDevice) {
			t.Fatalf("%+v without a device: %v, want ErrNoDevice", node, err)
		}
	}
}
