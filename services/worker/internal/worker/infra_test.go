package worker

import (
	"testing"
	"time"
)

// A message put back because Redis did not answer waits by how long this worker has been
// failing to reach it, not by how often the message was delivered before: a late retry that
// meets one slow call comes back in half a second, and a long outage backs off to the cap.
func TestInfraFailures_back_off_over_a_run_of_failures_and_reset_on_success(t *testing.T) {
	var f infraFailures
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}
	for i, w := range want {
		if got := f.failed(); got != w {
			t.Fatalf("failure %d: wait %s, want %s", i+1, got, w)
		}
	}
	for range 100 {
		f.failed()
	}
	if got := f.failed(); got != 30*time.Second {
		t.Fatalf("after a long outage: wait %s, want the 30s cap", got)
	}
	f.ok()
	if got := f.failed(); got != 500*time.Millisecond {
		t.Fatalf("first failure after a success: wait %s, want 500ms", got)
	}
}
