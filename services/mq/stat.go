package mq

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fluxon-dev/fluxon/control/meta"
)

// ProducerStat is one producer stream's state.
type ProducerStat struct {
	ID string `json:"producer_id"`
	// ProduceOffset: messages written; ConsumeOffset: messages acknowledged
	// (committed) from the start of the stream.
	ProduceOffset uint64 `json:"produce_offset"`
	ConsumeOffset uint64 `json:"consume_offset"`
	// Reserved: room the producer holds (it accepts messages below it).
	Reserved uint64 `json:"reserved"`
	// Backlog: produced and not yet consumed.
	Backlog uint64 `json:"backlog"`
	// Inflight: delivered and not yet acknowledged, as of the last commit.
	Inflight uint64 `json:"inflight"`
	// Consumer holds the stream now ("" none).
	Consumer string `json:"consumer,omitempty"`
	// Live: the producer is a member now; Closed: it closed.
	Live   bool `json:"live"`
	Closed bool `json:"closed,omitempty"`
}

// MemberStat is one live member of a channel.
type MemberStat struct {
	ChanID string    `json:"chan_id"`
	ID     string    `json:"id"`
	Role   Role      `json:"role"`
	Weight int       `json:"weight,omitempty"`
	Owner  string    `json:"owner,omitempty"`
	Host   string    `json:"host"`
	PID    int       `json:"pid"`
	Since  time.Time `json:"since"`
}

// ChannelStat is a channel's state, as the panel and `fluxon mq stat` show it.
type ChannelStat struct {
	ChanID    string         `json:"chan_id"`
	UniqueKey string         `json:"unique_key"`
	Type      Type           `json:"type"`
	Capacity  int64          `json:"capacity"`
	TTLms     int64          `json:"ttl_ms"`
	Retain    int64          `json:"retain"`
	Created   time.Time      `json:"created"`
	Backlog   int64          `json:"backlog"`
	Inflight  int64          `json:"inflight"`
	Producers []ProducerStat `json:"producers"`
	Members   []MemberStat   `json:"members"`
}

// Created says whether this handle created the channel (rather than bound
// an existing one).
func (c *Chan) Created() bool { return c.created }

// Stat reads the channel's state from etcd (one revision).
func (c *Chan) Stat(ctx context.Context) (ChannelStat, error) {
	return statOf(ctx, c.meta, c.rec)
}

// List returns every channel of the cluster cfg names (etcd from
// cfg.Store, or cfg.EtcdEndpoints and cfg.ClusterName).
func List(ctx context.Context, cfg Config) ([]ChannelStat, error) {
	store, owns, err := connect(ctx, nil, &cfg)
	if err != nil {
		return nil, err
	}
	if owns {
		defer store.Close()
	}
	return Channels(ctx, store)
}

// Channels returns every channel in store's cluster, sorted by unique_key
// (what the master serves the panel).
func Channels(ctx context.Context, store *meta.Store) ([]ChannelStat, error) {
	m := store.MQ()
	names, _, err := m.List(ctx, m.Keys().MQNames())
	if err != nil {
		return nil, fmt.Errorf("mq: listing channels: %w", err)
	}
	out := make([]ChannelStat, 0, len(names))
	for _, n := range names {
		var rec record
		if err := json.Unmarshal(n.Value, &rec); err != nil {
			continue
		}
		st, err := statOf(ctx, m, rec)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UniqueKey < out[j].UniqueKey })
	return out, nil
}

// Find returns the channel of uniqueKey; ok is false when there is none.
func Find(ctx context.Context, store *meta.Store, uniqueKey string) (st ChannelStat, ok bool, err error) {
	m := store.MQ()
	n, ok, err := m.Get(ctx, m.Keys().MQNames()+uniqueKey)
	if err != nil || !ok {
		return st, false, err
	}
	var rec record
	if err := json.Unmarshal(n.Value, &rec); err != nil {
		return st, false, fmt.Errorf("mq: channel %q: bad record in etcd: %v", uniqueKey, err)
	}
	st, err = statOf(ctx, m, rec)
	return st, err == nil, err
}

func statOf(ctx context.Context, m meta.MQ, rec record) (ChannelStat, error) {
	st := ChannelStat{ChanID: rec.ID, UniqueKey: rec.UniqueKey, Type: rec.Type, Capacity: rec.Capacity, TTLms: rec.TTLms,
		Retain: rec.Retain, Created: rec.Created, Producers: []ProducerStat{}, Members: []MemberStat{}}
	prefix := m.Keys().MQChan(rec.ID)
	kvs, _, err := m.List(ctx, prefix)
	if err != nil {
		return st, fmt.Errorf("mq: reading channel %q: %w", rec.UniqueKey, err)
	}
	prods := map[string]*ProducerStat{}
	prod := func(id string) *ProducerStat {
		if p := prods[id]; p != nil {
			return p
		}
		p := &ProducerStat{ID: id}
		prods[id] = p
		return p
	}
	allClaim := ""
	for _, kv := range kvs {
		rel := strings.TrimPrefix(kv.Key, prefix)
		name := lastSegment(rel)
		switch {
		case strings.HasPrefix(rel, "members/"):
			var mr memberRec
			if json.Unmarshal(kv.Value, &mr) == nil {
				st.Members = append(st.Members, MemberStat{ChanID: rec.ID, ID: mr.ID, Role: mr.Role, Weight: mr.Weight,
					Owner: mr.Owner, Host: mr.Host, PID: mr.PID, Since: mr.Since})
				if mr.Role == Producer {
					prod(mr.ID).Live = true
				}
			}
		case strings.HasPrefix(rel, "produced/"):
			var p produced
			if json.Unmarshal(kv.Value, &p) == nil {
				ps := prod(name)
				ps.ProduceOffset, ps.Closed = p.Offset, p.Closed
			}
		case strings.HasPrefix(rel, "reserved/"):
			prod(name).Reserved, _ = strconv.ParseUint(string(kv.Value), 10, 64)
		case strings.HasPrefix(rel, "consumed/"):
			var cu cursor
			if json.Unmarshal(kv.Value, &cu) == nil {
				ps := prod(name)
				ps.ConsumeOffset = cu.Offset
				if cu.Delivered > cu.Offset {
					ps.Inflight = cu.Delivered - cu.Offset
				}
			}
		case strings.HasPrefix(rel, "claims/"):
			if name == allStreams {
				allClaim = string(kv.Value)
			} else {
				prod(name).Consumer = string(kv.Value)
			}
		}
	}
	for _, p := range prods {
		if allClaim != "" {
			p.Consumer = allClaim
		}
		if p.ProduceOffset > p.ConsumeOffset {
			p.Backlog = p.ProduceOffset - p.ConsumeOffset
		}
		st.Backlog += int64(p.Backlog)
		st.Inflight += int64(p.Inflight)
		st.Producers = append(st.Producers, *p)
	}
	sort.Slice(st.Producers, func(i, j int) bool { return st.Producers[i].ID < st.Producers[j].ID })
	sort.Slice(st.Members, func(i, j int) bool {
		if st.Members[i].Role != st.Members[j].Role {
			return st.Members[i].Role < st.Members[j].Role
		}
		return st.Members[i].ID < st.Members[j].ID
	})
	return st, nil
}

// Create binds the channel of uniqueKey, creating it with cfg's channel
// settings if there is none, without joining it; it returns its state. A
// channel nobody joins is reclaimed after its TTL.
func Create(ctx context.Context, cfg Config, uniqueKey string, typ Type) (ChannelStat, error) {
	if err := checkUniqueKey(uniqueKey); err != nil {
		return ChannelStat{}, err
	}
	if typ != MPSC && typ != MPMC {
		return ChannelStat{}, fmt.Errorf("%w: type %q (want %q or %q)", ErrBadConfig, typ, MPSC, MPMC)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return ChannelStat{}, err
	}
	store, owns, err := connect(ctx, nil, &cfg)
	if err != nil {
		return ChannelStat{}, err
	}
	if owns {
		defer store.Close()
	}
	c := &Chan{cfg: cfg, meta: store.MQ()}
	if err := c.bind(ctx, uniqueKey, typ); err != nil {
		return ChannelStat{}, err
	}
	return statOf(ctx, c.meta, c.rec)
}
