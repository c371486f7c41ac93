package worker

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
)

func testScheduler(maxHeld, hostQueue, start, ceiling int) *scheduler {
	return newScheduler(maxHeld, 1<<30, hostQueue, 0, func() aimdLimit {
		return newAIMDLimit(start, 1, ceiling, 10*time.Second)
	})
}

// hold and enqueue one job for host, as the intake stages do.
func admitTo(t *testing.T, s *scheduler, host string, n int) []*job {
	t.Helper()
	var jobs []*job
	for i := range n {
		j := &job{hostKey: host, size: 100, webhookID: fmt.Sprintf("%s-%d", host, i)}
		j.ev.CustomerID = "cust-" + host
		if !s.hold(j.size) {
			t.Fatalf("window refused %s", j.webhookID)
		}
		if _, ok, _ := s.enqueue(j); !ok {
			t.Fatalf("host queue refused %s", j.webhookID)
		}
		jobs = append(jobs, j)
	}
	return jobs
}

// Free slots go out in turns across hosts: a host with a thousand queued and a host with one
// both get their turn, whatever the order they arrived in.
func TestScheduler_turns_are_fair_across_hosts(t *testing.T) {
	s := testScheduler(10_000, 5_000, 1000, 1000)
	admitTo(t, s, "burst.example", 1000)
	admitTo(t, s, "quiet.example", 1)
	admitTo(t, s, "other.example", 2)
	var order []string
	for range 6 {
		order = append(order, s.take().hostKey)
	}
	want := []string{"burst.example", "quiet.example", "other.example", "burst.example", "other.example", "burst.example"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("turns %v, want %v", order, want)
	}
}

// A host at its limit gets no slot until one of its deliveries ends; the others carry on.
func TestScheduler_host_at_its_limit_waits_and_others_pass(t *testing.T) {
	s := testScheduler(100, 50, 2, 2)
	admitTo(t, s, "slow.example", 5)
	a, b := s.take(), s.take()
	if a.hostKey != "slow.example" || b.hostKey != "slow.example" {
		t.Fatal("the first two slots did not go to the only host")
	}
	admitTo(t, s, "fast.example", 1)
	if j := s.take(); j.hostKey != "fast.example" {
		t.Fatalf("slot went to %s over its limit", j.hostKey)
	}
	got := make(chan *job)
	go func() { got <- s.take() }()
	s.done(a, sampleIgnore, 0) // one of slow's deliveries ends: its next message may go
	if j := <-got; j.hostKey != "slow.example" {
		t.Errorf("freed slot went to %s", j.hostKey)
	}
}

// A full host queue defers the message instead of holding it; the window frees as messages
// settle, and close hands back whatever is still queued.
func TestScheduler_full_queue_defers_and_close_hands_back_the_rest(t *testing.T) {
	s := testScheduler(6, 2, 1, 1)
	admitTo(t, s, "h", 2)
	j := &job{hostKey: "h", size: 100}
	if !s.hold(j.size) {
		t.Fatal("window refused a third message out of six")
	}
	wait, ok, _ := s.enqueue(j)
	if ok || wait < minDefer*9/10 || wait > maxDefer*11/10 {
		t.Fatalf("a message over the host queue: queued %v, deferred for %s", ok, wait)
	}
	s.unhold(j.size)
	admitTo(t, s, "other", 2)
	first := s.take()
	s.done(first, sampleSuccess, time.Millisecond)
	if s.held != 3 {
		t.Errorf("held %d after one delivery out of 4, want 3", s.held)
	}
	if left := s.close(); len(left) != 3 {
		t.Errorf("close handed back %d queued jobs, want 3", len(left))
	}
	if s.take() != nil {
		t.Error("take after close returned a job")
	}
}

// However many hosts hang with full queues, they never hold the whole window: each host that
// starts queuing trims the others to their fair share, and its own messages find room.
func TestScheduler_hanging_hosts_never_fill_the_window(t *testing.T) {
	const window = 100
	s := testScheduler(window, window, 1, 1)
	var evicted int
	for i := range 10 {
		host := fmt.Sprintf("hang%d", i)
		for n := 0; ; n++ {
			j := &job{hostKey: host, size: 1}
			s.hold(j.size)
			_, ok, out := s.enqueue(j)
			for _, e := range out {
				s.unhold(e.size)
			}
			evicted += len(out)
			if !ok {
				s.unhold(j.size)
				if n == 0 {
					t.Fatalf("%s: its first message found no room (%d held)", host, s.held)
				}
				break
			}
		}
		if s.held >= window {
			t.Fatalf("after %s: %d held, the window is full", host, s.held)
		}
	}
	if evicted == 0 {
		t.Error("no queue was trimmed for the newcomers")
	}
	j := &job{hostKey: "healthy", size: 1}
	if _, ok, _ := s.enqueue(j); !ok {
		t.Error("a healthy host's message found no room behind ten hanging hosts")
	}
}

// Messages deferred for a busy host are paced: each comes back one delivery-time after the one
// before, past the queue already held, instead of all at once.
func TestScheduler_deferrals_are_paced_by_the_host(t *testing.T) {
	s := testScheduler(10_000, 10, 10, 10)
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	jobs := admitTo(t, s, "h", 10)
	// Ten deliveries of 100ms with ten in flight: one finishes every 10ms.
	for range 10 {
		s.take()
	}
	for _, j := range jobs {
		now = now.Add(10 * time.Millisecond)
		s.done(j, sampleSuccess, 100*time.Millisecond)
	}
	admitTo(t, s, "h", 10)
	h := s.hosts["h"]
	var last time.Duration
	for i := range 200 {
		d := h.deferral(now)
		if i > 100 && d <= last {
			t.Fatalf("deferral %d: %s, not after the one before (%s)", i, d, last)
		}
		last = d
	}
	// 200 deferrals at ~10ms apiece, after the 10 queued: about 2.1s.
	if last < 1500*time.Millisecond || last > 3*time.Second {
		t.Errorf("the 200th deferral comes back after %s, want about 2.1s", last)
	}
}

// Many slots take and finish concurrently without losing a job or a token (run with -race).
func TestScheduler_concurrent_slots_deliver_everything_once(t *testing.T) {
	s := testScheduler(100_000, 10_000, 4, 16)
	const hosts, per = 20, 200
	var slots sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	for range 32 {
		slots.Go(func() {
			for j := s.take(); j != nil; j = s.take() {
				mu.Lock()
				seen[j.webhookID]++
				mu.Unlock()
				s.mu.Lock()
				over := j.host.limiter.inFlight > j.host.limiter.limit.current()
				s.mu.Unlock()
				if over {
					t.Errorf("host %s has more in flight than its limit", j.hostKey)
				}
				s.done(j, sampleSuccess, time.Millisecond)
			}
		})
	}
	for h := range hosts {
		admitTo(t, s, fmt.Sprintf("h%d", h), per)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.held == 0
	}, "every job delivered")
	s.close()
	slots.Wait()
	if len(seen) != hosts*per {
		t.Errorf("%d distinct jobs delivered, want %d", len(seen), hosts*per)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	for name, h := range s.hosts {
		if h.limiter.inFlight != 0 || len(h.queue) != 0 {
			t.Errorf("%s: %d tokens not given back, %d jobs left queued", name, h.limiter.inFlight, len(h.queue))
		}
	}
}

// A customer whose callbacks all go to one host has its overflow deferred before decoding once
// that host's queue is full; a customer seen with two hosts never is.
func TestScheduler_defers_a_one_host_customer_early_only_when_its_queue_is_full(t *testing.T) {
	s := testScheduler(100, 2, 1, 1)
	if _, early := s.deferEarly("cust-h"); early {
		t.Fatal("an unknown customer deferred early")
	}
	admitTo(t, s, "h", 1)
	if _, early := s.deferEarly("cust-h"); early {
		t.Fatal("deferred early with room in the queue")
	}
	admitTo(t, s, "h", 1)
	if wait, early := s.deferEarly("cust-h"); !early || wait < minDefer*9/10 {
		t.Fatalf("full queue: early %v, wait %s", early, wait)
	}
	other := &job{hostKey: "h2", size: 1}
	other.ev.CustomerID = "cust-h"
	s.hold(other.size)
	if _, ok, _ := s.enqueue(other); !ok {
		t.Fatal("the customer's second host refused")
	}
	if _, early := s.deferEarly("cust-h"); early {
		t.Error("a customer with two hosts deferred before decoding")
	}
}
