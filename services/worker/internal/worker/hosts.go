package worker

import "sync"

// hostLimiter caps the deliveries in flight to one host. Without it, a few thousand callbacks to
// an endpoint that hangs for the whole timeout would hold every slot of every worker, and
// healthy customers would wait behind them.
type hostLimiter struct {
	limit int
	mu    sync.Mutex
	busy  map[string]int
}

func newHostLimiter(limit int) *hostLimiter {
	return &hostLimiter{limit: limit, busy: make(map[string]int)}
}

// acquire takes a slot for host; ok is false when the host already has its share.
func (h *hostLimiter) acquire(host string) (release func(), ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.busy[host] >= h.limit {
		return nil, false
	}
	h.busy[host]++
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.busy[host]--; h.busy[host] <= 0 {
			delete(h.busy, host)
		}
	}, true
}
