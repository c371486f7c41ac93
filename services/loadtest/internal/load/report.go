package load

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything a run measured. Its JSON form is meant to be kept per commit and compared.
type Report struct {
	Label     string    `json:"label,omitempty"`
	StartedAt time.Time `json:"started_at"`
	Commit    string    `json:"commit,omitempty"`
	Machine   Machine   `json:"machine"`
	Settings  Settings  `json:"settings"`

	Counts
	PublishSeconds float64 `json:"publish_seconds"`
	OfferedPerSec  float64 `json:"offered_per_sec"`
	// ThroughputPerSec is callbacks delivered per second while the load was on, the warm-up
	// left out; OverallPerSec counts every callback from the first publish to the last
	// delivery.
	ThroughputPerSec float64 `json:"throughput_per_sec"`
	OverallPerSec    float64 `json:"overall_per_sec"`
	DrainSeconds     float64 `json:"drain_seconds"`
	Settled          bool    `json:"settled"`

	// Latencies are publish → arrival at the receiver, of callbacks published after the warm-up.
	LatencyFirst   Percentiles `json:"latency_first_attempt"`
	LatencySuccess Percentiles `json:"latency_success"`

	Processes []ProcessCost `json:"processes"`
	Totals    []ProcessCost `json:"totals"`
	Redis     RedisCost     `json:"redis"`
	NATS      NATSStats     `json:"nats"`
	Parked    *ParkedStats  `json:"parked,omitempty"`
	// Held is the phase that held callbacks for a paused endpoint (Hits: 0, no attempt).
	Held     *ParkedStats  `json:"held,omitempty"`
	Reads    *StatusReads  `json:"status_reads,omitempty"`
	Side     *SideStats    `json:"side,omitempty"`
	Workers  WorkerMetrics `json:"worker_metrics"`
	Consumer ConsumerState `json:"consumer"`

	Verify     Verification `json:"verification"`
	LostSample []string     `json:"lost_sample,omitempty"`
	Timeline   []Sample     `json:"timeline"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemTotal  string `json:"mem_total"`
	GoVersion string `json:"go_version"`
	LoadAvg   string `json:"loadavg_at_start"`
}

// Settings echo the configuration that shapes the figures.
type Settings struct {
	Workers         int     `json:"workers"`
	Concurrency     int     `json:"worker_concurrency"`
	HostConcurrency int     `json:"worker_host_concurrency"`
	RetrySchedule   string  `json:"retry_schedule,omitempty"`
	Customers       int     `json:"customers"`
	Hosts           int     `json:"hosts"`
	Rate            float64 `json:"rate"`
	Duration        string  `json:"duration"`
	Count           int64   `json:"count"`
	Backlog         int64   `json:"backlog"`
	Warmup          string  `json:"warmup"`
	Fail            float64 `json:"fail"`
	Slow            float64 `json:"slow"`
	SlowDelay       string  `json:"slow_delay"`
	Parked          int64   `json:"parked"`
	Paused          int64   `json:"paused,omitempty"`
	NATS            string  `json:"nats"`
	BodyBytes       int     `json:"event_bytes"`
	// Reference is the reference loop's HTTP client when it stood in for the workers.
	Reference string `json:"reference,omitempty"`
}

// ProcessCost is one process's share of the work.
type ProcessCost struct {
	Name       string  `json:"name"`
	PID        int     `json:"pid,omitempty"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPer1000 is CPU seconds per 1,000 callbacks delivered.
	CPUPer1000 float64 `json:"cpu_seconds_per_1000"`
	// CPUUtil is the average number of cores busy over the measured phase.
	CPUUtil  float64 `json:"cores_busy"`
	PeakRSS  int64   `json:"peak_rss_bytes"`
	EndRSS   int64   `json:"end_rss_bytes"`
	Includes string  `json:"includes,omitempty"`
}

// RedisCost is the Redis server's share; the server may be shared with other users.
type RedisCost struct {
	ProcessCost
	UsedMemoryDelta      int64   `json:"used_memory_delta_bytes"`
	BytesPerTask         float64 `json:"bytes_per_task"`
	Version              string  `json:"version,omitempty"`
	HashMaxListpackValue string  `json:"hash_max_listpack_value,omitempty"`
}

// NATSStats are the server's own figures (varz).
type NATSStats struct {
	MemStart int64   `json:"mem_start_bytes"`
	MemPeak  int64   `json:"mem_peak_bytes"`
	MemEnd   int64   `json:"mem_end_bytes"`
	CPUEnd   float64 `json:"cpu_percent_end"`
}

// ParkedStats describe the parked-retry phase.
type ParkedStats struct {
	N               int64   `json:"n"`
	Hits            int64   `json:"first_attempts"`
	ParkSeconds     float64 `json:"seconds_to_park"`
	AckPending      int     `json:"ack_pending"`
	MemBefore       int64   `json:"nats_mem_before_bytes"`
	MemParked       int64   `json:"nats_mem_parked_bytes"`
	IdleSeconds     float64 `json:"idle_seconds"`
	IdleCPUNATS     float64 `json:"idle_cpu_seconds_nats"`
	IdleCPUWorkers  float64 `json:"idle_cpu_seconds_workers"`
	IdleCPUIncludes string  `json:"idle_cpu_nats_includes,omitempty"`
}

// ConsumerState is the workers' consumer at the end.
type ConsumerState struct {
	NumPending     uint64 `json:"num_pending"`
	NumAckPending  int    `json:"num_ack_pending"`
	NumRedelivered int    `json:"num_redelivered"`
	Delivered      uint64 `json:"delivered_stream_seq"`
	AckFloor       uint64 `json:"ack_floor_stream_seq"`
}

// Verification is the sample of delivered callbacks whose status was read back from Redis, and
// the callbacks whose signature and headers the receiver checked.
type Verification struct {
	StatusChecked   int      `json:"status_checked"`
	StatusOK        int      `json:"status_ok"`
	StatusProblems  []string `json:"status_problems,omitempty"`
	SignChecked     int64    `json:"signature_checked"`
	SignBad         int64    `json:"signature_bad"`
	SignBadExamples []string `json:"signature_bad_examples,omitempty"`
}

// Sample is one point of the timeline.
type Sample struct {
	T           float64 `json:"t"`
	Published   int64   `json:"published"`
	Delivered   int64   `json:"delivered"`
	WorkerRSS   []int64 `json:"worker_rss_bytes"`
	NATSMem     int64   `json:"nats_mem_bytes,omitempty"`
	Outstanding int64   `json:"outstanding"`
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the report: %w", err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteTable prints the report for people.
// WriteTable writes the report for a reader: the run's settings, what was delivered, latencies,
// what it cost each process, and the state left behind.
func (r *Report) WriteTable(w io.Writer) {
	r.writeHeader(w)
	fmt.Fprintln(w)
	r.writeOutcome(w)
	fmt.Fprintln(w)
	r.writeLatencies(w)
	fmt.Fprintln(w)
	r.writeCosts(w)
	r.writeState(w)
}

// writeHeader: which run, on which machine, with which settings.
func (r *Report) writeHeader(w io.Writer) {
	s := r.Settings
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	rate := "max"
	if s.Rate > 0 {
		rate = fmt.Sprintf("%g/s", s.Rate)
	}
	p("\n== load run %s  (%s, commit %s)\n", r.Label, r.StartedAt.Format(time.RFC3339), orDash(r.Commit))
	p("machine: %d CPUs %s, %s, %s, load average at start %s\n", r.Machine.CPUs, r.Machine.CPUModel,
		r.Machine.MemTotal, r.Machine.GoVersion, r.Machine.LoadAvg)
	p("settings: %d workers (concurrency %s, per host %s), %d customers, %d receiver hosts, rate %s, "+
		"duration %s, count %d, fail %.3g, slow %.3g×%s, parked %d, NATS %s, event %d B\n",
		s.Workers, orDefault(s.Concurrency), orDefault(s.HostConcurrency), s.Customers, s.Hosts, rate,
		s.Duration, s.Count, s.Fail, s.Slow, s.SlowDelay, s.Parked, s.NATS, s.BodyBytes)
	if s.Reference != "" {
		p("REFERENCE LOOP in the workers' place (services/loadtest/bareloop, %s): no signing, no profile, "+
			"no attempt claim, one Lua write per callback; this machine's ceiling, not the fleet\n", s.Reference)
	}
}

// writeOutcome: what was published and delivered, and the gateway's status reads.
func (r *Report) writeOutcome(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("published %d in %.1fs (%.0f/s offered), publish errors %d\n", r.Published, r.PublishSeconds,
		r.OfferedPerSec, r.PublishErrors)
	p("delivered %d; THROUGHPUT %.0f callbacks/s while loaded (%.0f/s first publish to last delivery)\n",
		r.Delivered, r.ThroughputPerSec, r.OverallPerSec)
	p("duplicates %d, lost %d, awaiting retry %d, failed answers %d, requests %d, drain %.1fs (settled %v)\n",
		r.Duplicates, r.Lost, r.AwaitingRetry, r.FailedAnswers, r.Requests, r.DrainSeconds, r.Settled)
	if r.Side != nil {
		p("%s\n", r.Side)
	}
	if sr := r.Reads; sr != nil {
		p("status reads through the gateway (GET /v1/task/{id}/callback, 1 in %.0f callbacks): %d, ok %d, failed %d, "+
			"not sent (readers busy) %d\n", 1/sr.Share, sr.Reads, sr.OK, sr.Failed, sr.Dropped)
		for _, f := range sr.FailedSample {
			p("  failed: %s\n", f)
		}
	}
}

// writeLatencies: the latency table.
func (r *Report) writeLatencies(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "latency (ms)\tn\tp50\tp90\tp99\tmax\t")
	for _, l := range []struct {
		name string
		p    Percentiles
	}{{"publish→first attempt", r.LatencyFirst}, {"publish→2xx", r.LatencySuccess}, {"status read (gateway)", r.readLatency()}} {
		if l.p.N == 0 && l.name == "status read (gateway)" {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t\n", l.name, l.p.N, l.p.P50, l.p.P90, l.p.P99, l.p.Max)
	}
	tw.Flush()
}

// writeCosts: CPU and memory per process, Redis and NATS memory.
func (r *Report) writeCosts(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "process\tpid\tCPU s\tCPU s/1000 cb\tcores busy\tpeak RSS MB\tend RSS MB\t")
	rows := append([]ProcessCost(nil), r.Processes...)
	rows = append(rows, r.Redis.ProcessCost)
	rows = append(rows, r.Totals...)
	for _, pc := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.4f\t%.2f\t%s\t%s\t\n", pc.Name, dash(int64(pc.PID), "%.0f", 1),
			pc.CPUSeconds, pc.CPUPer1000, pc.CPUUtil, dash(pc.PeakRSS, "%.1f", 1<<20), dash(pc.EndRSS, "%.1f", 1<<20))
	}
	tw.Flush()
	for _, pc := range rows {
		if pc.Includes != "" {
			p("  %s: %s\n", pc.Name, pc.Includes)
		}
	}
	p("redis: used memory %+.1f MB (%.0f bytes per task status); Redis %s, hash-max-listpack-value %s\n",
		mb(r.Redis.UsedMemoryDelta), r.Redis.BytesPerTask, r.Redis.Version, r.Redis.HashMaxListpackValue)
	if r.NATS.MemPeak > 0 {
		p("nats varz: mem %.1f MB at start, %.1f MB peak, %.1f MB at end\n", mb(r.NATS.MemStart), mb(r.NATS.MemPeak), mb(r.NATS.MemEnd))
	}
	if line := rssByMinute(r.Timeline); line != "" {
		p("worker RSS MB by minute (growth check):%s\n", line)
	}
}

// writeState: parked callbacks, worker counters, the consumer and the verification at the end.
func (r *Report) writeState(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	if pk := r.Parked; pk != nil {
		p("parked: %d callbacks, %d first attempts in %.1fs; %d ack-pending; NATS mem %.1f MB before, %.1f MB parked "+
			"(%+.1f MB); idle %.0fs: NATS CPU %.2fs, workers CPU %.2fs\n",
			pk.N, pk.Hits, pk.ParkSeconds, pk.AckPending, mb(pk.MemBefore), mb(pk.MemParked),
			mb(pk.MemParked-pk.MemBefore), pk.IdleSeconds, pk.IdleCPUNATS, pk.IdleCPUWorkers)
	}
	if pk := r.Held; pk != nil {
		p("held for a paused endpoint: %d callbacks in %.1fs, %d attempts; %d ack-pending; NATS mem %.1f MB before, %.1f MB held "+
			"(%+.1f MB); idle %.0fs: NATS CPU %.2fs, workers CPU %.2fs\n",
			pk.N, pk.ParkSeconds, pk.Hits, pk.AckPending, mb(pk.MemBefore), mb(pk.MemParked),
			mb(pk.MemParked-pk.MemBefore), pk.IdleSeconds, pk.IdleCPUNATS, pk.IdleCPUWorkers)
	}
	wm := r.Workers
	p("worker counters (measured phase): attempts ok %.0f, failed %.0f, deferred (host queue or window full, no attempt used) %.0f, rejected %.0f\n",
		wm.AttemptsSucceeded, wm.AttemptsFailed, wm.Deferred, wm.Rejected)
	c := r.Consumer
	p("consumer at end: pending %d, ack-pending %d, redelivered %d\n", c.NumPending, c.NumAckPending, c.NumRedelivered)
	v := r.Verify
	p("verified: status in Redis %d/%d ok; signature+headers %d checked, %d bad\n", v.StatusOK, v.StatusChecked,
		v.SignChecked, v.SignBad)
	for _, s := range append(v.StatusProblems, v.SignBadExamples...) {
		p("  problem: %s\n", s)
	}
	if len(r.LostSample) > 0 {
		p("lost (sample): %s\n", strings.Join(r.LostSample, " "))
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// rssByMinute lists the workers' RSS at the first sample of each minute and at the last sample,
// for runs of two minutes or more: a soak's memory trend at a glance.
func rssByMinute(tl []Sample) string {
	if len(tl) == 0 || tl[len(tl)-1].T < 120 {
		return ""
	}
	var b strings.Builder
	next := 60.0
	for i, s := range tl {
		if s.T < next && i != len(tl)-1 {
			continue
		}
		fmt.Fprintf(&b, " %.0fs", s.T)
		for j, rss := range s.WorkerRSS {
			sep := "/"
			if j == 0 {
				sep = " "
			}
			fmt.Fprintf(&b, "%s%.0f", sep, mb(rss))
		}
		for next <= s.T {
			next += 60
		}
	}
	return b.String()
}

// dash formats n/unit, or "-" for zero.
func dash(n int64, format string, unit float64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf(format, float64(n)/unit)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orDefault(n int) string {
	if n == 0 {
		return "default"
	}
	return fmt.Sprint(n)
}

// ReadReport reads a report written by WriteJSON.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// WriteSummary prints one line per report, for comparing runs (and commits).
func WriteSummary(w io.Writer, names []string, reports []*Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tcommit\trate\tparked\tdelivered\tcb/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\t"+
		"worker CPU s/1000\tall CPU s/1000\tworker peak RSS MB\tNATS peak MB\tdup\tlost\tverified\t")
	for i, r := range reports {
		rate := "max"
		if r.Settings.Rate > 0 {
			rate = fmt.Sprintf("%g", r.Settings.Rate)
		}
		var workerCPU, allCPU float64
		for _, t := range r.Totals {
			switch t.Name {
			case "workers (all)":
				workerCPU = t.CPUPer1000
			case "everything of the run":
				allCPU = t.CPUPer1000
			}
		}
		var peak int64
		for _, p := range r.Processes {
			if strings.HasPrefix(p.Name, "worker-") {
				peak = max(peak, p.PeakRSS)
			}
		}
		name := r.Label
		if name == "" {
			name = names[i]
		}
		if r.Settings.Reference != "" {
			name += " (reference loop, " + r.Settings.Reference + ")"
		}
		l := r.LatencySuccess
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t%.4f\t%.4f\t%.1f\t%.1f\t%d\t%d\t%d/%d\t\n",
			name, orDash(r.Commit), rate, r.Settings.Parked, r.Delivered, r.ThroughputPerSec, l.P50, l.P90, l.P99, l.Max,
			workerCPU, allCPU, mb(peak), mb(r.NATS.MemPeak), r.Duplicates, r.Lost, r.Verify.StatusOK, r.Verify.StatusChecked)
	}
	tw.Flush()
}

func (r *Report) readLatency() Percentiles {
	if r.Reads == nil {
		return Percentiles{}
	}
	return r.Reads.Latency
}
