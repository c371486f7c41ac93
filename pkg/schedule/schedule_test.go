package schedule_test

import (
	"strings"
	"testing"
	"time"

	"refonte.ai/callbacks/pkg/schedule"
)

func TestDefault_is_the_contracts(t *testing.T) {
	if schedule.Default.MaxAttempts() != 21 {
		t.Errorf("attempts = %d, want 21", schedule.Default.MaxAttempts())
	}
	want := 21*time.Hour + 33*time.Minute + 40*time.Second
	if got := schedule.Default.Total(); got != want {
		t.Errorf("total = %s, want %s", got, want)
	}
}

func TestParse_refuses_bad_schedules(t *testing.T) {
	for _, s := range []string{"", "1s", strings.Repeat("1s,", 20) + "1s", strings.Repeat("1s,", 19) + "0s",
		strings.Repeat("1s,", 19) + "-1s", strings.Repeat("1s,", 19) + "soon"} {
		if _, err := schedule.Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}

func TestNext_jitter_and_retry_after(t *testing.T) {
	s := schedule.Default
	for attempt := 1; attempt <= 20; attempt++ {
		base := s[attempt-1]
		for range 200 {
			d, more := s.Next(attempt, 0)
			if !more || d < time.Duration(float64(base)*0.9) || d > time.Duration(float64(base)*1.1) {
				t.Fatalf("attempt %d: delay %s outside ±10%% of %s", attempt, d, base)
			}
		}
	}
	if _, more := s.Next(21, 0); more {
		t.Error("a 22nd attempt was scheduled")
	}
	// Retry-After lengthens a wait, capped at twice the scheduled delay; it never shortens one.
	if d, _ := s.Next(1, time.Hour); d != 20*time.Second {
		t.Errorf("Retry-After 1h on a 10s delay gave %s, want 20s", d)
	}
	if d, _ := s.Next(1, 15*time.Second); d != 15*time.Second {
		t.Errorf("Retry-After 15s on a 10s delay gave %s, want 15s", d)
	}
	if d, _ := s.Next(10, time.Second); d < 54*time.Minute {
		t.Errorf("a short Retry-After shortened the delay to %s", d)
	}
}
