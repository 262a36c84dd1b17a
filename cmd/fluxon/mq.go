package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	fluxonv1 "github.com/fluxon-dev/fluxon/api/proto/fluxon/v1"
	"github.com/fluxon-dev/fluxon/services/mq"
	"github.com/fluxon-dev/fluxon/services/mq/mqgrpc"
)

// mqChannelFlags are a channel's settings on the command line.
type mqChannelFlags struct {
	typ      string
	capacity int64
	ttl      time.Duration
	retain   int64
}

func (f *mqChannelFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.typ, "type", "mpmc", "channel type: mpmc (consumers share producers) or mpsc (one consumer at a time)")
	cmd.Flags().Int64Var(&f.capacity, "capacity", 0, "unconsumed messages the channel may hold, when this creates it (default 1048576)")
	cmd.Flags().DurationVar(&f.ttl, "ttl", 0, "how long the channel outlives its last member, when this creates it (default 5m)")
	cmd.Flags().Int64Var(&f.retain, "retain", 0, "acknowledged messages kept per producer for replay, when this creates it")
}

func (f *mqChannelFlags) config(uk string) *fluxonv1.MQChannelConfig {
	return &fluxonv1.MQChannelConfig{UniqueKey: uk, Type: f.typ, Capacity: f.capacity, TtlMs: f.ttl.Milliseconds(), Retain: f.retain}
}

func newMQCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mq",
		Short: "Create channels, put and get messages, and inspect channels of the message queue",
		Long: `Use the cluster's message queue from the shell. Commands talk gRPC to an owner's
MQ service: --addr names one; otherwise the owners are found through etcd
(from ./.fluxon/cluster.json, or --etcd and --cluster), preferring this host's.

The owner keeps the producer or consumer a command names (--id) for a minute
after each command, so successive commands continue one stream; a consumer's
unacknowledged messages go to the channel's next consumer once it is gone.
Programs use the Go API (services/mq) instead: see docs/mq.md.`,
		Example: `  fluxon mq create jobs --capacity 10000
  fluxon mq put jobs "first job" "second job"
  fluxon mq get jobs --batch 10 --wait 2s
  fluxon mq stat jobs
  fluxon mq ls`,
	}
	cmd.AddCommand(newMQCreate(), newMQPut(), newMQGet(), newMQStat(), newMQLs())
	return cmd
}

// mqRun runs f with a dialled client and a bounded context.
func mqRun(cmd *cobra.Command, t *kvTarget, f func(ctx context.Context, c *mqgrpc.Client) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), kvTimeout)
	defer cancel()
	addr, err := t.ownerAddr(ctx)
	if err != nil {
		return err
	}
	c, err := mqgrpc.Dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(ctx, c)
}

func newMQCreate() *cobra.Command {
	var t kvTarget
	var ch mqChannelFlags
	cmd := &cobra.Command{
		Use:   "create UNIQUE_KEY",
		Short: "Create a channel (or show the one that exists under that name)",
		Long: `create binds UNIQUE_KEY to a channel, creating it with the given settings if
there is none. A channel nobody joins is reclaimed after its TTL.`,
		Example: `  fluxon mq create jobs --type mpmc --capacity 10000 --ttl 1h`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mqRun(cmd, &t, func(ctx context.Context, c *mqgrpc.Client) error {
				st, err := c.Create(ctx, ch.config(args[0]))
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "channel %q: chan_id %s, %s, capacity %d, ttl %s\n", st.UniqueKey, st.ChanID,
					st.Type, st.Capacity, time.Duration(st.TTLms)*time.Millisecond)
				return nil
			})
		},
	}
	t.addFlags(cmd)
	ch.add(cmd)
	return cmd
}

func newMQPut() *cobra.Command {
	var t kvTarget
	var ch mqChannelFlags
	var id, file string
	var failFull bool
	cmd := &cobra.Command{
		Use:   "put UNIQUE_KEY [MESSAGE...]",
		Short: "Put messages (arguments, --file, or standard input with -, one message per line)",
		Example: `  fluxon mq put jobs "first job" "second job"
  fluxon mq put jobs --file ./payload.bin
  seq 1000 | fluxon mq put jobs -`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var msgs [][]byte
			switch {
			case file != "" && len(args) > 1:
				return usageError{errors.New("give messages as arguments or with --file, not both")}
			case file != "":
				b, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				msgs = append(msgs, b)
			case len(args) == 2 && args[1] == "-":
				b, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return err
				}
				for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
					msgs = append(msgs, []byte(l))
				}
			case len(args) > 1:
				for _, a := range args[1:] {
					msgs = append(msgs, []byte(a))
				}
			default:
				return usageError{errors.New("no message: pass MESSAGE..., --file FILE, or - for standard input")}
			}
			return mqRun(cmd, &t, func(ctx context.Context, c *mqgrpc.Client) error {
				r, err := c.Put(ctx, &fluxonv1.MQPutRequest{Channel: ch.config(args[0]), ProducerId: id, Messages: msgs, FailWhenFull: failFull})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "put %d message(s) on %q (chan_id %s)\n", r.GetAccepted(), args[0], r.GetChanId())
				return nil
			})
		},
	}
	t.addFlags(cmd)
	ch.add(cmd)
	cmd.Flags().StringVar(&id, "id", "", "producer id (default: one per owner)")
	cmd.Flags().StringVarP(&file, "file", "f", "", "put this file's content as one message")
	cmd.Flags().BoolVar(&failFull, "fail-when-full", false, "fail at once when the channel is at capacity instead of waiting for room")
	return cmd
}

func newMQGet() *cobra.Command {
	var t kvTarget
	var ch mqChannelFlags
	var id, start string
	var batch int
	var wait time.Duration
	var noAck, asJSON bool
	cmd := &cobra.Command{
		Use:   "get UNIQUE_KEY",
		Short: "Get messages, print them and acknowledge them",
		Long: `get takes up to --batch messages as consumer --id, waiting up to --wait for the
first, prints one per line (or JSON with --json) and acknowledges them once
printed. With --no-ack they stay unacknowledged: they go to the next consumer
when this one is closed (a minute after its last command).`,
		Example: `  fluxon mq get jobs
  fluxon mq get jobs --batch 100 --wait 5s --json
  fluxon mq get jobs --start earliest --id replayer`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if batch < 1 || batch > mqgrpc.MaxBatch {
				return usageError{fmt.Errorf("--batch %d: 1 to %d", batch, mqgrpc.MaxBatch)}
			}
			return mqRun(cmd, &t, func(ctx context.Context, c *mqgrpc.Client) error {
				r, err := c.Get(ctx, &fluxonv1.MQGetRequest{Channel: ch.config(args[0]), ConsumerId: id, Batch: uint32(batch),
					WaitMs: wait.Milliseconds(), Start: start})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				var refs []*fluxonv1.MQAckRef
				for _, m := range r.GetMessages() {
					if asJSON {
						b, _ := json.Marshal(struct {
							Producer    string    `json:"producer_id"`
							Offset      uint64    `json:"offset"`
							ProducedAt  time.Time `json:"produced_at"`
							Redelivered bool      `json:"redelivered"`
							Data        string    `json:"data"`
						}{m.GetProducerId(), m.GetOffset(), time.Unix(0, m.GetProducedAtUnixNs()).UTC(), m.GetRedelivered(), string(m.GetData())})
						fmt.Fprintln(w, string(b))
					} else {
						fmt.Fprintln(w, string(m.GetData()))
					}
					refs = append(refs, &fluxonv1.MQAckRef{ProducerId: m.GetProducerId(), Offset: m.GetOffset()})
				}
				if len(refs) == 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "no message on %q within %s\n", args[0], wait)
					return nil
				}
				if noAck {
					return nil
				}
				return c.Ack(ctx, &fluxonv1.MQAckRequest{UniqueKey: args[0], ConsumerId: id, Messages: refs})
			})
		},
	}
	t.addFlags(cmd)
	ch.add(cmd)
	cmd.Flags().StringVar(&id, "id", "", "consumer id (default: one per owner)")
	cmd.Flags().IntVar(&batch, "batch", 1, "messages to get at most")
	cmd.Flags().DurationVar(&wait, "wait", time.Second, "how long to wait for the first message")
	cmd.Flags().StringVar(&start, "start", "", "where a new consumer starts: committed (default), earliest (replay what is retained) or tail")
	cmd.Flags().BoolVar(&noAck, "no-ack", false, "do not acknowledge the messages")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each message as a JSON object (producer, offset, time, data)")
	return cmd
}

func newMQStat() *cobra.Command {
	var t kvTarget
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stat UNIQUE_KEY",
		Short: "Show a channel: settings, per-producer offsets, backlog, members",
		Example: `  fluxon mq stat jobs
  fluxon mq stat jobs --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mqRun(cmd, &t, func(ctx context.Context, c *mqgrpc.Client) error {
				st, err := c.Stat(ctx, args[0])
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if asJSON {
					return writeJSONTo(w, st)
				}
				fmt.Fprintf(w, "channel %q  chan_id %s  %s  capacity %d  ttl %s  retain %d\n", st.UniqueKey, st.ChanID, st.Type,
					st.Capacity, time.Duration(st.TTLms)*time.Millisecond, st.Retain)
				fmt.Fprintf(w, "backlog %d  inflight %d\n\n", st.Backlog, st.Inflight)
				tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "PRODUCER\tPRODUCE_OFFSET\tCONSUME_OFFSET\tBACKLOG\tINFLIGHT\tCONSUMER\tSTATE")
				for _, p := range st.Producers {
					state := "gone"
					switch {
					case p.Live:
						state = "live"
					case p.Closed:
						state = "closed"
					}
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", p.ID, p.ProduceOffset, p.ConsumeOffset, p.Backlog, p.Inflight, p.Consumer, state)
				}
				tw.Flush()
				fmt.Fprintln(w)
				tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "MEMBER\tROLE\tOWNER\tHOST\tPID\tSINCE")
				for _, m := range st.Members {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", m.ID, m.Role, m.Owner, m.Host, m.PID, m.Since.Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	t.addFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the state as JSON (what the panel shows)")
	return cmd
}

func newMQLs() *cobra.Command {
	var t kvTarget
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List channels with their backlog and members",
		Example: `  fluxon mq ls
  fluxon mq ls --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return mqRun(cmd, &t, func(ctx context.Context, c *mqgrpc.Client) error {
				sts, err := c.List(ctx)
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if asJSON {
					return writeJSONTo(w, sts)
				}
				tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "UNIQUE_KEY\tCHAN_ID\tTYPE\tCAPACITY\tBACKLOG\tINFLIGHT\tPRODUCERS\tCONSUMERS")
				for _, st := range sts {
					var prods, cons int
					for _, m := range st.Members {
						if m.Role == mq.Producer {
							prods++
						} else {
							cons++
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", st.UniqueKey, st.ChanID, st.Type, st.Capacity, st.Backlog, st.Inflight, prods, cons)
				}
				return tw.Flush()
			})
		},
	}
	t.addFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the channels as JSON")
	return cmd
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
