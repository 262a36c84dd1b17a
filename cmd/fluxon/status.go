package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/meta"
)

// statusTimeout bounds the whole `fluxon status` call.
const statusTimeout = 10 * time.Second

// clusterTarget is how commands that inspect a cluster find it: flags first,
// then the cluster.json that `fluxon up` wrote in --dir.
type clusterTarget struct {
	etcd    []string
	cluster string
	dir     string
}

func (t *clusterTarget) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&t.etcd, "etcd", nil, "etcd endpoints (host:port or http://host:port, comma separated); default: from DIR/cluster.json")
	cmd.Flags().StringVar(&t.cluster, "cluster", "", "cluster_name; default: from DIR/cluster.json")
	cmd.Flags().StringVar(&t.dir, "dir", defaultWorkDir, "work directory of a 'fluxon up' whose cluster.json to read")
}

func (t *clusterTarget) resolve() ([]string, string, error) {
	etcd, cluster := t.etcd, t.cluster
	if len(etcd) == 0 || cluster == "" {
		cf, err := readClusterFile(t.dir)
		if err != nil {
			if len(etcd) == 0 {
				return nil, "", usageError{fmt.Errorf("no cluster to inspect: pass --etcd and --cluster, or run from the directory where 'fluxon up' runs (%v)", err)}
			}
		} else {
			if len(etcd) == 0 {
				etcd = cf.EtcdEndpoints
			}
			if cluster == "" {
				cluster = cf.ClusterName
			}
		}
	}
	if cluster == "" {
		return nil, "", usageError{errors.New("--cluster is required with --etcd")}
	}
	if err := config.ValidName("cluster_name", cluster); err != nil {
		return nil, "", usageError{err}
	}
	urls := make([]string, 0, len(etcd))
	for _, ep := range etcd {
		u, err := config.NormalizeEndpoint(ep)
		if err != nil {
			return nil, "", usageError{fmt.Errorf("--etcd: %w", err)}
		}
		urls = append(urls, u)
	}
	return urls, cluster, nil
}

// clusterStatus is the JSON shape of `fluxon status -o json`.
type clusterStatus struct {
	Cluster       string                      `json:"cluster"`
	Etcd          []string                    `json:"etcd"`
	Leader        string                      `json:"leader"`
	Epoch         uint64                      `json:"epoch"`
	Routing       *meta.RoutingTable          `json:"routing,omitempty"`
	Members       map[meta.Role][]meta.Member `json:"members"`
	PoolDRAMTotal uint64                      `json:"pool_dram_total"`
	// Peers and Transports are filled by --peers.
	Peers      []peerTransport   `json:"peers,omitempty"`
	Transports []transportTotals `json:"transports,omitempty"`
	// PeerErrors lists owners whose /metrics could not be read.
	PeerErrors []string `json:"peer_errors,omitempty"`
}

func collectStatus(ctx context.Context, etcd []string, cluster string) (clusterStatus, error) {
	st := clusterStatus{Cluster: cluster, Etcd: etcd, Members: map[meta.Role][]meta.Member{meta.RoleMaster: {}, meta.RoleOwner: {}, meta.RoleExternal: {}}}
	store, err := meta.Connect(ctx, etcd, cluster, slog.New(slog.DiscardHandler))
	if err != nil {
		return st, err
	}
	defer store.Close()
	if st.Leader, err = store.Leader(ctx); err != nil {
		return st, err
	}
	members, _, err := store.Members(ctx)
	if err != nil {
		return st, err
	}
	sort.Slice(members, func(i, j int) bool { return members[i].InstanceKey < members[j].InstanceKey })
	for _, m := range members {
		st.Members[m.Role] = append(st.Members[m.Role], m)
		if m.Role == meta.RoleOwner {
			st.PoolDRAMTotal += m.PoolDRAM
		}
	}
	t, _, err := store.Routing(ctx)
	switch {
	case err == nil:
		st.Routing, st.Epoch = &t, t.Epoch
	case !errors.Is(err, meta.ErrNoRoutingTable):
		return st, err
	}
	return st, nil
}

func newStatusCmd() *cobra.Command {
	var t clusterTarget
	var output string
	var peers bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: members by role, leading master, routing epoch, pool sizes",
		Long: `Show the cluster as etcd records it: the leading master, the routing epoch,
and every live member by role with its host, pid, start time, pool size and
endpoints, and the transports each owner offers. --peers adds, from each
owner's /metrics, the transport its connections to every peer use and its
bytes and errors per transport. Without flags it reads
./.fluxon/cluster.json, written by 'fluxon up'.`,
		Example: `  fluxon status
  fluxon status -o json
  fluxon status --peers
  fluxon status --etcd 10.0.0.5:2379 --cluster prod`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return usageError{fmt.Errorf("-o %q: use text or json", output)}
			}
			etcd, cluster, err := t.resolve()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), statusTimeout)
			defer cancel()
			st, err := collectStatus(ctx, etcd, cluster)
			if err != nil {
				return err
			}
			if peers {
				st.PeerErrors = collectPeers(ctx, &st)
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st)
			if peers {
				printPeers(cmd.OutOrStdout(), st, st.PeerErrors)
			}
			return nil
		},
	}
	t.addFlags(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().BoolVar(&peers, "peers", false, "also show which transport each owner uses to each peer, and bytes and errors per transport (reads every owner's /metrics)")
	return cmd
}

func printStatus(w io.Writer, st clusterStatus) {
	leader := st.Leader
	if leader == "" {
		leader = "(none: no master is running or the election is in progress)"
	}
	fmt.Fprintf(w, "cluster  %s\netcd     %s\nleader   %s\nepoch    %d\npool     %s DRAM across %d owner(s)\n",
		st.Cluster, strings.Join(st.Etcd, ","), leader, st.Epoch, config.Size(st.PoolDRAMTotal), len(st.Members[meta.RoleOwner]))
	for _, role := range []meta.Role{meta.RoleMaster, meta.RoleOwner, meta.RoleExternal} {
		ms := st.Members[role]
		fmt.Fprintf(w, "\n%ss (%d)\n", role, len(ms))
		if len(ms) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  INSTANCE\tSTATE\tHOST\tPID\tUP\tPOOL\tTRANSPORTS\tHTTP")
		for _, m := range ms {
			state := "live"
			if role == meta.RoleMaster {
				state = "standby"
				if m.InstanceKey == st.Leader {
					state = "leader"
				}
			}
			pool, trs := "-", "-"
			if role == meta.RoleOwner {
				pool = config.Size(m.PoolDRAM).String()
				trs = offeredTransports(m)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", m.InstanceKey, state, m.Host, m.PID,
				time.Since(m.StartTime).Truncate(time.Second), pool, trs, m.Endpoints["http"])
		}
		tw.Flush()
	}
}
