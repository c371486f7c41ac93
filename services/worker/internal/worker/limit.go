package worker

import (
	"net/http"
	"time"

	"refonte.ai/callbacks/pkg/delivery"
	"refonte.ai/callbacks/pkg/target"
)

// aimdLimit is how many deliveries one endpoint host may have in flight from this worker. It
// moves with every finished attempt, the way TCP's congestion window does: up by one while the
// host answers and its slots are in use (so a fast host climbs to the ceiling in a few
// round trips), down by half on a timeout, a connection error, a 429 or a 5xx, or an answer that
// took most of the timeout (so a host that hangs or fails falls to the floor within a round of
// attempts and holds one slot, not a share of all of them).
//
// It is a plain value with no clock, lock or goroutine: the scheduler owns one per host under its
// lock, and tests drive it sample by sample.
type aimdLimit struct {
	limit   float64
	floor   float64
	ceiling float64
	// slow is the answer time past which a success counts as a drop: an endpoint that answers
	// just inside the timeout is about to stop answering in time.
	slow time.Duration
}

// aimdBackoff is what a drop multiplies the limit by.
const aimdBackoff = 0.5

// hostLimitFloor is the least a host may have in flight: enough to notice it recover.
const hostLimitFloor = 1

// hostLimitStart is the limit of a host not seen before: small, so that a burst to a new host
// that hangs takes a few slots for one timeout, not all of them.
const hostLimitStart = 8

func newAIMDLimit(start, floor, ceiling int, slow time.Duration) aimdLimit {
	ceiling = max(ceiling, floor)
	return aimdLimit{limit: float64(min(max(start, floor), ceiling)), floor: float64(floor),
		ceiling: float64(ceiling), slow: slow}
}

// onSample takes one finished attempt: how long it took, how many deliveries to the host were in
// flight when it ended (itself included), and whether the host dropped it.
func (l *aimdLimit) onSample(took time.Duration, inFlight int, dropped bool) {
	switch {
	case dropped || (l.slow > 0 && took > l.slow):
		l.limit = max(l.floor, l.limit*aimdBackoff)
	case float64(inFlight)*2 >= l.limit:
		// Grow only while the limit is in use: a host that gets one callback a minute has not
		// shown it could take 200 at once.
		l.limit = min(l.ceiling, l.limit+1)
	}
}

// current is the limit in whole deliveries.
func (l aimdLimit) current() int { return int(l.limit) }

// sample is what one attempt says about its host's capacity.
type sample int

const (
	// sampleIgnore: nothing about capacity (no attempt was made, or the answer is the
	// customer's own business, such as a 404).
	sampleIgnore sample = iota
	sampleSuccess
	// sampleDropped: the host could not take it (timeout, connection error, 429, 5xx; for
	// email, a temporary 4xx refusal).
	sampleDropped
)

// sampleOf maps an attempt's result to the limit's input.
func sampleOf(kind target.Kind, res delivery.Result) sample {
	switch {
	case res.OK():
		return sampleSuccess
	case res.StatusCode == 0:
		if res.Permanent {
			return sampleIgnore // refused before any connection (unusable target, no transport)
		}
		return sampleDropped
	case kind == target.Email:
		if res.StatusCode >= 400 && res.StatusCode < 500 {
			return sampleDropped
		}
		return sampleIgnore
	case res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
		return sampleDropped
	default:
		return sampleIgnore
	}
}

// hostLimiter owns one host's delivery tokens: a counter against the adaptive limit (a channel
// would fix the size). It is not safe for concurrent use; the scheduler's lock guards it.
type hostLimiter struct {
	limit    aimdLimit
	inFlight int
}

// tryAcquire takes a token if the host is under its limit.
func (h *hostLimiter) tryAcquire() bool {
	if h.inFlight >= h.limit.current() {
		return false
	}
	h.inFlight++
	return true
}

// available reports whether a token is free.
func (h *hostLimiter) available() bool { return h.inFlight < h.limit.current() }

// release gives a token back and feeds the attempt to the limit.
func (h *hostLimiter) release(s sample, took time.Duration) {
	switch s {
	case sampleSuccess:
		h.limit.onSample(took, h.inFlight, false)
	case sampleDropped:
		h.limit.onSample(took, h.inFlight, true)
	}
	h.inFlight--
}
