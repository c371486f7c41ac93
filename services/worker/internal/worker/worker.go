// Package worker delivers callbacks. One message's life, in order:
//
//	decode → look up the customer → resolve the target → claim an attempt (Redis)
//	→ deliver (HTTP or email) → record the outcome (Redis) → Ack / NakWithDelay / Term
//
// process returns a decision (done, later, never) and settle is the one place that turns it into
// a JetStream acknowledgement.
package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/delivery"
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

type profileSource interface {
	Get(ctx context.Context, customerID string) (customer.Profile, error)
	Invalidate(customerID string)
}

type statusRecorder interface {
	Begin(ctx context.Context, d status.Delivery, target string, maxAttempts int, now time.Time) (status.Begun, error)
	Finish(ctx context.Context, d status.Delivery, target string, outcome status.Outcome, entry *status.AttemptLog, next, now time.Time) (bool, error)
}

type invalidSink interface {
	Add(ctx context.Context, e quarantine.Event) (string, error)
}

// Deps are the worker's collaborators.
type Deps struct {
	Consumer   jetstream.Consumer
	Profiles   profileSource
	Status     statusRecorder
	Invalid    invalidSink
	Transports map[target.Kind]Transport
	Log        *zap.Logger
	Metrics    *Metrics
}

// Worker pulls callbacks from the shared consumer and delivers them.
type Worker struct {
	Deps
	schedule schedule.Schedule
	slots    int
	hosts    *hostLimiter
	grace    time.Duration
	now      func() time.Time
}

// New builds a worker from its config and collaborators.
func New(cfg Config, d Deps) (*Worker, error) {
	if d.Consumer == nil || d.Profiles == nil || d.Status == nil || d.Invalid == nil || d.Log == nil {
		return nil, errors.New("worker: missing dependency")
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics(nil)
	}
	return &Worker{
		Deps:     d,
		schedule: cfg.Schedule,
		slots:    cfg.Concurrency,
		hosts:    newHostLimiter(cfg.HostConcurrency),
		grace:    cfg.ShutdownGrace,
		now:      time.Now,
	}, nil
}

// pullWait is how long one pull request waits for messages before it is renewed.
const pullWait = 2 * time.Second

// Run pulls and delivers until ctx is cancelled, then lets the deliveries in flight finish
// (each is bounded by the callback timeout) and returns. It never holds more messages than it
// has free slots, so no message's AckWait runs down in a client-side buffer (nats.go #1929).
func (w *Worker) Run(ctx context.Context) error {
	free := make(chan struct{}, w.slots)
	for range w.slots {
		free <- struct{}{}
	}
	// One long-lived goroutine per slot rather than one per message: a delivery's goroutine
	// grows its stack to tens of kilobytes (net/http's round trip), and growing a fresh stack
	// for every message cost about 8% of the worker's CPU at full speed.
	jobs := make(chan jetstream.Msg, w.slots)
	var handlers sync.WaitGroup
	for range w.slots {
		handlers.Go(func() {
			for msg := range jobs {
				w.handle(ctx, msg)
				free <- struct{}{}
			}
		})
	}
	defer func() {
		close(jobs)
		w.drain(&handlers)
	}()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-free:
		}
		n := 1
	gather:
		for n < w.slots {
			select {
			case <-free:
				n++
			default:
				break gather
			}
		}
		// The pull's own context ends it early on shutdown, instead of after pullWait.
		pullCtx, cancelPull := context.WithTimeout(ctx, pullWait)
		batch, err := w.Consumer.Fetch(n, jetstream.FetchContext(pullCtx))
		if err != nil {
			cancelPull()
			for range n {
				free <- struct{}{}
			}
			failures++
			w.Log.Warn("pull failed", zap.Error(err), zap.Int("consecutive", failures))
			if !sleep(ctx, backoff(failures)) {
				return nil
			}
			continue
		}
		failures = 0
		got := 0
		for msg := range batch.Messages() {
			got++
			if ctx.Err() != nil {
				// Shutting down: hand it straight back for another worker.
				_ = msg.Nak()
				free <- struct{}{}
				continue
			}
			jobs <- msg // never blocks: at most w.slots messages are out at once
		}
		cancelPull()
		w.Metrics.pullSize.Observe(float64(got))
		for range n - got {
			free <- struct{}{}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) &&
			!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoHeartbeat) {
			w.Log.Debug("pull ended", zap.Error(err))
		}
	}
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
		w.Log.Warn("shutdown grace over with deliveries still in flight; they will be redelivered",
			zap.Duration("grace", w.grace))
	}
}

// decision is what process concluded; settle turns it into an acknowledgement.
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

func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) {
	w.Metrics.inFlight.Inc()
	defer w.Metrics.inFlight.Dec()
	// A delivery in flight finishes even when shutdown begins: the attempt has its own timeout,
	// and abandoning it would only make the next worker repeat it.
	d := w.process(context.WithoutCancel(ctx), msg)
	w.settle(msg, d)
}

// settle is the only place that acknowledges messages.
func (w *Worker) settle(msg jetstream.Msg, d decision) {
	var err error
	switch d.verdict {
	case vDone:
		err = msg.Ack()
	case vLater:
		err = msg.NakWithDelay(d.delay)
	case vNever:
		err = msg.TermWithReason(d.reason)
	}
	if err != nil {
		// The server will redeliver after AckWait; Begin in Redis keeps that from being
		// counted twice or attempted early.
		w.Log.Warn("acknowledgement failed", zap.String("ack", d.String()), zap.Error(err))
	}
}

func (w *Worker) process(ctx context.Context, msg jetstream.Msg) decision {
	meta, err := msg.Metadata()
	if err != nil {
		return never("not a JetStream message")
	}
	ev, webhookID, err := decode(msg)
	if err != nil {
		return w.refuse(ctx, msg, err)
	}
	log := w.Log.WithLazy(zap.String("task_id", ev.TaskID), zap.String("customer_id", ev.CustomerID),
		zap.String("webhook_id", webhookID))
	ctx, span := tracing.Tracer().Start(tracing.ExtractNATS(ctx, msg.Headers()), "callback.deliver",
		trace.WithSpanKind(trace.SpanKindConsumer))
	defer span.End()
	// Attributes are built only for a span that records: with tracing off (the default) they
	// were a tenth of the worker's allocations.
	if span.IsRecording() {
		span.SetAttributes(attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("refonte.task_id", ev.TaskID), attribute.String("refonte.customer_id", ev.CustomerID),
			attribute.String("refonte.webhook_id", webhookID))
	}

	profile, err := w.Profiles.Get(ctx, ev.CustomerID)
	if errors.Is(err, customer.ErrNotFound) {
		return w.refuse(ctx, msg, event.Invalid(event.ReasonUnknownCustomer, "no customer %q", ev.CustomerID))
	}
	if err != nil {
		log.Warn("profile lookup failed; will retry", zap.Error(err))
		return later(backoff(int(meta.NumDelivered)))
	}

	d := status.Delivery{CustomerID: ev.CustomerID, TaskID: ev.TaskID, WebhookID: webhookID,
		Task: ev.Task, Chain: meta.Sequence.Stream}
	tgt, targetErr := target.Resolve(ev.CallbackURL, profile.DefaultCallbackURL)
	if targetErr == nil && tgt.Kind == target.None {
		if _, err := w.Status.Finish(ctx, d, "", status.OutcomeNoCallback, nil, time.Time{}, w.now()); err != nil {
			log.Warn("recording no_callback failed; will retry", zap.Error(err))
			return later(backoff(int(meta.NumDelivered)))
		}
		w.Metrics.deliveries.WithLabelValues("none", "no_callback").Inc()
		log.Info("no callback target", zap.String("outcome", "no_callback"))
		return done()
	}
	kind := tgt.Kind.String()
	if targetErr != nil {
		kind = "unusable"
	}

	release, retryIn, ok := w.hosts.acquire(tgt.Host())
	if !ok {
		// Over this host's share of the slots: come back later, without using an attempt.
		w.Metrics.deferred.Inc()
		return later(retryIn)
	}
	var took time.Duration
	defer func() { release(took) }()

	now := w.now()
	begun, err := w.Status.Begin(ctx, d, tgt.Raw, w.schedule.MaxAttempts(), now)
	if err != nil {
		log.Warn("claiming an attempt failed; will retry", zap.Error(err))
		return later(backoff(int(meta.NumDelivered)))
	}
	switch begun.Verdict {
	case status.Superseded, status.Finished:
		return done()
	case status.NotDue:
		return later(begun.Wait)
	case status.Exhausted:
		w.Metrics.deliveries.WithLabelValues(kind, "exhausted").Inc()
		log.Warn("attempts exhausted", zap.Int("attempt", begun.Attempt))
		return never("attempts exhausted")
	}
	if begun.ProfileVersion > profile.Version {
		// Redis has a newer profile than the cache (a key was rotated a moment ago): the
		// rotated key is used from this attempt on. The target stays as resolved.
		w.Profiles.Invalidate(ev.CustomerID)
		if fresh, err := w.Profiles.Get(ctx, ev.CustomerID); err == nil {
			profile = fresh
		}
	}
	oneShot := begun.Verdict == status.OneShot
	log = log.WithLazy(zap.Int("attempt", begun.Attempt), zap.Int("delivery", begun.Delivery),
		zap.String("target_host", tgt.Host()), zap.Bool("superseded_resend", oneShot))

	var res delivery.Result
	if targetErr != nil {
		res = delivery.Result{Err: targetErr, Permanent: true}
	} else {
		res = w.attempt(ctx, ev, profile, tgt, webhookID, begun, now)
		took = res.Duration
	}

	entry := &status.AttemptLog{Attempt: begun.Attempt, Delivery: begun.Delivery, At: now,
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
	if oneShot {
		// A newer resend owns the retries and the flag; this one was its own delivery once.
		dec, next = done(), time.Time{}
	}
	if res.Err != nil {
		entry.Error = res.Err.Error()
	}
	w.Metrics.observeAttempt(kind, res, outcome, meta, begun)
	if ce := log.Check(zap.InfoLevel, "attempt"); ce != nil {
		ce.Write(zap.String("outcome", string(outcome)),
			zap.Int("status_code", res.StatusCode),
			zap.Duration("duration", res.Duration),
			zap.String("error", entry.Error))
	}

	if err := w.record(ctx, d, tgt.Raw, outcome, entry, next); err != nil {
		// The customer may have the callback, but we could not write it down. Do not ack as if
		// all were well: the message comes back, Begin logs this attempt as interrupted, and
		// the next attempt is recorded once Redis answers again.
		log.Error("recording the attempt failed; will redeliver", zap.Error(err))
		return later(5 * time.Second)
	}
	return dec
}

// record writes an attempt's outcome, retrying briefly: a short Redis hiccup should not cost the
// customer a duplicate callback.
func (w *Worker) record(ctx context.Context, d status.Delivery, tgt string, o status.Outcome, e *status.AttemptLog, next time.Time) error {
	var err error
	for i := 1; i <= 4; i++ {
		if _, err = w.Status.Finish(ctx, d, tgt, o, e, next, w.now()); err == nil {
			return nil
		}
		if !sleep(ctx, backoff(i)) {
			break
		}
	}
	return err
}

func (w *Worker) attempt(ctx context.Context, ev event.Event, p customer.Profile, tgt target.Target, webhookID string, begun status.Begun, now time.Time) delivery.Result {
	tr := w.Transports[tgt.Kind]
	if tr == nil {
		return delivery.Result{Err: fmt.Errorf("%s callbacks are not configured", tgt.Kind), Permanent: true}
	}
	keys, err := p.SigningKeys(now)
	if err != nil {
		return delivery.Result{Err: errors.New("the customer's signing secret is unusable"), Permanent: true}
	}
	ctx, span := tracing.Tracer().Start(ctx, "callback.attempt", trace.WithSpanKind(trace.SpanKindClient))
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
		WebhookID:  webhookID,
		Timestamp:  now,
		Signature:  signing.Sign(webhookID, now.Unix(), body, keys...),
		AuthKey:    p.CallbackAuthKey,
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
	w.Metrics.rejected.WithLabelValues(string(reason)).Inc()
	w.Log.Warn("event refused", zap.String("subject", msg.Subject()), zap.String("reason", string(reason)),
		zap.String("detail", err.Error()))
	_, addErr := w.Invalid.Add(ctx, quarantine.Event{
		Subject: msg.Subject(), Reason: string(reason), Detail: err.Error(),
		ReceivedAt: w.now(), Headers: msg.Headers(), Raw: msg.Data(),
	})
	if addErr != nil {
		w.Log.Warn("keeping the refused event failed; will retry", zap.Error(addErr))
		return later(5 * time.Second)
	}
	return never(string(reason))
}

// decode validates the message and works out its webhook id: the publisher's Nats-Msg-Id for a
// completion, the original's id (carried in a header) for a resend, and for either without
// one, the id derived from the event (event.DerivedWebhookID).
func decode(msg jetstream.Msg) (event.Event, string, error) {
	customerID, resend, ok := stream.ParseSubject(msg.Subject())
	if !ok {
		return event.Event{}, "", event.Invalid(event.ReasonSubjectMismatch, "subject %q is not one of ours", msg.Subject())
	}
	ev, err := event.Decode(msg.Data())
	if err != nil {
		return event.Event{}, "", err
	}
	if ev.CustomerID != customerID {
		return event.Event{}, "", event.Invalid(event.ReasonSubjectMismatch,
			"customer_id %q does not match subject %q", ev.CustomerID, msg.Subject())
	}
	h := msg.Headers()
	id := h.Get(jetstream.MsgIDHeader)
	if resend {
		id = h.Get(stream.HeaderWebhookID)
	}
	if id == "" {
		// Published without Nats-Msg-Id: an id derived from the completion itself, so a copy
		// published again gets the same one. Events do not name an environment yet: live.
		id = event.DerivedWebhookID(ev.CustomerID, "live", ev.TaskID, ev.CompletedAt())
	}
	if !event.ValidWebhookID(id) {
		return event.Event{}, "", event.Invalid(event.ReasonInvalidMessageID,
			"message id must be 1 to 128 printable ASCII characters without spaces")
	}
	return ev, id, nil
}

// backoff is the wait after the n-th consecutive infrastructure failure: 0.5s doubling to 30s.
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
