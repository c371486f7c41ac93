package load

import (
	"context"
	"io"
	"os"
	"testing"
	"time"
)

// A small run end to end: real worker processes, NATS, Redis and the receiver; every callback is
// delivered once, its status reads back as succeeded, and the parked ones stay parked.
func TestRun_small_load_with_parked_retries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the worker fleet")
	}
	cfg := smallRun(t)
	cfg.Parked = 200
	cfg.SignCheckEvery = 10
	cfg.StatusReads = 0.1
	r := run(t, cfg)
	if r.Published != 300 || r.Delivered != 300 || r.Lost != 0 || r.Duplicates != 0 || !r.Settled {
		t.Errorf("counts %+v, settled %v", r.Counts, r.Settled)
	}
	if r.Verify.StatusOK != r.Verify.StatusChecked || r.Verify.StatusChecked == 0 {
		t.Errorf("status verification %+v", r.Verify)
	}
	if r.Verify.SignChecked != 30 || r.Verify.SignBad != 0 {
		t.Errorf("signature checks %d, bad %d %v", r.Verify.SignChecked, r.Verify.SignBad, r.Verify.SignBadExamples)
	}
	if r.Parked == nil || r.Parked.Hits < 200 || r.Parked.AckPending < 200 {
		t.Errorf("parked %+v", r.Parked)
	}
	if r.Consumer.NumAckPending < 200 || r.Consumer.NumPending != 0 {
		t.Errorf("consumer at end %+v: the parked callbacks should still be waiting", r.Consumer)
	}
	if len(r.Processes) != 4 || r.Processes[0].CPUSeconds <= 0 || r.Processes[0].PeakRSS <= 0 {
		t.Errorf("process costs %+v", r.Processes)
	}
	// Customers read the status of one callback in ten through the gateway, whose cost is
	// measured like the workers'.
	if r.Reads == nil || r.Reads.Reads != 30 || r.Reads.OK != 30 || r.Reads.Latency.N != 30 {
		t.Errorf("status reads through the gateway: %+v", r.Reads)
	}
	var gateway *ProcessCost
	for i := range r.Processes {
		if r.Processes[i].Name == "gateway" {
			gateway = &r.Processes[i]
		}
	}
	// (30 reads may cost less than the 10 ms that /proc counts CPU time in, so no CPU check.)
	if gateway == nil || gateway.PID == 0 || gateway.PeakRSS <= 0 {
		t.Errorf("the gateway's cost is missing: %+v", r.Processes)
	}
}

// The reference loop stands in for the workers and is measured the same way: if it stopped
// delivering, writing the status the run reads back, or answering the fleet's readiness and
// counter endpoints, the comparison in the README would be against nothing.
func TestRun_reference_loop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the reference loop")
	}
	cfg := smallRun(t)
	cfg.Reference = "fasthttp"
	cfg.Gateway = false // measured in the other run
	r := run(t, cfg)
	if r.Delivered != 300 || r.Lost != 0 || r.Duplicates != 0 || !r.Settled {
		t.Errorf("counts %+v, settled %v", r.Counts, r.Settled)
	}
	if r.Verify.StatusOK != r.Verify.StatusChecked || r.Verify.StatusChecked == 0 || r.Verify.SignChecked != 0 {
		t.Errorf("verification %+v", r.Verify)
	}
	// The loop counts a POST once its status is written, which may be a moment after the
	// receiver saw the last one; the counter is read right then.
	if n := r.Workers.AttemptsSucceeded; n < 1 || n > 300 {
		t.Errorf("the loop counted %v successful POSTs, want 1 to 300", n)
	}
	if r.Settings.Reference != "fasthttp" {
		t.Errorf("report settings %+v do not name the reference loop", r.Settings)
	}
}

// smallRun is a run of 300 callbacks, at full speed, to 3 customers on 2 hosts.
func smallRun(t *testing.T) Config {
	t.Helper()
	wd, _ := os.Getwd()
	root, err := FindRepoRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.RepoRoot = root
	cfg.Duration, cfg.Count, cfg.Rate = 0, 300, 0
	cfg.Warmup = 0
	cfg.Drain = 30 * time.Second
	cfg.Hosts = 2
	cfg.Customers = 3
	cfg.Sample = 100 * time.Millisecond
	if u := os.Getenv("TEST_REDIS_URL"); u != "" {
		cfg.RedisURL = u
	}
	return cfg
}

func run(t *testing.T, cfg Config) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := Run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Callbacks held for a paused endpoint: the measured load is delivered in full beside them,
// none of them reaches the endpoint, and they are still waiting at the end.
func TestRun_small_load_beside_callbacks_held_for_a_paused_endpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the worker fleet")
	}
	cfg := smallRun(t)
	cfg.Paused = 200
	cfg.Gateway = false
	r := run(t, cfg)
	if r.Published != 300 || r.Delivered != 300 || r.Lost != 0 || r.Duplicates != 0 || !r.Settled {
		t.Errorf("counts %+v, settled %v", r.Counts, r.Settled)
	}
	if r.Held == nil || r.Held.Hits != 0 || r.Held.AckPending < 200 {
		t.Errorf("held %+v; want 200 held and no attempt", r.Held)
	}
	if r.Consumer.NumAckPending < 200 || r.Consumer.NumPending != 0 {
		t.Errorf("consumer at end %+v: the held callbacks should still be waiting", r.Consumer)
	}
}
