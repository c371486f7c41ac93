package worker

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// scheduler holds the messages a worker has taken from the stream and hands its delivery slots
// out in fair turns across endpoint hosts.
//
// The window (maxHeld messages, maxBytes of payload) bounds what one worker holds. Inside it each
// host has a local queue, bounded by hostQueue, and a hostLimiter; a slot goes to the next host in
// turn that has a message queued and a token free (round robin over those hosts: deficit round
// robin with a cost of one per message), so a host with 10,000 messages and a host with one both
// get their turns. A message whose host queue is full is deferred (NakWithDelay, no attempt
// used), paced so that the host's deferred messages come back about when it can take them; the
// window keeps moving past a burst and other customers' messages are reached.
type scheduler struct {
	maxHeld   int
	maxBytes  int64
	hostQueue int
	newLimit  func() aimdLimit
	now       func() time.Time

	mu        sync.Mutex
	ready     *sync.Cond // signalled when turns gains a host, or on close
	closed    bool
	hosts     map[string]*hostState
	turns     []*hostState // hosts with a message queued and a token free, in turn order
	held      int
	heldBytes int64
	queued    int
	room      chan struct{} // poked when the window gains room
}

// hostState is one endpoint host's queue, tokens and pacing.
type hostState struct {
	name    string
	limiter hostLimiter
	queue   []*job
	inTurns bool
	// perMessage estimates the time between two of the host's deliveries while it is busy,
	// and returnAt when the last message deferred for it is due back: deferrals are spread
	// over the time the host needs, not all sent back at once.
	perMessage time.Duration
	lastDone   time.Time
	returnAt   time.Time
}

const (
	minDefer = 500 * time.Millisecond
	maxDefer = time.Minute
	// maxHostsKnown bounds the hosts whose learned limit is kept after they went idle.
	maxHostsKnown = 50_000
)

func newScheduler(maxHeld int, maxBytes int64, hostQueue int, newLimit func() aimdLimit) *scheduler {
	s := &scheduler{maxHeld: maxHeld, maxBytes: maxBytes, hostQueue: hostQueue, newLimit: newLimit,
		now: time.Now, hosts: make(map[string]*hostState), room: make(chan struct{}, 1)}
	s.ready = sync.NewCond(&s.mu)
	return s
}

// waitRoom blocks until the window has room for at least one message and returns how many;
// false once ctx has ended.
func (s *scheduler) waitRoom(ctx context.Context) (int, bool) {
	for ctx.Err() == nil {
		s.mu.Lock()
		room := s.maxHeld - s.held
		s.mu.Unlock()
		if room > 0 {
			return room, true
		}
		select {
		case <-ctx.Done():
		case <-s.room:
		}
	}
	return 0, false
}

// hold counts a message taken from the stream into the window. It refuses one whose payload
// would overflow the byte bound (unless the window is empty: any single message fits).
func (s *scheduler) hold(size int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held > 0 && s.heldBytes+int64(size) > s.maxBytes {
		return false
	}
	s.held++
	s.heldBytes += int64(size)
	return true
}

// unhold takes a settled message out of the window.
func (s *scheduler) unhold(size int) {
	s.mu.Lock()
	s.unholdLocked(size)
	s.mu.Unlock()
}

func (s *scheduler) unholdLocked(size int) {
	s.held--
	s.heldBytes -= int64(size)
	select {
	case s.room <- struct{}{}:
	default:
	}
}

// enqueue puts a held job in its host's queue. When that queue is full it returns false and how
// long to defer the message for.
func (s *scheduler) enqueue(j *job) (deferFor time.Duration, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.host(j.hostKey)
	if len(h.queue) >= s.hostQueue || s.closed {
		return jitter(h.deferral(s.now())), false
	}
	j.host = h
	h.queue = append(h.queue, j)
	s.queued++
	s.offerTurnLocked(h)
	return 0, true
}

// take blocks until a job may be delivered (its host's token is taken) and returns it; nil once
// the scheduler is closed.
func (s *scheduler) take() *job {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.turns) == 0 && !s.closed {
		s.ready.Wait()
	}
	if s.closed {
		return nil
	}
	h := s.turns[0]
	s.turns = s.turns[1:]
	h.inTurns = false
	j := h.queue[0]
	h.queue[0] = nil
	h.queue = h.queue[1:]
	s.queued--
	h.limiter.tryAcquire()
	s.offerTurnLocked(h) // to the back of the line, if it has more and may take more
	if len(s.turns) > 0 {
		s.ready.Signal() // pass the wake-up on: several hosts may be ready at once
	}
	return j
}

// done ends a delivery: the host's token goes back with what the attempt said about the host,
// and the message leaves the window.
func (s *scheduler) done(j *job, smp sample, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := j.host
	now := s.now()
	if smp != sampleIgnore {
		h.observe(now, took)
	}
	h.limiter.release(smp, took)
	s.unholdLocked(j.size)
	s.offerTurnLocked(h)
	s.forgetIdleLocked()
}

// close wakes every waiting take and returns the jobs still queued, for the caller to hand back.
func (s *scheduler) close() []*job {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var left []*job
	for _, h := range s.hosts {
		left = append(left, h.queue...)
		h.queue = nil
	}
	s.queued = 0
	s.turns = nil
	s.ready.Broadcast()
	return left
}

func (s *scheduler) host(name string) *hostState {
	h := s.hosts[name]
	if h == nil {
		h = &hostState{name: name, limiter: hostLimiter{limit: s.newLimit()}}
		s.hosts[name] = h
	}
	return h
}

// offerTurnLocked queues h for a turn if it has work and a free token.
func (s *scheduler) offerTurnLocked(h *hostState) {
	if h.inTurns || len(h.queue) == 0 || !h.limiter.available() {
		return
	}
	h.inTurns = true
	s.turns = append(s.turns, h)
	s.ready.Signal()
}

// forgetIdleLocked drops idle hosts once too many are known; their learned limits go with them.
func (s *scheduler) forgetIdleLocked() {
	if len(s.hosts) <= maxHostsKnown {
		return
	}
	for name, h := range s.hosts {
		if len(h.queue) == 0 && h.limiter.inFlight == 0 {
			delete(s.hosts, name)
		}
	}
}

// observe updates the host's pace from a finished attempt.
func (h *hostState) observe(now time.Time, took time.Duration) {
	perSlot := took / time.Duration(max(1, h.limiter.limit.current()))
	switch {
	case h.perMessage == 0:
		h.perMessage = perSlot
	case h.limiter.inFlight > 1 || len(h.queue) > 0:
		// Busy: the gap since the previous delivery is the pace the host really keeps.
		gap := now.Sub(h.lastDone)
		h.perMessage = (h.perMessage*15 + max(gap, perSlot)) / 16
	}
	h.lastDone = now
}

// deferral is how long to put back a message for h while its queue is full: after the queue
// drains and after the messages deferred before it, one pace apart.
func (h *hostState) deferral(now time.Time) time.Duration {
	per := h.perMessage
	if per <= 0 {
		per = 10 * time.Millisecond
	}
	drained := now.Add(time.Duration(len(h.queue)+h.limiter.inFlight) * per)
	if h.returnAt.Before(drained) {
		h.returnAt = drained
	}
	h.returnAt = h.returnAt.Add(per)
	if limit := now.Add(maxDefer); h.returnAt.After(limit) {
		h.returnAt = limit
	}
	return min(max(h.returnAt.Sub(now), minDefer), maxDefer)
}

// jitter spreads d by ±10%, so deferred messages do not come back in lockstep.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}

// hostView is one host as the operators' view shows it.
type hostView struct {
	Host     string `json:"host"`
	Limit    int    `json:"limit"`
	InFlight int    `json:"in_flight"`
	Queued   int    `json:"queued"`
}

// snapshot is the scheduler's state for metrics: held and queued messages, every known host's
// limit, and the n busiest hosts (most in flight plus queued).
func (s *scheduler) snapshot(n int) (held, queued int, heldBytes int64, limits []int, busiest []hostView) {
	s.mu.Lock()
	defer s.mu.Unlock()
	limits = make([]int, 0, len(s.hosts))
	for _, h := range s.hosts {
		limits = append(limits, h.limiter.limit.current())
		if len(h.queue)+h.limiter.inFlight == 0 {
			continue
		}
		v := hostView{Host: h.name, Limit: h.limiter.limit.current(), InFlight: h.limiter.inFlight, Queued: len(h.queue)}
		i, _ := slices.BinarySearchFunc(busiest, v, func(a, b hostView) int { return (b.InFlight + b.Queued) - (a.InFlight + a.Queued) })
		if i < n {
			busiest = slices.Insert(busiest, i, v)
			if len(busiest) > n {
				busiest = busiest[:n]
			}
		}
	}
	return s.held, s.queued, s.heldBytes, limits, busiest
}
