package worker

import (
	"testing"
	"time"
)

// A fast host at its cap: the next message waits for a turn instead of being deferred.
func TestHostLimiter_fast_host_waits_for_a_turn(t *testing.T) {
	h := newHostLimiter(1)
	release, _, ok := h.acquire("fast.example")
	if !ok {
		t.Fatal("first acquire refused")
	}
	release(5 * time.Millisecond) // the host is now known to be fast
	release, _, _ = h.acquire("fast.example")
	got := make(chan bool)
	go func() {
		r, _, ok := h.acquire("fast.example")
		if ok {
			r(0)
		}
		got <- ok
	}()
	// Release only once the second message is waiting for its turn.
	for deadline := time.Now().Add(time.Second); ; {
		h.mu.Lock()
		users := h.hosts["fast.example"].users
		h.mu.Unlock()
		if users == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second message never started waiting")
		}
		time.Sleep(time.Millisecond)
	}
	release(5 * time.Millisecond)
	if !<-got {
		t.Error("a message for a fast host at its cap was deferred instead of waiting")
	}
}

// A slow host at its cap: the next message is deferred at once, for about one attempt's time.
func TestHostLimiter_slow_host_defers(t *testing.T) {
	h := newHostLimiter(1)
	release, _, _ := h.acquire("slow.example")
	release(10 * time.Second)
	release, _, _ = h.acquire("slow.example")
	defer release(0)
	start := time.Now()
	_, retryIn, ok := h.acquire("slow.example")
	if ok || retryIn < 10*time.Second || time.Since(start) > 100*time.Millisecond {
		t.Errorf("ok %v, retryIn %s after %s; want an immediate deferral of about 10s", ok, retryIn, time.Since(start))
	}
}

// Waiters are bounded: a host never holds more than twice its share of slots.
func TestHostLimiter_bounds_waiters(t *testing.T) {
	h := newHostLimiter(2)
	for range 2 {
		if _, _, ok := h.acquire("h"); !ok {
			t.Fatal("acquire under the cap refused")
		}
	}
	h.mu.Lock()
	h.hosts["h"].users = 4 // two holders and two waiters already
	h.mu.Unlock()
	start := time.Now()
	if _, _, ok := h.acquire("h"); ok || time.Since(start) > 40*time.Millisecond {
		t.Errorf("a fifth user got in or waited (%s)", time.Since(start))
	}
}
