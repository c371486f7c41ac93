package load

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
)

// consumerName is the workers' durable consumer (their NATS_CONSUMER default).
const consumerName = "callback-workers"

// Run performs one load run and returns its report. Everything it starts — NATS, workers,
// receivers — is stopped, and every Redis key it wrote deleted (unless cfg.Keep), before it
// returns, also when ctx is cancelled.
func Run(ctx context.Context, cfg Config, logw io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(logw, "%s loadtest: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	runID := strings.ToLower(rand.Text()[:8])
	dir, err := os.MkdirTemp("", "refonte-loadtest-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	r := &Report{Label: cfg.Label, StartedAt: time.Now().UTC(), Machine: machine()}
	if root := cfg.RepoRoot; root != "" {
		r.Commit = commit(root)
	} else if wd, err := os.Getwd(); err == nil {
		if root, err := FindRepoRoot(wd); err == nil {
			r.Commit = commit(root)
		}
	}

	// Redis, under a prefix of this run's own.
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("-redis-url: %w", err)
	}
	opt.PoolSize = 64
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis at %s: %w", cfg.RedisURL, err)
	}
	prefix := cfg.RedisPrefix
	if prefix == "" {
		prefix = "loadtest:" + runID + ":"
	}
	if !cfg.Keep {
		defer func() {
			n, err := deleteKeys(rdb, prefix)
			logf("deleted %d Redis keys under %q (err: %v)", n, prefix, err)
		}()
	}

	// NATS.
	var broker Broker
	switch {
	case cfg.NATSURL != "":
		broker = External(cfg.NATSURL)
		r.Settings.NATS = "external " + cfg.NATSURL
	case cfg.NATSBin != "":
		broker, err = StartProcess(ctx, cfg.NATSBin, dir)
		r.Settings.NATS = "process " + cfg.NATSBin
	default:
		broker, err = StartInProcess(dir)
		r.Settings.NATS = "in-process"
	}
	if err != nil {
		return nil, err
	}
	defer broker.Close()
	nc, err := nats.Connect(broker.URL(), nats.Name("refonte-loadtest"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	logf("run %s: NATS %s (%s), Redis %s prefix %q", runID, broker.URL(), r.Settings.NATS, cfg.RedisURL, prefix)

	// Customers and their endpoints.
	store := customer.NewStore(rdb, prefix)
	var (
		custs   []Customer
		custIDs []string
		apiKeys []string
	)
	for i := range cfg.Customers {
		id := fmt.Sprintf("lt_%s_%d", runID, i)
		c, err := store.Create(ctx, id, "")
		if err != nil {
			return nil, fmt.Errorf("create customer: %w", err)
		}
		custs = append(custs, Customer{ID: id, AuthKey: c.Live.CallbackAuthKey, SigningSecret: c.Live.SigningSecret})
		custIDs = append(custIDs, id)
		apiKeys = append(apiKeys, c.LiveAPIKey)
	}

	// The gateway, where customers read their statuses.
	repoRoot := func() (string, error) {
		if cfg.RepoRoot != "" {
			return cfg.RepoRoot, nil
		}
		wd, _ := os.Getwd()
		return FindRepoRoot(wd)
	}
	var (
		gateway *Gateway
		reader  *StatusReader
	)
	if cfg.Gateway {
		bin := cfg.GatewayBin
		if bin == "" {
			root, err := repoRoot()
			if err != nil {
				return nil, err
			}
			logf("building ./services/gateway in %s", root)
			if bin, err = Build(ctx, root, dir, "./services/gateway"); err != nil {
				return nil, err
			}
		}
		gateway, err = StartGateway(ctx, bin, dir, []string{"NATS_URL=" + broker.URL(), "REDIS_URL=" + cfg.RedisURL,
			"REDIS_PREFIX=" + prefix, "LOG_LEVEL=" + cfg.LogLevel})
		if err != nil {
			return nil, err
		}
		defer gateway.stop(15 * time.Second)
		if cfg.StatusReads > 0 {
			reader = NewStatusReader(gateway.URL, cfg.StatusReads, apiKeys)
			defer reader.Close()
		}
	}
	maxCount := cfg.MaxCount
	if cfg.Count > 0 {
		maxCount = int(cfg.Count)
	}
	tracker := NewTracker(maxCount)
	idPrefix := "lt-" + runID + "-"
	signCheckEvery := cfg.SignCheckEvery
	if cfg.Reference != "" {
		signCheckEvery = 0 // the reference loop does not sign
	}
	recv, err := NewReceiver(tracker, idPrefix, cfg.Receiver, cfg.Hosts, custs, signCheckEvery)
	if err != nil {
		return nil, err
	}
	defer recv.Close()
	if reader != nil {
		recv.OnSuccess(reader.Arrived)
	}
	var dead *DeadEndpoint
	if cfg.Parked > 0 {
		if dead, err = NewDeadEndpoint(cfg.Hosts); err != nil {
			return nil, err
		}
		defer dead.Close()
	}
	pub, err := NewPublisher(nc, tracker, idPrefix, custIDs, recv.URLs(), cfg.PadBytes)
	if err != nil {
		return nil, err
	}
	if err := pub.EnsureStream(ctx); err != nil {
		return nil, err
	}

	// The fleet.
	bin := cfg.WorkerBin
	if bin == "" {
		root, err := repoRoot()
		if err != nil {
			return nil, err
		}
		pkg := "./services/worker"
		if cfg.Reference != "" {
			pkg = "./services/loadtest/bareloop"
		}
		logf("building %s in %s", pkg, root)
		into := dir
		if cfg.PerfData != "" {
			into = filepath.Dir(cfg.PerfData) // perf report needs the binary after this run
		}
		if bin, err = Build(ctx, root, into, pkg); err != nil {
			return nil, err
		}
	}
	schedule := cfg.RetrySchedule
	if schedule == "" && cfg.Parked > 0 {
		schedule = ParkedSchedule
	}
	env := []string{
		"NATS_URL=" + broker.URL(),
		"REDIS_URL=" + cfg.RedisURL,
		"REDIS_PREFIX=" + prefix,
		"CALLBACK_ALLOW_PRIVATE=true",
		"LOG_LEVEL=" + cfg.LogLevel,
		"LOG_FORMAT=json",
	}
	if cfg.Concurrency > 0 {
		env = append(env, "WORKER_CONCURRENCY="+strconv.Itoa(cfg.Concurrency))
	}
	if cfg.HostConcurrency > 0 {
		env = append(env, "WORKER_HOST_CONCURRENCY="+strconv.Itoa(cfg.HostConcurrency))
	}
	if schedule != "" {
		env = append(env, "CALLBACK_RETRY_SCHEDULE="+schedule)
	}
	if cfg.Reference != "" {
		env = append(env, "BARELOOP_HTTP="+cfg.Reference)
	}
	env = append(env, cfg.WorkerEnv...)
	logf("starting %d workers (%s)", cfg.Workers, bin)
	workers, err := StartWorkers(ctx, bin, dir, cfg.Workers, env)
	if err != nil {
		return nil, err
	}
	defer func() {
		StopWorkers(workers, 45*time.Second)
		for _, w := range workers {
			if w.err != nil && !strings.Contains(w.err.Error(), "terminated") {
				logf("%s exited: %v\n%s", w.name, w.err, w.tail())
			}
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cons, err := js.Consumer(ctx, stream.DefaultConfig().Name, consumerName)
	if err != nil {
		return nil, fmt.Errorf("the workers' consumer: %w", err)
	}

	r.Settings = Settings{Workers: cfg.Workers, Concurrency: cfg.Concurrency, HostConcurrency: cfg.HostConcurrency,
		RetrySchedule: schedule, Customers: cfg.Customers, Hosts: cfg.Hosts, Rate: cfg.Rate,
		Duration: cfg.Duration.String(), Count: cfg.Count, Backlog: cfg.Backlog, Warmup: cfg.Warmup.String(),
		Fail: cfg.Receiver.Fail, Slow: cfg.Receiver.Slow, SlowDelay: cfg.Receiver.SlowDelay.String(),
		Parked: cfg.Parked, NATS: r.Settings.NATS, Reference: cfg.Reference,
		BodyBytes: len(Body(custIDs[0], taskID(0), time.Now().UnixNano(), recv.URLs()[0], pub.pad))}

	// Who is measured.
	meter := newMeter(workers, gateway, broker, rdb)
	meter.readers = reader != nil

	if cfg.Parked > 0 {
		logf("parking %d callbacks at a dead endpoint (schedule %s)", cfg.Parked, schedule)
		if r.Parked, err = park(ctx, cfg, runID, pub, dead, broker, cons, meter, logf); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// The measured phase.
	before := meter.snapshot(ctx)
	wmBefore := ScrapeAll(workers)
	r.NATS.MemStart, _, _ = broker.Varz()
	var profile *os.File
	if cfg.CPUProfile != "" {
		if profile, err = os.Create(cfg.CPUProfile); err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(profile); err != nil {
			return nil, err
		}
	}
	var perf *perfRecorder
	if cfg.PerfData != "" {
		if perf, err = startPerf(cfg.PerfData, meter.pids(ctx)); err != nil {
			return nil, err
		}
		defer perf.stop()
	}
	var side *Side
	if cfg.SideRate > 0 {
		sideID := fmt.Sprintf("lt_%s_side", runID)
		if _, err := store.Create(ctx, sideID, ""); err != nil {
			return nil, fmt.Errorf("create the second customer: %w", err)
		}
		if side, err = StartSide(ctx, nc, sideID, "lts-"+runID+"-", cfg.SideRate); err != nil {
			return nil, err
		}
	}
	sampler := startSampler(cfg.Sample, tracker, workers, broker)
	logf("publishing: rate %v/s (0 = max, backlog %d), duration %s, count %d", cfg.Rate, cfg.Backlog, cfg.Duration, cfg.Count)
	published, start, pubEnd, pubErr := pub.Run(ctx, Pace{Rate: cfg.Rate, Duration: cfg.Duration, Count: cfg.Count, Backlog: cfg.Backlog})
	if pubErr != nil && !errors.Is(pubErr, context.Canceled) {
		logf("publishing stopped: %v", pubErr)
	}
	logf("published %d in %s; draining (up to %s)", published, pubEnd.Sub(start).Round(time.Millisecond), cfg.Drain)
	if !pub.Flush(ctx, 30*time.Second) {
		logf("some publishes were still unacknowledged after 30s")
	}
	r.Settled = waitFor(ctx, pubEnd.Add(cfg.Drain), 10*time.Millisecond, tracker.Settled)
	if side != nil {
		st := side.Finish(10 * time.Second)
		r.Side = &st
	}
	if reader != nil {
		r.Reads = reader.Close() // the reads still queued are part of the measured phase
	}
	end := time.Now()
	if profile != nil {
		pprof.StopCPUProfile()
		profile.Close()
	}
	timeline, natsPeak := sampler.stop()
	if perf != nil {
		perf.stop()
		logf("perf profile of pids %v in %s", perf.pids, cfg.PerfData)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	after := meter.snapshot(ctx)
	r.Workers = ScrapeAll(workers).minus(wmBefore)
	r.NATS.MemEnd, r.NATS.CPUEnd, _ = broker.Varz()
	r.NATS.MemPeak = max(natsPeak, r.NATS.MemEnd, r.NATS.MemStart)
	r.Timeline = timeline

	sum := tracker.Summarize(cfg.VerifySample, start.Add(cfg.Warmup).UnixNano())
	r.Counts = sum.Counts
	r.LatencyFirst, r.LatencySuccess = sum.First, sum.Success
	for _, seq := range sum.LostSeqs {
		r.LostSample = append(r.LostSample, idPrefix+strconv.FormatInt(seq, 10))
	}
	r.PublishSeconds = pubEnd.Sub(start).Seconds()
	if r.PublishSeconds > 0 {
		r.OfferedPerSec = float64(published) / r.PublishSeconds
	}
	r.DrainSeconds = end.Sub(pubEnd).Seconds()
	if last := tracker.lastOK.Load(); last > 0 {
		r.OverallPerSec = float64(r.Delivered) / time.Unix(0, last).Sub(start).Seconds()
	}
	if from := start.Add(cfg.Warmup); pubEnd.Sub(from) >= time.Second {
		r.ThroughputPerSec = float64(tracker.DeliveredBetween(from, pubEnd)) / pubEnd.Sub(from).Seconds()
	} else {
		r.ThroughputPerSec = r.OverallPerSec
	}
	r.Processes, r.Redis, r.Totals = meter.costs(before, after, r.Delivered, end.Sub(start))
	if r.Delivered > 0 {
		r.Redis.BytesPerTask = float64(r.Redis.UsedMemoryDelta) / float64(r.Delivered)
	}
	// The hash encoding limit decides most of the bytes per task status (README, Performance).
	if v, err := rdb.ConfigGet(ctx, "hash-max-listpack-value").Result(); err == nil {
		r.Redis.HashMaxListpackValue = v["hash-max-listpack-value"]
	}

	logf("checking %d delivered callbacks' status in Redis", len(sum.DeliveredSeqs))
	r.Verify = verify(ctx, status.NewStore(rdb, prefix, 0), custIDs, idPrefix, sum.DeliveredSeqs)
	r.Verify.SignChecked, r.Verify.SignBad, r.Verify.SignBadExamples = recv.Checks()
	if info, err := cons.Info(ctx); err == nil {
		r.Consumer = ConsumerState{NumPending: info.NumPending, NumAckPending: info.NumAckPending,
			NumRedelivered: info.NumRedelivered, Delivered: info.Delivered.Stream, AckFloor: info.AckFloor.Stream}
	}
	return r, nil
}

// park publishes cfg.Parked callbacks to a dead endpoint and waits until every one has had its
// first attempt and sits in the consumer waiting for its retry; then it measures an idle spell.
func park(ctx context.Context, cfg Config, runID string, pub *Publisher, dead *DeadEndpoint, b Broker,
	cons jetstream.Consumer, m *meter, logf func(string, ...any)) (*ParkedStats, error) {
	ps := &ParkedStats{N: cfg.Parked}
	ps.MemBefore, _, _ = b.Varz()
	start := time.Now()
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- pub.PublishParked(pctx, cfg.Parked, "ltp-"+runID+"-", dead.URLs(), dead.Hits, 20_000) }()
	ok := waitFor(ctx, start.Add(cfg.ParkedTimeout), 20*time.Millisecond, func() bool {
		select {
		case err := <-errc:
			if err != nil {
				errc <- err
				return true
			}
		default:
		}
		return dead.Hits() >= cfg.Parked
	})
	select {
	case err := <-errc:
		if err != nil {
			return nil, fmt.Errorf("publishing parked callbacks: %w", err)
		}
	default:
	}
	ps.Hits = dead.Hits()
	ps.ParkSeconds = time.Since(start).Seconds()
	if !ok {
		return nil, fmt.Errorf("only %d of %d parked callbacks were attempted within %s", ps.Hits, cfg.Parked, cfg.ParkedTimeout)
	}
	pub.Flush(ctx, 30*time.Second)
	logf("%d first attempts in %.1fs; waiting until all are parked", ps.Hits, ps.ParkSeconds)
	waitFor(ctx, time.Now().Add(time.Minute), 100*time.Millisecond, func() bool {
		info, err := cons.Info(ctx)
		if err != nil {
			return false
		}
		ps.AckPending = info.NumAckPending
		return info.NumPending == 0 && int64(info.NumAckPending) >= cfg.Parked
	})
	// An idle spell with everything parked: what does keeping them cost?
	const idle = 5 * time.Second
	before := m.snapshot(ctx)
	t := time.NewTimer(idle)
	select {
	case <-ctx.Done():
		t.Stop()
		return nil, ctx.Err()
	case <-t.C:
	}
	after := m.snapshot(ctx)
	ps.IdleSeconds = idle.Seconds()
	ps.IdleCPUNATS = after.nats - before.nats
	if b.PID() == 0 {
		ps.IdleCPUNATS = after.self - before.self
		ps.IdleCPUIncludes = "this whole process (in-process NATS, idle receiver and publisher)"
	}
	for i := range after.workers {
		ps.IdleCPUWorkers += after.workers[i] - before.workers[i]
	}
	ps.MemParked, _, _ = b.Varz()
	return ps, nil
}

// waitFor checks cond every interval until it holds (true), the deadline passes or ctx ends.
func waitFor(ctx context.Context, deadline time.Time, interval time.Duration, cond func() bool) bool {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// verify reads back the status of delivered callbacks: each must be succeeded, with
// callback_succeeded true and a 2xx attempt in its log. A status written a moment after the
// receiver answered gets a few seconds to appear.
func verify(ctx context.Context, st *status.Store, custIDs []string, idPrefix string, seqs []int64) Verification {
	v := Verification{StatusChecked: len(seqs)}
	problem := func(seq int64) string {
		cust := custIDs[seq%int64(len(custIDs))]
		rec, err := st.Get(ctx, cust, environment.Live, taskID(seq))
		switch {
		case err != nil:
			return err.Error()
		case rec.Succeeded == nil || !*rec.Succeeded:
			return "callback_succeeded is not true"
		case rec.State != status.Succeeded:
			return "state " + string(rec.State)
		case rec.WebhookID != idPrefix+strconv.FormatInt(seq, 10):
			return "webhook id " + rec.WebhookID
		case len(rec.Log) == 0 || rec.Log[len(rec.Log)-1].StatusCode/100 != 2:
			return "no 2xx attempt in the log"
		}
		return ""
	}
	pending := seqs
	var last map[int64]string
	waitFor(ctx, time.Now().Add(5*time.Second), 100*time.Millisecond, func() bool {
		last = map[int64]string{}
		var still []int64
		for _, seq := range pending {
			if p := problem(seq); p != "" {
				last[seq] = p
				still = append(still, seq)
			}
		}
		pending = still
		return len(pending) == 0
	})
	v.StatusOK = len(seqs) - len(pending)
	for _, seq := range pending {
		if len(v.StatusProblems) < 10 {
			v.StatusProblems = append(v.StatusProblems, fmt.Sprintf("%s%d: %s", idPrefix, seq, last[seq]))
		}
	}
	return v
}

// deleteKeys removes every key under prefix.
func deleteKeys(rdb *redis.Client, prefix string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := 0
	iter := rdb.Scan(ctx, 0, prefix+"*", 5000).Iterator()
	batch := make([]string, 0, 5000)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := rdb.Unlink(ctx, batch...).Err()
		n += len(batch)
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := flush(); err != nil {
		return n, err
	}
	return n, iter.Err()
}
