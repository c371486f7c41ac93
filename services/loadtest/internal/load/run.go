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
	"refonte.ai/callbacks/pkg/endpoint"
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
	rn, err := newRunner(cfg, logw)
	if err != nil {
		return nil, err
	}
	defer rn.cleanUp()
	for _, step := range []func(context.Context) error{
		rn.connectRedis,
		rn.startNATS,
		rn.createCustomers,
		rn.startGateway,
		rn.startReceivers,
		rn.startFleet,
		rn.parkCallbacks,
	} {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	ph, err := rn.measuredPhase(ctx)
	if err != nil {
		return nil, err
	}
	sum := rn.recordDeliveries(ph)
	rn.recordCosts(ctx, ph)
	rn.recordState(ctx, sum)
	return rn.r, nil
}

// runner holds what one load run has started, so that each step of Run can use what the
// earlier ones set up and every one of them is stopped when the run ends.
type runner struct {
	cfg  Config
	logf func(format string, args ...any)
	id   string
	dir  string
	r    *Report
	// cleanups run in reverse order of registration, like defers.
	cleanups []func()

	rdb      *redis.Client
	prefix   string
	broker   Broker
	nc       *nats.Conn
	store    *customer.Store
	custs    []Customer
	custIDs  []string
	apiKeys  []string
	gateway  *Gateway
	reader   *StatusReader
	tracker  *Tracker
	idPrefix string
	recv     *Receiver
	dead     *DeadEndpoint
	pub      *Publisher
	schedule string
	workers  []*Worker
	cons     jetstream.Consumer
	meter    *meter
}

func newRunner(cfg Config, logw io.Writer) (*runner, error) {
	dir, err := os.MkdirTemp("", "refonte-loadtest-")
	if err != nil {
		return nil, err
	}
	rn := &runner{
		cfg: cfg,
		logf: func(format string, args ...any) {
			fmt.Fprintf(logw, "%s loadtest: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
		},
		id:  strings.ToLower(rand.Text()[:8]),
		dir: dir,
		r:   &Report{Label: cfg.Label, StartedAt: time.Now().UTC(), Machine: machine()},
	}
	rn.onCleanUp(func() { os.RemoveAll(dir) })
	if root := cfg.RepoRoot; root != "" {
		rn.r.Commit = commit(root)
	} else if wd, err := os.Getwd(); err == nil {
		if root, err := FindRepoRoot(wd); err == nil {
			rn.r.Commit = commit(root)
		}
	}
	return rn, nil
}

func (rn *runner) onCleanUp(f func()) { rn.cleanups = append(rn.cleanups, f) }

func (rn *runner) cleanUp() {
	for i := len(rn.cleanups) - 1; i >= 0; i-- {
		rn.cleanups[i]()
	}
}

// connectRedis connects to Redis and picks the key prefix of this run, whose keys are deleted
// at the end unless cfg.Keep.
func (rn *runner) connectRedis(ctx context.Context) error {
	opt, err := redis.ParseURL(rn.cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("-redis-url: %w", err)
	}
	opt.PoolSize = 64
	rn.rdb = redis.NewClient(opt)
	rn.onCleanUp(func() { rn.rdb.Close() })
	if err := rn.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", rn.cfg.RedisURL, err)
	}
	rn.prefix = rn.cfg.RedisPrefix
	if rn.prefix == "" {
		rn.prefix = "loadtest:" + rn.id + ":"
	}
	if !rn.cfg.Keep {
		rn.onCleanUp(func() {
			n, err := deleteKeys(rn.rdb, rn.prefix)
			rn.logf("deleted %d Redis keys under %q (err: %v)", n, rn.prefix, err)
		})
	}
	return nil
}

// startNATS starts (or joins) the NATS server and connects to it.
func (rn *runner) startNATS(ctx context.Context) error {
	var err error
	switch {
	case rn.cfg.NATSURL != "":
		rn.broker = External(rn.cfg.NATSURL)
		rn.r.Settings.NATS = "external " + rn.cfg.NATSURL
	case rn.cfg.NATSBin != "":
		rn.broker, err = StartProcess(ctx, rn.cfg.NATSBin, rn.dir)
		rn.r.Settings.NATS = "process " + rn.cfg.NATSBin
	default:
		rn.broker, err = StartInProcess(rn.dir)
		rn.r.Settings.NATS = "in-process"
	}
	if err != nil {
		return fmt.Errorf("start NATS: %w", err)
	}
	rn.onCleanUp(rn.broker.Close)
	rn.nc, err = nats.Connect(rn.broker.URL(), nats.Name("refonte-loadtest"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	rn.onCleanUp(rn.nc.Close)
	rn.logf("run %s: NATS %s (%s), Redis %s prefix %q", rn.id, rn.broker.URL(), rn.r.Settings.NATS, rn.cfg.RedisURL, rn.prefix)
	return nil
}

// createCustomers creates the customers the load is spread over.
func (rn *runner) createCustomers(ctx context.Context) error {
	rn.store = customer.NewStore(rn.rdb, rn.prefix)
	for i := range rn.cfg.Customers {
		id := fmt.Sprintf("lt_%s_%d", rn.id, i)
		c, err := rn.store.Create(ctx, id, "")
		if err != nil {
			return fmt.Errorf("create customer: %w", err)
		}
		rn.custs = append(rn.custs, Customer{ID: id, AuthKey: c.Live.CallbackAuthKey, SigningSecret: c.Live.SigningSecret})
		rn.custIDs = append(rn.custIDs, id)
		rn.apiKeys = append(rn.apiKeys, c.LiveAPIKey)
	}
	return nil
}

func (rn *runner) repoRoot() (string, error) {
	if rn.cfg.RepoRoot != "" {
		return rn.cfg.RepoRoot, nil
	}
	wd, _ := os.Getwd()
	return FindRepoRoot(wd)
}

// startGateway starts the gateway, where customers read their statuses, when cfg.Gateway asks
// for it, and the status reader playing those customers.
func (rn *runner) startGateway(ctx context.Context) error {
	if !rn.cfg.Gateway {
		return nil
	}
	bin := rn.cfg.GatewayBin
	if bin == "" {
		root, err := rn.repoRoot()
		if err != nil {
			return fmt.Errorf("find the repository to build the gateway: %w", err)
		}
		rn.logf("building ./services/gateway in %s", root)
		if bin, err = Build(ctx, root, rn.dir, "./services/gateway"); err != nil {
			return err
		}
	}
	var err error
	rn.gateway, err = StartGateway(ctx, bin, rn.dir, []string{"NATS_URL=" + rn.broker.URL(), "REDIS_URL=" + rn.cfg.RedisURL,
		"REDIS_PREFIX=" + rn.prefix, "LOG_LEVEL=" + rn.cfg.LogLevel})
	if err != nil {
		return fmt.Errorf("start the gateway: %w", err)
	}
	rn.onCleanUp(func() { rn.gateway.stop(15 * time.Second) })
	if rn.cfg.StatusReads > 0 {
		rn.reader = NewStatusReader(rn.gateway.URL, rn.cfg.StatusReads, rn.apiKeys)
		rn.onCleanUp(func() { rn.reader.Close() })
	}
	return nil
}

// startReceivers starts the customers' endpoints (and the dead one for parked callbacks), the
// tracker that matches arrivals to publishes, and the publisher.
func (rn *runner) startReceivers(ctx context.Context) error {
	maxCount := rn.cfg.MaxCount
	if rn.cfg.Count > 0 {
		maxCount = int(rn.cfg.Count)
	}
	rn.tracker = NewTracker(maxCount)
	rn.idPrefix = "lt-" + rn.id + "-"
	signCheckEvery := rn.cfg.SignCheckEvery
	if rn.cfg.Reference != "" {
		signCheckEvery = 0 // the reference loop does not sign
	}
	var err error
	rn.recv, err = NewReceiver(rn.tracker, rn.idPrefix, rn.cfg.Receiver, rn.cfg.Hosts, rn.custs, signCheckEvery)
	if err != nil {
		return fmt.Errorf("start the receivers: %w", err)
	}
	rn.onCleanUp(rn.recv.Close)
	if rn.reader != nil {
		rn.recv.OnSuccess(rn.reader.Arrived)
	}
	if rn.cfg.Parked > 0 || rn.cfg.Paused > 0 {
		if rn.dead, err = NewDeadEndpoint(rn.cfg.Hosts); err != nil {
			return fmt.Errorf("start the dead endpoint: %w", err)
		}
		rn.onCleanUp(rn.dead.Close)
	}
	rn.pub, err = NewPublisher(rn.nc, rn.tracker, rn.idPrefix, rn.custIDs, rn.recv.URLs(), rn.cfg.PadBytes)
	if err != nil {
		return fmt.Errorf("build the publisher: %w", err)
	}
	return rn.pub.EnsureStream(ctx)
}

// startFleet builds (unless given) and starts the workers, finds their consumer and records
// the run's settings.
func (rn *runner) startFleet(ctx context.Context) error {
	bin, err := rn.workerBin(ctx)
	if err != nil {
		return fmt.Errorf("build the worker: %w", err)
	}
	rn.schedule = rn.cfg.RetrySchedule
	if rn.schedule == "" && rn.cfg.Parked > 0 {
		rn.schedule = ParkedSchedule
	}
	rn.logf("starting %d workers (%s)", rn.cfg.Workers, bin)
	rn.workers, err = StartWorkers(ctx, bin, rn.dir, rn.cfg.Workers, rn.workerEnv())
	if err != nil {
		return fmt.Errorf("start the workers: %w", err)
	}
	rn.onCleanUp(rn.stopWorkers)
	js, err := jetstream.New(rn.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	rn.cons, err = js.Consumer(ctx, stream.DefaultConfig().Name, consumerName)
	if err != nil {
		return fmt.Errorf("the workers' consumer: %w", err)
	}
	rn.recordSettings()
	rn.meter = newMeter(rn.workers, rn.gateway, rn.broker, rn.rdb)
	rn.meter.readers = rn.reader != nil
	return nil
}

// workerBin is cfg.WorkerBin, or else the worker (or the reference loop) built from the
// repository.
func (rn *runner) workerBin(ctx context.Context) (string, error) {
	if rn.cfg.WorkerBin != "" {
		return rn.cfg.WorkerBin, nil
	}
	root, err := rn.repoRoot()
	if err != nil {
		return "", err
	}
	pkg := "./services/worker"
	if rn.cfg.Reference != "" {
		pkg = "./services/loadtest/bareloop"
	}
	rn.logf("building %s in %s", pkg, root)
	into := rn.dir
	if rn.cfg.PerfData != "" {
		into = filepath.Dir(rn.cfg.PerfData) // perf report needs the binary after this run
	}
	return Build(ctx, root, into, pkg)
}

func (rn *runner) workerEnv() []string {
	env := []string{
		"NATS_URL=" + rn.broker.URL(),
		"REDIS_URL=" + rn.cfg.RedisURL,
		"REDIS_PREFIX=" + rn.prefix,
		"CALLBACK_ALLOW_PRIVATE=true",
		"LOG_LEVEL=" + rn.cfg.LogLevel,
		"LOG_FORMAT=json",
	}
	if rn.cfg.Concurrency > 0 {
		env = append(env, "WORKER_CONCURRENCY="+strconv.Itoa(rn.cfg.Concurrency))
	}
	if rn.cfg.HostConcurrency > 0 {
		env = append(env, "WORKER_HOST_CONCURRENCY="+strconv.Itoa(rn.cfg.HostConcurrency))
	}
	if rn.schedule != "" {
		env = append(env, "CALLBACK_RETRY_SCHEDULE="+rn.schedule)
	}
	if rn.cfg.Reference != "" {
		env = append(env, "BARELOOP_HTTP="+rn.cfg.Reference)
	}
	return append(env, rn.cfg.WorkerEnv...)
}

func (rn *runner) stopWorkers() {
	StopWorkers(rn.workers, 45*time.Second)
	for _, w := range rn.workers {
		if w.err != nil && !strings.Contains(w.err.Error(), "terminated") {
			rn.logf("%s exited: %v\n%s", w.name, w.err, w.tail())
		}
	}
}

func (rn *runner) recordSettings() {
	cfg := rn.cfg
	rn.r.Settings = Settings{Workers: cfg.Workers, Concurrency: cfg.Concurrency, HostConcurrency: cfg.HostConcurrency,
		RetrySchedule: rn.schedule, Customers: cfg.Customers, Hosts: cfg.Hosts, Rate: cfg.Rate,
		Duration: cfg.Duration.String(), Count: cfg.Count, Backlog: cfg.Backlog, Warmup: cfg.Warmup.String(),
		Fail: cfg.Receiver.Fail, Slow: cfg.Receiver.Slow, SlowDelay: cfg.Receiver.SlowDelay.String(),
		Parked: cfg.Parked, Paused: cfg.Paused, NATS: rn.r.Settings.NATS, Reference: cfg.Reference,
		BodyBytes: len(Body(rn.custIDs[0], taskID(0), time.Now().UnixNano(), rn.recv.URLs()[0], rn.pub.pad))}
}

// parkCallbacks parks cfg.Parked callbacks for retry before the measured load, if asked.
func (rn *runner) parkCallbacks(ctx context.Context) error {
	if rn.cfg.Parked > 0 {
		rn.logf("parking %d callbacks at a dead endpoint (schedule %s)", rn.cfg.Parked, rn.schedule)
		var err error
		if rn.r.Parked, err = park(ctx, rn.cfg, rn.id, rn.pub, rn.dead, rn.broker, rn.cons, rn.meter, rn.logf); err != nil {
			return err
		}
	}
	if rn.cfg.Paused > 0 {
		rn.logf("holding %d callbacks for an endpoint paused %s ago", rn.cfg.Paused, rn.cfg.PausedAge)
		var err error
		if rn.r.Held, err = rn.hold(ctx); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// hold pauses the dead endpoints for every customer, as of cfg.PausedAge ago, publishes
// cfg.Paused callbacks to them and waits until the workers hold every one (deferred, no
// attempt); then it measures an idle spell.
func (rn *runner) hold(ctx context.Context) (*ParkedStats, error) {
	ps := &ParkedStats{N: rn.cfg.Paused}
	eps := endpoint.NewStore(rn.rdb, rn.prefix)
	at := time.Now().Add(-rn.cfg.PausedAge)
	for _, c := range rn.custIDs {
		for _, u := range rn.dead.URLs() {
			ep, err := endpoint.Parse(u)
			if err == nil {
				err = eps.Pause(ctx, c, environment.Live, ep, at)
			}
			if err != nil {
				return nil, fmt.Errorf("pausing %s: %w", u, err)
			}
		}
	}
	ps.MemBefore, _, _ = rn.broker.Varz()
	before := rn.dead.Hits()
	start := time.Now()
	info, err := rn.cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	already := int64(info.NumAckPending)
	held := &Publisher{js: rn.pub.js, tracker: rn.pub.tracker, customers: rn.pub.customers, targets: rn.dead.URLs(),
		taskPre: "lth_", pad: rn.pub.pad}
	for i := range rn.cfg.Paused {
		if err := held.publish(ctx, i, "lth-"+rn.id+"-", false); err != nil {
			return nil, fmt.Errorf("publishing held callbacks: %w", err)
		}
	}
	rn.pub.Flush(ctx, 30*time.Second)
	ok := waitFor(ctx, start.Add(rn.cfg.ParkedTimeout), 100*time.Millisecond, func() bool {
		info, err := rn.cons.Info(ctx)
		if err != nil {
			return false
		}
		ps.AckPending = info.NumAckPending
		return info.NumPending == 0 && int64(info.NumAckPending)-already >= rn.cfg.Paused
	})
	ps.ParkSeconds = time.Since(start).Seconds()
	ps.Hits = rn.dead.Hits() - before
	if !ok {
		return nil, fmt.Errorf("only %d of %d callbacks were held within %s", int64(ps.AckPending)-already, rn.cfg.Paused, rn.cfg.ParkedTimeout)
	}
	rn.logf("%d callbacks held in %.1fs (%d attempts reached the paused endpoint)", rn.cfg.Paused, ps.ParkSeconds, ps.Hits)
	if err := measureIdle(ctx, ps, rn.broker, rn.meter); err != nil {
		return nil, err
	}
	return ps, nil
}

// phase is what the measured phase leaves for the report.
type phase struct {
	before, after cpuSnap
	workersBefore WorkerMetrics
	published     int64
	start, pubEnd time.Time
	end           time.Time
	timeline      []Sample
	natsPeak      int64
}

// measuredPhase publishes the load, waits for it to drain and samples the fleet meanwhile.
func (rn *runner) measuredPhase(ctx context.Context) (*phase, error) {
	ph := &phase{before: rn.meter.snapshot(ctx), workersBefore: ScrapeAll(rn.workers)}
	rn.r.NATS.MemStart, _, _ = rn.broker.Varz()
	pr, err := rn.startProbes(ctx)
	if err != nil {
		return nil, err
	}
	rn.publishAndDrain(ctx, ph)
	if pr.side != nil {
		st := pr.side.Finish(10 * time.Second)
		rn.r.Side = &st
	}
	if rn.reader != nil {
		rn.r.Reads = rn.reader.Close() // the reads still queued are part of the measured phase
	}
	ph.end = time.Now()
	ph.timeline, ph.natsPeak = rn.stopProbes(pr)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ph.after = rn.meter.snapshot(ctx)
	rn.r.Workers = ScrapeAll(rn.workers).minus(ph.workersBefore)
	rn.r.NATS.MemEnd, rn.r.NATS.CPUEnd, _ = rn.broker.Varz()
	return ph, nil
}

// probes watch the measured phase: profilers, the second customer and the timeline sampler.
type probes struct {
	profile *os.File
	perf    *perfRecorder
	side    *Side
	sampler *sampler
}

func (rn *runner) startProbes(ctx context.Context) (*probes, error) {
	var (
		pr  probes
		err error
	)
	if rn.cfg.CPUProfile != "" {
		if pr.profile, err = os.Create(rn.cfg.CPUProfile); err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(pr.profile); err != nil {
			return nil, err
		}
	}
	if rn.cfg.PerfData != "" {
		if pr.perf, err = startPerf(rn.cfg.PerfData, rn.meter.pids(ctx)); err != nil {
			return nil, err
		}
		rn.onCleanUp(pr.perf.stop)
	}
	if rn.cfg.SideRate > 0 {
		sideID := fmt.Sprintf("lt_%s_side", rn.id)
		if _, err := rn.store.Create(ctx, sideID, ""); err != nil {
			return nil, fmt.Errorf("create the second customer: %w", err)
		}
		if pr.side, err = StartSide(ctx, rn.nc, sideID, "lts-"+rn.id+"-", rn.cfg.SideRate); err != nil {
			return nil, err
		}
	}
	pr.sampler = startSampler(rn.cfg.Sample, rn.tracker, rn.workers, rn.broker)
	return &pr, nil
}

func (rn *runner) stopProbes(pr *probes) (timeline []Sample, natsPeak int64) {
	if pr.profile != nil {
		pprof.StopCPUProfile()
		pr.profile.Close()
	}
	timeline, natsPeak = pr.sampler.stop()
	if pr.perf != nil {
		pr.perf.stop()
		rn.logf("perf profile of pids %v in %s", pr.perf.pids, rn.cfg.PerfData)
	}
	return timeline, natsPeak
}

// publishAndDrain publishes at the configured pace, then waits until every callback has
// settled or the drain time is up.
func (rn *runner) publishAndDrain(ctx context.Context, ph *phase) {
	cfg := rn.cfg
	rn.logf("publishing: rate %v/s (0 = max, backlog %d), duration %s, count %d", cfg.Rate, cfg.Backlog, cfg.Duration, cfg.Count)
	var err error
	ph.published, ph.start, ph.pubEnd, err = rn.pub.Run(ctx, Pace{Rate: cfg.Rate, Duration: cfg.Duration, Count: cfg.Count, Backlog: cfg.Backlog})
	if err != nil && !errors.Is(err, context.Canceled) {
		rn.logf("publishing stopped: %v", err)
	}
	rn.logf("published %d in %s; draining (up to %s)", ph.published, ph.pubEnd.Sub(ph.start).Round(time.Millisecond), cfg.Drain)
	if !rn.pub.Flush(ctx, 30*time.Second) {
		rn.logf("some publishes were still unacknowledged after 30s")
	}
	rn.r.Settled = waitFor(ctx, ph.pubEnd.Add(cfg.Drain), 10*time.Millisecond, rn.tracker.Settled)
}

// recordDeliveries reports what arrived, how fast and how late.
func (rn *runner) recordDeliveries(ph *phase) Summary {
	r := rn.r
	sum := rn.tracker.Summarize(rn.cfg.VerifySample, ph.start.Add(rn.cfg.Warmup).UnixNano())
	r.Counts = sum.Counts
	r.LatencyFirst, r.LatencySuccess = sum.First, sum.Success
	for _, seq := range sum.LostSeqs {
		r.LostSample = append(r.LostSample, rn.idPrefix+strconv.FormatInt(seq, 10))
	}
	r.PublishSeconds = ph.pubEnd.Sub(ph.start).Seconds()
	if r.PublishSeconds > 0 {
		r.OfferedPerSec = float64(ph.published) / r.PublishSeconds
	}
	r.DrainSeconds = ph.end.Sub(ph.pubEnd).Seconds()
	if last := rn.tracker.lastOK.Load(); last > 0 {
		r.OverallPerSec = float64(r.Delivered) / time.Unix(0, last).Sub(ph.start).Seconds()
	}
	if from := ph.start.Add(rn.cfg.Warmup); ph.pubEnd.Sub(from) >= time.Second {
		r.ThroughputPerSec = float64(rn.tracker.DeliveredBetween(from, ph.pubEnd)) / ph.pubEnd.Sub(from).Seconds()
	} else {
		r.ThroughputPerSec = r.OverallPerSec
	}
	return sum
}

// recordCosts reports what the measured phase cost each process, NATS and Redis.
func (rn *runner) recordCosts(ctx context.Context, ph *phase) {
	r := rn.r
	r.NATS.MemPeak = max(ph.natsPeak, r.NATS.MemEnd, r.NATS.MemStart)
	r.Timeline = ph.timeline
	r.Processes, r.Redis, r.Totals = rn.meter.costs(ph.before, ph.after, r.Delivered, ph.end.Sub(ph.start))
	if r.Delivered > 0 {
		r.Redis.BytesPerTask = float64(r.Redis.UsedMemoryDelta) / float64(r.Delivered)
	}
	// The hash encoding limit decides most of the bytes per task status (README, Performance).
	if v, err := rn.rdb.ConfigGet(ctx, "hash-max-listpack-value").Result(); err == nil {
		r.Redis.HashMaxListpackValue = v["hash-max-listpack-value"]
	}
}

// recordState reads a sample of delivered callbacks' statuses back from Redis and the
// consumer's state at the end.
func (rn *runner) recordState(ctx context.Context, sum Summary) {
	r := rn.r
	rn.logf("checking %d delivered callbacks' status in Redis", len(sum.DeliveredSeqs))
	r.Verify = verify(ctx, status.NewStore(rn.rdb, rn.prefix, 0), rn.custIDs, rn.idPrefix, sum.DeliveredSeqs)
	r.Verify.SignChecked, r.Verify.SignBad, r.Verify.SignBadExamples = rn.recv.Checks()
	if info, err := rn.cons.Info(ctx); err == nil {
		r.Consumer = ConsumerState{NumPending: info.NumPending, NumAckPending: info.NumAckPending,
			NumRedelivered: info.NumRedelivered, Delivered: info.Delivered.Stream, AckFloor: info.AckFloor.Stream}
	}
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
	if err := measureIdle(ctx, ps, b, m); err != nil {
		return nil, err
	}
	return ps, nil
}

// measureIdle measures an idle spell with everything parked: what does keeping them cost?
func measureIdle(ctx context.Context, ps *ParkedStats, b Broker, m *meter) error {
	const idle = 5 * time.Second
	before := m.snapshot(ctx)
	t := time.NewTimer(idle)
	select {
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
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
	return nil
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
