package mq

import (
	"testing"

	"github.com/fluxon-dev/fluxon/control/meta"
)

// A claim event older than this consumer's own claim (queued in the watch
// when the claim was made) must not make the stream look taken by another:
// the consumer would drop it while its claim stays in etcd, and the
// stream would stall for good.
func TestStaleClaimEventIgnored(t *testing.T) {
	c := &Chan{prefix: "mq/chan/x/", id: "A", rec: record{Type: MPMC}}
	k := newConsumer(c)
	s := k.stream("p1")
	s.mine, s.claim, s.claimRev = true, "A", 10
	k.apply(meta.Event{KV: meta.KV{Key: "mq/chan/x/claims/p1", Value: []byte("B"), Mod: 7}})
	if s.claim != "A" {
		t.Fatalf("stale claim event applied: claim %q", s.claim)
	}
	k.apply(meta.Event{KV: meta.KV{Key: "mq/chan/x/claims/p1", Mod: 8}, Deleted: true})
	if s.claim != "A" {
		t.Fatalf("stale delete applied: claim %q", s.claim)
	}
	k.apply(meta.Event{KV: meta.KV{Key: "mq/chan/x/claims/p1", Value: []byte("A"), Mod: 10}})
	k.apply(meta.Event{KV: meta.KV{Key: "mq/chan/x/claims/p1", Mod: 12}, Deleted: true})
	if s.claim != "" {
		t.Fatalf("newer delete not applied: claim %q", s.claim)
	}
}
