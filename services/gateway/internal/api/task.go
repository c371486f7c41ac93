package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
	"refonte.ai/callbacks/pkg/target"
)

// record loads the customer's task named in the path, or answers 404 (also for another
// customer's task and for an id that could not exist, which never reaches a Redis key) or 503.
func (a *API) record(w http.ResponseWriter, r *http.Request, p customer.Profile) (status.Record, bool) {
	id := r.PathValue("taskId")
	if !event.ValidTaskID(id) {
		writeError(w, http.StatusNotFound, "task not found")
		return status.Record{}, false
	}
	rec, err := a.Status.Get(r.Context(), p.ID, p.Env, id)
	// A record that names no task (never written whole) has nothing to show or resend.
	if errors.Is(err, status.ErrNotFound) || (err == nil && (rec.CustomerID != p.ID || !hasTask(rec))) {
		writeError(w, http.StatusNotFound, "task not found")
		return status.Record{}, false
	}
	if err != nil {
		a.Log.Warn("reading task status failed", zap.String("customer_id", p.ID), zap.String("task_id", id), zap.Error(err))
		unavailable(w)
		return status.Record{}, false
	}
	return rec, true
}

// hasTask reports whether rec names its task: kept with it (the old form), or in the stream.
func hasTask(rec status.Record) bool { return len(rec.Task) > 0 || rec.Chain > 0 }

// errTaskUnreadable: the task's event cannot be read back as this task's.
var errTaskUnreadable = errors.New("stored task is unreadable")

// goneMessage answers for a task whose event is past the stream's retention.
const goneMessage = "the task's body is past the stream's retention: its status and attempts are still readable, " +
	"but it can no longer be shown or resent"

// original reads back rec's completion event: the task its old-form status kept, or the stream
// message its chain names. That message is checked to be this task's (customer, environment,
// task id, webhook id), so a status never shows or resends another task's body. A message that
// is gone answers stream.ErrGone; one that is not this task's, errTaskUnreadable.
func (a *API) original(ctx context.Context, p customer.Profile, rec status.Record) (event.Event, error) {
	if len(rec.Task) > 0 {
		ev, err := event.Decode(storedEvent(p.ID, p.Env, rec.Task))
		if err != nil {
			return event.Event{}, fmt.Errorf("%w: %v", errTaskUnreadable, err)
		}
		return ev, nil
	}
	m, err := a.Originals.Get(ctx, rec.Chain)
	if err != nil {
		return event.Event{}, err
	}
	ev, err := event.DecodeLimit(m.Data, len(m.Data))
	switch {
	case err != nil:
	case ev.CustomerID != p.ID || ev.Environment != p.Env || ev.TaskID != rec.TaskID:
		err = fmt.Errorf("message %d is task %q of %s/%s", rec.Chain, ev.TaskID, ev.CustomerID, ev.Environment)
	case stream.WebhookID(m.Subject, m.Header, ev) != rec.WebhookID:
		err = fmt.Errorf("message %d is another completion of the task", rec.Chain)
	}
	if err != nil {
		return event.Event{}, fmt.Errorf("%w: %v", errTaskUnreadable, err)
	}
	return ev, nil
}

// readOriginal is original for a handler: it answers the request itself when the task cannot be
// read (410 past retention, 500 unreadable, 503 stream unavailable).
func (a *API) readOriginal(w http.ResponseWriter, r *http.Request, p customer.Profile, rec status.Record) (event.Event, bool) {
	ev, err := a.original(r.Context(), p, rec)
	switch {
	case err == nil:
		return ev, true
	case errors.Is(err, stream.ErrGone):
		writeError(w, http.StatusGone, goneMessage)
	case errors.Is(err, errTaskUnreadable):
		a.Log.Error("stored task is unreadable", zap.String("customer_id", p.ID), zap.String("task_id", rec.TaskID), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "stored task is unreadable")
	default:
		a.Log.Warn("reading a task from the stream failed", zap.String("customer_id", p.ID), zap.String("task_id", rec.TaskID), zap.Error(err))
		unavailable(w)
	}
	return event.Event{}, false
}

func (a *API) getTask(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	rec, ok := a.record(w, r, p)
	if !ok {
		return
	}
	ev, ok := a.readOriginal(w, r, p, rec)
	if !ok {
		return
	}
	body, err := taskWithFlag(ev.Task, rec.Succeeded)
	if err != nil {
		a.Log.Error("stored task is unreadable", zap.String("customer_id", p.ID), zap.String("task_id", rec.TaskID), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "stored task is unreadable")
		return
	}
	writeRaw(w, http.StatusOK, body)
}

const flagField = "callback_succeeded"

// taskWithFlag is the stored task object with "callback_succeeded" added when the flag is known.
// The stored bytes are kept as they are; a field of that name in the task itself is dropped, so
// the field has one meaning only.
func taskWithFlag(task json.RawMessage, flag *bool) ([]byte, error) {
	if bytes.Contains(task, []byte(`"`+flagField+`"`)) {
		var err error
		if task, err = withoutTopLevelField(task, flagField); err != nil {
			return nil, err
		}
	}
	if flag == nil {
		return task, nil
	}
	task = bytes.TrimSpace(task)
	if len(task) < 2 || task[0] != '{' || task[len(task)-1] != '}' {
		return nil, errors.New("task is not a JSON object")
	}
	out := make([]byte, 0, len(task)+32)
	out = append(out, task[:len(task)-1]...)
	if len(bytes.TrimSpace(task[1:len(task)-1])) > 0 {
		out = append(out, ',')
	}
	out = append(out, `"`+flagField+`":`...)
	out = strconv.AppendBool(out, *flag)
	return append(out, '}'), nil
}

// withoutTopLevelField rewrites a JSON object without one of its top-level fields, keeping the
// others in order.
func withoutTopLevelField(obj json.RawMessage, name string) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("task is not a JSON object")
	}
	var out bytes.Buffer
	out.WriteByte('{')
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, err
		}
		if key == name {
			continue
		}
		if out.Len() > 1 {
			out.WriteByte(',')
		}
		k, _ := json.Marshal(key)
		out.Write(k)
		out.WriteByte(':')
		out.Write(val)
	}
	out.WriteByte('}')
	return out.Bytes(), nil
}

// callbackView is GET /v1/task/{taskId}/callback.
type callbackView struct {
	TaskID            string        `json:"task_id"`
	WebhookID         string        `json:"webhook_id"`
	Target            *string       `json:"target"`
	State             status.State  `json:"state"`
	CallbackSucceeded *bool         `json:"callback_succeeded"`
	Delivery          int           `json:"delivery"`
	Attempts          []attemptView `json:"attempts"`
	NextAttemptAt     *time.Time    `json:"next_attempt_at"`
}

type attemptView struct {
	Attempt  int       `json:"attempt"`
	Delivery int       `json:"delivery"`
	At       time.Time `json:"at"`
	// StatusCode is null when no HTTP answer came (refused connection, timeout, email).
	StatusCode      *int   `json:"status_code"`
	Error           string `json:"error"`
	DurationMS      int64  `json:"duration_ms"`
	ResponseExcerpt string `json:"response_excerpt"`
}

func (a *API) getCallback(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	rec, ok := a.record(w, r, p)
	if !ok {
		return
	}
	v := callbackView{
		TaskID:            rec.TaskID,
		WebhookID:         rec.WebhookID,
		State:             rec.State,
		CallbackSucceeded: rec.Succeeded,
		Delivery:          rec.Delivery,
		Attempts:          make([]attemptView, 0, len(rec.Log)),
		NextAttemptAt:     rec.NextAttemptAt,
	}
	if rec.Target != "" {
		v.Target = &rec.Target
	}
	for _, e := range rec.Log {
		av := attemptView{Attempt: e.Attempt, Delivery: e.Delivery, At: e.At, Error: e.Error,
			DurationMS: e.DurationMS, ResponseExcerpt: e.ResponseExcerpt}
		if e.StatusCode != 0 {
			av.StatusCode = &e.StatusCode
		}
		v.Attempts = append(v.Attempts, av)
	}
	writeJSON(w, http.StatusOK, v)
}

type sendCallbackView struct {
	TaskID      string `json:"task_id"`
	CallbackURL string `json:"callback_url"`
	Status      string `json:"status"`
}

// sendCallback puts the stored original back on the stream (see resend).
func (a *API) sendCallback(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	ok, wait, err := a.sendLimit.allow(r.Context(), p.ID)
	if err != nil {
		a.Log.Warn("send-callback rate limit unreadable", zap.String("customer_id", p.ID), zap.Error(err))
		unavailable(w)
		return
	}
	if !ok {
		secs := max(1, int(math.Ceil(wait.Seconds())))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeError(w, http.StatusTooManyRequests,
			fmt.Sprintf("too many send-callback requests; retry in %d seconds", secs))
		return
	}
	rec, ok := a.record(w, r, p)
	if !ok {
		return
	}
	log := a.Log.With(zap.String("customer_id", p.ID), zap.String("task_id", rec.TaskID))
	// From here on the resend happens whether or not the client waits for the answer.
	tgt, seq, err := a.resend(context.WithoutCancel(r.Context()), p, rec, "")
	var re *resendError
	switch {
	case errors.As(err, &re):
		writeError(w, re.code, re.msg)
		return
	case err != nil:
		log.Warn("publishing a resend failed", zap.Error(err))
		unavailable(w)
		return
	}
	log.Info("resend queued", zap.Uint64("chain", seq), zap.String("target_host", tgt.Host()))
	writeJSON(w, http.StatusOK, sendCallbackView{TaskID: rec.TaskID, CallbackURL: tgt.Raw, Status: "queued"})
}

// resendError is why a stored callback cannot be resent as it is; code is the HTTP answer.
type resendError struct {
	code int
	msg  string
}

func (e *resendError) Error() string { return e.msg }

// resend is the one path by which a stored callback goes out again (send-callback, recovery):
// it puts the original back on the stream, read from the message its status names. The new
// message holds the same task and becomes the status's chain, so the task stays readable from
// it for the stream's whole retention from now. The worker delivers the same body with the
// same webhook-id to the task's target as it is now: the task's own callback_url, else the
// profile's current default. The new delivery supersedes any earlier one of the task, so a
// retrying delivery stops racing it for the flag. A *resendError says the callback cannot be
// resent; any other error is a publish that failed and may be tried again. It returns the
// stream sequence of the new delivery.
func (a *API) resend(ctx context.Context, p customer.Profile, rec status.Record, dedupID string) (target.Target, uint64, error) {
	log := a.Log.With(zap.String("customer_id", p.ID), zap.String("task_id", rec.TaskID))
	ev, err := a.original(ctx, p, rec)
	switch {
	case errors.Is(err, stream.ErrGone):
		return target.Target{}, 0, &resendError{http.StatusGone, goneMessage}
	case errors.Is(err, errTaskUnreadable) || (err == nil && rec.WebhookID == ""):
		log.Error("stored task cannot be resent", zap.Error(err), zap.Bool("has_webhook_id", rec.WebhookID != ""))
		return target.Target{}, 0, &resendError{http.StatusInternalServerError, "the stored task cannot be resent"}
	case err != nil:
		return target.Target{}, 0, err // the stream did not answer: may be tried again
	}
	tgt, err := target.Resolve(ev.CallbackURL, p.DefaultCallbackURL)
	switch {
	case err != nil:
		return tgt, 0, &resendError{http.StatusConflict, "the task's callback target is unusable: " + err.Error()}
	case tgt.Kind == target.None:
		return tgt, 0, &resendError{http.StatusConflict,
			"no callback target: the task has no callback_url and the profile has no default_callback_url"}
	}
	seq, err := a.Resender.Resend(ctx, ev, rec.WebhookID, dedupID)
	if err != nil {
		return tgt, 0, err
	}
	d := status.Delivery{CustomerID: p.ID, Env: p.Env, TaskID: ev.TaskID, WebhookID: rec.WebhookID, Chain: seq}
	if _, err := a.Status.Queue(ctx, d, a.now()); err != nil {
		// The resend is on the stream; the worker's first attempt records the new delivery.
		log.Warn("recording a queued resend failed", zap.Error(err))
	}
	return tgt, seq, nil
}

// storedEvent rebuilds the completion event around a stored task of env, as event.Event.Marshal
// lays it out; the customer id is an authenticated, validated one. The environment is the
// authenticated key's, so a resend goes out with that environment's credentials only.
func storedEvent(customerID string, env environment.Env, task json.RawMessage) []byte {
	return event.Event{CustomerID: customerID, Environment: env, Task: task}.Marshal()
}
