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
// host has a local queue and a hostLimiter. A queue is bounded by hostQueue and by a fair share
// of the window: with k hosts queuing, each may queue (maxHeld - slots)/(k+1), so busy hosts
// never fill the window and a newcomer's message always finds room; a slot goes to the next host in
// turn that has a message queued and a token free (round robin over those hosts: deficit round
// robin with a cost of one per message), so a host with 10,000 messages and a host with one both
// get their turns. A message whose host queue is full is deferred (NakWithDelay, no attempt
// used), paced so that the host's deferred messages come back a little before it can take
// them; the window keeps moving past a burst and other customers' messages are reached.
type scheduler struct {
	maxHeld   int
	maxBytes  int64
	hostQueue int
	slots     int // delivery slots: held messages the queues leave room for
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
	queuing   map[*hostState]struct{} // hosts with a message queued
	// customers remembers the one host each customer's callbacks went to (nil once they went
	// to several), so that a burst's overflow is deferred before it is decoded.
	customers map[string]*hostState
	room      chan struct{} // poked when the window gains room
}

// hostState is one endpoint host's queue, tokens and pacing.
type hostState struct {
	name    string
	limiter hostLimiter
	queue   []*job
	inTurns bool
	pace    pace
}

const (
	// minDefer is the shortest planned deferral: a message back sooner than that would mostly
	// find its host's queue still full and cycle through the stream again.
	minDefer = 200 * time.Millisecond
	// unmeasuredDefer bounds the first deferrals for a host whose pace is not known yet: they
	// come back soon and are deferred again with a measured pace.
	unmeasuredDefer = 500 * time.Millisecond
	// maxDefer is the pacing horizon.
	maxDefer = 10 * time.Second
	// maxHostsKnown bounds the hosts whose learned limit is kept after they went idle.
	maxHostsKnown = 50_000
)

func newScheduler(maxHeld int, maxBytes int64, hostQueue, slots int, newLimit func() aimdLimit) *scheduler {
	s := &scheduler{maxHeld: maxHeld, maxBytes: maxBytes, hostQueue: hostQueue, slots: slots, newLimit: newLimit,
		now: time.Now, hosts: make(map[string]*hostState), queuing: make(map[*hostState]struct{}),
		customers: make(map[string]*hostState),
		room:      make(chan struct{}, 1)}
	s.ready = sync.NewCond(&s.mu)
	return s
}

// waitRoom blocks until the window has room for at least one message and returns how many, and
// how many payload bytes; false once ctx has ended.
func (s *scheduler) waitRoom(ctx context.Context) (int, int, bool) {
	for ctx.Err() == nil {
		s.mu.Lock()
		room, roomBytes := s.maxHeld-s.held, s.maxBytes-s.heldBytes
		s.mu.Unlock()
		if room > 0 {
			return room, int(max(roomBytes, 0)), true
		}
		select {
		case <-ctx.Done():
		case <-s.room:
		}
	}
	return 0, 0, false
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
// long to defer the message for. A host that starts queuing may push other hosts' queues over
// their new fair share: their newest messages are taken out and returned as evicted, each with
// its deferral, for the caller to hand back.
func (s *scheduler) enqueue(j *job) (deferFor time.Duration, ok bool, evicted []*job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.host(j.hostKey)
	if s.closed || len(h.queue) >= s.queueBoundLocked(h) {
		return jitter(h.deferral(s.now())), false, nil
	}
	j.host = h
	if len(h.queue) == 0 && h.limiter.inFlight == 0 {
		h.pace.busySince = s.now()
	}
	s.rememberLocked(j.ev.CustomerID, h)
	if len(h.queue) == 0 {
		evicted = s.makeRoomLocked()
		s.queuing[h] = struct{}{}
	}
	h.queue = append(h.queue, j)
	s.queued++
	s.offerTurnLocked(h)
	return 0, true, evicted
}

// deferEarly reports whether a message of customerID can be deferred before it is decoded: all
// the customer's callbacks so far went to one host, and that host's queue is full. Skimming past
// one customer's burst then costs a map lookup per message instead of a decode. A customer
// with several endpoints is always decoded.
func (s *scheduler) deferEarly(customerID string) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.customers[customerID]
	if h == nil || s.closed || len(h.queue) < s.queueBoundLocked(h) {
		return 0, false
	}
	return jitter(h.deferral(s.now())), true
}

func (s *scheduler) rememberLocked(customerID string, h *hostState) {
	known, seen := s.customers[customerID]
	switch {
	case !seen:
		if len(s.customers) >= maxHostsKnown {
			clear(s.customers)
		}
		s.customers[customerID] = h
	case known != nil && known.name != h.name:
		s.customers[customerID] = nil // several hosts: never deferred early
	case known != nil:
		s.customers[customerID] = h // the same host, known again after it was forgotten
	}
}

// makeRoomLocked trims every queue down to the fair share one more queuing host leaves it, when
// the queues would otherwise leave that host less than its share: hosts that hang or fail never
// hold the whole window, however many of them there are.
func (s *scheduler) makeRoomLocked() []*job {
	budget := s.maxHeld - s.slots
	k := len(s.queuing) + 1
	share := max(1, budget/(k+1))
	if s.queued+share <= budget {
		return nil
	}
	now := s.now()
	var evicted []*job
	for h := range s.queuing {
		for len(h.queue) > share {
			last := h.queue[len(h.queue)-1]
			h.queue[len(h.queue)-1] = nil
			h.queue = h.queue[:len(h.queue)-1]
			s.queued--
			last.deferFor = jitter(h.deferral(now))
			evicted = append(evicted, last)
		}
	}
	return evicted
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
	if len(h.queue) == 0 {
		delete(s.queuing, h)
	}
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
	// Every delivery counts toward the pace, whatever its answer: the pace is how fast the
	// host's queue drains.
	h.pace.observe(now, h.limiter.inFlight > 1 || len(h.queue) > 0)
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
	clear(s.queuing)
	s.turns = nil
	s.ready.Broadcast()
	return left
}

// queueBoundLocked is how many messages h may queue: hostQueue, or its fair share of the window
// if that is less.
func (s *scheduler) queueBoundLocked(h *hostState) int {
	k := len(s.queuing)
	if len(h.queue) == 0 {
		k++ // h would be one more
	}
	return max(1, min(s.hostQueue, (s.maxHeld-s.slots)/(k+1)))
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

// pace measures how fast a host takes this worker's deliveries and plans when the messages
// deferred for it come back.
//
// A worker must never sit idle while messages it deferred wait in the stream: coming back a bit
// early costs one more Nak (the message is deferred again), coming back late costs idle slots,
// and NakWithDelay cannot call a message back early. So the plan errs early: it assumes the host
// goes paceOptimism times the rate measured (a rate it may well reach once the intake of a burst
// no longer takes half the CPU), and a host with no measured rate gets deferrals no longer than
// it has been busy.
//
// The rate is counted over windows of at least paceWindow, not taken from the gaps between
// deliveries: outcomes are written to Redis in batches, so deliveries end in bunches, and a gap
// average swung from microseconds to tens of milliseconds within a second.
type pace struct {
	rate float64 // deliveries per second while the host was busy; 0 until measured
	// The window being counted: when it started, deliveries since, and whether the host ran
	// short of work in it (then it measured the arrivals, not the host).
	winStart time.Time
	winDone  int
	winIdle  bool
	// returnAt is when the last message deferred for the host is due back: deferrals are spread
	// over the time the host needs, one delivery apart, not all sent back at once.
	returnAt time.Time
	// busySince is when the host last went from nothing to do to work queued: until a rate is
	// measured, its deferrals grow with how long it has been busy.
	busySince time.Time
}

const (
	paceWindow   = 100 * time.Millisecond
	paceOptimism = 2.0
	paceRiseGain = 0.5  // weight of a faster window: a rising rate is believed quickly
	paceFallGain = 0.25 // weight of a slower one
)

// observe counts a finished delivery; busy says whether the host had more work waiting (a
// message queued, or other deliveries in flight). A window counts only if the host was busy
// from its first delivery to its last: a pause in it would be measured as a slow host.
func (p *pace) observe(now time.Time, busy bool) {
	if p.winStart.IsZero() {
		p.winStart, p.winDone, p.winIdle = now, 0, !busy
		return
	}
	p.winDone++
	p.winIdle = p.winIdle || !busy
	el := now.Sub(p.winStart)
	if el < paceWindow {
		return
	}
	if !p.winIdle {
		p.setRate(now, float64(p.winDone)/el.Seconds())
	}
	p.winStart, p.winDone, p.winIdle = now, 0, !busy
}

// setRate takes a window's rate into the estimate, and moves the plan for deferrals still to
// come to the new rate: a plan made at a slower rate would send them back late.
func (p *pace) setRate(now time.Time, measured float64) {
	old := p.rate
	switch {
	case old == 0:
		p.rate = measured
	case measured > old:
		p.rate += paceRiseGain * (measured - old)
	default:
		p.rate += paceFallGain * (measured - old)
	}
	if old > 0 && p.returnAt.After(now) {
		p.returnAt = now.Add(time.Duration(float64(p.returnAt.Sub(now)) * old / p.rate))
	}
}

// deferral is how long to put back a message for h while its queue is full: after what is queued
// and in flight now, and after the messages deferred before it, one delivery apart at the
// planned pace.
func (h *hostState) deferral(now time.Time) time.Duration {
	p := &h.pace
	if p.rate <= 0 {
		// Nothing measured yet (a fast host is measured within a window): back after about as
		// long as the host has been busy, so that a slow host's overflow is not cycled through
		// the stream every half second while its first answers are awaited.
		d := min(max(now.Sub(p.busySince), unmeasuredDefer), maxDefer)
		return d/2 + rand.N(d/2)
	}
	// Capped at the horizon: a host measured at one delivery an hour must not overflow the
	// arithmetic below.
	per := time.Duration(min(float64(time.Second)/(p.rate*paceOptimism), float64(maxDefer)))
	drained := now.Add(time.Duration(len(h.queue)+h.limiter.inFlight) * per)
	if p.returnAt.Before(drained) {
		p.returnAt = drained
	}
	p.returnAt = p.returnAt.Add(per)
	if limit := now.Add(maxDefer); p.returnAt.After(limit) {
		// Past the horizon the estimate is too uncertain to plan on: those come back anywhere
		// in its second half and are deferred again with a better one. Spread, not all at the
		// horizon: JetStream hands out due redeliveries before new messages, so a crowd of
		// them coming back at once would delay every other customer's fresh callbacks.
		p.returnAt = limit
		return maxDefer/2 + rand.N(maxDefer/2)
	}
	return max(p.returnAt.Sub(now), minDefer)
}

// jitter spreads d over its last fifth, earlier only: deferred messages do not come back in
// lockstep, and none later than planned.
func jitter(d time.Duration) time.Duration {
	return d - rand.N(d/5+1)
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
