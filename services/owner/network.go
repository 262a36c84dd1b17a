package owner

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/services/kv/kvgrpc"
	"github.com/fluxon-dev/fluxon/services/kv/resp"
)

// startNetwork starts the endpoints remote clients use (gRPC, RESP).
func (o *Owner) startNetwork(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) error {
	if cfg.Listen.GRPC != "" {
		ln, err := net.Listen("tcp", cfg.Listen.GRPC)
		if err != nil {
			return fmt.Errorf("listen.grpc %s: %w; choose a free address", cfg.Listen.GRPC, err)
		}
		gs := grpc.NewServer(kvgrpc.ServerOptions()...)
		kvgrpc.NewServer(o.Store, log).Register(gs)
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
		rs := resp.NewServer(o.Store, resp.Options{Log: log, Registerer: reg})
		go func() {
			if err := rs.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
				log.Error("RESP server stopped", "err", err)
			}
		}()
		o.closers = append(o.closers, rs.Close)
		o.Endpoints["resp"] = ln.Addr().String()
	}
	return nil
}
