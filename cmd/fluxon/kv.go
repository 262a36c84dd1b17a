package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta"
	"github.com/fluxon-dev/fluxon/services/kv"
	"github.com/fluxon-dev/fluxon/services/kv/kvgrpc"
)

// kvTimeout bounds one `fluxon kv` command.
const kvTimeout = 60 * time.Second

// kvTarget finds the owner to talk to: --addr, or the cluster's owners as
// etcd lists them (one on this host first).
type kvTarget struct {
	clusterTarget
	addr string
}

func (t *kvTarget) addFlags(cmd *cobra.Command) {
	t.clusterTarget.addFlags(cmd)
	cmd.Flags().StringVar(&t.addr, "addr", "", "an owner's gRPC address (host:port); default: an owner of the cluster, this host's first")
}

// ownerAddr is the gRPC address of the owner to talk to: --addr, or an
// owner of the cluster as etcd lists them, this host's first.
func (t *kvTarget) ownerAddr(ctx context.Context) (string, error) {
	if t.addr != "" {
		return t.addr, nil
	}
	etcd, cluster, err := t.resolve()
	if err != nil {
		return "", err
	}
	store, err := meta.Connect(ctx, etcd, cluster, slog.New(slog.DiscardHandler))
	if err != nil {
		return "", err
	}
	members, _, err := store.Members(ctx)
	store.Close()
	if err != nil {
		return "", err
	}
	host, _ := os.Hostname()
	addr := ""
	for _, m := range members {
		if m.Role != meta.RoleOwner || m.Endpoints["grpc"] == "" {
			continue
		}
		if addr == "" || m.Host == host {
			addr = m.Endpoints["grpc"]
		}
	}
	if addr == "" {
		return "", fmt.Errorf("cluster %q has no owner with a gRPC endpoint; start one or pass --addr", cluster)
	}
	return addr, nil
}

func (t *kvTarget) dial(ctx context.Context) (*kvgrpc.Client, error) {
	addr, err := t.ownerAddr(ctx)
	if err != nil {
		return nil, err
	}
	return kvgrpc.Dial(ctx, addr)
}

func newKVCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Put, get, remove and list keys of the cluster's KV store",
		Long: `Use the cluster's KV store from the shell. Commands talk gRPC to an owner:
--addr names one; otherwise the owners are found through etcd (from
./.fluxon/cluster.json, or --etcd and --cluster), preferring this host's.`,
		Example: `  fluxon kv put greeting "hello"
  fluxon kv put model.bin --file ./model.bin --ttl 10m
  fluxon kv get greeting
  fluxon kv ls --prefix model
  fluxon kv stat`,
	}
	cmd.AddCommand(newKVPut(), newKVGet(), newKVRm(), newKVExists(), newKVLs(), newKVStat())
	return cmd
}

// kvRun runs f with a dialled client and a bounded context.
func kvRun(cmd *cobra.Command, t *kvTarget, f func(ctx context.Context, c *kvgrpc.Client) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), kvTimeout)
	defer cancel()
	c, err := t.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(ctx, c)
}

func newKVPut() *cobra.Command {
	var t kvTarget
	var file string
	var ttl time.Duration
	var ifAbsent bool
	var replicas int
	var placementHint []string
	cmd := &cobra.Command{
		Use:   "put KEY [VALUE]",
		Short: "Store a value (from the argument, --file, or standard input)",
		Example: `  fluxon kv put greeting hello
  fluxon kv put blob --file ./blob.bin
  echo -n data | fluxon kv put piped -
  fluxon kv put session:1 token --ttl 30s --if-absent`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var value []byte
			var err error
			switch {
			case file != "" && len(args) == 2:
				return usageError{errors.New("give the value as an argument or with --file, not both")}
			case file != "":
				value, err = os.ReadFile(file)
			case len(args) == 2 && args[1] == "-":
				value, err = io.ReadAll(cmd.InOrStdin())
			case len(args) == 2:
				value = []byte(args[1])
			default:
				return usageError{errors.New("no value: pass VALUE, --file FILE, or - for standard input")}
			}
			if err != nil {
				return err
			}
			return kvRun(cmd, &t, func(ctx context.Context, c *kvgrpc.Client) error {
				v, err := c.Put(ctx, args[0], value, kv.PutOptions{TTL: ttl, IfAbsent: ifAbsent, Replicas: replicas, Placement: placementHint})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "stored %q: %s, version %d\n", args[0], config.Size(len(value)), v)
				return nil
			})
		},
	}
	t.addFlags(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "read the value from this file")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "remove the key after this long (a lease of its own; at least 1s)")
	cmd.Flags().BoolVar(&ifAbsent, "if-absent", false, "fail if the key exists")
	cmd.Flags().IntVar(&replicas, "replicas", 0, "owners on distinct hosts that hold the value when the put returns, this one included")
	cmd.Flags().StringSliceVar(&placementHint, "placement", nil, "owners (instance keys) that should hold a copy too, e.g. where it will be read")
	return cmd
}

func newKVGet() *cobra.Command {
	var t kvTarget
	var out string
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print a value (or write it to --out)",
		Example: `  fluxon kv get greeting
  fluxon kv get blob --out ./blob.bin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return kvRun(cmd, &t, func(ctx context.Context, c *kvgrpc.Client) error {
				w := cmd.OutOrStdout()
				if out != "" {
					f, err := os.Create(out)
					if err != nil {
						return err
					}
					defer f.Close()
					w = f
				}
				_, err := c.GetTo(ctx, args[0], w)
				return err
			})
		},
	}
	t.addFlags(cmd)
	cmd.Flags().StringVar(&out, "out", "", "write the value to this file instead of standard output")
	return cmd
}

func newKVRm() *cobra.Command {
	var t kvTarget
	cmd := &cobra.Command{
		Use:     "rm KEY...",
		Short:   "Remove keys",
		Example: `  fluxon kv rm greeting blob`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return kvRun(cmd, &t, func(ctx context.Context, c *kvgrpc.Client) error {
				errs, err := c.BatchRemove(ctx, args)
				if err != nil {
					return err
				}
				var failed []error
				for i, e := range errs {
					if e != nil {
						failed = append(failed, fmt.Errorf("%s: %w", args[i], e))
					} else {
						fmt.Fprintf(cmd.OutOrStdout(), "removed %q\n", args[i])
					}
				}
				return errors.Join(failed...)
			})
		},
	}
	t.addFlags(cmd)
	return cmd
}

func newKVExists() *cobra.Command {
	var t kvTarget
	cmd := &cobra.Command{
		Use:     "exists KEY",
		Short:   "Print true or false; exit status 0 if the key exists, 1 if not",
		Example: `  fluxon kv exists greeting && echo present`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return kvRun(cmd, &t, func(ctx context.Context, c *kvgrpc.Client) error {
				ok, err := c.Exists(ctx, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), ok)
				if !ok {
					return errSilentFailure
				}
				return nil
			})
		},
	}
	t.addFlags(cmd)
	return cmd
}

func newKVLs() *cobra.Command {
	var t kvTarget
	var prefix string
	var limit int
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List keys (in hash order), optionally by prefix",
		Example: `  fluxon kv ls
  fluxon kv ls --prefix model/ --limit 100`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return kvRun(cmd, &t, func(ctx context.Context, c *kvgrpc.Client) error {
				cursor, n := uint64(0), 0
				for {
					keys, next, err := c.Scan(ctx, cursor, 1000, prefix)
					if err != nil {
						return err
					}
					for _, k := range keys {
						if limit > 0 && n >= limit {
							return nil
						}
						fmt.Fprintln(cmd.OutOrStdout(), k)
						n++
					}
					if next == 0 {
						return nil
					}
					cursor = next
				}
			})
		},
	}
	t.addFlags(cmd)
	cmd.Flags().StringVar(&prefix, "prefix", "", "only keys starting with this")
	cmd.Flags().IntVar(&limit, "limit", 0, "stop after this many keys (0: all)")
	return cmd
}

func newKVStat() *cobra.Command {
	var t kvTarget
	var output string
	cmd := &cobra.Command{
		Use:   "stat [KEY]",
		Short: "Show the pool (size, used, objects, evictions) or one key's size, version and TTL",
		Example: `  fluxon kv stat
  fluxon kv stat greeting -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return usageError{fmt.Errorf("-o %q: use text or json", output)}
			}
			return kvRun(cmd, &t, func(ctx context.Context, c *kvgrpc.Client) error {
				w := cmd.OutOrStdout()
				var v any
				if len(args) == 1 {
					info, err := c.Stat(ctx, args[0])
					if err != nil {
						return err
					}
					v = info
					if output == "text" {
						ttl := "none"
						if info.Lease != 0 {
							ttl = info.TTL.String()
						}
						fmt.Fprintf(w, "key      %s\nsize     %s (%d bytes)\nversion  %d\nkind     %s\nlease    %d\nttl      %s\n",
							info.Key, config.Size(info.Size), info.Size, info.Version, info.Kind, info.Lease, ttl)
						return nil
					}
				} else {
					st, err := c.Stats(ctx)
					if err != nil {
						return err
					}
					v = st
					if output == "text" {
						tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
						fmt.Fprintf(tw, "pool size\t%s\n", config.Size(st.PoolSize))
						fmt.Fprintf(tw, "capacity\t%s\n", config.Size(st.PoolCapacity))
						fmt.Fprintf(tw, "used\t%s (%.1f%%)\n", config.Size(st.Used), 100*float64(st.Used)/float64(max(st.PoolCapacity, 1)))
						fmt.Fprintf(tw, "objects\t%d\nleases\t%d\nevictions\t%d\nexpired\t%d\nhits / misses\t%d / %d\n",
							st.Objects, st.Leases, st.Evictions, st.Expired, st.Hits, st.Misses)
						return tw.Flush()
					}
				}
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			})
		},
	}
	t.addFlags(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// errSilentFailure exits 1 without a message (the command already printed its answer).
var errSilentFailure = errors.New("")
