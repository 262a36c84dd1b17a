package main

import (
	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon/bench/transportbench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure this build on this host or between two hosts",
		Long: `bench measures the data plane without a cluster. bench transport runs every
transport at each message size and concurrency, over loopback, between two
network namespaces (--netns) or between two hosts (--listen on one, --connect
on the other). fluxon-bench transport is the same command.`,
		Example: `  fluxon bench transport
  fluxon bench transport --listen 0.0.0.0:7500       # host A
  fluxon bench transport --connect hostA:7500        # host B`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(transportbench.NewCommand(transportbench.CommandOptions{
		Reexec: []string{"bench", "transport"}, Usage: func(err error) error { return usageError{err} },
	}))
	return cmd
}
