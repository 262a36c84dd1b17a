package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon/services/rpc"
	"github.com/fluxon-dev/fluxon/services/rpc/rpcgrpc"
)

// Defaults of `fluxon rpc`.
const (
	// rpcDefaultTimeout bounds one call (and connecting to the owner).
	rpcDefaultTimeout = 10 * time.Second
	// rpcPingPayload is the size of a ping's payload.
	rpcPingPayload = 16
)

func newRPCCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rpc",
		Short: "Call handlers registered on cluster members (node-to-node RPC)",
		Long: `Call a handler that a member (owner or external, on any host) registered with
services/rpc. The call goes over gRPC to an owner, which forwards it to the
member by node_id: --addr names the owner; otherwise the owners are found
through etcd (from ./.fluxon/cluster.json, or --etcd and --cluster), preferring
this host's. Every member serves /fluxon/ping and /fluxon/info.`,
		Example: `  fluxon rpc ping owner-2
  fluxon rpc call owner-2 /fluxon/info
  fluxon rpc call worker-7 /cache/evict '{"layer": 3}' --timeout 500ms
  fluxon rpc call worker-7 /tensor/load --file ./req.bin > reply.bin`,
	}
	cmd.AddCommand(newRPCCallCmd(), newRPCPingCmd())
	return cmd
}

// rpcFlags are the flags every `fluxon rpc` command shares.
type rpcFlags struct {
	target  kvTarget
	timeout time.Duration
}

func (f *rpcFlags) add(cmd *cobra.Command) {
	f.target.addFlags(cmd)
	cmd.Flags().DurationVar(&f.timeout, "timeout", rpcDefaultTimeout, "give up on a call after this long (e.g. 50ms, 2s)")
}

// run finds and dials the owner (within the timeout) and runs fn with a
// client; fn gives each call a timeout of its own.
func (f *rpcFlags) run(cmd *cobra.Command, fn func(c *rpcgrpc.Client) error) error {
	if f.timeout <= 0 {
		return usageError{fmt.Errorf("--timeout %v: give a positive duration", f.timeout)}
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	addr, err := f.target.ownerAddr(ctx)
	if err != nil {
		return err
	}
	c, err := rpcgrpc.Dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

func newRPCCallCmd() *cobra.Command {
	var f rpcFlags
	var file, out string
	cmd := &cobra.Command{
		Use:   "call NODE PATH [PAYLOAD]",
		Short: "Call PATH on member NODE and print its reply",
		Long: `Call the handler for PATH on the member whose node_id is NODE, with PAYLOAD
(an argument, --file FILE, or - for standard input; none: empty), and write the
reply's bytes to standard output (or --out FILE) as they are. A failed call
exits with status 1 and says why: unknown node, unknown path, the handler's
error (with its code), a panic in the handler, a timeout, a node that went
away or restarted.`,
		Example: `  fluxon rpc call owner-2 /fluxon/info
  fluxon rpc call worker-7 /svc/echo hello --timeout 2s
  cat req.bin | fluxon rpc call worker-7 /svc/load - --out reply.bin`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			var payload []byte
			var err error
			switch {
			case file != "" && len(args) == 3:
				return usageError{errors.New("give the payload as an argument or with --file, not both")}
			case file != "":
				payload, err = os.ReadFile(file)
			case len(args) == 3 && args[2] == "-":
				payload, err = io.ReadAll(cmd.InOrStdin())
			case len(args) == 3:
				payload = []byte(args[2])
			}
			if err != nil {
				return err
			}
			return f.run(cmd, func(c *rpcgrpc.Client) error {
				ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
				defer cancel()
				reply, err := c.Call(ctx, args[0], args[1], payload)
				if err != nil {
					return rpcCLIError(err, f.timeout)
				}
				w := cmd.OutOrStdout()
				if out != "" {
					fh, err := os.Create(out)
					if err != nil {
						return err
					}
					defer fh.Close()
					w = fh
				}
				_, err = w.Write(reply)
				return err
			})
		},
	}
	f.add(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "read the payload from this file")
	cmd.Flags().StringVar(&out, "out", "", "write the reply to this file instead of standard output")
	return cmd
}

func newRPCPingCmd() *cobra.Command {
	var f rpcFlags
	var count int
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "ping NODE",
		Short: "Call /fluxon/ping on member NODE and print the round-trip time",
		Long: `Call /fluxon/ping on the member whose node_id is NODE and print the round-trip
time, measured here: it includes the hop to the owner that forwards the call.
Each ping has its own --timeout.`,
		Example: `  fluxon rpc ping owner-2
  fluxon rpc ping worker-7 --count 5 --interval 200ms`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if count < 1 {
				return usageError{fmt.Errorf("--count %d: ping at least once", count)}
			}
			node := args[0]
			return f.run(cmd, func(c *rpcgrpc.Client) error {
				var failed int
				for seq := 1; seq <= count; seq++ {
					if seq > 1 {
						select {
						case <-time.After(interval):
						case <-cmd.Context().Done():
							return cmd.Context().Err()
						}
					}
					payload := make([]byte, rpcPingPayload)
					binary.BigEndian.PutUint64(payload, uint64(seq))
					binary.BigEndian.PutUint64(payload[8:], uint64(time.Now().UnixNano()))
					ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
					rtt, err := c.Ping(ctx, node, payload)
					cancel()
					if err != nil {
						if count == 1 {
							return rpcCLIError(err, f.timeout)
						}
						failed++
						fmt.Fprintf(cmd.OutOrStdout(), "ping %s seq=%d: %v\n", node, seq, rpcCLIError(err, f.timeout))
						continue
					}
					fmt.Fprintf(cmd.OutOrStdout(), "ping %s seq=%d: time=%s\n", node, seq, formatRTT(rtt))
				}
				if failed > 0 {
					return fmt.Errorf("%d of %d pings to %s failed", failed, count, node)
				}
				return nil
			})
		},
	}
	f.add(cmd)
	cmd.Flags().IntVarP(&count, "count", "c", 1, "how many pings")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "wait between pings")
	return cmd
}

func formatRTT(d time.Duration) string {
	return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond))
}

// rpcCLIError adds what to do to the errors a person at a shell can act
// on; the message of the call itself says what happened.
func rpcCLIError(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, rpc.ErrUnknownNode):
		return fmt.Errorf("%w (`fluxon status` lists the members)", err)
	case errors.Is(err, rpc.ErrTimeout):
		return fmt.Errorf("%w (--timeout is %v; raise it if the handler needs longer)", err, timeout)
	}
	return err
}
