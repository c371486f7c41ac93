package api

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a token bucket per customer that lives in this process: the dashboard's test
// callbacks, and send-callback when the gateway has no SharedLimits. With several gateways
// behind a balancer, a customer's effective limit is then the sum of theirs.
type limiter struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	nextSweep int
}

const minSweep = 1024

func newLimiter(perMinute, burst int) *limiter {
	return &limiter{
		limit:     rate.Limit(float64(perMinute) / 60),
		burst:     burst,
		buckets:   make(map[string]*rate.Limiter),
		nextSweep: minSweep,
	}
}

// allow takes a token for id, or says how long until one is free.
func (l *limiter) allow(id string, now time.Time) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[id]
	if b == nil {
		if len(l.buckets) >= l.nextSweep {
			l.sweep(now)
		}
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[id] = b
	}
	res := b.ReserveN(now, 1)
	if delay := res.DelayFrom(now); delay > 0 {
		res.CancelAt(now)
		return false, delay
	}
	return true, 0
}

// sweep forgets full buckets: a full bucket behaves exactly like a new one, so memory stays
// proportional to the customers active lately, not to every customer ever seen.
func (l *limiter) sweep(now time.Time) {
	for id, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, id)
		}
	}
	l.nextSweep = max(minSweep, 2*len(l.buckets))
}
