package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/endpoint"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

// Endpoint health, alerts and pauses (docs/receiving.md, "When your endpoint fails").
//
// Each attempt's effect on its endpoint's health travels with the attempt's status write
// (status.Attached), so it costs no Redis round trip of its own; the script decides alerts
// atomically and answers which mail, if any, this worker sends. Mails go out from one goroutine
// per worker, never from a delivery slot. A pause is a field of the customer's profile, which
// the worker reads and caches anyway: checking it costs a map lookup.

// endpointStore is the part of endpoint.Store the worker uses.
type endpointStore interface {
	Call(o endpoint.Observation, p endpoint.Policy) (keys []string, args []any)
	ReleaseAlert(ctx context.Context, customerID string, env environment.Env, ep string, alertedAt time.Time) error
	MarkState(ctx context.Context, customerID string, env environment.Env, ep string, st endpoint.State, in bool, at time.Time) error
}

// notifier mails a notice of our own (not a callback) through the SMTP relay.
type notifier interface {
	Notify(ctx context.Context, to, subject, text string) error
}

// minPausedDefer is the shortest wait of a callback held for a paused endpoint.
const minPausedDefer = 5 * time.Second

// pausedReturnRate is how many callbacks held for one paused endpoint a worker lets come back
// per second, at most, before the horizon (ENDPOINT_PAUSED_RECHECK) is reached.
const pausedReturnRate = 100

// pauseClock spreads the return of the callbacks held for each paused endpoint, the way the
// scheduler spreads a full host queue's deferrals. Each held callback waits at least a quarter
// of the time the endpoint has been paused (between minPausedDefer and the horizon), so a quick
// resume is felt quickly and a long pause is rechecked rarely; and the callbacks of one endpoint
// come back one 1/pausedReturnRate apart, so that 100,000 callbacks held by a fresh pause do not
// all return every few seconds: past the horizon they come back anywhere in its second half.
// After a resume they flow again in the order they were spread.
type pauseClock struct {
	mu   sync.Mutex
	next map[pauseKey]time.Time // when the last callback held for the endpoint comes back
}

type pauseKey struct {
	customerID string
	env        environment.Env
	endpoint   string
}

// maxPauseClocks bounds the endpoints remembered; when full, the clock starts again empty.
const maxPauseClocks = 50_000

func newPauseClock() *pauseClock { return &pauseClock{next: make(map[pauseKey]time.Time)} }

// deferral is how long to hold one more callback for the endpoint k, paused for pausedFor,
// with horizon the longest wait.
func (c *pauseClock) deferral(k pauseKey, now time.Time, pausedFor, horizon time.Duration) time.Duration {
	base := min(horizon, max(minPausedDefer, pausedFor/4))
	c.mu.Lock()
	defer c.mu.Unlock()
	slot := c.next[k].Add(time.Second / pausedReturnRate)
	if earliest := now.Add(base); slot.Before(earliest) {
		slot = earliest
	}
	if limit := now.Add(horizon); slot.After(limit) {
		return horizon/2 + rand.N(horizon/2)
	}
	if len(c.next) >= maxPauseClocks {
		clear(c.next)
	}
	c.next[k] = slot
	return slot.Sub(now)
}

// holdPaused holds a job whose endpoint is paused, without an attempt; one held so long that it
// would outlive the stream's retention is ended as failed instead, with the reason in its log.
func (w *Worker) holdPaused(j *job) (decision, bool) {
	p, paused := j.profile.Paused[j.endpoint]
	if !paused || j.endpoint == "" {
		return decision{}, true
	}
	now := w.now()
	deadline := j.meta.Timestamp.Add(w.pausedMaxHold)
	remaining := deadline.Sub(now)
	if remaining <= 0 {
		return w.endPaused(j, p, now), false
	}
	w.metrics.deferred.WithLabelValues(deferPaused).Inc()
	k := pauseKey{customerID: j.ev.CustomerID, env: j.ev.Environment, endpoint: j.endpoint}
	return later(min(w.pauseClock.deferral(k, now, now.Sub(p.At), w.pausedRecheck), remaining)), false
}

// recheckPause is holdPaused with the profile as the cache has it now: a job queued for its host
// before the endpoint was paused is held too.
func (w *Worker) recheckPause(j *job) (decision, bool) {
	if fresh, err := w.profiles.Get(j.ctx, j.ev.CustomerID, j.ev.Environment); err == nil && fresh.Version >= j.profile.Version {
		j.profile = fresh
	}
	return w.holdPaused(j)
}

// endPaused ends a callback held past the longest hold: failed, with the reason in its attempt
// log, so that it is never dropped unrecorded by the stream's retention.
func (w *Worker) endPaused(j *job, p endpoint.Pause, now time.Time) decision {
	reason := fmt.Sprintf("not delivered: the endpoint %s has been paused since %s, and a callback is held at most %s",
		j.endpoint, p.At.Format(time.RFC3339), w.pausedMaxHold)
	begun, err := w.status.Begin(j.ctx, j.delivery, j.target.Raw, w.schedule.MaxAttempts(), now)
	if err != nil {
		j.log.Warn("claiming an attempt failed; will retry", zap.Error(err))
		return later(w.infra.failed())
	}
	switch begun.Verdict {
	case status.Superseded, status.Finished:
		return done()
	case status.Exhausted:
		return never("attempts exhausted")
	}
	entry := &status.AttemptLog{Attempt: begun.Attempt, Delivery: begun.Delivery, At: now, Error: reason}
	if _, err := w.writeOutcome(j.ctx, j.delivery, j.target.Raw, status.OutcomeFailed, entry, time.Time{}, nil); err != nil {
		j.log.Error("recording the end of a held callback failed; will retry", zap.Error(err))
		return later(5 * time.Second)
	}
	w.metrics.deliveries.WithLabelValues(j.kind, "paused_too_long", j.ev.Environment.String()).Inc()
	j.log.Warn("held callback ended: its endpoint stayed paused too long", zap.String("endpoint", j.endpoint))
	return never(reason)
}

// healthCall is the attempt's endpoint-health update, to travel with its status write; nil when
// the attempt never reached an endpoint.
func (w *Worker) healthCall(j *job) *status.Attached {
	if w.endpoints == nil || !j.attempted || j.endpoint == "" {
		return nil
	}
	o := endpoint.Observation{CustomerID: j.ev.CustomerID, Env: j.ev.Environment, Endpoint: j.endpoint,
		OK: j.result.OK(), At: j.at}
	if j.result.Err != nil {
		o.Error = j.result.Err.Error()
	}
	keys, args := w.endpoints.Call(o, w.policy)
	return &status.Attached{Script: endpoint.Script, Keys: keys, Args: args}
}

// observeHealth acts on what the health script answered: transitions are counted, an alert is
// handed to the alerter, an automatic pause is logged and the cached profile dropped.
func (w *Worker) observeHealth(j *job, reply status.AttachedReply) {
	if reply.Err != nil {
		j.log.Warn("recording endpoint health failed", zap.String("endpoint", j.endpoint), zap.Error(reply.Err))
		w.metrics.healthErrors.Inc()
		return
	}
	v, err := endpoint.ParseVerdict(reply.Val)
	if err != nil {
		j.log.Warn("reading endpoint health failed", zap.Error(err))
		w.metrics.healthErrors.Inc()
		return
	}
	note := alertNote{customerID: j.ev.CustomerID, env: j.ev.Environment, endpoint: j.endpoint, to: v.AlertEmail,
		failures: v.Failures, since: v.FailingSince, lastError: v.LastError, at: j.at}
	mark := func(st endpoint.State, in bool) {
		n := note
		n.kind, n.state, n.in = alertMark, st, in
		w.alerts.enqueue(n)
	}
	switch v.Transition {
	case endpoint.BecameFailing:
		w.metrics.transitions.WithLabelValues(string(endpoint.Failing)).Inc()
		mark(endpoint.Failing, true)
	case endpoint.BecameHealthy:
		w.metrics.transitions.WithLabelValues(string(endpoint.Healthy)).Inc()
		mark(endpoint.Failing, false)
	}
	if v.AutoPaused {
		mark(endpoint.Paused, true)
		w.metrics.transitions.WithLabelValues(string(endpoint.Paused)).Inc()
		w.profiles.Invalidate(j.ev.CustomerID)
		j.log.Warn("endpoint paused after uninterrupted failure", zap.String("endpoint", j.endpoint),
			zap.Time("failing_since", v.FailingSince))
		if v.AlertEmail != "" {
			n := note
			n.kind = alertPaused
			w.alerts.enqueue(n)
		}
	}
	switch v.Alert {
	case endpoint.Failure:
		note.kind = alertFailing
		w.alerts.enqueue(note)
	case endpoint.Recovered:
		note.kind = alertRecovered
		w.alerts.enqueue(note)
	}
}

type alertKind string

const (
	alertFailing   alertKind = "failing"
	alertRecovered alertKind = "recovered"
	alertPaused    alertKind = "paused"
	// alertMark is no mail: it records a state change for the fleet's count of endpoints by
	// state (a Redis write that has no place on the delivery path).
	alertMark alertKind = "mark"
)

// alertNote is one mail to send.
type alertNote struct {
	kind       alertKind
	customerID string
	env        environment.Env
	endpoint   string
	to         string
	failures   int
	since      time.Time
	lastError  string
	at         time.Time // of the observation that raised it (a failing alert's mark in Redis)
	state      endpoint.State
	in         bool
}

// dashboardPath is where an alert sends the customer.
const dashboardPath = "/dashboard#/endpoints"

func (n alertNote) subject() string {
	switch n.kind {
	case alertRecovered:
		return "Refonte.AI: callbacks to " + n.endpoint + " are succeeding again"
	case alertPaused:
		return "Refonte.AI: callbacks to " + n.endpoint + " are paused"
	}
	return "Refonte.AI: callbacks to " + n.endpoint + " are failing"
}

func (n alertNote) text() string {
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%-22s %s\r\n", k+":", v) }
	switch n.kind {
	case alertRecovered:
		fmt.Fprintf(&b, "Callbacks of %s (%s environment) to %s are succeeding again.\r\n\r\n", n.customerID, n.env, n.endpoint)
		line("Endpoint", n.endpoint)
		line("Recovered at", n.at.UTC().Format(time.RFC3339))
	default:
		what := "are failing"
		if n.kind == alertPaused {
			what = "have failed without interruption for too long, so the endpoint is now paused: its callbacks are held, without using attempts, until you resume it"
		}
		fmt.Fprintf(&b, "Callbacks of %s (%s environment) to %s %s.\r\n\r\n", n.customerID, n.env, n.endpoint, what)
		line("Endpoint", n.endpoint)
		line("Consecutive failures", fmt.Sprint(n.failures))
		line("Failing since", n.since.UTC().Format(time.RFC3339))
		line("Last error", n.lastError)
	}
	line("Dashboard", dashboardPath)
	if n.kind == alertFailing {
		b.WriteString("\r\nFailed callbacks are retried on their schedule. You can pause the endpoint from the dashboard (or POST /v1/endpoints/pause) to hold its callbacks without using attempts, and resume it once it is fixed.\r\n")
	}
	return b.String()
}

// alerter sends alert mails from one goroutine, so a slow relay never holds a delivery slot.
// A failing alert that cannot be sent is taken back in Redis, so the endpoint's next failure
// raises it again; a recovered or paused mail that cannot be sent is logged and counted only.
type alerter struct {
	mail    notifier
	store   endpointStore
	log     *zap.Logger
	metrics *Metrics

	mu     sync.Mutex
	closed bool
	notes  chan alertNote
}

// alertQueue bounds the mails waiting to be sent.
const alertQueue = 1024

func newAlerter(mail notifier, store endpointStore, log *zap.Logger, m *Metrics) *alerter {
	return &alerter{mail: mail, store: store, log: log, metrics: m, notes: make(chan alertNote, alertQueue)}
}

func (a *alerter) enqueue(n alertNote) {
	if a.mail == nil && n.kind != alertMark {
		return // no relay: health is recorded, alerts are off
	}
	queued := false
	a.mu.Lock()
	if !a.closed {
		select {
		case a.notes <- n:
			queued = true
		default:
		}
	}
	a.mu.Unlock()
	if !queued && n.kind != alertMark {
		a.failed(n, errors.New("alert queue full, or the worker is stopping"))
	}
}

// run sends mails until close; it then sends what is queued (each bounded by the relay timeout).
func (a *alerter) run(ctx context.Context) {
	for n := range a.notes {
		if n.kind == alertMark {
			mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := a.store.MarkState(mctx, n.customerID, n.env, n.endpoint, n.state, n.in, n.at); err != nil {
				a.log.Warn("counting an endpoint's state change failed", zap.Error(err))
			}
			cancel()
			continue
		}
		err := a.mail.Notify(ctx, n.to, n.subject(), n.text())
		if err != nil {
			a.failed(n, err)
			continue
		}
		a.metrics.alerts.WithLabelValues(string(n.kind), "sent").Inc()
		a.log.Info("endpoint alert sent", zap.String("kind", string(n.kind)), zap.String("customer_id", n.customerID),
			zap.String("environment", n.env.String()), zap.String("endpoint", n.endpoint), zap.Int("failures", n.failures))
	}
}

func (a *alerter) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed {
		a.closed = true
		close(a.notes)
	}
}

func (a *alerter) failed(n alertNote, err error) {
	a.log.Warn("endpoint alert not sent", zap.String("kind", string(n.kind)), zap.String("customer_id", n.customerID),
		zap.String("environment", n.env.String()), zap.String("endpoint", n.endpoint), zap.Error(err))
	if n.kind == alertFailing {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := a.store.ReleaseAlert(ctx, n.customerID, n.env, n.endpoint, n.at); err != nil {
			a.log.Warn("taking back an unsent alert failed; the next one is due after ALERT_INTERVAL", zap.Error(err))
		}
		cancel()
	}
	a.metrics.alerts.WithLabelValues(string(n.kind), "failed").Inc()
}
