package api

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/status"
)

// callbackIndex is what the dashboard's JSON endpoints read: the per-customer index of recent
// callbacks (pkg/status/index.go).
type callbackIndex interface {
	List(ctx context.Context, customerID string, env environment.Env, q status.ListQuery) (status.Page, error)
	Lookup(ctx context.Context, customerID string, env environment.Env, taskID string) (status.Summary, error)
	RecentAttempts(ctx context.Context, customerID string, env environment.Env, since time.Time, maxTasks, perTask int) (status.Recent, error)
}

// callbackSummaryView is one item of GET /v1/callbacks.
type callbackSummaryView struct {
	TaskID            string       `json:"task_id"`
	State             status.State `json:"state"`
	Target            *string      `json:"target"`
	CallbackSucceeded *bool        `json:"callback_succeeded"`
	Attempts          int          `json:"attempts"`
	Delivery          int          `json:"delivery"`
	LastAttemptAt     *time.Time   `json:"last_attempt_at"`
	NextAttemptAt     *time.Time   `json:"next_attempt_at"`
	LastAttempt       *attemptView `json:"last_attempt"`
}

type callbackListView struct {
	Callbacks  []callbackSummaryView `json:"callbacks"`
	NextCursor *string               `json:"next_cursor"`
}

const defaultListLimit = 25

var listStates = []status.State{status.Pending, status.Retrying, status.Succeeded, status.Failed, status.NoCallback}

// listCallbacks is GET /v1/callbacks: the customer's callbacks, newest activity first, from the
// customer's own index only (no parameter names a customer). A filtered page examines at most
// status.DefaultMaxScan index entries, so it may hold fewer than limit items, even none, and
// still have a next_cursor.
func (a *API) listCallbacks(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	q, e := query(r, "state", "task_id", "cursor", "limit")
	if e != nil {
		writeError(w, e.code, e.msg)
		return
	}
	lq, e := listQuery(q)
	if e != nil {
		writeError(w, e.code, e.msg)
		return
	}
	out := callbackListView{Callbacks: []callbackSummaryView{}}
	if id, ok := q["task_id"]; ok && id != "" {
		// A search by id: that one task, if it is this customer's (an id that could not exist
		// never reaches a Redis key).
		if !event.ValidTaskID(id) {
			writeJSON(w, http.StatusOK, out)
			return
		}
		sum, err := a.Status.Lookup(r.Context(), p.ID, p.Env, id)
		switch {
		case errors.Is(err, status.ErrNotFound):
		case err != nil:
			a.Log.Warn("looking up a callback failed", zap.String("customer_id", p.ID), zap.Error(err))
			unavailable(w)
			return
		case lq.State == "" || sum.State == lq.State:
			out.Callbacks = append(out.Callbacks, viewSummary(sum))
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	page, err := a.Status.List(r.Context(), p.ID, p.Env, lq)
	if err != nil {
		a.Log.Warn("listing callbacks failed", zap.String("customer_id", p.ID), zap.Error(err))
		unavailable(w)
		return
	}
	for _, s := range page.Items {
		if event.ValidTaskID(s.TaskID) {
			out.Callbacks = append(out.Callbacks, viewSummary(s))
		}
	}
	if page.Next != nil {
		c := encodeCursor(*page.Next)
		out.NextCursor = &c
	}
	writeJSON(w, http.StatusOK, out)
}

// listQuery reads the state, limit and cursor parameters of a callbacks list.
func listQuery(q map[string]string) (status.ListQuery, *requestError) {
	lq := status.ListQuery{State: status.State(q["state"]), Limit: defaultListLimit}
	if lq.State != "" && !slices.Contains(listStates, lq.State) {
		return lq, badRequest("state: want one of pending, retrying, succeeded, failed, no_callback")
	}
	if s, ok := q["limit"]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > status.MaxListLimit {
			return lq, badRequest("limit: want a whole number from 1 to %d", status.MaxListLimit)
		}
		lq.Limit = n
	}
	if c, ok := q["cursor"]; ok {
		cur, ok := decodeCursor(c)
		if !ok {
			return lq, badRequest("cursor: not a cursor this API returned")
		}
		lq.After = &cur
	}
	return lq, nil
}

func viewSummary(s status.Summary) callbackSummaryView {
	v := callbackSummaryView{TaskID: s.TaskID, State: s.State, CallbackSucceeded: s.Succeeded,
		Attempts: s.Attempts, Delivery: s.Delivery, LastAttemptAt: s.LastAttemptAt, NextAttemptAt: s.NextAttemptAt}
	if s.Target != "" {
		v.Target = &s.Target
	}
	if s.Last != nil {
		av := viewAttempt(*s.Last)
		v.LastAttempt = &av
	}
	return v
}

func viewAttempt(e status.AttemptLog) attemptView {
	av := attemptView{Attempt: e.Attempt, Delivery: e.Delivery, At: e.At, Error: e.Error,
		DurationMS: e.DurationMS, ResponseExcerpt: e.ResponseExcerpt}
	if e.StatusCode != 0 {
		av.StatusCode = &e.StatusCode
	}
	return av
}

// Cursors are opaque to clients: base64url of "<score ms>.<task id>". Both halves are checked
// on the way back in, and a cursor only ever positions a read of the caller's own index.
func encodeCursor(c status.Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.ScoreMS, 10) + "." + c.TaskID))
}

func decodeCursor(s string) (status.Cursor, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return status.Cursor{}, false
	}
	ms, id, ok := strings.Cut(string(raw), ".")
	score, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || score < 0 || !event.ValidTaskID(id) {
		return status.Cursor{}, false
	}
	return status.Cursor{ScoreMS: score, TaskID: id}, true
}

// getCallbackBody is GET /v1/task/{taskId}/callback/body: the JSON body every attempt of the
// task's callback sends, rebuilt from the stored task exactly as the workers build it.
func (a *API) getCallbackBody(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	rec, ok := a.record(w, r, p)
	if !ok {
		return
	}
	ev, ok := a.readOriginal(w, r, p, rec)
	if !ok {
		return
	}
	writeRaw(w, http.StatusOK, ev.CallbackBody())
}

// The 24-hour chart reads the logs of at most statsMaxTasks tasks, the last statsPerTask
// attempts of each: bounded work whatever the customer's volume. "complete" says whether
// the bounds cut anything.
const (
	statsMaxTasks = 1000
	statsPerTask  = 25
	statsHours    = 24
)

type statsBucket struct {
	Start time.Time `json:"start"`
	statsTotals
	latencies []int64
}

type statsTotals struct {
	Succeeded    int    `json:"succeeded"`
	Failed       int    `json:"failed"`
	LatencyMSP50 *int64 `json:"latency_ms_p50"`
	LatencyMSP95 *int64 `json:"latency_ms_p95"`
	LatencyMSMax *int64 `json:"latency_ms_max"`
}

type statsView struct {
	From          time.Time     `json:"from"`
	To            time.Time     `json:"to"`
	BucketSeconds int           `json:"bucket_seconds"`
	Hours         []statsBucket `json:"hours"`
	Totals        statsTotals   `json:"totals"`
	Tasks         int           `json:"tasks"`
	Complete      bool          `json:"complete"`
}

// callbackStats is GET /v1/callbacks/stats: the callback attempts of the current hour and the
// 23 before it, per hour: how many succeeded (a 2xx, or an email the relay accepted) and how many
// failed, and their latency. Attempts cut short by a worker that stopped are counted as failed
// but have no latency.
func (a *API) callbackStats(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	if _, e := query(r); e != nil {
		writeError(w, e.code, e.msg)
		return
	}
	now := a.now().UTC()
	from := now.Truncate(time.Hour).Add(-(statsHours - 1) * time.Hour)
	recent, err := a.Status.RecentAttempts(r.Context(), p.ID, p.Env, from, statsMaxTasks, statsPerTask)
	if err != nil {
		a.Log.Warn("reading recent attempts failed", zap.String("customer_id", p.ID), zap.Error(err))
		unavailable(w)
		return
	}
	v := statsView{From: from, To: now, BucketSeconds: 3600, Hours: make([]statsBucket, statsHours),
		Tasks: recent.Tasks, Complete: recent.Complete}
	for i := range v.Hours {
		v.Hours[i].Start = from.Add(time.Duration(i) * time.Hour)
	}
	var all []int64
	for _, e := range recent.Attempts {
		i := int(e.At.Sub(from) / time.Hour)
		if i < 0 || i >= statsHours {
			continue
		}
		b := &v.Hours[i]
		if e.Error == "" {
			b.Succeeded++
		} else {
			b.Failed++
		}
		if !interrupted(e) {
			b.latencies = append(b.latencies, e.DurationMS)
			all = append(all, e.DurationMS)
		}
	}
	for i := range v.Hours {
		b := &v.Hours[i]
		v.Totals.Succeeded += b.Succeeded
		v.Totals.Failed += b.Failed
		b.LatencyMSP50, b.LatencyMSP95, b.LatencyMSMax = latency(b.latencies)
	}
	v.Totals.LatencyMSP50, v.Totals.LatencyMSP95, v.Totals.LatencyMSMax = latency(all)
	writeJSON(w, http.StatusOK, v)
}

// interrupted is the log line record.lua writes for an attempt whose outcome never came.
func interrupted(e status.AttemptLog) bool {
	return e.StatusCode == 0 && e.DurationMS == 0 && strings.HasPrefix(e.Error, "interrupted")
}

// latency gives the nearest-rank median, 95th percentile and maximum; nil without samples.
func latency(ms []int64) (p50, p95, most *int64) {
	if len(ms) == 0 {
		return nil, nil, nil
	}
	slices.Sort(ms)
	rank := func(p float64) *int64 {
		i := int(p*float64(len(ms))+0.999999) - 1
		v := ms[min(max(i, 0), len(ms)-1)]
		return &v
	}
	return rank(0.50), rank(0.95), &ms[len(ms)-1]
}
