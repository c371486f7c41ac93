package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/quarantine"
	"refonte.ai/callbacks/pkg/stream"
)

// invalidStore is the store of events the workers refused (pkg/quarantine).
type invalidStore interface {
	Query(ctx context.Context, q quarantine.Query) (quarantine.Page, error)
	Get(ctx context.Context, id string) (quarantine.Event, error)
	Delete(ctx context.Context, id string) error
	Len(ctx context.Context) (int64, error)
	TrimBefore(ctx context.Context, t time.Time) error
}

// replayer publishes a refused event again (pkg/publish).
type replayer interface {
	Replay(ctx context.Context, subject string, header map[string][]string, data []byte) (publish.Replayed, error)
}

type invalidMetrics struct {
	replays prometheus.Counter
	deletes prometheus.Counter
}

// newInvalidMetrics registers the admin API's counters and a gauge of the events kept, read
// from Redis (XLEN, O(1)) when /metrics is scraped. Refusals by reason are the workers'
// refonte_events_rejected_total{reason}.
func newInvalidMetrics(reg prometheus.Registerer, store invalidStore) *invalidMetrics {
	m := &invalidMetrics{
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refonte_gateway_invalid_event_replays_total",
			Help: "Refused events an operator published again.",
		}),
		deletes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refonte_gateway_invalid_event_deletes_total",
			Help: "Refused events an operator deleted.",
		}),
	}
	stored := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "refonte_gateway_invalid_events_stored",
		Help: "Refused events kept for inspection (NaN when Redis does not answer).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, err := store.Len(ctx)
		if err != nil {
			return math.NaN()
		}
		return float64(n)
	})
	reg.MustRegister(m.replays, m.deletes, stored)
	return m
}

// invalidEventView is one kept event. Raw is the event's bytes as text when they are valid
// UTF-8 (raw_encoding "utf8", what nearly every event is: JSON), else base64 (raw_encoding
// "base64"), so what is shown is always exactly what was received.
type invalidEventView struct {
	ID         string  `json:"id"`
	Subject    string  `json:"subject"`
	CustomerID *string `json:"customer_id"`
	// Environment is the one the event names, when its bytes say: an event refused for an
	// unknown customer, say, still belongs to the live or the test environment.
	Environment *environment.Env    `json:"environment"`
	Reason      string              `json:"reason"`
	Detail      string              `json:"detail"`
	ReceivedAt  time.Time           `json:"received_at"`
	RawBytes    int                 `json:"raw_bytes"`
	Truncated   bool                `json:"truncated"`
	Headers     map[string][]string `json:"headers,omitempty"`
	// Raw and RawEncoding are only in the detail (GET by id), not in lists.
	RawEncoding string  `json:"raw_encoding,omitempty"`
	Raw         *string `json:"raw,omitempty"`
}

func viewInvalidEvent(e quarantine.Event, full bool) invalidEventView {
	v := invalidEventView{ID: e.ID, Subject: e.Subject, Reason: e.Reason, Detail: e.Detail,
		ReceivedAt: e.ReceivedAt, RawBytes: len(e.Raw), Truncated: e.Truncated}
	if c, _, ok := stream.ParseSubject(e.Subject); ok && event.ValidCustomerID(c) {
		v.CustomerID = &c
	}
	v.Environment = namedEnvironment(e)
	if !full {
		return v
	}
	v.Headers = e.Headers
	if v.Headers == nil {
		v.Headers = map[string][]string{}
	}
	raw := string(e.Raw)
	v.RawEncoding = "utf8"
	if !utf8.Valid(e.Raw) {
		raw, v.RawEncoding = base64.StdEncoding.EncodeToString(e.Raw), "base64"
	}
	v.Raw = &raw
	return v
}

// namedEnvironment reads the top-level environment of a refused event's bytes: live when a
// whole JSON object has none, nil when the bytes do not say.
func namedEnvironment(e quarantine.Event) *environment.Env {
	if e.Truncated {
		return nil
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(e.Raw, &doc); err != nil {
		return nil
	}
	var name string
	if raw, ok := doc["environment"]; ok && json.Unmarshal(raw, &name) != nil {
		return nil
	}
	env, ok := environment.Parse(name)
	if !ok || (name == "" && doc["environment"] != nil) {
		return nil
	}
	return &env
}

type invalidEventListView struct {
	Events     []invalidEventView `json:"events"`
	NextCursor *string            `json:"next_cursor"`
}

const defaultInvalidLimit = 50

// listInvalidEvents is GET /admin/v1/invalid-events: newest first, filtered by since and
// reason, paged by cursor (the id of the last event of the previous page). A filtered page
// examines a bounded number of events, so it may be short, even empty, and still have a
// next_cursor.
func (a *API) listInvalidEvents(w http.ResponseWriter, r *http.Request) {
	q, e := query(r, "since", "reason", "cursor", "limit")
	if e != nil {
		writeError(w, e.code, e.msg)
		return
	}
	iq := quarantine.Query{Limit: defaultInvalidLimit, Reason: q["reason"], Before: q["cursor"]}
	if s, ok := q["since"]; ok {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			writeError(w, http.StatusBadRequest, "since: want an RFC 3339 time such as 2026-01-02T15:04:05Z")
			return
		}
		iq.Since = t
	}
	if iq.Reason != "" && !slices.Contains(event.Reasons, event.Reason(iq.Reason)) {
		names := make([]string, len(event.Reasons))
		for i, r := range event.Reasons {
			names[i] = string(r)
		}
		writeError(w, http.StatusBadRequest, "reason: want one of "+strings.Join(names, ", "))
		return
	}
	if iq.Before != "" && !quarantine.ValidID(iq.Before) {
		writeError(w, http.StatusBadRequest, "cursor: not a cursor this API returned")
		return
	}
	if s, ok := q["limit"]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > quarantine.MaxLimit {
			writeError(w, http.StatusBadRequest, "limit: want a whole number from 1 to "+strconv.Itoa(quarantine.MaxLimit))
			return
		}
		iq.Limit = n
	}
	page, err := a.Invalid.Query(r.Context(), iq)
	if err != nil {
		a.Log.Warn("listing invalid events failed", zap.Error(err))
		unavailable(w)
		return
	}
	out := invalidEventListView{Events: make([]invalidEventView, 0, len(page.Events))}
	for _, e := range page.Events {
		out.Events = append(out.Events, viewInvalidEvent(e, false))
	}
	if page.Next != "" {
		out.NextCursor = &page.Next
	}
	writeJSON(w, http.StatusOK, out)
}

// invalidEvent loads the event named in the path, or answers 404 or 503.
func (a *API) invalidEvent(w http.ResponseWriter, r *http.Request) (quarantine.Event, bool) {
	e, err := a.Invalid.Get(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, quarantine.ErrNotFound):
		writeError(w, http.StatusNotFound, "invalid event not found")
		return e, false
	case err != nil:
		a.Log.Warn("reading an invalid event failed", zap.Error(err))
		unavailable(w)
		return e, false
	}
	return e, true
}

func (a *API) getInvalidEvent(w http.ResponseWriter, r *http.Request) {
	if e, ok := a.invalidEvent(w, r); ok {
		writeJSON(w, http.StatusOK, viewInvalidEvent(e, true))
	}
}

type replayedView struct {
	ID             string  `json:"id"`
	Subject        string  `json:"subject"`
	WebhookID      *string `json:"webhook_id"`
	StreamSequence uint64  `json:"stream_sequence"`
	Status         string  `json:"status"`
}

// replayInvalidEvent is POST /admin/v1/invalid-events/{id}/replay: the kept bytes go back on the
// stream for the workers to decide anew (see publish.Replay for the subject and ids). The kept
// event stays until it is deleted; if the workers refuse the replay too, it is kept again, with
// the reason of this time.
func (a *API) replayInvalidEvent(w http.ResponseWriter, r *http.Request) {
	e, ok := a.invalidEvent(w, r)
	if !ok {
		return
	}
	raw := e.Raw
	if e.Truncated {
		// Only the start was kept; the whole event is still in the stream, unless it is past
		// the stream's retention.
		m, err := a.Originals.Get(r.Context(), e.Sequence)
		switch {
		case err == nil && m.Subject == e.Subject && bytes.HasPrefix(m.Data, e.Raw):
			raw = m.Data
		case err == nil || errors.Is(err, stream.ErrGone):
			writeError(w, http.StatusConflict, "only the first "+strconv.Itoa(quarantine.MaxRaw)+
				" bytes of this event were kept and the stream no longer holds it; replaying them would not be the event")
			return
		default:
			a.Log.Warn("reading an invalid event from the stream failed", zap.String("invalid_event_id", e.ID), zap.Error(err))
			unavailable(w)
			return
		}
	}
	// From here on the replay happens whether or not the client waits for the answer.
	ctx := context.WithoutCancel(r.Context())
	res, err := a.Replayer.Replay(ctx, e.Subject, e.Headers, raw)
	switch {
	case errors.Is(err, publish.ErrNotReplayable):
		writeError(w, http.StatusConflict, "the event's subject is not one the stream holds")
		return
	case err != nil:
		a.Log.Warn("replaying an invalid event failed", zap.String("invalid_event_id", e.ID), zap.Error(err))
		unavailable(w)
		return
	}
	a.invalidMetrics.replays.Inc()
	a.Log.Info("invalid event replayed", zap.String("invalid_event_id", e.ID), zap.String("reason", e.Reason),
		zap.String("subject", res.Subject), zap.Uint64("stream_sequence", res.Sequence))
	v := replayedView{ID: e.ID, Subject: res.Subject, StreamSequence: res.Sequence, Status: "queued"}
	if res.WebhookID != "" {
		v.WebhookID = &res.WebhookID
	}
	writeJSON(w, http.StatusAccepted, v)
}

func (a *API) deleteInvalidEvent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := a.Invalid.Delete(r.Context(), id)
	switch {
	case errors.Is(err, quarantine.ErrNotFound):
		writeError(w, http.StatusNotFound, "invalid event not found")
		return
	case err != nil:
		a.Log.Warn("deleting an invalid event failed", zap.Error(err))
		unavailable(w)
		return
	}
	a.invalidMetrics.deletes.Inc()
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "deleted": true})
}

// trimInvalidEvents drops kept events older than the retention, hourly: the workers cap the
// store's size, this caps its age.
func (a *API) trimInvalidEvents(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := a.Invalid.TrimBefore(tctx, a.now().Add(-a.cfg.Retention)); err != nil && ctx.Err() == nil {
			a.Log.Warn("trimming old invalid events failed", zap.Error(err))
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
