package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// shutdownTimeout bounds a graceful HTTP shutdown.
const shutdownTimeout = 3 * time.Second

// HealthFunc reports a role's health: nil is healthy. detail is shown as JSON.
type HealthFunc func() (detail map[string]any, err error)

// Server serves /metrics and /healthz (and whatever else a role mounts on Mux).
type Server struct {
	Registry *prometheus.Registry
	Mux      *http.ServeMux
	srv      *http.Server
	ln       net.Listener
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Listen binds addr ("127.0.0.1:0" picks a free port) and serves in the background.
func Listen(addr string, reg *prometheus.Registry, health HealthFunc) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen.http %s: %w; choose a free address", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		detail, err := health()
		if detail == nil {
			detail = map[string]any{}
		}
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			detail["status"] = "unhealthy"
			detail["error"] = err.Error()
			w.WriteHeader(http.StatusServiceUnavailable)
		} else {
			detail["status"] = "ok"
		}
		_ = json.NewEncoder(w).Encode(detail)
	})
	s := &Server{Registry: reg, Mux: mux, ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = ln.Close()
		}
	}()
	return s, nil
}

// Addr is the bound address (host:port).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close shuts the server down gracefully.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
