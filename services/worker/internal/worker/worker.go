// Package worker delivers callbacks. One message's life, in stages:
//
//	decode → resolve → (wait for a turn) → claim → deliver → record → settle
//
// decode and resolve run as soon as a message is taken from the stream; the message then waits in
// its endpoint host's local queue until the scheduler gives it a delivery slot (scheduler.go);
// claim, deliver and record run in that slot. Each stage either passes the job on or stops it with
// a decision (done, later, never); settle is the one place that turns a decision into a JetStream
// acknowledgement. Every held message is kept alive with InProgress until then (keepalive.go).
package worker

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/delivery"
	"refonte.ai/callbacks/pkg/endpoint"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/quarantine"
	"refonte.ai/callbacks/pkg/schedule"
	"refonte.ai/callbacks/pkg/signing"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
	"refonte.ai/callbacks/pkg/target"
	"refonte.ai/callbacks/pkg/tracing"
)

// Transport makes one delivery attempt.
type Transport interface {
	Deliver(ctx context.Context, m delivery.Message) delivery.Result
}

// profileSource gives the profile of the task's environment: its keys, and no other's, sign and
// authenticate the task's callback.
type profileSource interface {
	Get(ctx context.Context, customerID string, env environment.Env) (customer.Profile, error)
	Invalidate(customerID string)
}

type statusRecorder interface {
	Begin(ctx context.Context, d status.Delivery, target string, maxAttempts int, now time.Time) (status.Begun, error)
	Finish(ctx context.Context, d status.Delivery, target string, outcome status.Outcome, entry *status.AttemptLog, next, now time.Time) (bool, error)
	FinishAttached(ctx context.Context, d status.Delivery, target string, outcome status.Outcome, entry *status.AttemptLog, next, now time.Time, att *status.Attached) (bool, status.AttachedReply, error)
}

type invalidSink interface {
	Add(ctx context.Context, e quarantine.Event) (string, error)
}

// Deps are the worker's collaborators, given to New.
type Deps struct {
	Consumer   jetstream.Consumer
	Profiles   profileSource
	Status     statusRecorder
	Invalid    invalidSink
	Transports map[target.Kind]Transport
	Log        *zap.Logger
	Metrics    *Metrics
	// Endpoints records endpoint health beside each attempt; nil: none is recorded (and no
	// alerts are sent).
	Endpoints endpointStore
	// Alerts mails endpoint alerts; nil: none are sent (health is still recorded).
	Alerts notifier
}

// Worker pulls callbacks from the shared consumer and delivers them.
type Worker struct {
	consumer   jetstream.Consumer
	profiles   profileSource
	status     statusRecorder
	invalid    invalidSink
	transports map[target.Kind]Transport
	log        *zap.Logger
	metrics    *Metrics

	schedule schedule.Schedule
	slots    int
	// eventMax is the largest event delivered; msgSize a moving average of the messages'
	// sizes, which sizes each pull (see pull).
	eventMax int
	msgSize  atomic.Int64
	sched    *scheduler
	alive    *keepalive
	grace    time.Duration
	now      func() time.Time

	endpoints     endpointStore
	policy        endpoint.Policy
	alerts        *alerter
	pausedRecheck time.Duration
	pausedMaxHold time.Duration
	pauseClock    *pauseClock

	infra infraFailures
}

// New builds a worker from its config and collaborators.
func New(cfg Config, d Deps) (*Worker, error) {
	if d.Consumer == nil || d.Profiles == nil || d.Status == nil || d.Invalid == nil || d.Log == nil {
		return nil, errors.New("worker: missing dependency")
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics(nil)
	}
	slow := cfg.Timeout * 3 / 4
	w := &Worker{
		consumer: d.Consumer, profiles: d.Profiles, status: d.Status, invalid: d.Invalid,
		transports: d.Transports, log: d.Log, metrics: d.Metrics,
		schedule: cfg.Schedule,
		slots:    cfg.Concurrency,
		eventMax: cfg.EventMaxBytes,
		sched: newScheduler(cfg.MaxHeld, int64(cfg.MaxHeldBytes), cfg.HostQueue, cfg.Concurrency, func() aimdLimit {
			return newAIMDLimit(hostLimitStart, hostLimitFloor, cfg.HostConcurrency, slow)
		}),
		alive: newKeepalive(cfg.AckWait, d.Log, d.Metrics),
		grace: cfg.ShutdownGrace,
		now:   time.Now,

		endpoints: d.Endpoints,
		policy: endpoint.Policy{AlertAfter: cfg.AlertAfter, AlertInterval: cfg.AlertInterval,
			AutoPauseAfter: cfg.AutoPauseAfter, Retention: cfg.Retention},
		alerts:        newAlerter(d.Alerts, d.Endpoints, d.Log, d.Metrics),
		pausedRecheck: cfg.PausedRecheck,
		pausedMaxHold: cfg.PausedMaxHold,
		pauseClock:    newPauseClock(),
	}
	if d.Alerts == nil {
		w.policy.AlertAfter = 0 // nothing could send them
	}
	w.msgSize.Store(1 << 10)
	d.Metrics.watch(w.sched)
	return w, nil
}

const (
	// pullWait is how long one pull request waits for messages before it is renewed.
	pullWait = 2 * time.Second
	// maxPull is the most messages one pull request asks for. Large, because a pull is also how
	// the worker scans past a burst to reach other customers' messages: while a burst was being
	// published, a pull of 512 took nats-server 100-300 ms to fill, so each worker scanned only
	// 2,000-3,500 messages a second and a second customer's callbacks waited behind the burst
	// for over a second (p99); pulls of 4,096 brought that to 0.36-0.72 s on the same machine,
	// with no loss of throughput. The window still bounds what is held: a pull asks for no more
	// than its room.
	maxPull = 4096
	// intakeQueue is how many pulled messages may wait for the decoding goroutines.
	intakeQueue = 512
)

// Run pulls and delivers until ctx is cancelled, then hands back what it holds but has not
// started, lets the deliveries in flight finish (each bounded by the callback timeout, all by
// the shutdown grace) and returns.
func (w *Worker) Run(ctx context.Context) error {
	// The keepalive outlives the rest: deliveries finishing after shutdown began stay held.
	beatCtx, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
	var beats sync.WaitGroup
	beats.Go(func() { w.alive.run(beatCtx) })
	defer func() { stopBeats(); beats.Wait() }()
	// The alerter, too, outlives the deliveries: it sends what they raised, then stops.
	var mails sync.WaitGroup
	mails.Go(func() { w.alerts.run(beatCtx) })
	defer func() { w.alerts.close(); mails.Wait() }()

	intake := make(chan *job, intakeQueue)
	var intakers, slots sync.WaitGroup
	for range max(4, 2*runtime.GOMAXPROCS(0)) {
		intakers.Go(func() {
			for j := range intake {
				w.admit(ctx, j)
			}
		})
	}
	// One long-lived goroutine per slot rather than one per message: a delivery's goroutine
	// grows its stack to tens of kilobytes (net/http's round trip), and growing a fresh stack
	// for every message cost about 8% of the worker's CPU at full speed.
	for range w.slots {
		slots.Go(func() {
			for j := w.sched.take(); j != nil; j = w.sched.take() {
				w.deliverHeld(j)
			}
		})
	}

	w.pull(ctx, intake)
	close(intake)
	intakers.Wait()
	for _, j := range w.sched.close() {
		w.settle(j, later(0)) // not started: straight back for another worker
		w.sched.unhold(j.size)
	}
	w.drain(&slots)
	return nil
}

// pull takes messages from the stream while the window has room, until ctx ends.
func (w *Worker) pull(ctx context.Context, intake chan<- *job) {
	failures := 0
	for {
		room, roomBytes, ok := w.sched.waitRoom(ctx)
		if !ok {
			return
		}
		// The pull's own context ends it early on shutdown, instead of after pullWait. It asks
		// for as many messages as the window's bytes hold at the recent message size, so a run
		// of large events is not pulled into memory only to be deferred. (Not the server's
		// max_bytes bound on a pull: measured, it slowed a retrying backlog to less than half.)
		pullCtx, cancelPull := context.WithTimeout(ctx, pullWait)
		n := min(room, maxPull, max(1, roomBytes/max(int(w.msgSize.Load()), 1)))
		pulledAt := time.Now()
		batch, err := w.consumer.Fetch(n, jetstream.FetchContext(pullCtx))
		if err != nil {
			cancelPull()
			failures++
			w.log.Warn("pull failed", zap.Error(err), zap.Int("consecutive", failures))
			if !sleep(ctx, backoff(failures)) {
				return
			}
			continue
		}
		failures = 0
		got := 0
		for msg := range batch.Messages() {
			got++
			w.receive(ctx, msg, pulledAt, intake)
		}
		cancelPull()
		w.metrics.pullSize.Observe(float64(got))
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) &&
			!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoHeartbeat) {
			w.log.Debug("pull ended", zap.Error(err))
		}
	}
}

// receive takes one message into the window and passes it to the intake stages. pulledAt is
// when the pull that brought it was sent: the server started the message's AckWait later than
// that, so keeping it alive from then on is never late, however long the message waited behind
// the rest of a large pull.
func (w *Worker) receive(ctx context.Context, msg jetstream.Msg, pulledAt time.Time, intake chan<- *job) {
	if w.skim(ctx, msg) {
		return
	}
	j := &job{msg: msg, size: len(msg.Data()), ctx: context.WithoutCancel(ctx), log: w.log}
	avg := w.msgSize.Load()
	w.msgSize.Store(avg + (int64(j.size)-avg)/8) // only the pulling goroutine writes it
	w.alive.hold(msg, pulledAt)
	switch {
	case ctx.Err() != nil:
		w.settle(j, later(0)) // shutting down: straight back for another worker
	case !w.sched.hold(j.size):
		w.metrics.deferred.WithLabelValues(deferWindowBytes).Inc()
		w.settle(j, later(jitter(unmeasuredDefer)))
	default:
		intake <- j // never blocks for long: the window bounds what is in flight here
	}
}

// skim defers msg straight from the pull, from its subject alone, when it belongs to a customer
// whose one endpoint's queue is full (scheduler.deferEarly). Skimming past a burst is what lets
// the worker reach the other customers' messages behind it; done here, it costs no decode, no
// heartbeat bookkeeping and no hop through the intake goroutines, which are busy decoding.
func (w *Worker) skim(ctx context.Context, msg jetstream.Msg) bool {
	if ctx.Err() != nil {
		return false
	}
	customerID, _, ok := stream.ParseSubject(msg.Subject())
	if !ok {
		return false
	}
	wait, full := w.sched.deferEarly(customerID)
	if !full {
		return false
	}
	w.metrics.deferred.WithLabelValues(deferHostQueue).Inc()
	if err := msg.NakWithDelay(wait); err != nil {
		// The server will redeliver it after AckWait, as for any lost acknowledgement.
		w.log.Warn("acknowledgement failed", zap.String("ack", "nak"), zap.String("subject", msg.Subject()), zap.Error(err))
	}
	return true
}

// drain waits for the deliveries in flight after shutdown began, for at most the grace period.
// One still running then is abandoned: its message comes back after AckWait and the attempt is
// logged as interrupted.
func (w *Worker) drain(inflight *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		inflight.Wait()
		close(done)
	}()
	t := time.NewTimer(w.grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		w.log.Warn("shutdown grace over with deliveries still in flight; they will be redelivered",
			zap.Duration("grace", w.grace))
	}
}

// job is one held message on its way through the stages. It carries its own context (with the
// delivery's span) because the stages outlive the Run context: a delivery under way finishes
// even when shutdown begins.
type job struct {
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	size int
	ctx  context.Context
	log  *zap.Logger
	span trace.Span

	ev        event.Event
	webhookID string
	profile   customer.Profile
	delivery  status.Delivery
	target    target.Target
	targetErr error // the target is unusable: recorded as a failed attempt, never retried
	kind      string
	hostKey   string
	host      *hostState
	endpoint  string // whose health the attempt counts for, and whose pause holds it

	begun     status.Begun
	at        time.Time
	attempted bool
	result    delivery.Result
	deferFor  time.Duration // set when the scheduler evicts the job from its host's queue
}

// A stage does one step of a job; false stops the job with the decision given.
type stage func(j *job) (decision, bool)

// runStages runs the stages in order until one stops the job.
func runStages(j *job, stages ...stage) (decision, bool) {
	for _, s := range stages {
		if d, next := s(j); !next {
			return d, false
		}
	}
	return decision{}, true
}

// admit runs the intake stages and queues the job for its host, or defers it when the host's
// queue is full.
func (w *Worker) admit(ctx context.Context, j *job) {
	if ctx.Err() != nil {
		w.settle(j, later(0))
		w.sched.unhold(j.size)
		return
	}
	if customerID, _, ok := stream.ParseSubject(j.msg.Subject()); ok {
		if wait, full := w.sched.deferEarly(customerID); full {
			w.metrics.deferred.WithLabelValues(deferHostQueue).Inc()
			w.settle(j, later(wait))
			w.sched.unhold(j.size)
			return
		}
	}
	if d, next := runStages(j, w.decode, w.resolve, w.holdPaused); !next {
		w.settle(j, d)
		w.sched.unhold(j.size)
		return
	}
	wait, ok, evicted := w.sched.enqueue(j)
	if !ok {
		w.metrics.deferred.WithLabelValues(deferHostQueue).Inc()
		w.settle(j, later(wait))
		w.sched.unhold(j.size)
	}
	for _, e := range evicted {
		w.metrics.deferred.WithLabelValues(deferHostShare).Inc()
		w.settle(e, later(e.deferFor))
		w.sched.unhold(e.size)
	}
}

// deliverHeld runs the delivery stages of a job the scheduler gave a slot, settles it and hands
// the slot back with what the attempt said about the host.
func (w *Worker) deliverHeld(j *job) {
	w.metrics.inFlight.Inc()
	defer w.metrics.inFlight.Dec()
	d, _ := runStages(j, w.recheckPause, w.claim, w.deliver, w.record)
	w.settle(j, d)
	smp := sampleIgnore
	if j.attempted {
		smp = sampleOf(j.target.Kind, j.result)
	}
	w.sched.done(j, smp, j.result.Duration)
}

// decision is what the stages concluded; settle turns it into an acknowledgement.
type decision struct {
	verdict verdict
	delay   time.Duration // for later
	reason  string        // for never
}

type verdict int

const (
	vDone  verdict = iota // Ack: delivered, or nothing left to do
	vLater                // NakWithDelay: try again after delay
	vNever                // Term: give up on this message for good
)

func done() decision                 { return decision{verdict: vDone} }
func later(d time.Duration) decision { return decision{verdict: vLater, delay: d} }
func never(reason string) decision   { return decision{verdict: vNever, reason: reason} }
func (d decision) String() string    { return [...]string{"ack", "nak", "term"}[d.verdict] }

// settle is the only place that acknowledges messages. The message's heartbeats stop first.
func (w *Worker) settle(j *job, d decision) {
	w.alive.forget(j.msg)
	var err error
	switch d.verdict {
	case vDone:
		err = j.msg.Ack()
	case vLater:
		err = j.msg.NakWithDelay(d.delay)
	case vNever:
		err = j.msg.TermWithReason(d.reason)
	}
	if err != nil {
		// The server will redeliver after AckWait; Begin in Redis keeps that from being
		// counted twice or attempted early.
		j.log.Warn("acknowledgement failed", zap.String("ack", d.String()), zap.Error(err))
	}
	if j.span != nil {
		j.span.End()
	}
}

// decode validates the event and opens the delivery's span; an invalid event is kept for
// inspection and ended.
func (w *Worker) decode(j *job) (decision, bool) {
	meta, err := j.msg.Metadata()
	if err != nil {
		return never("not a JetStream message"), false
	}
	j.meta = meta
	ev, webhookID, err := parseMessage(j.msg, w.eventMax)
	if err != nil {
		return w.refuse(j.ctx, j.msg, err), false
	}
	j.ev, j.webhookID = ev, webhookID
	j.log = w.log.WithLazy(zap.String("task_id", ev.TaskID), zap.String("customer_id", ev.CustomerID),
		zap.String("environment", ev.Environment.String()), zap.String("webhook_id", webhookID))
	j.ctx, j.span = tracing.Tracer().Start(tracing.ExtractNATS(j.ctx, j.msg.Headers()), "callback.deliver",
		trace.WithSpanKind(trace.SpanKindConsumer))
	// Attributes are built only for a span that records: with tracing off (the default) they
	// were a tenth of the worker's allocations.
	if j.span.IsRecording() {
		j.span.SetAttributes(attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", j.msg.Subject()),
			attribute.String("refonte.task_id", ev.TaskID), attribute.String("refonte.customer_id", ev.CustomerID),
			attribute.String("refonte.webhook_id", webhookID))
	}
	return decision{}, true
}

// resolve finds the customer and where the callback goes. No target at all is recorded as
// no_callback and ends the job.
func (w *Worker) resolve(j *job) (decision, bool) {
	profile, err := w.profiles.Get(j.ctx, j.ev.CustomerID, j.ev.Environment)
	if errors.Is(err, customer.ErrNotFound) {
		return w.refuse(j.ctx, j.msg, event.Invalid(event.ReasonUnknownCustomer, "no customer %q", j.ev.CustomerID)), false
	}
	if err != nil {
		j.log.Warn("profile lookup failed; will retry", zap.Error(err))
		return later(w.infra.failed()), false
	}
	j.profile = profile
	j.delivery = status.Delivery{CustomerID: j.ev.CustomerID, Env: j.ev.Environment, TaskID: j.ev.TaskID, WebhookID: j.webhookID,
		Chain: j.meta.Sequence.Stream}
	j.target, j.targetErr = target.Resolve(j.ev.CallbackURL, profile.DefaultCallbackURL)
	if j.targetErr == nil && j.target.Kind == target.None {
		if _, err := w.status.Finish(j.ctx, j.delivery, "", status.OutcomeNoCallback, nil, time.Time{}, w.now()); err != nil {
			j.log.Warn("recording no_callback failed; will retry", zap.Error(err))
			return later(w.infra.failed()), false
		}
		w.metrics.deliveries.WithLabelValues("none", "no_callback", j.ev.Environment.String()).Inc()
		j.log.Info("no callback target", zap.String("outcome", "no_callback"))
		return done(), false
	}
	j.kind = j.target.Kind.String()
	if j.targetErr != nil {
		j.kind = "unusable"
	}
	j.hostKey = j.target.Host()
	if j.targetErr == nil {
		j.endpoint = endpoint.Of(j.target)
	}
	return decision{}, true
}

// claim takes the next attempt in Redis: a delivery already finished or superseded ends here, one
// not yet due comes back later, one out of attempts is ended.
func (w *Worker) claim(j *job) (decision, bool) {
	j.at = w.now()
	begun, err := w.status.Begin(j.ctx, j.delivery, j.target.Raw, w.schedule.MaxAttempts(), j.at)
	if err != nil {
		j.log.Warn("claiming an attempt failed; will retry", zap.Error(err))
		return later(w.infra.failed()), false
	}
	w.infra.ok()
	j.begun = begun
	switch begun.Verdict {
	case status.Superseded, status.Finished:
		return done(), false
	case status.NotDue:
		return later(begun.Wait), false
	case status.Exhausted:
		w.metrics.deliveries.WithLabelValues(j.kind, "exhausted", j.ev.Environment.String()).Inc()
		j.log.Warn("attempts exhausted", zap.Int("attempt", begun.Attempt))
		return never("attempts exhausted"), false
	}
	if begun.ProfileVersion > j.profile.Version {
		// Redis has a newer profile than the cache (a key was rotated a moment ago): the
		// rotated key is used from this attempt on. The target stays as resolved.
		w.profiles.Invalidate(j.ev.CustomerID)
		if fresh, err := w.profiles.Get(j.ctx, j.ev.CustomerID, j.ev.Environment); err == nil {
			j.profile = fresh
		}
	}
	j.log = j.log.WithLazy(zap.Int("attempt", begun.Attempt), zap.Int("delivery", begun.Delivery),
		zap.String("target_host", j.hostKey), zap.Bool("superseded_resend", begun.Verdict == status.OneShot))
	return decision{}, true
}

// deliver makes the attempt; an unusable target fails it without one. It never stops the job.
func (w *Worker) deliver(j *job) (decision, bool) {
	if j.targetErr != nil {
		j.result = delivery.Result{Err: j.targetErr, Permanent: true}
		return decision{}, true
	}
	j.result = w.attempt(j)
	j.attempted = true
	return decision{}, true
}

// record classifies the attempt, counts and logs it, and writes it down; the decision follows
// from the outcome.
func (w *Worker) record(j *job) (decision, bool) {
	res, begun := j.result, j.begun
	entry := &status.AttemptLog{Attempt: begun.Attempt, Delivery: begun.Delivery, At: j.at,
		StatusCode: res.StatusCode, DurationMS: res.Duration.Milliseconds(), ResponseExcerpt: res.Excerpt}
	var (
		outcome status.Outcome
		next    time.Time
		dec     decision
	)
	switch {
	case res.OK():
		outcome, dec = status.OutcomeSucceeded, done()
	case res.Permanent:
		outcome, dec = status.OutcomeFailed, never(res.Err.Error())
	default:
		if delay, more := w.schedule.Next(begun.Attempt, res.RetryAfter); more {
			outcome, dec, next = status.OutcomeRetry, later(delay), w.now().Add(delay)
		} else {
			outcome, dec = status.OutcomeFailed, never("attempts exhausted")
		}
	}
	if begun.Verdict == status.OneShot {
		// A newer resend owns the retries and the flag; this one was its own delivery once.
		dec, next = done(), time.Time{}
	}
	if res.Err != nil {
		entry.Error = res.Err.Error()
	}
	w.metrics.observeAttempt(j.kind, j.ev.Environment, res, outcome, j.meta, begun)
	if ce := j.log.Check(zap.InfoLevel, "attempt"); ce != nil {
		ce.Write(zap.String("outcome", string(outcome)),
			zap.Int("status_code", res.StatusCode),
			zap.Duration("duration", res.Duration),
			zap.String("error", entry.Error))
	}
	att := w.healthCall(j)
	health, err := w.writeOutcome(j.ctx, j.delivery, j.target.Raw, outcome, entry, next, att)
	if err != nil {
		// The customer may have the callback, but we could not write it down. Do not ack as if
		// all were well: the message comes back, Begin logs this attempt as interrupted, and
		// the next attempt is recorded once Redis answers again.
		j.log.Error("recording the attempt failed; will redeliver", zap.Error(err))
		return later(5 * time.Second), false
	}
	if att != nil {
		w.observeHealth(j, health)
	}
	return dec, false
}

// writeOutcome writes an attempt's outcome, with att (the endpoint's health) in the same round
// trip, retrying briefly: a short Redis hiccup should not cost the customer a duplicate
// callback. The message stays alive meanwhile.
func (w *Worker) writeOutcome(ctx context.Context, d status.Delivery, tgt string, o status.Outcome, e *status.AttemptLog, next time.Time, att *status.Attached) (status.AttachedReply, error) {
	var err error
	for i := 1; i <= 4; i++ {
		var reply status.AttachedReply
		if _, reply, err = w.status.FinishAttached(ctx, d, tgt, o, e, next, w.now(), att); err == nil {
			return reply, nil
		}
		if !sleep(ctx, backoff(i)) {
			break
		}
	}
	return status.AttachedReply{}, err
}

// attempt signs and sends the callback through the target's transport.
func (w *Worker) attempt(j *job) delivery.Result {
	tgt, ev, begun := j.target, j.ev, j.begun
	tr := w.transports[tgt.Kind]
	if tr == nil {
		return delivery.Result{Err: fmt.Errorf("%s callbacks are not configured", tgt.Kind), Permanent: true}
	}
	keys, err := j.profile.SigningKeys(j.at)
	if err != nil {
		return delivery.Result{Err: errors.New("the customer's signing secret is unusable"), Permanent: true}
	}
	ctx, span := tracing.Tracer().Start(j.ctx, "callback.attempt", trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("refonte.attempt", begun.Attempt), attribute.Int("refonte.delivery", begun.Delivery),
			attribute.String("refonte.transport", tgt.Kind.String()), attribute.String("server.address", tgt.Host()))
	}
	body := ev.CallbackBody()
	res := tr.Deliver(ctx, delivery.Message{
		Target:     tgt,
		Body:       body,
		CustomerID: ev.CustomerID,
		TaskID:     ev.TaskID,
		Status:     ev.Status,
		WebhookID:  j.webhookID,
		Timestamp:  j.at,
		Signature:  signing.Sign(j.webhookID, j.at.Unix(), body, keys...),
		AuthKey:    j.profile.CallbackAuthKey,
		Header:     tracing.Headers(ctx),
	})
	if res.StatusCode != 0 {
		span.SetAttributes(attribute.Int("refonte.status_code", res.StatusCode))
	}
	if res.Err != nil {
		span.SetStatus(codes.Error, res.Err.Error())
	}
	return res
}

// refuse keeps an invalid event for inspection and ends it.
func (w *Worker) refuse(ctx context.Context, msg jetstream.Msg, err error) decision {
	reason, ok := event.ReasonOf(err)
	if !ok {
		reason = event.ReasonMalformed
	}
	w.metrics.rejected.WithLabelValues(string(reason)).Inc()
	w.log.Warn("event refused", zap.String("subject", msg.Subject()), zap.String("reason", string(reason)),
		zap.String("detail", err.Error()))
	e := quarantine.Event{
		Subject: msg.Subject(), Reason: string(reason), Detail: err.Error(),
		ReceivedAt: w.now(), Headers: msg.Headers(), Raw: msg.Data(),
	}
	if meta, err := msg.Metadata(); err == nil {
		e.Sequence = meta.Sequence.Stream // where a replay finds an event too large to keep whole
	}
	_, addErr := w.invalid.Add(ctx, e)
	if addErr != nil {
		w.log.Warn("keeping the refused event failed; will retry", zap.Error(addErr))
		return later(5 * time.Second)
	}
	return never(string(reason))
}

// parseMessage validates the message and works out its webhook id: the publisher's Nats-Msg-Id for a
// completion, the original's id (carried in a header) for a resend, and for either without
// one, the id derived from the event (event.DerivedWebhookID).
func parseMessage(msg jetstream.Msg, maxSize int) (event.Event, string, error) {
	customerID, _, ok := stream.ParseSubject(msg.Subject())
	if !ok {
		return event.Event{}, "", event.Invalid(event.ReasonSubjectMismatch, "subject %q is not one of ours", msg.Subject())
	}
	ev, err := event.DecodeLimit(msg.Data(), maxSize)
	if err != nil {
		return event.Event{}, "", err
	}
	if ev.CustomerID != customerID {
		return event.Event{}, "", event.Invalid(event.ReasonSubjectMismatch,
			"customer_id %q does not match subject %q", ev.CustomerID, msg.Subject())
	}
	id := stream.WebhookID(msg.Subject(), msg.Headers(), ev)
	if !event.ValidWebhookID(id) {
		return event.Event{}, "", event.Invalid(event.ReasonInvalidMessageID,
			"message id must be 1 to 128 printable ASCII characters without spaces")
	}
	return ev, id, nil
}

// backoff is the wait after the n-th consecutive infrastructure failure: 0.5s doubling to 30s.
// infraFailures counts this worker's consecutive failures to reach Redis (profile lookups, attempt
// claims, status writes before an attempt), so that a message put back because of one waits
// longer the longer the outage has lasted. A message's own delivery count would not do: it
// also counts every scheduled retry and deferral, so one slow call on a late attempt would park
// that message for the longest wait.
type infraFailures struct{ n atomic.Int32 }

// failed counts a failure and returns how long to put the message back for.
func (f *infraFailures) failed() time.Duration {
	n := f.n.Add(1)
	if n > 16 {
		f.n.Store(16) // the wait is capped long before; keep the counter from growing forever
	}
	return backoff(int(n))
}

// ok ends a run of failures.
func (f *infraFailures) ok() { f.n.Store(0) }

func backoff(n int) time.Duration {
	d := 500 * time.Millisecond
	for i := 1; i < n && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
