package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/schemas"
)

func TestDelivery_contract_body_and_headers(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	prof := h.newCustomer("cust_123", "")
	h.startWorker()

	example, err := schemas.Files.ReadFile("examples/task-completed.json")
	if err != nil {
		t.Fatal(err)
	}
	var ev struct {
		CustomerID string         `json:"customer_id"`
		Task       map[string]any `json:"task"`
	}
	if err := json.Unmarshal(example, &ev); err != nil {
		t.Fatal(err)
	}
	ev.Task["callback_url"] = rc.URL + "/callback"
	h.publish("cust_123", ev.Task)

	rec := h.waitFinal("cust_123", "576c41bf13e36b0600b02b34", 10*time.Second)
	if rec.Succeeded == nil || !*rec.Succeeded || rec.State != status.Succeeded {
		t.Fatalf("callback_succeeded = %v, state %q; want true, succeeded", rec.Succeeded, rec.State)
	}
	reqs := rc.Requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	got := reqs[0]

	// The body is the contract's: the task as received, its response, task_id and status.
	taskJSON, _ := json.Marshal(ev.Task)
	var compactTask bytes.Buffer
	_ = json.Compact(&compactTask, taskJSON)
	want := `{"task":` + compactTask.String() + `,"response":{"category":"red"},"task_id":"576c41bf13e36b0600b02b34","status":"completed"}`
	if string(got.Body) != want {
		t.Errorf("body:\n got %s\nwant %s", got.Body, want)
	}
	if err := schemas.ValidateCallback(got.Body); err != nil {
		t.Errorf("body does not match callback schema: %v", err)
	}
	for header, wantValue := range map[string]string{
		"Content-Type":              "application/json",
		"Refonte-Ai--Callback-Auth": prof.CallbackAuthKey,
		"Webhook-Id":                "evt_cust_123_576c41bf13e36b0600b02b34",
	} {
		if v := got.Header.Get(header); v != wantValue {
			t.Errorf("header %s = %q, want %q", header, v, wantValue)
		}
	}
	if ua := got.Header.Get("User-Agent"); !strings.HasPrefix(ua, "Refonte-Callbacks/") {
		t.Errorf("User-Agent = %q", ua)
	}
	ts, err := strconv.ParseInt(got.Header.Get("webhook-timestamp"), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		t.Errorf("webhook-timestamp = %q, want about now", got.Header.Get("webhook-timestamp"))
	}
	wh, err := standardwebhooks.NewWebhook(prof.SigningSecret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(got.Body, got.Header); err != nil {
		t.Errorf("Standard Webhooks verifier rejects the callback: %v", err)
	}
	if len(rec.Log) != 1 || rec.Log[0].StatusCode != 200 || rec.Log[0].Attempt != 1 {
		t.Errorf("attempt log = %+v, want one attempt with 200", rec.Log)
	}
	// The task is not kept in Redis; the stream message the status names holds it.
	if ev := h.original(rec); string(ev.Task) != compactTask.String() {
		t.Errorf("task of the message the status names = %s, want the original", ev.Task)
	}
}

func TestRetry_fails_three_times_then_succeeds(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, testenv.Failing(3, http.StatusInternalServerError))
	h.newCustomer("c1", "")
	h.startWorker()
	h.publish("c1", task("t1", rc.URL))

	rec := h.waitFinal("c1", "t1", 10*time.Second)
	if rc.Count() != 4 {
		t.Errorf("receiver saw %d attempts, want 4", rc.Count())
	}
	if rec.Succeeded == nil || !*rec.Succeeded {
		t.Errorf("callback_succeeded = %v, want true", rec.Succeeded)
	}
	if len(rec.Log) != 4 || rec.Log[0].StatusCode != 500 || rec.Log[3].StatusCode != 200 {
		t.Errorf("attempt log = %+v", rec.Log)
	}
	ids := map[string]bool{}
	for _, r := range rc.Requests() {
		ids[r.Header.Get("webhook-id")] = true
	}
	if len(ids) != 1 {
		t.Errorf("webhook-id changed between attempts: %v", ids)
	}
}

// exhaust checks a receiver that never succeeds: exactly 21 attempts spaced by the schedule,
// and callback_succeeded false at the end.
func exhaust(t *testing.T, vars map[string]string, respond func(int, http.ResponseWriter, *http.Request), path string) (*harness, *testenv.Receiver) {
	t.Helper()
	h := newHarness(t, vars)
	rc := testenv.NewReceiver(t, respond)
	h.newCustomer("c1", "")
	h.startWorker()
	h.publish("c1", task("t1", rc.URL+path))

	rec := h.waitFinal("c1", "t1", 30*time.Second)
	if rec.State != status.Failed || rec.Succeeded == nil || *rec.Succeeded {
		t.Fatalf("state %q, callback_succeeded %v; want failed, false", rec.State, rec.Succeeded)
	}
	reqs := rc.Requests()
	if len(reqs) != 21 {
		t.Fatalf("receiver saw %d attempts, want 21", len(reqs))
	}
	if len(rec.Log) != 21 || rec.Attempts != 21 {
		t.Errorf("attempt log has %d entries, count %d; want 21", len(rec.Log), rec.Attempts)
	}
	sch := h.cfg.Schedule
	for i := 1; i < len(reqs); i++ {
		gap := reqs[i].At.Sub(reqs[i-1].At)
		if min := time.Duration(float64(sch[i-1]) * 0.9); gap < min {
			t.Errorf("attempt %d came %s after attempt %d; the schedule wants at least %s", i+1, gap, i, min)
		}
	}
	// The message is ended: nothing is left for the consumer to redeliver.
	testenv.Eventually(t, 5*time.Second, func() bool {
		info := h.consumerInfo()
		return info.NumAckPending == 0 && info.NumPending == 0
	}, "the exhausted message is ended")
	return h, rc
}

// A schedule of growing delays, so the spacing check can tell one delay from another.
const growingSchedule = "10ms,20ms,30ms,40ms,50ms,60ms,70ms,80ms,90ms,100ms,10ms,20ms,30ms,40ms,50ms,60ms,70ms,80ms,90ms,100ms"

func TestRetry_always_500_gives_21_attempts_and_false(t *testing.T) {
	exhaust(t, map[string]string{"CALLBACK_RETRY_SCHEDULE": growingSchedule},
		func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) }, "")
}

func TestRetry_receiver_that_hangs_past_the_timeout(t *testing.T) {
	h, _ := exhaust(t, map[string]string{"CALLBACK_TIMEOUT": "150ms"},
		func(_ int, w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, "")
	rec, _ := h.record("c1", "t1")
	if !strings.Contains(rec.Log[0].Error, "timeout") {
		t.Errorf("attempt error = %q, want a timeout", rec.Log[0].Error)
	}
}

func TestRetry_redirect_is_not_followed(t *testing.T) {
	followed := 0
	h, rc := exhaust(t, nil, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed++
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}, "/hook")
	for _, r := range rc.Requests() {
		if r.Header.Get("webhook-id") == "" {
			t.Errorf("a request without webhook-id reached the receiver: the redirect was followed")
		}
	}
	rec, _ := h.record("c1", "t1")
	if rec.Log[0].StatusCode != 302 {
		t.Errorf("attempt status = %d, want 302", rec.Log[0].StatusCode)
	}
}

func TestTarget_profile_default_is_used(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	h.newCustomer("c1", rc.URL+"/default")
	h.startWorker()
	h.publish("c1", task("t1", ""))

	rec := h.waitFinal("c1", "t1", 10*time.Second)
	if rc.Count() != 1 || rec.Target != rc.URL+"/default" || rec.Succeeded == nil || !*rec.Succeeded {
		t.Errorf("requests %d, target %q, flag %v; want 1 request to the default", rc.Count(), rec.Target, rec.Succeeded)
	}
}

func TestTarget_none_means_no_callback(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	h.newCustomer("c1", "")
	h.startWorker()
	h.publish("c1", task("t1", ""))
	// A second task to a receiver proves the worker ran past the first.
	h.publish("c1", task("t2", rc.URL))
	h.waitFinal("c1", "t2", 10*time.Second)

	rec := h.waitFinal("c1", "t1", 10*time.Second)
	if rec.State != status.NoCallback || rec.Succeeded != nil {
		t.Errorf("state %q, flag %v; want no_callback and no flag", rec.State, rec.Succeeded)
	}
	if rc.Count() != 1 {
		t.Errorf("receiver saw %d requests, want only t2's", rc.Count())
	}
}

func TestTarget_unusable_is_failed_without_retry(t *testing.T) {
	h := newHarness(t, nil)
	h.newCustomer("c1", "")
	h.startWorker()
	h.publish("c1", task("t1", "ftp://files.example/drop"))
	rec := h.waitFinal("c1", "t1", 10*time.Second)
	if rec.State != status.Failed || rec.Succeeded == nil || *rec.Succeeded {
		t.Fatalf("state %q, flag %v; want failed, false", rec.State, rec.Succeeded)
	}
	if len(rec.Log) != 1 || !strings.Contains(rec.Log[0].Error, "unusable") {
		t.Errorf("attempt log = %+v, want one entry naming the unusable target", rec.Log)
	}
}

func TestDelivery_error_status_is_passed_on(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	h.newCustomer("c1", "")
	h.startWorker()
	tk := task("t1", rc.URL)
	tk["status"] = "error"
	delete(tk, "response")
	h.publish("c1", tk)
	h.waitFinal("c1", "t1", 10*time.Second)
	var body map[string]any
	if err := json.Unmarshal(rc.Requests()[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	if body["status"] != "error" || body["response"] != nil {
		t.Errorf("body status %v, response %v; want error, null", body["status"], body["response"])
	}
}

func TestInvalid_events_are_ended_with_a_reason_and_others_flow(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	h.newCustomer("c1", "")
	h.startWorker()

	valid, _ := json.Marshal(map[string]any{"customer_id": "c1", "task": task("ok", rc.URL)})
	mismatch, _ := json.Marshal(map[string]any{"customer_id": "c2", "task": task("x", rc.URL)})
	unknown, _ := json.Marshal(map[string]any{"customer_id": "nobody", "task": task("y", rc.URL)})
	badStatus, _ := json.Marshal(map[string]any{"customer_id": "c1", "task": map[string]any{"task_id": "z", "status": "done"}})
	cases := []struct {
		subject, reason string
		data            []byte
	}{
		{"tasks.completed.c1", string(event.ReasonMalformed), []byte(`{"customer_id": "c1", "task": {`)},
		{"tasks.completed.c1", string(event.ReasonSchema), badStatus},
		{"tasks.completed.nobody", string(event.ReasonUnknownCustomer), unknown},
		{"tasks.completed.c1", string(event.ReasonSubjectMismatch), mismatch},
	}
	ctx := context.Background()
	for _, c := range cases {
		if _, err := h.js.Publish(ctx, c.subject, c.data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: "tasks.completed.c1", Data: valid}); err != nil {
		t.Fatal(err)
	}

	rec := h.waitFinal("c1", "ok", 10*time.Second)
	if rec.Succeeded == nil || !*rec.Succeeded {
		t.Errorf("the valid task behind the invalid ones was not delivered")
	}
	var got []string
	testenv.Eventually(t, 5*time.Second, func() bool {
		evs, err := h.invalid.List(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, e := range evs {
			got = append(got, e.Reason)
		}
		return len(evs) == len(cases)
	}, "every invalid event is kept (have %v)", got)
	for _, c := range cases {
		found := false
		for _, r := range got {
			found = found || r == c.reason
		}
		if !found {
			t.Errorf("no invalid event recorded with reason %s (have %v)", c.reason, got)
		}
	}
	if _, ok := h.record("c2", "x"); ok {
		t.Error("a task was recorded for a refused event")
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		info := h.consumerInfo()
		return info.NumAckPending == 0 && info.NumPending == 0
	}, "refused events are ended, not redelivered")
	if rc.Count() != 1 {
		t.Errorf("receiver saw %d requests, want 1", rc.Count())
	}
}

func TestParked_retries_do_not_stop_fresh_deliveries(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 1,200 callbacks")
	}
	parked := 1200 // more than JetStream's default MaxAckPending of 1000
	if n, err := strconv.Atoi(os.Getenv("PARKED_CALLBACKS")); err == nil && n > 0 {
		parked = n // e.g. PARKED_CALLBACKS=50000 for the scale run (task chaos)
	}
	h := newHarness(t, map[string]string{
		"CALLBACK_RETRY_SCHEDULE": "1h" + strings.Repeat(",1h", 19),
		"WORKER_HOST_CONCURRENCY": "256",
	})
	dead := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	healthy := testenv.NewReceiver(t, nil)
	h.newCustomer("c1", "")
	h.startWorker()
	for i := range parked {
		h.publish("c1", task(fmt.Sprintf("dead-%d", i), dead.URL))
	}
	testenv.Eventually(t, time.Duration(parked/20+60)*time.Second, func() bool {
		return h.consumerInfo().NumAckPending >= parked && dead.Count() >= parked
	}, "%d callbacks parked for an hour (ack pending %d)", parked, h.consumerInfo().NumAckPending)
	before, _ := h.nats.Server.Varz(nil)

	const fresh = 200
	start := time.Now()
	for i := range fresh {
		h.publish("c1", task(fmt.Sprintf("fresh-%d", i), healthy.URL))
	}
	for i := range fresh {
		rec := h.waitFinal("c1", fmt.Sprintf("fresh-%d", i), 30*time.Second)
		if rec.Succeeded == nil || !*rec.Succeeded {
			t.Fatalf("fresh-%d: flag %v", i, rec.Succeeded)
		}
	}
	took := time.Since(start)
	after, _ := h.nats.Server.Varz(nil)
	t.Logf("%d parked (ack pending %d): %d fresh callbacks delivered in %s; NATS server RSS %d MB, CPU %.0f%% while they were parked",
		parked, h.consumerInfo().NumAckPending, fresh, took.Round(time.Millisecond), after.Mem>>20, (before.CPU+after.CPU)/2)
	if n := dead.Count(); n != parked {
		t.Errorf("dead receiver saw %d attempts, want %d (one each, the rest parked)", n, parked)
	}
}

func TestScale_two_workers_share_the_stream_without_duplicates(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	h.newCustomer("c1", "")
	h.startWorker()
	h.startWorker()
	const n = 400
	for i := range n {
		h.publish("c1", task(fmt.Sprintf("t%d", i), rc.URL))
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return rc.Count() >= n }, "all %d delivered (have %d)", n, rc.Count())
	for i := range n {
		h.waitFinal("c1", fmt.Sprintf("t%d", i), 5*time.Second)
	}
	seen := map[string]int{}
	for _, r := range rc.Requests() {
		seen[r.Header.Get("webhook-id")]++
	}
	if len(seen) != n {
		t.Errorf("%d distinct webhook ids, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c > 1 {
			t.Errorf("%s delivered %d times", id, c)
		}
	}
}

// A rotated auth key and signing secret are used from the next attempt on, even by a worker whose
// cached profile is older and that missed the announcement: Begin reports the profile's version.
func TestRotation_is_used_at_once_despite_a_stale_cache(t *testing.T) {
	h := newHarness(t, nil)
	h.profileTTL = time.Hour
	rc := testenv.NewReceiver(t, nil)
	before := h.newCustomer("c1", rc.URL)
	h.startWorker()
	h.publish("c1", task("t1", ""))
	h.waitFinal("c1", "t1", 10*time.Second) // the worker now caches the profile

	after, err := h.customers.RotateCallbackAuthKey(context.Background(), "c1", environment.Live)
	if err != nil {
		t.Fatal(err)
	}
	h.publish("c1", task("t2", ""))
	h.waitFinal("c1", "t2", 10*time.Second)
	reqs := rc.Requests()
	if got := reqs[1].Header.Get("refonte-ai--callback-auth"); got != after.CallbackAuthKey || got == before.CallbackAuthKey {
		t.Errorf("callback after rotation carries %q, want the new key", got)
	}
}
