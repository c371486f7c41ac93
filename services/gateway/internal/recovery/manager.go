package recovery

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

// Sender re-sends one stored callback the way send-callback does.
type Sender interface {
	// Resend returns the stream sequence of the new delivery. An error wrapping ErrSkip means
	// this task cannot be re-sent as it is (no usable target, unreadable); ErrCustomerGone
	// ends the recovery; any other error is worth retrying. dedupID is the same for every try
	// of one task by one recovery: the stream drops a try that repeats one it stored already
	// and answers that one's sequence.
	Resend(ctx context.Context, customerID string, env environment.Env, taskID, dedupID string) (chain uint64, err error)
}

var (
	// ErrSkip marks a task that a recovery passes over.
	ErrSkip = errors.New("not re-sendable")
	// ErrCustomerGone: the customer no longer exists.
	ErrCustomerGone = errors.New("the customer no longer exists")
	// ErrNotRunning: the manager is not running (not started yet, or stopping).
	ErrNotRunning = errors.New("recoveries are not running")
	// errCancelled is why a runner stops when its recovery is cancelled through this gateway.
	errCancelled = errors.New("recovery cancelled")
)

// BusyError: MaxRunning recoveries are unfinished already, across all customers.
type BusyError struct{ Max int }

func (e *BusyError) Error() string {
	return fmt.Sprintf("%d recoveries are running across all customers, the most allowed at once", e.Max)
}

// admit lists a new recovery in the registry unless it lists MaxRunning already. One key, so it
// runs on Redis Cluster too.
//
// KEYS[1] the registry; ARGV[1] the member, ARGV[2] its score (lease end, ms), ARGV[3] the most
// listed at once. Reply: 1 listed, 0 full.
var admit = redis.NewScript(`
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
`)

// Config tunes the manager.
type Config struct {
	// RatePerSecond is the most re-sends per second per customer, across all its recoveries
	// and all gateways.
	RatePerSecond float64
	// MaxInFlight bounds a recovery's re-sends that are queued but whose first attempt has
	// not been recorded yet: when the customer's endpoint is slow, the rate alone would pile
	// re-sends up in the stream and in the workers' per-host share.
	MaxInFlight int
	// MaxActive is the most recoveries one customer may have unfinished at once.
	MaxActive int
	// MaxRunning is the most recoveries unfinished at once across every customer and gateway:
	// each paces its own customer only, so this bounds what all of them add to the stream.
	MaxRunning int
	// Lease is how long a gateway owns a recovery without renewing; a recovery whose gateway
	// died is resumed by another after at most Lease + ResumeEvery.
	Lease       time.Duration
	ResumeEvery time.Duration
	// StallAfter stops counting a re-send as in flight when no attempt of it shows after this
	// long (say the worker refused it), so it cannot hold the recovery forever.
	StallAfter time.Duration
	// PageSize is how many index entries one read takes.
	PageSize int
	// SettleEvery is how often outcomes of re-deliveries are collected.
	SettleEvery time.Duration
	// Abandon counts a re-send as done (neither succeeded nor failed) when no worker has begun
	// it after this long: past the stream's max age its message is gone, and a worker may
	// also have refused it (the customer was deleted). Without it such a re-send would keep
	// its recovery delivering forever.
	Abandon time.Duration
}

func (c *Config) setDefaults() {
	if c.RatePerSecond <= 0 {
		c.RatePerSecond = 50
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 16
	}
	if c.MaxActive <= 0 {
		c.MaxActive = 3
	}
	if c.MaxRunning <= 0 {
		c.MaxRunning = 20
	}
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.ResumeEvery <= 0 {
		c.ResumeEvery = 10 * time.Second
	}
	if c.StallAfter <= 0 {
		c.StallAfter = time.Minute
	}
	if c.PageSize <= 0 {
		c.PageSize = 200
	}
	if c.SettleEvery <= 0 {
		c.SettleEvery = 250 * time.Millisecond
	}
	if c.Abandon <= 0 {
		c.Abandon = 73 * time.Hour // the default stream max age, and an hour
	}
}

// Manager starts recoveries, runs them in goroutines that live as long as Run, and resumes
// those that another gateway left behind.
type Manager struct {
	cfg     Config
	store   *Store
	sender  Sender
	log     *zap.Logger
	owner   string
	metrics *metrics

	mu       sync.Mutex
	ctx      context.Context                    // Run's; nil before Run and once it stops
	running  map[string]context.CancelCauseFunc // by member: stops that recovery's runner
	runners  sync.WaitGroup
	interval time.Duration
}

// NewManager builds a manager; its metrics go to reg.
func NewManager(cfg Config, store *Store, sender Sender, log *zap.Logger, reg prometheus.Registerer) *Manager {
	cfg.setDefaults()
	return &Manager{
		cfg: cfg, store: store, sender: sender, log: log,
		owner:    "gw_" + rand.Text(),
		metrics:  newMetrics(reg),
		running:  make(map[string]context.CancelCauseFunc),
		interval: time.Duration(float64(time.Second) / cfg.RatePerSecond),
	}
}

// Run resumes recoveries that no gateway owns, now and every ResumeEvery, until ctx ends; then
// it stops the recoveries it runs, hands them on (see release) and returns.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	t := time.NewTicker(m.cfg.ResumeEvery)
	defer t.Stop()
	for {
		m.resume(ctx)
		select {
		case <-ctx.Done():
			m.mu.Lock()
			m.ctx = nil
			m.mu.Unlock()
			m.runners.Wait()
			return nil
		case <-t.C:
		}
	}
}

// Start records a new recovery and starts running it.
func (m *Manager) Start(ctx context.Context, customerID string, p Params) (Recovery, error) {
	if !m.active() {
		return Recovery{}, ErrNotRunning
	}
	id := "rcv_" + rand.Text()
	// Listed before it exists: a gateway that dies in between leaves a listing without a
	// record, which resume drops, never a record nobody would resume. The listing is also
	// what the cap across customers counts.
	listed, err := admit.Run(ctx, m.store.rdb, []string{m.store.registry()}, member(customerID, p.Env, id),
		time.Now().Add(m.cfg.Lease).UnixMilli(), m.cfg.MaxRunning).Int()
	if err != nil {
		return Recovery{}, fmt.Errorf("recovery registry: %w", err)
	}
	if listed == 0 {
		return Recovery{}, &BusyError{Max: m.cfg.MaxRunning}
	}
	if err := m.store.create(ctx, customerID, p.Env, id, m.owner, p, m.cfg.Lease, m.cfg.MaxActive); err != nil {
		m.store.rdb.ZRem(context.WithoutCancel(ctx), m.store.registry(), member(customerID, p.Env, id))
		return Recovery{}, err
	}
	rec, err := m.store.Get(ctx, customerID, p.Env, id)
	if err != nil {
		// Recorded and owned by this gateway: resume starts it when Redis answers again.
		return Recovery{}, err
	}
	if !m.launch(rec) {
		return Recovery{}, ErrNotRunning
	}
	m.log.Info("recovery started", zap.String("customer_id", customerID), zap.String("recovery_id", id),
		zap.Time("since", p.Since), zap.Time("until", p.Until), zap.String("state", p.State))
	return rec, nil
}

// Cancel stops a recovery of the customer, whichever gateway runs it: it queues no re-send
// after its current one. Re-sends already queued are delivered. A recovery cancelled already
// is answered as it is; one that ended otherwise is ErrFinished.
func (m *Manager) Cancel(ctx context.Context, customerID string, env environment.Env, id string) (Recovery, error) {
	if err := m.store.cancel(ctx, customerID, env, id); err != nil {
		return Recovery{}, err
	}
	key := member(customerID, env, id)
	m.store.rdb.ZRem(ctx, m.store.registry(), key)
	m.mu.Lock()
	stop := m.running[key]
	m.mu.Unlock()
	if stop != nil {
		stop(errCancelled)
	}
	m.log.Info("recovery cancelled", zap.String("customer_id", customerID), zap.String("recovery_id", id))
	return m.store.Get(ctx, customerID, env, id)
}

// Get reads a recovery of the customer.
func (m *Manager) Get(ctx context.Context, customerID string, env environment.Env, id string) (Recovery, error) {
	return m.store.Get(ctx, customerID, env, id)
}

func (m *Manager) active() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ctx != nil
}

// launch runs rec in a goroutine of Run's lifetime, unless Run is not running or this gateway
// runs rec already.
func (m *Manager) launch(rec Recovery) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := member(rec.CustomerID, rec.Env, rec.ID)
	if m.ctx == nil || m.running[key] != nil {
		return false
	}
	ctx, stop := context.WithCancelCause(m.ctx)
	m.running[key] = stop
	m.runners.Add(1)
	m.metrics.running.Inc()
	go func(ctx context.Context) {
		defer func() {
			stop(nil)
			m.mu.Lock()
			delete(m.running, key)
			m.mu.Unlock()
			m.metrics.running.Dec()
			m.runners.Done()
		}()
		m.run(ctx, rec)
	}(ctx)
	return true
}

// resume takes over listed recoveries whose lease ran out: their gateway stopped (and released
// them) or died.
func (m *Manager) resume(ctx context.Context) {
	due, err := m.store.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: m.store.registry(), Start: "-inf", Stop: strconv.FormatInt(time.Now().UnixMilli(), 10),
		ByScore: true, Count: 100,
	}).Result()
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("looking for recoveries to resume failed", zap.Error(err))
		}
		return
	}
	for _, mem := range due {
		customerID, env, id, ok := parseMember(mem)
		if !ok {
			m.store.rdb.ZRem(ctx, m.store.registry(), mem)
			continue
		}
		m.mu.Lock()
		mine := m.running[mem] != nil
		m.mu.Unlock()
		if mine {
			continue
		}
		o, lease, err := m.store.own(ctx, customerID, env, id, m.owner, m.cfg.Lease)
		if err != nil {
			m.log.Warn("taking over a recovery failed", zap.String("recovery_id", id), zap.Error(err))
			continue
		}
		switch o {
		case gone, ended:
			m.store.rdb.ZRem(ctx, m.store.registry(), mem)
			continue
		case heldByAnother:
			m.store.rdb.ZAdd(ctx, m.store.registry(), redis.Z{Score: float64(lease.UnixMilli()), Member: mem})
			continue
		}
		m.store.rdb.ZAdd(ctx, m.store.registry(), redis.Z{Score: float64(lease.UnixMilli()), Member: mem})
		rec, err := m.store.Get(ctx, customerID, env, id)
		if err != nil {
			m.log.Warn("reading a recovery to resume failed", zap.String("recovery_id", id), zap.Error(err))
			continue
		}
		if m.launch(rec) {
			m.log.Info("recovery resumed", zap.String("customer_id", customerID), zap.String("recovery_id", id),
				zap.Int64("queued", rec.Queued))
		}
	}
}

// run works on one recovery until it ends, the lease is lost, or ctx ends.
func (m *Manager) run(ctx context.Context, rec Recovery) {
	log := m.log.With(zap.String("customer_id", rec.CustomerID), zap.String("recovery_id", rec.ID))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lost sync.Once
	lose := func() { lost.Do(func() { log.Warn("recovery lease lost: another gateway runs it now") }); cancel() }
	heartbeat := make(chan struct{})
	go func() {
		defer close(heartbeat)
		m.keepLease(ctx, rec, log, cancel, lose)
	}()

	r := &runner{Manager: m, rec: rec, log: log}
	err := r.work(ctx)
	cancel()
	<-heartbeat
	bg, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stop()
	end, detail := Done, ""
	switch {
	case errors.Is(context.Cause(ctx), errCancelled):
		log.Info("recovery stopped: cancelled")
		return
	case errors.Is(err, errLost) || errors.Is(err, context.Canceled):
		if now, gerr := m.store.Get(bg, rec.CustomerID, rec.Env, rec.ID); gerr == nil && now.Status == Cancelled {
			log.Info("recovery stopped: cancelled through another gateway")
			return
		}
	}
	switch {
	case errors.Is(err, errLost):
		lose()
		return
	case errors.Is(err, ErrCustomerGone):
		end, detail = Aborted, ErrCustomerGone.Error()
	case err != nil:
		// Stopping (or lease lost while stopping): hand the recovery on at once rather than
		// after its lease; the next gateway to look resumes it from its last position.
		if _, err := m.store.owned(bg, rec.CustomerID, rec.Env, rec.ID, m.owner, "release"); err == nil {
			m.store.rdb.ZAdd(bg, m.store.registry(), redis.Z{Score: 0, Member: member(rec.CustomerID, rec.Env, rec.ID)})
			log.Info("recovery handed on: this gateway is stopping")
		}
		return
	}
	if _, err := m.store.owned(bg, rec.CustomerID, rec.Env, rec.ID, m.owner, "finish", end, detail); err != nil {
		// Still listed and leased: resume finishes it later.
		log.Warn("recording the end of a recovery failed", zap.Error(err))
		return
	}
	m.store.rdb.ZRem(bg, m.store.registry(), member(rec.CustomerID, rec.Env, rec.ID))
	final, _ := m.store.Get(bg, rec.CustomerID, rec.Env, rec.ID)
	log.Info("recovery ended", zap.String("status", end), zap.Int64("matched", final.Matched),
		zap.Int64("queued", final.Queued), zap.Int64("skipped", final.Skipped),
		zap.Int64("succeeded", final.Succeeded), zap.Int64("failed", final.Failed))
}

// keepLease renews the recovery's lease until ctx ends; it cancels the run when the recovery
// ended meanwhile, and calls lose when another gateway holds the lease.
func (m *Manager) keepLease(ctx context.Context, rec Recovery, log *zap.Logger, cancel, lose func()) {
	t := time.NewTicker(m.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		o, until, err := m.store.own(ctx, rec.CustomerID, rec.Env, rec.ID, m.owner, m.cfg.Lease)
		switch {
		case err != nil:
			// Retried at the next tick; the lease outlasts a couple of missed ones.
			if ctx.Err() == nil {
				log.Warn("renewing a recovery lease failed", zap.Error(err))
			}
		case o == ended:
			cancel() // cancelled (or finished) meanwhile: nothing to hand on
			return
		case o != owned:
			lose()
			return
		default:
			m.store.rdb.ZAdd(ctx, m.store.registry(), redis.Z{Score: float64(until.UnixMilli()), Member: member(rec.CustomerID, rec.Env, rec.ID)})
		}
	}
}

// runner is one recovery at work.
type runner struct {
	*Manager
	rec Recovery
	log *zap.Logger

	inflight   []sent
	lastSettle time.Time
	settleFrom uint64 // HSCAN cursor over the pending re-deliveries
}

type sent struct {
	taskID string
	chain  uint64
	at     time.Time
}

// work walks the window, re-sending matching tasks, then waits until every re-send has an
// outcome.
func (r *runner) work(ctx context.Context) error {
	if !r.rec.scanDone {
		if err := r.scan(ctx); err != nil {
			return err
		}
	}
	for {
		left, err := r.settle(ctx)
		if err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
		if !sleep(ctx, r.cfg.SettleEvery) {
			return ctx.Err()
		}
	}
}

// scan walks the customer's index over the recovery's window, page by page from the last
// recorded position, re-sending the tasks in the wanted state.
func (r *runner) scan(ctx context.Context) error {
	cust := r.rec.CustomerID
	from, to := r.rec.Since.UnixMilli(), r.rec.Until.UnixMilli()
	pos := r.rec.pos
	for {
		var page []status.WindowEntry
		if err := r.retry(ctx, "reading the index", func() (err error) {
			page, err = r.store.index.Window(ctx, cust, r.rec.Env, from, to, pos, r.cfg.PageSize)
			return err
		}); err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		ids := make([]string, len(page))
		for i, e := range page {
			ids[i] = e.TaskID
		}
		var briefs []status.Brief
		if err := r.retry(ctx, "reading task states", func() (err error) {
			briefs, err = r.store.index.Briefs(ctx, cust, r.rec.Env, ids)
			return err
		}); err != nil {
			return err
		}
		for i, e := range page {
			if briefs[i].Found && matches(r.rec.State, briefs[i].State) {
				if err := r.one(ctx, e); err != nil {
					return err
				}
			}
			if err := r.settleIfDue(ctx); err != nil {
				return err
			}
		}
		last := page[len(page)-1]
		pos = status.WindowPos{ScoreMS: last.LastAttemptMS, TaskID: last.TaskID}
		if err := r.retry(ctx, "recording progress", func() error {
			_, err := r.store.owned(ctx, cust, r.rec.Env, r.rec.ID, r.owner, "advance", pos.ScoreMS, pos.TaskID)
			return err
		}); err != nil {
			return err
		}
	}
	return r.retry(ctx, "recording progress", func() error {
		_, err := r.store.owned(ctx, cust, r.rec.Env, r.rec.ID, r.owner, "scanned")
		return err
	})
}

func matches(want string, s status.State) bool {
	switch want {
	case StateAny:
		return true
	case StateSucceeded:
		return s == status.Succeeded
	default:
		return s == status.Failed
	}
}

// one re-sends one matching task, or passes over it.
func (r *runner) one(ctx context.Context, e status.WindowEntry) error {
	cust := r.rec.CustomerID
	if err := r.waitInFlight(ctx); err != nil {
		return err
	}
	// The page's states were read a while ago (a page takes seconds at the paced rate): look
	// again, so a task that a send-callback or an ended recovery re-sent meanwhile is not
	// re-sent once more for a state it no longer has.
	var now []status.Brief
	if err := r.retry(ctx, "reading a task's state", func() (err error) {
		now, err = r.store.index.Briefs(ctx, cust, r.rec.Env, []string{e.TaskID})
		return err
	}); err != nil {
		return err
	}
	if !now[0].Found || !matches(r.rec.State, now[0].State) {
		return nil
	}
	var (
		claimed bool
		wait    time.Duration
	)
	if err := r.retry(ctx, "claiming a task", func() (err error) {
		claimed, wait, err = r.store.claim(ctx, cust, r.rec.Env, r.rec.ID, r.owner, e, r.interval)
		return err
	}); err != nil {
		return err
	}
	if !claimed {
		r.metrics.skipped.Inc()
		return nil
	}
	if !sleep(ctx, wait) {
		return ctx.Err()
	}
	// Once a re-send starts, it and its record finish even when the gateway is stopping: a
	// re-send on the stream but not recorded would be sent again by whoever resumes.
	// Stopping only prevents another try.
	steady := context.WithoutCancel(ctx)
	outcome, chain, err := r.resend(ctx, steady, e.TaskID)
	if err != nil {
		return err
	}
	if err := r.retry(ctx, "recording a re-send", func() error {
		c, cancel := context.WithTimeout(steady, stepTimeout)
		defer cancel()
		_, err := r.store.owned(c, cust, r.rec.Env, r.rec.ID, r.owner, "commit", e.TaskID, e.LastAttemptMS, outcome, chain)
		return err
	}); err != nil {
		return err
	}
	if outcome == "queued" {
		r.metrics.requeued.Inc()
		r.inflight = append(r.inflight, sent{taskID: e.TaskID, chain: chain, at: time.Now()})
	} else {
		r.metrics.skipped.Inc()
	}
	return nil
}

// resend puts the task's callback on the stream again, retrying until it is there; steady
// bounds each try instead of ctx, so a try that started finishes. outcome is "queued", or
// "skipped" when the sender passes over the task.
func (r *runner) resend(ctx, steady context.Context, taskID string) (outcome string, chain uint64, err error) {
	err = r.retry(ctx, "re-sending a callback", func() (err error) {
		c, cancel := context.WithTimeout(steady, stepTimeout)
		defer cancel()
		chain, err = r.sender.Resend(c, r.rec.CustomerID, r.rec.Env, taskID, dedupID(r.rec.ID, taskID))
		if errors.Is(err, ErrSkip) || errors.Is(err, ErrCustomerGone) {
			return permanent{err}
		}
		return err
	})
	var p permanent
	switch {
	case errors.As(err, &p) && errors.Is(p.error, ErrSkip):
		r.log.Debug("recovery passes over a task", zap.String("task_id", taskID), zap.Error(p.error))
		return "skipped", chain, nil
	case errors.As(err, &p):
		return "", 0, p.error
	case err != nil:
		return "", 0, err
	}
	return "queued", chain, nil
}

// dedupID names a recovery's re-send of a task on the stream. A try whose publish was stored but
// whose answer never came (a timeout on a loaded broker) is tried again, and a gateway that
// resumes a recovery re-sends the task it finds claimed but not recorded, which its previous
// gateway may have published already: with the same name, the stream's duplicate window drops
// the second publish instead of delivering the callback twice.
func dedupID(recoveryID, taskID string) string { return "recover_" + recoveryID + "_" + taskID }

// waitInFlight holds the next re-send while MaxInFlight earlier ones wait for their first
// attempt.
func (r *runner) waitInFlight(ctx context.Context) error {
	for len(r.inflight) >= r.cfg.MaxInFlight {
		ids := make([]string, len(r.inflight))
		for i, s := range r.inflight {
			ids[i] = s.taskID
		}
		var briefs []status.Brief
		if err := r.retry(ctx, "reading task states", func() (err error) {
			briefs, err = r.store.index.Briefs(ctx, r.rec.CustomerID, r.rec.Env, ids)
			return err
		}); err != nil {
			return err
		}
		kept := r.inflight[:0]
		for i, s := range r.inflight {
			b := briefs[i]
			waiting := b.Found && b.Chain == s.chain && b.State == status.Pending
			if waiting && time.Since(s.at) < r.cfg.StallAfter {
				kept = append(kept, s)
			}
		}
		r.inflight = kept
		if len(r.inflight) >= r.cfg.MaxInFlight && !sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
	return nil
}

// settleIfDue collects outcomes while the walk goes on, so done grows as re-deliveries end.
func (r *runner) settleIfDue(ctx context.Context) error {
	if time.Since(r.lastSettle) < r.cfg.SettleEvery {
		return nil
	}
	_, err := r.settle(ctx)
	return err
}

// settle looks at a batch of re-deliveries without a final outcome and counts those that have
// one now. It returns how many are still waiting.
func (r *runner) settle(ctx context.Context) (int64, error) {
	r.lastSettle = time.Now()
	cust := r.rec.CustomerID
	pending := r.store.keys(cust, r.rec.Env, r.rec.ID)[4]
	var (
		kv   []string
		next uint64
	)
	if err := r.retry(ctx, "reading re-deliveries", func() (err error) {
		kv, next, err = r.store.rdb.HScan(ctx, pending, r.settleFrom, "*", 500).Result()
		return err
	}); err != nil {
		return 0, err
	}
	r.settleFrom = next
	if len(kv) == 0 {
		if next != 0 {
			return 1, nil // an empty step of the scan; more to come
		}
		n, err := r.store.rdb.HLen(ctx, pending).Result()
		return n, err
	}
	ids, chains, queued := parsePending(kv)
	var briefs []status.Brief
	if err := r.retry(ctx, "reading task states", func() (err error) {
		briefs, err = r.store.index.Briefs(ctx, cust, r.rec.Env, ids)
		return err
	}); err != nil {
		return 0, err
	}
	args := r.outcomes(ids, chains, queued, briefs)
	var left int64
	err := r.retry(ctx, "recording outcomes", func() (err error) {
		if len(args) == 0 {
			left, err = r.store.rdb.HLen(ctx, pending).Result()
			return err
		}
		left, err = r.store.owned(ctx, cust, r.rec.Env, r.rec.ID, r.owner, "settle", args...)
		return err
	})
	return left, err
}

// parsePending reads an HSCAN page of pending re-deliveries: task id to "chain:queued at (ms)".
func parsePending(kv []string) (ids []string, chains []uint64, queued []time.Time) {
	ids = make([]string, 0, len(kv)/2)
	chains = make([]uint64, 0, len(kv)/2)
	queued = make([]time.Time, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		c, at, _ := strings.Cut(kv[i+1], ":")
		chain, _ := strconv.ParseUint(c, 10, 64)
		ms, _ := strconv.ParseInt(at, 10, 64)
		ids, chains, queued = append(ids, kv[i]), append(chains, chain), append(queued, time.UnixMilli(ms))
	}
	return ids, chains, queued
}

// outcomes pairs each re-delivery that has a final outcome with it, as the "settle" script
// takes them; those still to come are left out.
func (r *runner) outcomes(ids []string, chains []uint64, queued []time.Time, briefs []status.Brief) []any {
	args := make([]any, 0, 2*len(ids))
	for i, b := range briefs {
		unbegun := b.Chain < chains[i] || b.State == status.Pending
		switch {
		case !b.Found || b.Chain > chains[i]:
			args = append(args, ids[i], "other") // expired, or a newer delivery took over
		case unbegun && time.Since(queued[i]) > r.cfg.Abandon:
			r.log.Warn("a re-send was never attempted; counting it done", zap.String("task_id", ids[i]))
			args = append(args, ids[i], "other")
		case b.Chain < chains[i]:
			// Not even queued yet as Redis sees it: still to come.
		case b.State == status.Succeeded || b.State == status.Failed:
			args = append(args, ids[i], string(b.State))
		case b.State == status.NoCallback:
			args = append(args, ids[i], "other")
		}
	}
	return args
}

// stepTimeout bounds one re-send or its record, which run on after a stop has begun.
const stepTimeout = 10 * time.Second

// permanent stops retry at once.
type permanent struct{ error }

// retry runs f until it succeeds, backing off from 100ms to 5s between tries: Redis or NATS
// being away for a while pauses a recovery, it does not end it. A lost lease, a permanent error
// or ctx ending stops it.
func (r *runner) retry(ctx context.Context, what string, f func() error) error {
	wait := 100 * time.Millisecond
	for failures := 1; ; failures++ {
		err := f()
		var p permanent
		if err == nil {
			return nil
		}
		if errors.Is(err, errLost) || errors.As(err, &p) {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if failures == 1 || failures%20 == 0 {
			r.log.Warn("recovery step failed; retrying", zap.String("step", what), zap.Int("failures", failures), zap.Error(err))
		}
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type metrics struct {
	running  prometheus.Gauge
	requeued prometheus.Counter
	skipped  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "refonte_gateway_recoveries_running",
			Help: "Recoveries this gateway is running (walking the window or waiting for outcomes).",
		}),
		requeued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refonte_gateway_recovery_requeued_total",
			Help: "Callbacks put back on the stream by recoveries.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refonte_gateway_recovery_skipped_total",
			Help: "Matching callbacks a recovery passed over: re-sent by another recovery, or without a usable target.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.running, m.requeued, m.skipped)
	}
	return m
}
