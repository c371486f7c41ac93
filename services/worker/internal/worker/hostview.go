package worker

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// busiestHostsShown bounds the operators' view of hosts.
const busiestHostsShown = 50

// HostsHandler serves the busiest endpoint hosts of this worker as JSON — each host's adaptive
// limit, deliveries in flight and queued messages — with the window's totals. At most 50 hosts
// (fewer with ?n=), busiest first; the view is for operators and stays off the metrics, where a
// label per host would grow without bound.
func (w *Worker) HostsHandler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n := busiestHostsShown
		if v, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil && v >= 0 && v < n {
			n = v
		}
		held, queued, heldBytes, limits, busiest := w.sched.snapshot(n)
		if busiest == nil {
			busiest = []hostView{}
		}
		rw.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rw).Encode(struct {
			Held       int        `json:"held"`
			HeldBytes  int64      `json:"held_bytes"`
			Queued     int        `json:"queued"`
			HostsKnown int        `json:"hosts_known"`
			Busiest    []hostView `json:"busiest"`
		}{held, heldBytes, queued, len(limits), busiest})
	})
}
