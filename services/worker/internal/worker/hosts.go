package worker

import (
	"math/rand/v2"
	"sync"
	"time"
)

// hostLimiter caps the deliveries in flight to one host. Without it, a few thousand callbacks to
// an endpoint that hangs for the whole timeout would hold every slot of every worker, and
// healthy customers would wait behind them.
//
// A message for a host at its cap waits a moment for a free turn when the host is fast (a busy
// customer with one healthy endpoint keeps its throughput), but at most as many messages wait as
// may run, so one host never holds more than twice its share of slots. Otherwise the message is
// deferred, not attempted: it uses no attempt, and it comes back after about as long as one of
// the host's attempts takes, so an endpoint that hangs for 30 s is not polled every second.
type hostLimiter struct {
	limit int
	mu    sync.Mutex
	hosts map[string]*hostSlots
	// slowness is a moving average of each host's attempt duration, kept for a bounded number
	// of hosts.
	slowness map[string]time.Duration
}

type hostSlots struct {
	sem   chan struct{} // one token per delivery in flight
	users int           // holders and waiters; the entry goes when it drops to zero
}

const (
	minDefer      = time.Second
	maxDefer      = time.Minute
	maxHostsKnown = 50_000
	// fastHost is the attempt time under which waiting for a turn beats deferring.
	fastHost = 200 * time.Millisecond
	maxWait  = 500 * time.Millisecond
)

func newHostLimiter(limit int) *hostLimiter {
	return &hostLimiter{limit: limit, hosts: make(map[string]*hostSlots), slowness: make(map[string]time.Duration)}
}

// acquire takes a slot for host. When the host already has its share, ok is false and retryIn
// says when to look again.
func (h *hostLimiter) acquire(host string) (release func(took time.Duration), retryIn time.Duration, ok bool) {
	h.mu.Lock()
	hs := h.hosts[host]
	if hs == nil {
		hs = &hostSlots{sem: make(chan struct{}, h.limit)}
		h.hosts[host] = hs
	}
	slow, known := h.slowness[host]
	mayWait := hs.users < 2*h.limit && (!known || slow <= fastHost)
	hs.users++
	h.mu.Unlock()

	release = func(took time.Duration) { h.release(host, hs, took) }
	select {
	case hs.sem <- struct{}{}:
		return release, 0, true
	default:
	}
	if mayWait {
		t := time.NewTimer(min(maxWait, max(4*slow, 50*time.Millisecond)))
		defer t.Stop()
		select {
		case hs.sem <- struct{}{}:
			return release, 0, true
		case <-t.C:
		}
	}
	h.mu.Lock()
	h.leave(host, hs)
	h.mu.Unlock()
	wait := min(max(slow, minDefer), maxDefer)
	return nil, wait + rand.N(wait), false
}

func (h *hostLimiter) release(host string, hs *hostSlots, took time.Duration) {
	<-hs.sem
	h.mu.Lock()
	defer h.mu.Unlock()
	h.leave(host, hs)
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
}

// leave drops one user of hs; h.mu is held.
func (h *hostLimiter) leave(host string, hs *hostSlots) {
	if hs.users--; hs.users == 0 && h.hosts[host] == hs {
		delete(h.hosts, host)
	}
}
