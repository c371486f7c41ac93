package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/endpoint"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

const alertTo = "ops@alerts.example"

func answer(code int) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// endpointOf is the endpoint of a test receiver, as the workers name it.
func endpointOf(t *testing.T, url string) string {
	t.Helper()
	ep, err := endpoint.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func (h *harness) setAlerts(customerID, to string, autoPause bool) {
	h.t.Helper()
	if _, err := h.customers.SetAlerts(context.Background(), customerID, environment.Live, &to, &autoPause); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) endpointHealth(customerID, ep string) (endpoint.Health, bool) {
	h.t.Helper()
	list, err := h.endpoints.List(context.Background(), customerID, environment.Live)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range list {
		if e.Endpoint == ep {
			return e, true
		}
	}
	return endpoint.Health{}, false
}

// states is the fleet's count of endpoints by state, as the gateway's gauge reads it.
func (h *harness) states() map[endpoint.State]int64 {
	h.t.Helper()
	n, err := h.endpoints.CountStates(context.Background(), time.Now().Add(-time.Hour))
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

func mailText(t *testing.T, m testenv.SMTPMessage) (subject, body string) {
	t.Helper()
	header, b, err := m.Parse()
	if err != nil {
		t.Fatal(err)
	}
	return header.Get("Subject"), string(b)
}

func TestEndpoints_30_tasks_failing_21_times_on_two_workers_send_one_alert_then_one_recovery(t *testing.T) {
	h, sink := newEmailHarness(t, map[string]string{"ALERT_AFTER_FAILURES": "10"})
	rc := testenv.NewReceiver(t, answer(http.StatusServiceUnavailable))
	ep := endpointOf(t, rc.URL)
	h.newCustomer("c1", rc.URL+"/hook")
	h.setAlerts("c1", alertTo, false)
	stop1, stop2 := h.startWorker(), h.startWorker()
	for i := range 30 {
		h.publish("c1", task(fmt.Sprintf("t%02d", i), ""))
	}
	for i := range 30 {
		rec := h.waitFinal("c1", fmt.Sprintf("t%02d", i), 120*time.Second)
		if rec.State != status.Failed || rec.Attempts != 21 {
			t.Fatalf("task %d: state %q after %d attempts; want failed after 21", i, rec.State, rec.Attempts)
		}
	}
	if n := rc.Count(); n != 30*21 {
		t.Fatalf("the endpoint got %d attempts, want %d", n, 30*21)
	}
	// Stopping the workers sends whatever mail they had raised: after that, none can follow.
	stop1()
	stop2()
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d alert mails, want exactly 1", len(msgs))
	}
	if msgs[0].From != "hello@refonte.ai" || len(msgs[0].To) != 1 || msgs[0].To[0] != alertTo {
		t.Errorf("alert from %q to %v; want hello@refonte.ai to %s", msgs[0].From, msgs[0].To, alertTo)
	}
	subject, body := mailText(t, msgs[0])
	if !strings.Contains(subject, ep) || !strings.Contains(subject, "failing") {
		t.Errorf("subject %q; want it to name %s as failing", subject, ep)
	}
	for _, want := range []string{ep, "Consecutive failures:  10", "Failing since:", "Last error:", "HTTP 503", "/dashboard#/endpoints"} {
		if !strings.Contains(body, want) {
			t.Errorf("alert body lacks %q:\n%s", want, body)
		}
	}
	health, ok := h.endpointHealth("c1", ep)
	if !ok || health.State != endpoint.Failing || health.ConsecutiveFailures != 30*21 || health.FailingSince == nil ||
		!strings.Contains(health.LastError, "503") {
		t.Fatalf("endpoint health %+v (found %v); want failing with %d consecutive failures and the last error", health, ok, 30*21)
	}
	if n := h.states(); n[endpoint.Failing] != 1 {
		t.Errorf("endpoints by state %v; want one failing", n)
	}

	// The endpoint recovers: the first success sends one recovered mail and it reads healthy.
	rc.SetRespond(answer(http.StatusOK))
	stop := h.startWorker()
	h.publish("c1", task("ok1", ""))
	h.publish("c1", task("ok2", ""))
	for _, id := range []string{"ok1", "ok2"} {
		if rec := h.waitFinal("c1", id, 20*time.Second); !succeeded(rec) {
			t.Fatalf("%s: state %q; want succeeded", id, rec.State)
		}
	}
	stop()
	msgs = sink.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d mails in all, want the alert and one recovery", len(msgs))
	}
	if subject, body := mailText(t, msgs[1]); !strings.Contains(subject, "succeeding again") || !strings.Contains(body, ep) {
		t.Errorf("second mail %q:\n%s\nwant the recovery of %s", subject, body, ep)
	}
	health, _ = h.endpointHealth("c1", ep)
	if health.State != endpoint.Healthy || health.ConsecutiveFailures != 0 || health.LastSuccessAt == nil {
		t.Errorf("endpoint health %+v; want healthy with a last success", health)
	}
	if n := h.states(); n[endpoint.Failing] != 0 {
		t.Errorf("endpoints by state %v; want none failing", n)
	}
	if sent := h.counter("refonte_endpoint_alerts_total", map[string]string{"result": "sent"}); sent != 2 {
		t.Errorf("alerts sent counted %v, want 2", sent)
	}
}

func TestEndpoints_without_alert_email_nothing_is_mailed(t *testing.T) {
	h, sink := newEmailHarness(t, map[string]string{"ALERT_AFTER_FAILURES": "3"})
	rc := testenv.NewReceiver(t, answer(http.StatusInternalServerError))
	h.newCustomer("c1", rc.URL)
	stop := h.startWorker()
	h.publish("c1", task("t1", ""))
	if rec := h.waitFinal("c1", "t1", 30*time.Second); rec.State != status.Failed {
		t.Fatalf("state %q, want failed", rec.State)
	}
	stop()
	if n := sink.Sessions(); n != 0 {
		t.Errorf("the relay was contacted %d times; want never", n)
	}
	if health, ok := h.endpointHealth("c1", endpointOf(t, rc.URL)); !ok || health.State != endpoint.Failing || health.ConsecutiveFailures != 21 {
		t.Errorf("endpoint health %+v; want failing after 21 failures", health)
	}
}

// An alert the relay refuses is taken back, so the endpoint's next failure raises it again.
func TestEndpoints_an_alert_the_relay_refuses_is_raised_again_by_the_next_failure(t *testing.T) {
	h, sink := newEmailHarness(t, map[string]string{"ALERT_AFTER_FAILURES": "3"})
	sink.RejectData(554, 1)
	rc := testenv.NewReceiver(t, answer(http.StatusBadGateway))
	h.newCustomer("c1", rc.URL)
	h.setAlerts("c1", alertTo, false)
	stop := h.startWorker()
	h.publish("c1", task("t1", ""))
	h.waitFinal("c1", "t1", 30*time.Second)
	testenv.Eventually(t, 10*time.Second, func() bool {
		return h.counter("refonte_endpoint_alerts_total", map[string]string{"kind": "failing", "result": "failed"}) == 1
	}, "the refused alert is counted")
	if sink.Count() == 0 {
		// t1's failures all came before the alert was taken back: the next task's raise it.
		h.publish("c1", task("t2", ""))
		h.waitFinal("c1", "t2", 30*time.Second)
	}
	stop()
	if sink.DataCommands() != 2 || sink.Count() != 1 {
		t.Errorf("the relay saw %d mails and kept %d; want the refused alert and one more", sink.DataCommands(), sink.Count())
	}
}

func TestEndpoints_a_paused_endpoint_gets_nothing_and_uses_no_attempts_until_resumed(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	ep := endpointOf(t, rc.URL)
	h.newCustomer("c1", rc.URL+"/hook")
	other := testenv.NewReceiver(t, nil)
	if err := h.endpoints.Pause(context.Background(), "c1", environment.Live, ep, time.Now()); err != nil {
		t.Fatal(err)
	}
	h.startWorker()
	const n = 20
	for i := range n {
		h.publish("c1", task(fmt.Sprintf("t%02d", i), ""))
	}
	// Another endpoint of the same customer is not held.
	h.publish("c1", task("elsewhere", other.URL))
	if rec := h.waitFinal("c1", "elsewhere", 10*time.Second); !succeeded(rec) {
		t.Fatalf("the other endpoint's callback: state %q", rec.State)
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		return h.counter("refonte_callback_deferred_total", map[string]string{"reason": "endpoint_paused"}) >= n
	}, "every held callback is deferred")
	if c := rc.Count(); c != 0 {
		t.Fatalf("the paused endpoint got %d requests", c)
	}
	for i := range n {
		if rec, ok := h.record("c1", fmt.Sprintf("t%02d", i)); ok {
			t.Fatalf("task %d has a status (state %q, %d attempts) while its endpoint is paused", i, rec.State, rec.Attempts)
		}
	}
	if health, ok := h.endpointHealth("c1", ep); !ok || health.State != endpoint.Paused || health.PausedBy != "customer" {
		t.Errorf("endpoint %+v; want paused by the customer", health)
	}
	if n := h.states(); n[endpoint.Paused] != 1 {
		t.Errorf("endpoints by state %v; want one paused", n)
	}

	if err := h.endpoints.Resume(context.Background(), "c1", environment.Live, ep); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		rec := h.waitFinal("c1", fmt.Sprintf("t%02d", i), 30*time.Second)
		if !succeeded(rec) || rec.Attempts != 1 {
			t.Fatalf("task %d: state %q after %d attempts; want succeeded at the first", i, rec.State, rec.Attempts)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		info := h.consumerInfo()
		return info.NumAckPending == 0 && info.NumPending == 0
	}, "every message is acknowledged")
	if c := rc.Count(); c != n {
		t.Errorf("the endpoint got %d requests after the resume, want %d (each once)", c, n)
	}
	seen := map[string]bool{}
	for _, r := range rc.Requests() {
		id := r.Header.Get("webhook-id")
		if seen[id] {
			t.Errorf("callback %s delivered twice", id)
		}
		seen[id] = true
	}
}

func TestEndpoints_a_callback_held_past_the_longest_hold_ends_false_with_the_reason(t *testing.T) {
	h := newHarness(t, map[string]string{"ENDPOINT_PAUSED_MAX_HOLD": "1s"})
	rc := testenv.NewReceiver(t, nil)
	ep := endpointOf(t, rc.URL)
	h.newCustomer("c1", rc.URL)
	if err := h.endpoints.Pause(context.Background(), "c1", environment.Live, ep, time.Now()); err != nil {
		t.Fatal(err)
	}
	h.startWorker()
	h.publish("c1", task("t1", ""))
	rec := h.waitFinal("c1", "t1", 20*time.Second)
	if rec.State != status.Failed || rec.Succeeded == nil || *rec.Succeeded {
		t.Fatalf("state %q, flag %v; want failed, false", rec.State, rec.Succeeded)
	}
	if len(rec.Log) != 1 || !strings.Contains(rec.Log[0].Error, "paused") || !strings.Contains(rec.Log[0].Error, ep) {
		t.Errorf("attempt log %+v; want one entry saying the endpoint stayed paused", rec.Log)
	}
	if rc.Count() != 0 {
		t.Errorf("the paused endpoint got %d requests", rc.Count())
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		info := h.consumerInfo()
		return info.NumAckPending == 0 && info.NumPending == 0
	}, "the message is ended")
}

func TestEndpoints_uninterrupted_failure_pauses_an_endpoint_whose_customer_opted_in(t *testing.T) {
	h, sink := newEmailHarness(t, map[string]string{"ALERT_AUTO_PAUSE_AFTER": "100ms", "ALERT_AFTER_FAILURES": "1000"})
	rc := testenv.NewReceiver(t, answer(http.StatusServiceUnavailable))
	ep := endpointOf(t, rc.URL)
	h.newCustomer("c1", rc.URL)
	h.setAlerts("c1", alertTo, true)
	stop := h.startWorker()
	h.publish("c1", task("t1", ""))
	testenv.Eventually(t, 20*time.Second, func() bool {
		health, _ := h.endpointHealth("c1", ep)
		return health.State == endpoint.Paused
	}, "the endpoint is paused")
	health, _ := h.endpointHealth("c1", ep)
	if health.PausedBy != "automatic" || health.PausedAt == nil {
		t.Errorf("endpoint %+v; want paused automatically", health)
	}
	stop()
	if n := h.states(); n[endpoint.Paused] != 1 || n[endpoint.Failing] != 1 {
		t.Errorf("endpoints by state %v; want one failing and paused", n)
	}
	rec, _ := h.record("c1", "t1")
	if rec.State == status.Failed || rec.Attempts >= 21 {
		t.Errorf("task state %q after %d attempts; want it held, not exhausted", rec.State, rec.Attempts)
	}
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d mails, want the one saying the endpoint is paused", len(msgs))
	}
	if subject, _ := mailText(t, msgs[0]); !strings.Contains(subject, "paused") {
		t.Errorf("subject %q; want the pause named", subject)
	}
}

func TestEndpoints_a_customer_that_did_not_opt_in_is_never_paused(t *testing.T) {
	h := newHarness(t, map[string]string{"ALERT_AUTO_PAUSE_AFTER": "10ms"})
	rc := testenv.NewReceiver(t, answer(http.StatusServiceUnavailable))
	h.newCustomer("c1", rc.URL)
	h.startWorker()
	h.publish("c1", task("t1", ""))
	if rec := h.waitFinal("c1", "t1", 30*time.Second); rec.State != status.Failed || rec.Attempts != 21 {
		t.Fatalf("state %q after %d attempts; want failed after 21", rec.State, rec.Attempts)
	}
	if health, _ := h.endpointHealth("c1", endpointOf(t, rc.URL)); health.State != endpoint.Failing {
		t.Errorf("endpoint %+v; want failing, not paused", health)
	}
}
