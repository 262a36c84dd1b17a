package mq

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/fluxon-dev/fluxon/control/meta"
)

// PanelPath is where the master serves the channels as JSON.
const PanelPath = "/api/mq/channels"

// panelView is the JSON the panel's channel view reads.
type panelView struct {
	Time     time.Time     `json:"time"`
	Channels []ChannelStat `json:"channels"`
}

// PanelHandler serves every channel's state as JSON (GET; ?unique_key=K
// for one): per channel its settings, backlog and inflight, per producer
// produce_offset/consume_offset, backlog, inflight and the consumer holding
// the stream, and the members with chan_id, owner and ids.
func PanelHandler(store *meta.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		var v panelView
		var err error
		if uk := r.URL.Query().Get("unique_key"); uk != "" {
			var st ChannelStat
			var ok bool
			st, ok, err = Find(r.Context(), store, uk)
			if err == nil && !ok {
				http.Error(w, "no channel with unique_key "+uk, http.StatusNotFound)
				return
			}
			v.Channels = []ChannelStat{st}
		} else {
			v.Channels, err = Channels(r.Context(), store)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		v.Time = time.Now().UTC()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	})
}
