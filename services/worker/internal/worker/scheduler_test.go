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

// deliverAt feeds h's pace n deliveries at rate per second from *now on, in bunches of bunch
// (outcomes are written in batches, so deliveries end together), with the host busy throughout.
func deliverAt(h *hostState, now *time.Time, rate float64, n, bunch int) {
	gap := time.Duration(float64(bunch) / rate * float64(time.Second))
	for i := 0; i < n; i += bunch {
		*now = now.Add(gap)
		for range bunch {
			h.pace.observe(*now, true)
		}
	}
}

// The pace is counted over windows, not from the gaps between deliveries: deliveries that end in
// bunches still measure the host's real rate.
func TestPace_measures_the_rate_of_bunched_deliveries(t *testing.T) {
	for _, bunch := range []int{1, 16, 128} {
		h := &hostState{}
		now := time.Unix(1_000_000, 0)
		deliverAt(h, &now, 2000, 4000, bunch)
		if got := h.pace.rate; got < 1800 || got > 2200 {
			t.Errorf("bunches of %d at 2000/s: measured %.0f/s", bunch, got)
		}
	}
}

// A window in which the host ran out of work measured the arrivals, not the host: it does not
// count; and a rate that rises is believed within a few windows.
func TestPace_ignores_idle_windows_and_follows_a_rising_rate(t *testing.T) {
	h := &hostState{}
	now := time.Unix(1_000_000, 0)
	for range 100 {
		now = now.Add(20 * time.Millisecond)
		h.pace.observe(now, false) // one at a time, nothing waiting: 50/s is all that came
	}
	if h.pace.rate != 0 {
		t.Fatalf("a host never busy has a measured rate of %.0f/s", h.pace.rate)
	}
	deliverAt(h, &now, 1000, 1000, 10)
	deliverAt(h, &now, 3000, 1500, 10) // half a second at the new rate: five windows
	if got := h.pace.rate; got < 2700 {
		t.Errorf("after half a second at 3000/s (1000/s before), the measured rate is %.0f/s", got)
	}
}

// A host whose pace is not known yet gets short deferrals at first: they come back soon and are
// planned again with a measured pace, never sent far off on a guess. A host still unmeasured
// after seconds (its first answers are slow to come) gets longer ones, so its overflow is not
// cycled through the stream every half second.
func TestScheduler_an_unmeasured_host_defers_for_about_as_long_as_it_has_been_busy(t *testing.T) {
	s := testScheduler(10_000, 10, 10, 10)
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	admitTo(t, s, "h", 10)
	h := s.hosts["h"]
	for range 1000 {
		if d := h.deferral(now); d > unmeasuredDefer {
			t.Fatalf("deferral of %s for a host just seen", d)
		}
	}
	now = now.Add(4 * time.Second)
	for range 1000 {
		if d := h.deferral(now); d < 2*time.Second || d > 4*time.Second {
			t.Fatalf("deferral of %s for a host busy for 4s with nothing measured", d)
		}
	}
}

// Messages deferred for a busy host are paced: each comes back one delivery after the one
// before, past the queue already held, instead of all at once; and none later than the host,
// at its measured rate, would need it: a worker must never sit idle while its deferred
// messages wait.
func TestScheduler_deferrals_are_paced_by_the_host_and_never_late(t *testing.T) {
	s := testScheduler(10_000, 50, 10, 10)
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	admitTo(t, s, "h", 50)
	h := s.hosts["h"]
	for range 10 {
		s.take()
	}
	deliverAt(h, &now, 100, 100, 1) // measured: 100/s
	var last time.Duration
	for i := range 200 {
		d := h.deferral(now)
		if d <= last && d > minDefer {
			t.Fatalf("deferral %d: %s, not after the one before (%s)", i, d, last)
		}
		// the i-th deferred message is needed once the 40 queued, the 10 in flight and the
		// i deferred before it are through
		needed := time.Duration(float64(40+10+i+1) / 100 * float64(time.Second))
		if d > needed {
			t.Fatalf("deferral %d comes back after %s; at 100/s the host needs it after %s", i, d, needed)
		}
		last = d
	}
	if last < time.Second {
		t.Errorf("the 200th deferral comes back after %s: 250 deliveries at 100/s take 2.5s", last)
	}
}

// When the host turns out faster than planned, the deferrals still to come are planned at the
// new rate, not queued behind a line drawn at the old one.
func TestScheduler_a_faster_host_brings_its_deferrals_closer(t *testing.T) {
	s := testScheduler(10_000, 10, 10, 10)
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	admitTo(t, s, "h", 10)
	h := s.hosts["h"]
	deliverAt(h, &now, 100, 100, 1)
	var slow time.Duration
	for range 1000 {
		slow = h.deferral(now) // a line of 1,000 at 100/s: about 5s at the planned pace
	}
	deliverAt(h, &now, 1000, 2000, 10) // two seconds at 1000/s
	fast := h.deferral(now)
	if fast > slow/4 {
		t.Errorf("at ten times the rate the next deferral comes back after %s (the line at the old rate ended after %s)", fast, slow)
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

// A host measured at a few deliveries an hour (it hangs) sends its overflow past the horizon:
// back within its second half, to be planned again, whatever the arithmetic of its pace.
func TestScheduler_a_very_slow_host_defers_to_the_horizon(t *testing.T) {
	s := testScheduler(10_000, 10, 1, 1)
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	admitTo(t, s, "h", 10)
	h := s.hosts["h"]
	for range 3 {
		now = now.Add(20 * time.Minute)
		h.pace.observe(now, true)
	}
	if h.pace.rate <= 0 {
		t.Fatal("no rate measured")
	}
	for range 100 {
		if d := h.deferral(now); d < maxDefer/2 || d > maxDefer {
			t.Fatalf("deferral of %s for a host at %.5f/s", d, h.pace.rate)
		}
	}
}
