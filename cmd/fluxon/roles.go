package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/control/node"
	"github.com/fluxon-dev/fluxon/control/telemetry"
)

// signalContext ends on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func newRoleCmd(role string) *cobra.Command {
	var cfgPath string
	short := map[string]string{
		"master": "Run a master: campaigns through etcd, tracks members, publishes the routing table",
		"owner":  "Run an owner: contributes this host's shared-memory pool to the cluster",
	}[role]
	cmd := &cobra.Command{
		Use:   role + " --config FILE",
		Short: short,
		Long: short + `.

The role runs until Ctrl-C or SIGTERM, then leaves the cluster cleanly. It
needs a reachable etcd (etcd_endpoints in the config). Any number of masters
may run: one leads, the others stand by and take over within master.election_ttl
when the leader dies. See docs/config.md for every field.`,
		Example: fmt.Sprintf(`  fluxon %s --config %s.yaml

  # %s.yaml
  cluster_name: prod
  instance_key: %s-1
  etcd_endpoints: ["127.0.0.1:2379"]%s`, role, role, role, role,
			map[string]string{"master": "", "owner": "\n  contribute_to_cluster_pool_size:\n    dram: 4GiB"}[role]),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return usageError{fmt.Errorf("%s needs --config FILE (see docs/config.md)", role)}
			}
			cfg, err := config.Load(cfgPath, config.Role(role))
			if err != nil {
				return usageError{err}
			}
			log, err := telemetry.NewLogger(cmd.ErrOrStderr(), cfg.LogDir, cfg.InstanceKey)
			if err != nil {
				return usageError{err}
			}
			defer log.Close()
			ctx, stop := signalContext()
			defer stop()
			r, err := node.Start(ctx, meta.Role(role), cfg, log.Logger)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s of cluster %q running; metrics http://%s/metrics\n", role, cfg.InstanceKey, cfg.ClusterName, r.Endpoints()["http"])
			<-ctx.Done()
			log.Info("signal received; leaving the cluster")
			return r.Close()
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "path to the YAML config (required)")
	return cmd
}
