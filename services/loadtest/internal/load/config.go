// Package load drives the callback fleet with task completions and measures what it delivers and
// what that costs: it starts (or joins) NATS, starts worker processes against Redis, plays the
// customers' endpoints, publishes at a fixed rate or as fast as the fleet takes it, and reports
// throughput, publish-to-delivery latency, CPU per 1,000 callbacks and peak memory of every
// process, duplicates and losses.
package load

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"refonte.ai/callbacks/pkg/event"
)

// Config is one load run.
type Config struct {
	Label string // free text carried into the report

	// NATSURL joins an existing server; empty starts one. NATSBin, when set, starts that
	// nats-server binary as a process of its own (so its CPU and memory are measured apart);
	// otherwise the server runs inside this process.
	NATSURL string
	NATSBin string
	// RedisURL is the Redis the workers use; every key goes under RedisPrefix (empty: a fresh
	// "loadtest:<run>:"), deleted at the end unless Keep.
	RedisURL    string
	RedisPrefix string
	Keep        bool

	// WorkerBin is the worker executable; empty builds ./services/worker of RepoRoot.
	WorkerBin string
	// Reference, when set ("net/http" or "fasthttp"), runs the bare reference loop
	// (services/loadtest/bareloop) in the workers' place, POSTing with that client: the
	// machine's ceiling for the same load, to compare the fleet with. It does not sign, so no
	// signatures are checked. WorkerBin, if set, is then the reference loop's executable.
	Reference string
	RepoRoot  string
	Workers   int
	// Gateway runs the gateway beside the workers, so its cost is measured too; GatewayBin is
	// its executable (empty: go build ./services/gateway of RepoRoot). StatusReads is the share
	// of delivered callbacks whose status a customer then reads through it
	// (GET /v1/task/{id}/callback).
	Gateway     bool
	GatewayBin  string
	StatusReads float64
	// Concurrency and HostConcurrency set WORKER_CONCURRENCY and WORKER_HOST_CONCURRENCY
	// (0: the worker's defaults).
	Concurrency     int
	HostConcurrency int
	// RetrySchedule sets CALLBACK_RETRY_SCHEDULE (empty: the worker's default, or 1h x20 with
	// Parked).
	RetrySchedule string
	LogLevel      string
	WorkerEnv     []string // more KEY=VALUE for the workers

	Customers int // customers the load is spread over
	// SideRate, when above 0, adds a second customer on an endpoint of its own publishing this
	// many callbacks a second while the main load runs (the main load is then typically one
	// customer's burst): its latency is what a quiet customer sees behind a busy one.
	SideRate float64
	Hosts    int // receiver ports (distinct hosts for the per-host limit)
	PadBytes int // extra bytes in each task's metadata

	Rate     float64
	Duration time.Duration
	Count    int64
	Backlog  int64
	Warmup   time.Duration
	Drain    time.Duration
	MaxCount int

	Receiver       Behaviour
	SignCheckEvery int
	VerifySample   int

	// Parked callbacks go to a dead endpoint before the measured load and stay parked for
	// their next retry while it runs.
	Parked        int64
	ParkedTimeout time.Duration
	// Paused callbacks go to an endpoint paused PausedAge ago, before the measured load, and
	// are held (deferred without attempts) while it runs.
	Paused    int64
	PausedAge time.Duration

	// CPUProfile, when set, is where this process's CPU profile of the measured phase goes.
	CPUProfile string
	// PerfData, when set, is where `perf record` writes a call-graph profile of the workers,
	// the nats-server process and Redis during the measured phase (read it with perf report).
	PerfData string
	// Sample is the timeline interval.
	Sample time.Duration
}

// Defaults are the settings of a plain run.
func Defaults() Config {
	return Config{
		RedisURL:       "redis://127.0.0.1:6379/0",
		Workers:        2,
		Gateway:        true,
		LogLevel:       "warn",
		Customers:      1,
		Hosts:          1,
		Duration:       30 * time.Second,
		Backlog:        20_000,
		Warmup:         2 * time.Second,
		Drain:          60 * time.Second,
		MaxCount:       5_000_000,
		Receiver:       Behaviour{FailStatus: 500, SlowDelay: 200 * time.Millisecond},
		SignCheckEvery: 100,
		VerifySample:   200,
		ParkedTimeout:  10 * time.Minute,
		PausedAge:      time.Hour,
		Sample:         time.Second,
	}
}

// ParkedSchedule keeps parked callbacks parked for the whole run.
var ParkedSchedule = strings.TrimSuffix(strings.Repeat("1h,", 20), ",")

// Validate refuses settings that cannot give a meaningful or bounded run.
func (c Config) Validate() error {
	var errs []error
	check := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Workers < 1 || c.Workers > 64, "-workers %d: want 1 to 64", c.Workers)
	check(c.Customers < 1 || c.Customers > 10_000, "-customers %d: want 1 to 10000", c.Customers)
	check(c.Hosts < 1 || c.Hosts > 256, "-hosts %d: want 1 to 256", c.Hosts)
	// An event must stay under the workers' EVENT_MAX_BYTES (and NATS's max_payload), both
	// 1 MiB by default; the rest of a task is well under 4 KiB.
	check(c.PadBytes < 0 || c.PadBytes > event.DefaultMaxSize-4<<10, "-pad %d: want 0 to %d (events up to EVENT_MAX_BYTES, 1 MiB)",
		c.PadBytes, event.DefaultMaxSize-4<<10)
	check(c.SideRate < 0 || c.SideRate > 10_000, "-side-rate %g: want 0 to 10000", c.SideRate)
	check(c.Rate < 0, "-rate %g: want 0 (as fast as possible) or more", c.Rate)
	check(c.Duration <= 0 && c.Count <= 0, "set -duration or -count: a run must be bounded")
	check(c.Duration > 2*time.Hour, "-duration %s: at most 2h", c.Duration)
	check(c.MaxCount < 1 || c.MaxCount > 50_000_000, "-max-count %d: want 1 to 50000000", c.MaxCount)
	check(c.Count > int64(c.MaxCount), "-count %d is over -max-count %d", c.Count, c.MaxCount)
	check(c.Rate == 0 && c.Backlog < 1, "-backlog %d: want at least 1 with -rate 0", c.Backlog)
	check(c.Drain <= 0 || c.Drain > time.Hour, "-drain %s: want up to 1h", c.Drain)
	check(c.Receiver.Fail < 0 || c.Receiver.Slow < 0 || c.Receiver.Fail+c.Receiver.Slow > 1,
		"-fail %g -slow %g: want shares that add up to at most 1", c.Receiver.Fail, c.Receiver.Slow)
	check(c.Receiver.FailStatus < 300 || c.Receiver.FailStatus > 599, "-fail-status %d: want 300 to 599", c.Receiver.FailStatus)
	check(c.Parked < 0 || c.Parked > 5_000_000, "-parked %d: want 0 to 5000000", c.Parked)
	check(c.Paused < 0 || c.Paused > 5_000_000, "-paused %d: want 0 to 5000000", c.Paused)
	check(c.PausedAge < 0, "-paused-age %s: want 0 or more", c.PausedAge)
	check(c.NATSURL != "" && c.NATSBin != "", "-nats-url and -nats-bin exclude each other")
	check(c.Reference != "" && c.Reference != "net/http" && c.Reference != "fasthttp",
		"-reference %q: want net/http or fasthttp", c.Reference)
	check(c.StatusReads < 0 || c.StatusReads > 1, "-status-reads %g: want a share from 0 to 1", c.StatusReads)
	check(c.StatusReads > 0 && !c.Gateway, "-status-reads needs the gateway")
	check(c.Sample < 100*time.Millisecond, "-sample %s: at least 100ms", c.Sample)
	return errors.Join(errs...)
}
