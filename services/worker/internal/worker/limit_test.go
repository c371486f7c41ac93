package worker

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"refonte.ai/callbacks/pkg/delivery"
	"refonte.ai/callbacks/pkg/target"
)

// The limit's movement, sample by sample, with no clock or goroutine: each step is one finished
// attempt (its duration, the deliveries in flight when it ended, whether the host dropped it).
func TestAIMDLimit_moves_with_each_sample(t *testing.T) {
	type step struct {
		took     time.Duration
		inFlight int
		dropped  bool
	}
	fast := func(inFlight int) step { return step{took: 5 * time.Millisecond, inFlight: inFlight} }
	drop := func(inFlight int) step { return step{took: 3 * time.Second, inFlight: inFlight, dropped: true} }
	repeat := func(n int, s step) []step {
		out := make([]step, n)
		for i := range out {
			out[i] = s
		}
		return out
	}
	cases := []struct {
		name               string
		start, floor, ceil int
		steps              []step
		want               int
	}{
		{"a success with the limit in use adds one", 8, 1, 256, []step{fast(8)}, 9},
		{"a success at half the limit in use adds one", 8, 1, 256, []step{fast(4)}, 9},
		{"a success with the limit mostly idle changes nothing", 8, 1, 256, []step{fast(3)}, 8},
		{"a fast busy host climbs to the ceiling and stops there", 8, 1, 256, repeat(400, fast(256)), 256},
		{"a drop halves the limit", 8, 1, 256, []step{drop(8)}, 4},
		{"a hanging host falls to the floor within one round of timeouts", 8, 1, 256, repeat(8, drop(8)), 1},
		{"the floor holds", 8, 2, 256, repeat(20, drop(8)), 2},
		{"a success slower than three quarters of the timeout counts as a drop", 8, 1, 256,
			[]step{{took: 8 * time.Second, inFlight: 8}}, 4},
		{"a success under that is a success", 8, 1, 256, []step{{took: 5 * time.Second, inFlight: 8}}, 9},
		{"a host recovers from the floor one success at a time", 8, 1, 256,
			append(repeat(8, drop(8)), fast(1), fast(2), fast(3)), 4},
		{"the start never exceeds the ceiling", 8, 1, 4, nil, 4},
		{"a 1% error rate keeps a busy host near its ceiling", 256, 1, 256,
			append(repeat(99, fast(256)), append([]step{drop(256)}, repeat(99, fast(256))...)...), 227},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newAIMDLimit(c.start, c.floor, c.ceil, 7500*time.Millisecond)
			for _, s := range c.steps {
				l.onSample(s.took, s.inFlight, s.dropped)
			}
			if got := l.current(); got != c.want {
				t.Errorf("limit %d, want %d", got, c.want)
			}
		})
	}
}

// Delivery results map to success, dropped (the host could not take it) or ignore (nothing
// about the host's capacity).
func TestSampleOf_maps_results(t *testing.T) {
	fail := errors.New("x")
	cases := []struct {
		kind target.Kind
		res  delivery.Result
		want sample
	}{
		{target.HTTP, delivery.Result{StatusCode: 200}, sampleSuccess},
		{target.HTTP, delivery.Result{Err: fail}, sampleDropped}, // timeout, refused, TLS
		{target.HTTP, delivery.Result{StatusCode: http.StatusTooManyRequests, Err: fail}, sampleDropped},
		{target.HTTP, delivery.Result{StatusCode: 500, Err: fail}, sampleDropped},
		{target.HTTP, delivery.Result{StatusCode: 503, Err: fail}, sampleDropped},
		{target.HTTP, delivery.Result{StatusCode: 404, Err: fail}, sampleIgnore},
		{target.HTTP, delivery.Result{StatusCode: 401, Err: fail}, sampleIgnore},
		{target.HTTP, delivery.Result{StatusCode: 302, Err: fail}, sampleIgnore},
		{target.HTTP, delivery.Result{Err: fail, Permanent: true}, sampleIgnore}, // never connected
		{target.Email, delivery.Result{StatusCode: 250}, sampleSuccess},
		{target.Email, delivery.Result{StatusCode: 451, Err: fail}, sampleDropped},
		{target.Email, delivery.Result{StatusCode: 554, Err: fail}, sampleIgnore},
	}
	for _, c := range cases {
		if got := sampleOf(c.kind, c.res); got != c.want {
			t.Errorf("%s %d (err %v, permanent %v): sample %d, want %d", c.kind, c.res.StatusCode, c.res.Err, c.res.Permanent, got, c.want)
		}
	}
}

// The limiter's tokens follow the limit as it moves: a drop takes tokens away from new
// deliveries (those in flight finish), growth gives more.
func TestHostLimiter_tokens_follow_the_limit(t *testing.T) {
	h := hostLimiter{limit: newAIMDLimit(4, 1, 8, time.Second)}
	for i := range 4 {
		if !h.tryAcquire() {
			t.Fatalf("token %d refused under the limit", i+1)
		}
	}
	if h.tryAcquire() {
		t.Fatal("a fifth token over a limit of 4")
	}
	h.release(sampleDropped, time.Second) // limit 2, 3 in flight
	if h.available() {
		t.Fatal("a token free with 3 in flight over a limit of 2")
	}
	h.release(sampleIgnore, 0)
	h.release(sampleIgnore, 0) // 1 in flight
	if !h.tryAcquire() || h.tryAcquire() {
		t.Fatalf("want exactly one more token (limit %d, in flight %d)", h.limit.current(), h.inFlight)
	}
	h.release(sampleSuccess, time.Millisecond) // 2 in flight at the end: limit 3
	if h.limit.current() != 3 || h.inFlight != 1 {
		t.Errorf("limit %d in flight %d, want 3 and 1", h.limit.current(), h.inFlight)
	}
}
