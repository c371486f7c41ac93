package worker

import (
	"testing"
	"time"
)

// A fresh pause with many held callbacks lets them come back a pace apart, not all at once;
// a pause of hours rechecks each at the horizon.
func TestPauseClock_spreads_held_callbacks_and_waits_longer_for_long_pauses(t *testing.T) {
	c := newPauseClock()
	now := time.Unix(1_700_000_000, 0)
	k := pauseKey{customerID: "c1", endpoint: "https://a.example:443"}
	const horizon = 15 * time.Minute
	if d := c.deferral(k, now, 0, horizon); d != minPausedDefer {
		t.Fatalf("first callback of a fresh pause waits %s, want %s", d, minPausedDefer)
	}
	if d := c.deferral(k, now, 0, horizon); d != minPausedDefer+time.Second/pausedReturnRate {
		t.Fatalf("second callback waits %s, want one pace more", d)
	}
	within := 0
	for range 100_000 {
		d := c.deferral(k, now, 0, horizon)
		if d < minPausedDefer || d > horizon {
			t.Fatalf("a wait of %s, want %s to %s", d, minPausedDefer, horizon)
		}
		if d < time.Minute {
			within++
		}
	}
	// At most pausedReturnRate a second may come back within the first minute.
	if limit := pausedReturnRate * 60; within > limit {
		t.Errorf("%d of 100,000 held callbacks come back within a minute, want at most %d", within, limit)
	}
	// Another endpoint has its own pace.
	if d := c.deferral(pauseKey{customerID: "c1", endpoint: "https://b.example:443"}, now, 0, horizon); d != minPausedDefer {
		t.Errorf("another endpoint's first callback waits %s, want %s", d, minPausedDefer)
	}
	// A pause of an hour: a quarter of it, capped at the horizon.
	long := pauseKey{customerID: "c2", endpoint: "https://a.example:443"}
	if d := c.deferral(long, now, 20*time.Minute, horizon); d != 5*time.Minute {
		t.Errorf("a pause of 20 minutes rechecks after %s, want 5m", d)
	}
	if d := c.deferral(pauseKey{customerID: "c3"}, now, 10*time.Hour, horizon); d != horizon {
		t.Errorf("a pause of 10 hours rechecks after %s, want the horizon", d)
	}
}
