package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/services/gateway/internal/recovery"
)

// RecoveryConfig configures POST /v1/callbacks/recover (package recovery).
type RecoveryConfig struct {
	// RatePerSecond is the most re-sends per second per customer, whatever the number of its
	// recoveries or of gateways.
	RatePerSecond int
	// MaxInFlight bounds a recovery's re-sends still waiting for their first attempt, so a slow
	// endpoint slows the recovery down instead of piling re-sends up in the stream.
	MaxInFlight int
	// MaxActive is the most unfinished recoveries per customer; one more is a 409.
	MaxActive int
	// MaxRunning is the most unfinished recoveries across every customer and gateway; one more
	// is a 503 with Retry-After.
	MaxRunning int
}

func loadRecoveryConfig(r *env.Reader) RecoveryConfig {
	return RecoveryConfig{
		RatePerSecond: r.Int("RECOVER_RATE_PER_SECOND", 50),
		MaxInFlight:   r.Int("RECOVER_MAX_IN_FLIGHT", 16),
		MaxActive:     r.Int("RECOVER_MAX_ACTIVE", 3),
		MaxRunning:    r.Int("RECOVER_MAX_RUNNING", 20),
	}
}

func (c RecoveryConfig) validate() error {
	var errs []error
	if c.RatePerSecond < 1 || c.RatePerSecond > 10_000 {
		errs = append(errs, fmt.Errorf("RECOVER_RATE_PER_SECOND=%d: want 1 to 10000", c.RatePerSecond))
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, fmt.Errorf("RECOVER_MAX_IN_FLIGHT=%d: want at least 1", c.MaxInFlight))
	}
	if c.MaxActive < 1 {
		errs = append(errs, fmt.Errorf("RECOVER_MAX_ACTIVE=%d: want at least 1", c.MaxActive))
	}
	if c.MaxRunning < 1 {
		errs = append(errs, fmt.Errorf("RECOVER_MAX_RUNNING=%d: want at least 1", c.MaxRunning))
	}
	return errors.Join(errs...)
}

func (a *API) newRecoveries() *recovery.Manager {
	if a.Recoveries == nil {
		return nil
	}
	return recovery.NewManager(recovery.Config{
		RatePerSecond: float64(a.cfg.Recovery.RatePerSecond),
		MaxInFlight:   a.cfg.Recovery.MaxInFlight,
		MaxActive:     a.cfg.Recovery.MaxActive,
		MaxRunning:    a.cfg.Recovery.MaxRunning,
		// A re-send nobody began within the stream's max age never will be.
		Abandon: a.cfg.Stream.MaxAge + time.Hour,
	}, a.Recoveries, recoverySender{a}, a.Log.Named("recovery"), a.Registry)
}

// Run does the API's background work until ctx ends: it runs recoveries (and resumes those a
// stopped or dead gateway left), and trims invalid events past the retention. When ctx ends it
// stops the recoveries it runs, hands them on to the next gateway, and returns.
func (a *API) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if a.Invalid != nil {
		wg.Go(func() { a.trimInvalidEvents(ctx) })
	}
	var err error
	if a.recoveries != nil {
		err = a.recoveries.Run(ctx)
	} else {
		<-ctx.Done()
	}
	wg.Wait()
	return err
}

// recoverySender re-sends for recoveries through the same path as send-callback.
type recoverySender struct{ a *API }

func (s recoverySender) Resend(ctx context.Context, customerID string, env environment.Env, taskID, dedupID string) (uint64, error) {
	// Read each time: a default URL the customer fixed during the recovery is used at once.
	p, err := s.a.Customers.Get(ctx, customerID, env)
	if errors.Is(err, customer.ErrNotFound) {
		return 0, recovery.ErrCustomerGone
	}
	if err != nil {
		return 0, err
	}
	rec, err := s.a.Status.Get(ctx, customerID, p.Env, taskID)
	if errors.Is(err, status.ErrNotFound) || (err == nil && (rec.CustomerID != customerID || !hasTask(rec))) {
		return 0, fmt.Errorf("%w: the task's status expired", recovery.ErrSkip)
	}
	if err != nil {
		return 0, err
	}
	_, seq, err := s.a.resend(ctx, p, rec, dedupID)
	var re *resendError
	if errors.As(err, &re) {
		return 0, fmt.Errorf("%w: %s", recovery.ErrSkip, re.msg)
	}
	return seq, err
}

// recoveryView is a recovery as the API shows it.
type recoveryView struct {
	ID     string    `json:"id"`
	Status string    `json:"status"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until"`
	State  string    `json:"state"`
	// Matched counts the window's tasks whose state matched, as the walk met them (so it grows
	// while the recovery runs); Queued the re-sends put on the stream; Skipped the matched tasks
	// not re-sent (another recovery of the customer that ran beside it re-sent them, or no usable
	// target); Done the re-deliveries that reached a final state (or that a newer delivery
	// superseded), of which Succeeded and Failed ended so.
	Matched    int64      `json:"matched"`
	Queued     int64      `json:"queued"`
	Skipped    int64      `json:"skipped"`
	Done       int64      `json:"done"`
	Succeeded  int64      `json:"succeeded"`
	Failed     int64      `json:"failed"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Error      *string    `json:"error"`
}

func viewRecovery(r recovery.Recovery) recoveryView {
	v := recoveryView{ID: r.ID, Status: r.Status, Since: r.Since, Until: r.Until, State: r.State,
		Matched: r.Matched, Queued: r.Queued, Skipped: r.Skipped, Done: r.Done, Succeeded: r.Succeeded,
		Failed: r.Failed, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, FinishedAt: r.FinishedAt}
	if r.Error != "" {
		v.Error = &r.Error
	}
	return v
}

// startRecovery is POST /v1/callbacks/recover: re-send every callback of the customer whose last
// attempt falls in [since, until] and whose state matches, in the background. The window ends
// at the latest now: the index holds no later attempt, and a window that ends before the
// recovery starts never sees the recovery's own re-deliveries (their attempts come later).
func (a *API) startRecovery(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	var req struct {
		Since *string `json:"since"`
		Until *string `json:"until"`
		State *string `json:"state"`
	}
	if e := decodeJSON(w, r, a.cfg.MaxBodyBytes, &req); e != nil {
		writeError(w, e.code, e.msg)
		return
	}
	now := a.now()
	params, e := recoveryParams(req.Since, req.Until, req.State, now, a.cfg.Retention)
	if e != nil {
		writeError(w, e.code, e.msg)
		return
	}
	params.Env = p.Env
	rec, err := a.recoveries.Start(context.WithoutCancel(r.Context()), p.ID, params)
	var (
		tooMany *recovery.TooManyError
		busy    *recovery.BusyError
	)
	switch {
	case errors.As(err, &busy):
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"%d recoveries are running across all customers (at most %d at once); retry later", busy.Max, busy.Max))
		return
	case errors.As(err, &tooMany):
		writeError(w, http.StatusConflict, fmt.Sprintf(
			"%d recoveries are already running (at most %d at once); wait for one to finish",
			tooMany.Active, a.cfg.Recovery.MaxActive))
		return
	case err != nil:
		a.Log.Warn("starting a recovery failed", zap.String("customer_id", p.ID), zap.Error(err))
		unavailable(w)
		return
	}
	w.Header().Set("Location", "/v1/callbacks/recover/"+rec.ID)
	writeJSON(w, http.StatusAccepted, viewRecovery(rec))
}

func recoveryParams(since, until, state *string, now time.Time, retention time.Duration) (recovery.Params, *requestError) {
	var p recovery.Params
	if since == nil {
		return p, badRequest("since is required: an RFC 3339 time")
	}
	var err error
	if p.Since, err = time.Parse(time.RFC3339Nano, *since); err != nil {
		return p, badRequest("since: want an RFC 3339 time such as 2026-01-02T15:04:05Z")
	}
	p.Until = now
	if until != nil {
		if p.Until, err = time.Parse(time.RFC3339Nano, *until); err != nil {
			return p, badRequest("until: want an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
		if p.Until.After(now) {
			p.Until = now
		}
	}
	p.Since, p.Until = p.Since.UTC().Truncate(time.Millisecond), p.Until.UTC().Truncate(time.Millisecond)
	if !p.Since.Before(p.Until) {
		return p, badRequest("since must be before until (and before now)")
	}
	if p.Until.Sub(p.Since) > retention {
		return p, badRequest("the window is longer than the %s for which callbacks are kept", retention)
	}
	p.State = recovery.StateFailed
	if state != nil {
		p.State = *state
	}
	switch p.State {
	case recovery.StateFailed, recovery.StateSucceeded, recovery.StateAny:
	default:
		return p, badRequest("state: want failed, succeeded or any")
	}
	return p, nil
}

// getRecovery is GET /v1/callbacks/recover/{id}; another customer's recovery is a 404.
func (a *API) getRecovery(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	rec, err := a.recoveries.Get(r.Context(), p.ID, p.Env, r.PathValue("id"))
	switch {
	case errors.Is(err, recovery.ErrNotFound):
		writeError(w, http.StatusNotFound, "recovery not found")
		return
	case err != nil:
		a.Log.Warn("reading a recovery failed", zap.String("customer_id", p.ID), zap.Error(err))
		unavailable(w)
		return
	}
	writeJSON(w, http.StatusOK, viewRecovery(rec))
}

// cancelRecovery is DELETE /v1/callbacks/recover/{id}: the recovery queues no more re-sends
// (those already queued are delivered). Cancelling a cancelled recovery answers it again; one
// that finished otherwise is a 409.
func (a *API) cancelRecovery(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	rec, err := a.recoveries.Cancel(context.WithoutCancel(r.Context()), p.ID, p.Env, r.PathValue("id"))
	switch {
	case errors.Is(err, recovery.ErrNotFound):
		writeError(w, http.StatusNotFound, "recovery not found")
		return
	case errors.Is(err, recovery.ErrFinished):
		writeError(w, http.StatusConflict, "the recovery has already finished")
		return
	case err != nil:
		a.Log.Warn("cancelling a recovery failed", zap.String("customer_id", p.ID), zap.Error(err))
		unavailable(w)
		return
	}
	writeJSON(w, http.StatusOK, viewRecovery(rec))
}
