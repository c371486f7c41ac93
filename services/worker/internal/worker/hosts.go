package worker

import (
	"math/rand/v2"
	"sync"
	"time"
)

// hostLimiter caps the deliveries in flight to one host. Without it, a few thousand callbacks to
// an endpoint that hangs for the whole timeout would hold every slot of every worker, and
// healthy customers would wait behind them. A message over the cap is deferred, not attempted:
// it uses no attempt, and it comes back after about as long as one of the host's attempts
// takes, so an endpoint that hangs for 30 s is not polled every second.
type hostLimiter struct {
	limit int
	mu    sync.Mutex
	busy  map[string]int
	// slowness is a moving average of each host's attempt duration, kept for a bounded number
	// of hosts.
	slowness map[string]time.Duration
}

const (
	minDefer      = time.Second
	maxDefer      = time.Minute
	maxHostsKnown = 50_000
)

func newHostLimiter(limit int) *hostLimiter {
	return &hostLimiter{limit: limit, busy: make(map[string]int), slowness: make(map[string]time.Duration)}
}

// acquire takes a slot for host. When the host already has its share, ok is false and retryIn
// says when to look again.
func (h *hostLimiter) acquire(host string) (release func(took time.Duration), retryIn time.Duration, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.busy[host] >= h.limit {
		wait := min(max(h.slowness[host], minDefer), maxDefer)
		return nil, wait + rand.N(wait), false
	}
	h.busy[host]++
	return func(took time.Duration) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.busy[host]--; h.busy[host] <= 0 {
			delete(h.busy, host)
		}
		if took > 0 {
			if len(h.slowness) >= maxHostsKnown {
				clear(h.slowness)
			}
			prev, seen := h.slowness[host]
			if !seen {
				prev = took
			}
			h.slowness[host] = (prev*7 + took) / 8
		}
	}, 0, true
}
