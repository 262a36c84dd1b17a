// Command fluxon is the single binary of a Fluxon cluster: it runs every role
// (up, master, owner) and the tools to inspect and use a cluster.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// exitUsage is the exit status for a bad command line or config.
const exitUsage = 2

// usageError marks errors that are the caller's to fix (flags, config).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "fluxon",
		Short: "Fluxon: a distributed data plane for large binary objects",
		Long: `Fluxon shares large binary objects (KV-cache blocks, tensors, files) between
processes through shared memory on one host and the fastest transport between hosts.

Start a single-host cluster (embedded etcd + master + owner):
  fluxon up

Inspect it from another terminal:
  fluxon status

Production runs the roles as separate processes against a real etcd cluster:
  fluxon master --config master.yaml
  fluxon owner  --config owner.yaml

The config schema is documented in docs/config.md. Log level: FLUXON_LOG=debug|info|warn|error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCmd(), newUpCmd(), newRoleCmd("master"), newRoleCmd("owner"), newStatusCmd(), newKVCmd(), newMQCmd(), newRPCCmd(), newBenchCmd())
	return root
}

func main() {
	err := newRoot().Execute()
	if err == nil {
		return
	}
	if err != errSilentFailure {
		fmt.Fprintln(os.Stderr, "fluxon:", err)
	}
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(exitUsage)
	}
	os.Exit(1)
}
