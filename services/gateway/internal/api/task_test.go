package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/status"
)

func TestTask_shows_the_published_task_the_flag_and_the_attempts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	// The first attempt fails, the retry succeeds; each takes a measurable time.
	rc := testenv.NewReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		time.Sleep(20 * time.Millisecond)
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("busy, try later"))
			return
		}
		_, _ = w.Write([]byte("thanks"))
	})
	c := h.createCustomer("cust_a", "")
	published := task("t1", rc.URL+"/hook")
	h.publish(c.CustomerID, published)

	var got map[string]any
	testenv.Eventually(t, 10*time.Second, func() bool {
		res := h.as(c.APIKey, "GET", "/v1/task/t1", nil)
		if res.Code != http.StatusOK {
			return false
		}
		got = res.json(t)
		return got["callback_succeeded"] == true
	}, "GET /v1/task/t1 shows callback_succeeded true (last: %v)", got)
	res := h.as(c.APIKey, "GET", "/v1/task/t1", nil)
	h.checkSchema("Task", res.Body)
	delete(got, "callback_succeeded")
	var want map[string]any
	raw, _ := json.Marshal(published)
	_ = json.Unmarshal(raw, &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("task as shown:\n%v\nwant the task as published:\n%v", got, want)
	}

	v, _ := h.callback(c.APIKey, "t1")
	if v.TaskID != "t1" || v.State != "succeeded" || v.CallbackSucceeded == nil || !*v.CallbackSucceeded {
		t.Errorf("callback view: task %q state %q flag %v; want t1, succeeded, true", v.TaskID, v.State, v.CallbackSucceeded)
	}
	if v.Target == nil || *v.Target != rc.URL+"/hook" || v.WebhookID != "evt_cust_a_t1" || v.NextAttemptAt != nil {
		t.Errorf("callback view: target %v webhook_id %q next_attempt_at %v", v.Target, v.WebhookID, v.NextAttemptAt)
	}
	if len(v.Attempts) != 2 {
		t.Fatalf("attempts = %+v, want 2", v.Attempts)
	}
	first, second := v.Attempts[0], v.Attempts[1]
	if first.Attempt != 1 || first.StatusCode == nil || *first.StatusCode != 500 || first.Error == "" ||
		!strings.Contains(first.ResponseExcerpt, "try later") {
		t.Errorf("first attempt = %+v, want 1, 500, an error and the receiver's answer", first)
	}
	if second.Attempt != 2 || second.StatusCode == nil || *second.StatusCode != 200 || second.Error != "" {
		t.Errorf("second attempt = %+v, want 2, 200, no error", second)
	}
	for _, a := range v.Attempts {
		if a.DurationMS < 20 || a.DurationMS > 5000 {
			t.Errorf("attempt %d lasted %d ms; the receiver took 20 ms", a.Attempt, a.DurationMS)
		}
		if time.Since(a.At) > time.Minute || a.At.After(time.Now().Add(time.Second)) {
			t.Errorf("attempt %d at %s, want about now", a.Attempt, a.At)
		}
	}
	if !second.At.After(first.At) {
		t.Errorf("attempts out of order: %s then %s", first.At, second.At)
	}
}

func TestSendCallback_redelivers_the_same_body_and_webhook_id(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	other := testenv.NewReceiver(t, nil)
	// The task's own callback_url wins over the profile's default.
	c := h.createCustomer("cust_a", other.URL)
	h.publish(c.CustomerID, task("t1", rc.URL))
	h.waitCallback(c.APIKey, "t1", 10*time.Second, "delivered", func(v callbackView) bool { return v.State == "succeeded" })

	// Other subscribers of tasks.completed.> must not see resends as new completions.
	completions, err := h.nc.SubscribeSync("tasks.completed.>")
	if err != nil {
		t.Fatal(err)
	}
	resends, err := h.nc.SubscribeSync("callbacks.resend.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Three resends, each awaited: none is swallowed by the stream's duplicate window.
	for i := 2; i <= 4; i++ {
		res := h.as(c.APIKey, "POST", "/v1/task/t1/send-callback", nil)
		if res.Code != http.StatusOK {
			t.Fatalf("send-callback #%d: %d %s", i-1, res.Code, res.Body)
		}
		h.checkSchema("SendCallbackQueued", res.Body)
		if m := res.json(t); m["task_id"] != "t1" || m["callback_url"] != rc.URL || m["status"] != "queued" {
			t.Errorf("send-callback answer = %v", m)
		}
		testenv.Eventually(t, 10*time.Second, func() bool { return rc.Count() >= i }, "delivery #%d reaches the receiver", i)
		h.waitCallback(c.APIKey, "t1", 10*time.Second, "resend recorded as succeeded", func(v callbackView) bool {
			return v.Delivery == i && v.State == "succeeded"
		})
	}

	reqs := rc.Requests()
	if len(reqs) != 4 {
		t.Fatalf("receiver saw %d requests, want 4", len(reqs))
	}
	wh, err := standardwebhooks.NewWebhook(c.SigningSecret)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range reqs {
		if !bytes.Equal(r.Body, reqs[0].Body) {
			t.Errorf("request %d body differs from the original:\n%s\n%s", i+1, r.Body, reqs[0].Body)
		}
		if id := r.Header.Get("webhook-id"); id != "evt_cust_a_t1" {
			t.Errorf("request %d webhook-id = %q, want the original's", i+1, id)
		}
		if err := wh.Verify(r.Body, r.Header); err != nil {
			t.Errorf("request %d does not verify: %v", i+1, err)
		}
	}
	if other.Count() != 0 {
		t.Errorf("the profile's default got %d requests; the task's own callback_url must win", other.Count())
	}
	v, _ := h.callback(c.APIKey, "t1")
	seen := map[int]bool{}
	for _, a := range v.Attempts {
		if a.StatusCode != nil && *a.StatusCode == 200 {
			seen[a.Delivery] = true
		}
	}
	if len(seen) != 4 {
		t.Errorf("attempt log shows successful deliveries %v, want 1 to 4", seen)
	}
	if err := h.nc.Flush(); err != nil { // whatever the server sent before is now pending here
		t.Fatal(err)
	}
	if n, _, _ := resends.Pending(); n != 3 {
		t.Errorf("%d messages on callbacks.resend.>, want 3", n)
	}
	if n, _, _ := completions.Pending(); n != 0 {
		t.Errorf("%d messages on tasks.completed.> during resends, want 0", n)
	}
}

func TestSendCallback_failed_task_turns_true_after_the_receiver_recovers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	var healthy atomic.Bool
	rc := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	c := h.createCustomer("cust_a", rc.URL)
	h.publish(c.CustomerID, task("t1", ""))

	v := h.waitCallback(c.APIKey, "t1", 20*time.Second, "every attempt failed", final)
	if v.State != "failed" || v.CallbackSucceeded == nil || *v.CallbackSucceeded || len(v.Attempts) != 21 || rc.Count() != 21 {
		t.Fatalf("state %q flag %v, %d attempts logged, %d received; want failed, false, 21, 21",
			v.State, v.CallbackSucceeded, len(v.Attempts), rc.Count())
	}
	if m := h.as(c.APIKey, "GET", "/v1/task/t1", nil).json(t); m["callback_succeeded"] != false {
		t.Fatalf("GET /v1/task/t1 callback_succeeded = %v, want false", m["callback_succeeded"])
	}

	healthy.Store(true)
	if res := h.as(c.APIKey, "POST", "/v1/task/t1/send-callback", nil); res.Code != http.StatusOK {
		t.Fatalf("send-callback: %d %s", res.Code, res.Body)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		return h.as(c.APIKey, "GET", "/v1/task/t1", nil).json(t)["callback_succeeded"] == true
	}, "callback_succeeded turns true")
	v, _ = h.callback(c.APIKey, "t1")
	last := v.Attempts[len(v.Attempts)-1]
	if v.State != "succeeded" || v.Delivery != 2 || last.Delivery != 2 || last.StatusCode == nil || *last.StatusCode != 200 {
		t.Errorf("after the resend: state %q delivery %d last attempt %+v", v.State, v.Delivery, last)
	}
	if rc.Count() != 22 {
		t.Errorf("receiver saw %d requests, want 22", rc.Count())
	}
}

func TestSendCallback_retrying_task_is_delivered_now_and_the_retry_is_superseded(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	// After the first failure the next retry is an hour away: the task stays "retrying".
	h.startWorker(map[string]string{"CALLBACK_RETRY_SCHEDULE": strings.TrimSuffix(strings.Repeat("1h,", 20), ",")})
	var healthy atomic.Bool
	rc := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	c := h.createCustomer("cust_a", rc.URL)
	h.publish(c.CustomerID, task("t1", ""))
	v := h.waitCallback(c.APIKey, "t1", 10*time.Second, "retrying", func(v callbackView) bool { return v.State == "retrying" })
	if v.CallbackSucceeded != nil || v.NextAttemptAt == nil || time.Until(*v.NextAttemptAt) < 50*time.Minute {
		t.Errorf("while retrying: flag %v, next_attempt_at %v; want null and in about an hour", v.CallbackSucceeded, v.NextAttemptAt)
	}
	if m := h.as(c.APIKey, "GET", "/v1/task/t1", nil).json(t); m["callback_succeeded"] != nil {
		t.Errorf("GET /v1/task/t1 shows callback_succeeded %v while the first delivery is under way", m["callback_succeeded"])
	}

	healthy.Store(true)
	if res := h.as(c.APIKey, "POST", "/v1/task/t1/send-callback", nil); res.Code != http.StatusOK {
		t.Fatalf("send-callback: %d %s", res.Code, res.Body)
	}
	// The new delivery is recorded before the answer: the hour-long retry no longer shows.
	if v, _ := h.callback(c.APIKey, "t1"); v.Delivery != 2 || v.NextAttemptAt != nil || v.State == "retrying" {
		t.Errorf("right after send-callback: delivery %d, state %q, next_attempt_at %v; want 2, pending, null",
			v.Delivery, v.State, v.NextAttemptAt)
	}
	v = h.waitCallback(c.APIKey, "t1", 10*time.Second, "resend succeeded", func(v callbackView) bool { return v.State == "succeeded" })
	if v.Delivery != 2 || v.NextAttemptAt != nil || v.CallbackSucceeded == nil || !*v.CallbackSucceeded || rc.Count() != 2 {
		t.Errorf("after the resend: delivery %d, next_attempt_at %v, flag %v, %d requests; want 2, null, true, 2",
			v.Delivery, v.NextAttemptAt, v.CallbackSucceeded, rc.Count())
	}
}

func TestSendCallback_no_target_is_409_until_the_profile_has_a_default(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	c := h.createCustomer("cust_a", "")
	h.publish(c.CustomerID, task("t1", ""))

	v := h.waitCallback(c.APIKey, "t1", 10*time.Second, "recorded", final)
	if v.State != "no_callback" || v.CallbackSucceeded != nil || v.Target != nil {
		t.Errorf("state %q flag %v target %v; want no_callback, null, null", v.State, v.CallbackSucceeded, v.Target)
	}
	if m := h.as(c.APIKey, "GET", "/v1/task/t1", nil).json(t); m["callback_succeeded"] != nil {
		t.Errorf("GET /v1/task/t1 has callback_succeeded %v; want it absent for a task with no target", m["callback_succeeded"])
	}
	wantError(t, h.as(c.APIKey, "POST", "/v1/task/t1/send-callback", nil), http.StatusConflict)

	// The resend goes to the profile's default as it is now, and the worker sees the new default
	// at once (its profile cache lasts an hour in these tests: the gateway's announcement counts).
	if res := h.as(c.APIKey, "PATCH", "/v1/profile", map[string]string{"default_callback_url": rc.URL + "/default"}); res.Code != http.StatusOK {
		t.Fatalf("PATCH /v1/profile: %d %s", res.Code, res.Body)
	}
	for try := 1; ; try++ {
		res := h.as(c.APIKey, "POST", "/v1/task/t1/send-callback", nil)
		if res.Code != http.StatusOK || res.json(t)["callback_url"] != rc.URL+"/default" {
			t.Fatalf("send-callback: %d %s; want 200 to the new default", res.Code, res.Body)
		}
		want := v.Delivery + 1
		v = h.waitCallback(c.APIKey, "t1", 10*time.Second, "resend reaches a final state", func(v callbackView) bool {
			return v.Delivery == want && final(v)
		})
		if v.State == "succeeded" {
			break
		}
		// See callbackAfterChange: the worker may not have dropped its cached profile yet.
		if try == 5 {
			t.Fatalf("resends keep ending %q: the worker never heard of the new default", v.State)
		}
		t.Logf("resend %d ended %q before the worker heard of the new default; resending", try, v.State)
	}
	if rc.Count() != 1 || v.Target == nil || *v.Target != rc.URL+"/default" || v.CallbackSucceeded == nil || !*v.CallbackSucceeded {
		t.Errorf("receiver saw %d requests; target %v flag %v", rc.Count(), v.Target, v.CallbackSucceeded)
	}
}

func TestTask_of_another_customer_or_unknown_is_404(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	a := h.createCustomer("cust_a", rc.URL)
	b := h.createCustomer("cust_b", rc.URL)
	h.publish(a.CustomerID, task("t1", ""))
	h.waitCallback(a.APIKey, "t1", 10*time.Second, "delivered", final)

	// Records stored under ids that are not valid task ids are never reached: the id is checked
	// before it is used in a key.
	invalidIDs := []string{"t1.x", "t*", "../t1", strings.Repeat("t", 129), "\u2028"}
	statuses := status.NewStore(h.rdb, h.prefix, 0)
	for _, id := range invalidIDs {
		d := status.Delivery{CustomerID: a.CustomerID, TaskID: id, WebhookID: "evt_x", Chain: 1 << 40}
		if _, err := statuses.Queue(context.Background(), d, time.Now()); err != nil {
			t.Fatal(err)
		}
	}

	for _, req := range []struct{ method, path string }{
		{"GET", "/v1/task/t1"},
		{"GET", "/v1/task/t1/callback"},
		{"POST", "/v1/task/t1/send-callback"},
	} {
		wantError(t, h.as(b.APIKey, req.method, req.path, nil), http.StatusNotFound)
		wantError(t, h.as(a.APIKey, req.method, strings.Replace(req.path, "t1", "unknown", 1), nil), http.StatusNotFound)
		for _, id := range invalidIDs {
			path := strings.Replace(req.path, "t1", url.PathEscape(id), 1)
			wantError(t, h.as(a.APIKey, req.method, path, nil), http.StatusNotFound)
		}
	}
	if res := h.as(a.APIKey, "GET", "/v1/task/t1", nil); res.Code != http.StatusOK {
		t.Errorf("the owner's GET: %d %s", res.Code, res.Body)
	}
	if rc.Count() != 1 {
		t.Errorf("receiver saw %d requests; another customer's send-callback must not resend", rc.Count())
	}
}

// Two send-callback requests in a row, without waiting: each is one more delivery, and the task
// ends with one state, set by the newer one.
func TestSendCallback_twice_in_a_row_gives_two_deliveries(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	c := h.createCustomer("cust_b", "")
	h.publish(c.CustomerID, task("t1", rc.URL))
	h.waitCallback(c.APIKey, "t1", 10*time.Second, "delivered", func(v callbackView) bool { return v.State == "succeeded" })
	for range 2 {
		if res := h.as(c.APIKey, "POST", "/v1/task/t1/send-callback", nil); res.Code != http.StatusOK {
			t.Fatalf("send-callback: %d %s", res.Code, res.Body)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return rc.Count() >= 3 }, "two more deliveries (have %d)", rc.Count())
	v := h.waitCallback(c.APIKey, "t1", 10*time.Second, "the newest resend succeeded", func(v callbackView) bool {
		return v.Delivery == 3 && v.State == "succeeded"
	})
	if v.CallbackSucceeded == nil || !*v.CallbackSucceeded {
		t.Errorf("callback_succeeded = %v, want true", v.CallbackSucceeded)
	}
	ids := map[string]bool{}
	for _, r := range rc.Requests() {
		ids[r.Header.Get("webhook-id")] = true
	}
	if rc.Count() != 3 || len(ids) != 1 {
		t.Errorf("%d requests with %d webhook ids, want 3 with one", rc.Count(), len(ids))
	}
}

// An email callback, resent through the gateway, is mailed again: same body and webhook-id.
func TestSendCallback_resends_an_email_callback(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{})
	h.startWorker(map[string]string{"SMTP_ADDR": sink.Addr})
	c := h.createCustomer("cust_mail", "mailto:ops@customer.example")
	h.publish(c.CustomerID, task("t1", ""))
	h.waitCallback(c.APIKey, "t1", 10*time.Second, "mailed", func(v callbackView) bool { return v.State == "succeeded" })

	res := h.as(c.APIKey, "POST", "/v1/task/t1/send-callback", nil)
	if res.Code != http.StatusOK {
		t.Fatalf("send-callback: %d %s", res.Code, res.Body)
	}
	if m := res.json(t); m["callback_url"] != "mailto:ops@customer.example" {
		t.Errorf("send-callback answer = %v", m)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return sink.Count() >= 2 }, "the mail is sent again")
	msgs := sink.Messages()
	if len(msgs) != 2 || msgs[1].To[0] != "ops@customer.example" {
		t.Fatalf("sink got %d messages: %+v", len(msgs), msgs)
	}
	h0, body0, err := msgs[0].Parse()
	if err != nil {
		t.Fatal(err)
	}
	h1, body1, err := msgs[1].Parse()
	if err != nil {
		t.Fatal(err)
	}
	if h0.Get("webhook-id") == "" || h0.Get("webhook-id") != h1.Get("webhook-id") || !bytes.Equal(body0, body1) {
		t.Errorf("the resent mail differs: webhook-id %q vs %q, bodies equal %v",
			h0.Get("webhook-id"), h1.Get("webhook-id"), bytes.Equal(body0, body1))
	}
}
