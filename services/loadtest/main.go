// Command loadtest measures the callback fleet: it starts NATS (or joins one), worker processes
// against Redis and an in-process receiver playing the customers, publishes task completions at a
// fixed rate or as fast as the fleet takes them, and reports throughput, publish-to-delivery
// latency, CPU per 1,000 callbacks and peak RSS of every process, duplicates and losses, as a
// table and as JSON.
//
//	go run ./services/loadtest -duration 30s -rate 0 -json max.json
//	go run ./services/loadtest -duration 20s -rate 5000 -json 5k.json
//	go run ./services/loadtest -parked 100000 -duration 30s -rate 0 -json parked.json
//	go run ./services/loadtest -paused 100000 -duration 30s -rate 0 -json paused.json
//	go run ./services/loadtest -summarize max.json 5k.json parked.json
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"refonte.ai/callbacks/services/loadtest/internal/load"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		// The first Ctrl-C stops the run and cleans up; a second one ends the tool at once (its
		// children die with it).
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, context.Canceled) {
			err = errors.New("interrupted; everything the run started has been stopped (and its Redis keys deleted, unless -keep)")
		}
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// options are the command line's choices beyond the run's configuration.
type options struct {
	jsonPath  string
	summarize bool
	reports   []string // with summarize: the JSON reports to summarize
}

func run(ctx context.Context, args []string) error {
	cfg, opt, err := parseFlags(args)
	if err != nil {
		return err
	}
	if opt.summarize {
		return summarize(opt.reports)
	}
	rep, err := load.Run(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	rep.WriteTable(os.Stdout)
	if opt.jsonPath != "" {
		if err := rep.WriteJSON(opt.jsonPath); err != nil {
			return err
		}
		fmt.Printf("\nreport written to %s\n", opt.jsonPath)
	}
	return nil
}

// summarize prints one line per JSON report.
func summarize(paths []string) error {
	var reports []*load.Report
	for _, path := range paths {
		r, err := load.ReadReport(path)
		if err != nil {
			return err
		}
		reports = append(reports, r)
	}
	load.WriteSummary(os.Stdout, paths, reports)
	return nil
}

// parseFlags is long because it is the tool's list of flags, one a line; it reads best whole.
func parseFlags(args []string) (load.Config, options, error) {
	cfg := load.Defaults()
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.StringVar(&cfg.Label, "label", "", "free text carried into the report")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "use this NATS server (a dedicated one) instead of starting one")
	fs.StringVar(&cfg.NATSBin, "nats-bin", "", "start this nats-server binary as its own process (CPU/RSS measured apart); default: in-process server")
	fs.StringVar(&cfg.RedisURL, "redis-url", cfg.RedisURL, "Redis for the workers")
	fs.StringVar(&cfg.RedisPrefix, "redis-prefix", "", `key prefix (default "loadtest:<run id>:"); its keys are deleted at the end`)
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the run's Redis keys")
	fs.StringVar(&cfg.WorkerBin, "worker-bin", "", "worker executable (default: go build ./services/worker; with -reference, the reference loop's)")
	fs.StringVar(&cfg.Reference, "reference", "", "run the bare reference loop (services/loadtest/bareloop) in the workers' place, POSTing with net/http or fasthttp: this machine's ceiling for the same load")
	fs.BoolVar(&cfg.Gateway, "gateway", cfg.Gateway, "run the gateway too (its CPU and memory are measured)")
	fs.StringVar(&cfg.GatewayBin, "gateway-bin", "", "gateway executable (default: go build ./services/gateway)")
	fs.Float64Var(&cfg.StatusReads, "status-reads", 0, "share of delivered callbacks whose status a customer reads through the gateway right after it arrives (GET /v1/task/{id}/callback)")
	fs.StringVar(&cfg.RepoRoot, "repo", "", "repository root to build the worker from (default: the go.work above the current directory)")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "worker processes")
	fs.IntVar(&cfg.Concurrency, "concurrency", 0, "WORKER_CONCURRENCY (0: the worker's default)")
	fs.IntVar(&cfg.HostConcurrency, "host-concurrency", 0, "WORKER_HOST_CONCURRENCY (0: the worker's default)")
	fs.StringVar(&cfg.RetrySchedule, "retry-schedule", "", "CALLBACK_RETRY_SCHEDULE (default: the worker's; 1h x20 with -parked)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "LOG_LEVEL of the workers")
	var workerEnv listFlag
	fs.Var(&workerEnv, "worker-env", "extra KEY=VALUE for the workers (repeatable)")
	fs.IntVar(&cfg.Customers, "customers", cfg.Customers, "customers the load is spread over")
	fs.IntVar(&cfg.Hosts, "hosts", cfg.Hosts, "receiver ports, i.e. distinct callback hosts")
	fs.IntVar(&cfg.PadBytes, "pad", 0, "extra bytes in each task's metadata")
	fs.Float64Var(&cfg.SideRate, "side-rate", 0, "a second customer on an endpoint of its own publishes this many callbacks/s during the load; its latency is reported apart (0: none)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "callbacks published per second (0: as fast as the fleet takes them, see -backlog)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long to publish (0 with -count: until count)")
	fs.Int64Var(&cfg.Count, "count", 0, "how many callbacks to publish (0: as many as -duration allows)")
	fs.Int64Var(&cfg.Backlog, "backlog", cfg.Backlog, "with -rate 0: most callbacks published but not yet received")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "first part of the load left out of throughput and latency")
	fs.DurationVar(&cfg.Drain, "drain", cfg.Drain, "after publishing, how long to wait for the last deliveries")
	fs.IntVar(&cfg.MaxCount, "max-count", cfg.MaxCount, "hard cap on callbacks published")
	fs.Float64Var(&cfg.Receiver.Fail, "fail", 0, "share of requests the receiver fails")
	fs.IntVar(&cfg.Receiver.FailStatus, "fail-status", cfg.Receiver.FailStatus, "HTTP status of a failed answer")
	fs.Float64Var(&cfg.Receiver.Slow, "slow", 0, "share of requests the receiver answers late")
	fs.DurationVar(&cfg.Receiver.SlowDelay, "slow-delay", cfg.Receiver.SlowDelay, "how late a slow answer is")
	fs.IntVar(&cfg.SignCheckEvery, "sign-check-every", cfg.SignCheckEvery, "verify signature and headers of every n-th callback (0: none)")
	fs.IntVar(&cfg.VerifySample, "verify", cfg.VerifySample, "delivered callbacks whose status is read back from Redis")
	fs.Int64Var(&cfg.Parked, "parked", 0, "callbacks parked for retry at a dead endpoint before the measured load")
	fs.DurationVar(&cfg.ParkedTimeout, "parked-timeout", cfg.ParkedTimeout, "how long parking may take")
	fs.Int64Var(&cfg.Paused, "paused", 0, "callbacks held for a paused endpoint before the measured load")
	fs.DurationVar(&cfg.PausedAge, "paused-age", cfg.PausedAge, "how long ago that endpoint was paused (a longer pause is rechecked less often)")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write this process's CPU profile of the measured phase (receiver, publisher, in-process NATS)")
	fs.StringVar(&cfg.PerfData, "perf", "", "record a perf (call graph) profile of the workers, nats-server and Redis during the measured phase into this file")
	fs.DurationVar(&cfg.Sample, "sample", cfg.Sample, "timeline interval")
	jsonPath := fs.String("json", "", "also write the report as JSON to this file")
	summarizeOnly := fs.Bool("summarize", false, "print one line per JSON report named in the arguments, and exit")
	if err := fs.Parse(args); err != nil {
		return cfg, options{}, err
	}
	opt := options{jsonPath: *jsonPath, summarize: *summarizeOnly}
	if opt.summarize {
		opt.reports = fs.Args()
		return cfg, opt, nil
	}
	if fs.NArg() > 0 {
		return cfg, opt, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.WorkerEnv = workerEnv
	return cfg, opt, nil
}
