// Package schedule holds the retry schedule of docs/receiving.md: 20 delays after the first attempt,
// 21 attempts in all, each delay jittered by at most ±10%.
package schedule

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Retries is how many delays a schedule has: attempts = Retries + 1.
const Retries = 20

// Default is the contract's schedule; it sums to 21h33m40s.
var Default = MustParse("10s,30s,1m,2m,5m,10m,15m,30m,30m,1h,1h,1h,1h30m,1h30m,2h,2h,2h,2h30m,2h30m,3h")

// Schedule is the delay before each retry: Schedule[n-1] follows the n-th failed attempt.
type Schedule []time.Duration

// Parse reads a comma-separated list of exactly 20 positive Go durations.
func Parse(s string) (Schedule, error) {
	parts := strings.Split(s, ",")
	if len(parts) != Retries {
		return nil, fmt.Errorf("retry schedule has %d delays, want %d", len(parts), Retries)
	}
	out := make(Schedule, len(parts))
	for i, p := range parts {
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("retry schedule delay %d: %w", i+1, err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("retry schedule delay %d: %s is not positive", i+1, d)
		}
		out[i] = d
	}
	return out, nil
}

// MustParse is Parse for constants.
func MustParse(s string) Schedule {
	sch, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sch
}

// MaxAttempts is the number of attempts in one delivery: the first and one per delay.
func (s Schedule) MaxAttempts() int { return len(s) + 1 }

// Total is the sum of the delays, without jitter.
func (s Schedule) Total() time.Duration {
	var t time.Duration
	for _, d := range s {
		t += d
	}
	return t
}

// String renders the schedule in the form Parse reads.
func (s Schedule) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = d.String()
	}
	return strings.Join(parts, ",")
}

// Next returns how long to wait after failed attempt number attempt (1-based), and false when
// that was the last attempt. The delay is jittered by ±10%; a retryAfter the receiver asked for
// (429/503 Retry-After) may lengthen it, up to twice the scheduled delay, never shorten it.
func (s Schedule) Next(attempt int, retryAfter time.Duration) (time.Duration, bool) {
	if attempt < 1 || attempt > len(s) {
		return 0, false
	}
	base := s[attempt-1]
	d := time.Duration(float64(base) * (0.9 + 0.2*rand.Float64()))
	if retryAfter > d {
		d = min(retryAfter, 2*base)
	}
	return d, true
}
