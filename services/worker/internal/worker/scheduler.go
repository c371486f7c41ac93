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
// used), paced so that the host's deferred messages come back about when it can take them; the
// window keeps moving past a burst and other customers' messages are reached.
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
	// perMessage estimates the time between two of the host's deliveries while it is busy
	// (an average of the measured gaps), and returnAt when the last message deferred for it is
	// due back: deferrals are spread over the time the host needs, not all sent back at once.
	perMessage time.Duration
	lastDone   time.Time
	returnAt   time.Time
}

const (
	minDefer = 500 * time.Millisecond
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
	if smp != sampleIgnore {
		h.observe(now)
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

// observe updates the host's pace from a finished attempt: while the host is busy, the gap since
// its previous delivery is the pace it really keeps (its limit and this worker's CPU included).
func (h *hostState) observe(now time.Time) {
	if !h.lastDone.IsZero() && (h.limiter.inFlight > 1 || len(h.queue) > 0) {
		gap := now.Sub(h.lastDone)
		if h.perMessage == 0 {
			h.perMessage = gap
		}
		h.perMessage = (h.perMessage*15 + gap) / 16
	}
	h.lastDone = now
}

// deferral is how long to put back a message for h while its queue is full: after the queue
// drains and after the messages deferred before it, one pace apart.
func (h *hostState) deferral(now time.Time) time.Duration {
	per := h.perMessage
	if per <= 0 {
		per = time.Millisecond // nothing measured yet: better too early (deferred again) than idle
	}
	drained := now.Add(time.Duration(len(h.queue)+h.limiter.inFlight) * per)
	if h.returnAt.Before(drained) {
		h.returnAt = drained
	}
	h.returnAt = h.returnAt.Add(per)
	if limit := now.Add(maxDefer); h.returnAt.After(limit) {
		// Past the horizon the estimate is too uncertain to plan on: those come back anywhere
		// in its second half and are deferred again with a better one. Spread, not all at the
		// horizon: JetStream hands out due redeliveries before new messages, so a crowd of
		// them coming back at once would delay every other customer's fresh callbacks.
		h.returnAt = limit
		return maxDefer/2 + rand.N(maxDefer/2)
	}
	return max(h.returnAt.Sub(now), minDefer)
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
