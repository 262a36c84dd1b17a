package owner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/services/kv/kvgrpc"
	"github.com/fluxon-dev/fluxon/services/kv/resp"
	"github.com/fluxon-dev/fluxon/services/mq"
	"github.com/fluxon-dev/fluxon/services/mq/mqgrpc"
	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/rpc/rpcgrpc"
)

// startRPC starts the owner's RPC node on the data-plane transport address
// (listen.transport), resolving other members through etcd. It listens on
// every transport of network.transports that runs here (tcp on the
// configured port, the others on ports the kernel picks) and advertises
// them all in one endpoint string (multi.Encode).
func (o *Owner) startRPC(cfg *config.Config, instanceKey string, log *slog.Logger, reg prometheus.Registerer, deps Deps) error {
	if deps.Meta == nil {
		return nil
	}
	tr, tc, err := o.newTransport(cfg, log, reg, nodeTransports{dpdkAddr: cfg.Network.DPDK.Address})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	res, err := rpc.NewMetaResolver(ctx, deps.Meta, rpc.MetaResolverOptions{Log: log})
	if err != nil {
		cancel()
		return err
	}
	o.closers = append(o.closers, func() error { cancel(); return res.Close() })
	node, err := rpc.New(rpc.Options{
		Local:     ownerIdentity(cfg.ClusterName, instanceKey, deps.StartTime),
		Transport: o.dialVia(tr, tc, log), ListenAddr: cfg.Listen.Transport, Resolver: res, Log: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	addr, err := node.Start(ctx)
	if err != nil {
		return fmt.Errorf("listen.transport %s: %w", cfg.Listen.Transport, err)
	}
	o.RPC = node
	o.closers = append(o.closers, node.Close)
	o.Endpoints[rpc.EndpointKey] = advertisedAll(addr, cfg.Network.AdvertiseAddress)
	return nil
}

// startNetwork starts the endpoints remote clients use (gRPC, RESP).
func (o *Owner) startNetwork(cfg *config.Config, instanceKey string, log *slog.Logger, reg prometheus.Registerer, deps Deps) error {
	if cfg.Listen.GRPC != "" {
		ln, err := net.Listen("tcp", cfg.Listen.GRPC)
		if err != nil {
			return fmt.Errorf("listen.grpc %s: %w; choose a free address", cfg.Listen.GRPC, err)
		}
		gs := grpc.NewServer(kvgrpc.ServerOptions()...)
		kvgrpc.NewServer(o.KV, log).Register(gs)
		if o.RPC != nil {
			rpcgrpc.NewServer(o.RPC).Register(gs)
		}
		if deps.Meta != nil {
			// The MQ service holds producer and consumer handles for
			// remote callers; closed before the store goes.
			ms := mqgrpc.NewServer(mq.BackendKV{B: o.KV}, deps.Meta, instanceKey, log, reg)
			ms.Register(gs)
			o.closers = append(o.closers, ms.Close)
		}
		go func() {
			if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				log.Error("gRPC server stopped", "err", err)
			}
		}()
		o.closers = append(o.closers, func() error { gs.Stop(); return nil })
		o.Endpoints["grpc"] = ln.Addr().String()
	}
	if cfg.Listen.RESP != "" {
		ln, err := net.Listen("tcp", cfg.Listen.RESP)
		if err != nil {
			return fmt.Errorf("listen.resp %s: %w; choose a free address, or \"\" to turn RESP off", cfg.Listen.RESP, err)
		}
		rs := resp.NewServer(o.KV, resp.Options{Log: log, Registerer: reg})
		go func() {
			if err := rs.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, resp.ErrServerClosed) {
				log.Error("RESP server stopped", "err", err)
			}
		}()
		o.closers = append(o.closers, rs.Close)
		o.Endpoints["resp"] = ln.Addr().String()
	}
	return nil
}
