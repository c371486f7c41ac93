package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

// recoverySchedule fails a delivery's 21 attempts in about a quarter of a second.
var recoverySchedule = strings.TrimSuffix(strings.Repeat("10ms,", 20), ",")

// downStatus is how the recovery tests' endpoints fail: an answer that says nothing about the
// endpoint's capacity. A 5xx or a 429 reads as overload, and the worker's adaptive limit then holds
// the endpoint to one delivery at a time: the windows these tests fail (up to 300 tasks of 21
// attempts each) would be tried one attempt after another, and how long they take to fail would
// depend on how busy the machine is.
const downStatus = http.StatusNotFound

// downWhile answers downStatus while healthy is false, and 200 once it is true.
func downWhile(healthy *atomic.Bool) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(downStatus)
		}
	}
}

// recoveryView is GET /v1/callbacks/recover/{id}.
type recoveryView struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	State     string `json:"state"`
	Matched   int    `json:"matched"`
	Queued    int    `json:"queued"`
	Skipped   int    `json:"skipped"`
	Done      int    `json:"done"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
}

// startRecovery asks for a recovery and checks the 202.
func (h *harness) startRecovery(apiKey string, body map[string]any) recoveryView {
	h.t.Helper()
	res := h.as(apiKey, "POST", "/v1/callbacks/recover", body)
	if res.Code != http.StatusAccepted {
		h.t.Fatalf("recover %v: %d %s", body, res.Code, res.Body)
	}
	h.checkSchema("Recovery", res.Body)
	var v recoveryView
	unmarshal(h.t, res.Body, &v)
	if loc := res.Header.Get("Location"); loc != "/v1/callbacks/recover/"+v.ID {
		h.t.Errorf("Location = %q, want /v1/callbacks/recover/%s", loc, v.ID)
	}
	return v
}

func (h *harness) recovery(apiKey, id string) recoveryView {
	h.t.Helper()
	res := h.as(apiKey, "GET", "/v1/callbacks/recover/"+id, nil)
	if res.Code != http.StatusOK {
		h.t.Fatalf("GET recovery %s: %d %s", id, res.Code, res.Body)
	}
	h.checkSchema("Recovery", res.Body)
	var v recoveryView
	unmarshal(h.t, res.Body, &v)
	return v
}

func (h *harness) waitRecovery(apiKey, id string, timeout time.Duration, what string, cond func(recoveryView) bool) recoveryView {
	h.t.Helper()
	var v recoveryView
	testenv.Eventually(h.t, timeout, func() bool {
		v = h.recovery(apiKey, id)
		return cond(v)
	}, "recovery %s: %s (last: %v)", id, what, latest(func() any { return v }))
	return v
}

// latest shows a value as it is when a failure message is formatted, not when the wait began.
type latest func() any

func (l latest) String() string { return fmt.Sprintf("%+v", l()) }

// publishN publishes n tasks named prefix_1… for the customer, with callbackURL ("" for the
// profile's default), and returns their ids.
func (h *harness) publishN(customerID, prefix string, n int, callbackURL string) []string {
	h.t.Helper()
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s_%d", prefix, i+1)
		h.publish(customerID, task(ids[i], callbackURL))
	}
	return ids
}

// waitStates waits until every task is in state.
func (h *harness) waitStates(customerID string, ids []string, state status.State, timeout time.Duration) {
	h.t.Helper()
	all, counts := h.allIn(customerID, ids, state)
	testenv.Eventually(h.t, timeout, all, "all %d tasks of %s %s (now %v)", len(ids), customerID, state,
		latest(func() any { return *counts }))
}

// waitFailed waits until every task is failed, while their endpoint rc keeps receiving their
// attempts. Each task takes 21 attempts to fail, hundreds of tasks thousands: how long that takes
// depends on how busy the machine is, so the wait gives up when the attempts stop coming, not
// after a fixed time.
func (h *harness) waitFailed(customerID string, ids []string, rc *testenv.Receiver) {
	h.t.Helper()
	all, counts := h.allIn(customerID, ids, status.Failed)
	testenv.EventuallyProgressing(h.t, 20*time.Second, 5*time.Minute, rc.Count, all,
		"all %d tasks of %s failed (now %v)", len(ids), customerID, latest(func() any { return *counts }))
}

// allIn reads the tasks' states from the status store directly (polling hundreds of tasks
// through the API would load the machine more than the test does) and tells whether all are in
// state; counts holds what the last read found.
func (h *harness) allIn(customerID string, ids []string, state status.State) (all func() bool, counts *map[status.State]int) {
	st := status.NewStore(h.rdb, h.prefix, h.cfg.Retention)
	counts = new(map[status.State]int)
	return func() bool {
		briefs, err := st.Briefs(h.t.Context(), customerID, environment.Live, ids)
		if err != nil {
			h.t.Fatal(err)
		}
		m := map[status.State]int{}
		for _, b := range briefs {
			m[b.State]++
		}
		*counts = m
		return m[state] == len(ids)
	}, counts
}

// deliveriesByWebhookID counts requests by webhook-id.
func deliveriesByWebhookID(reqs []testenv.Request) map[string]int {
	out := map[string]int{}
	for _, r := range reqs {
		out[r.Header.Get("webhook-id")]++
	}
	return out
}

// wantEachOnce checks that reqs are exactly one delivery of each task.
func wantEachOnce(t *testing.T, customerID string, ids []string, reqs []testenv.Request) {
	t.Helper()
	got := deliveriesByWebhookID(reqs)
	for _, id := range ids {
		if n := got["evt_"+customerID+"_"+id]; n != 1 {
			t.Errorf("task %s was re-delivered %d times, want once", id, n)
		}
	}
	if len(reqs) != len(ids) {
		t.Errorf("%d re-deliveries for %d tasks", len(reqs), len(ids))
	}
}

func TestRecover_redelivers_a_failed_window_once_each_paced_while_others_flow(t *testing.T) {
	t.Parallel()
	const n, rate = 300, 60
	h := newHarness(t, map[string]string{"RECOVER_RATE_PER_SECOND": fmt.Sprint(rate)})
	// A high per-host cap: this test is about the recovery's pacing, not the worker's deferrals.
	h.startWorker(map[string]string{"CALLBACK_RETRY_SCHEDULE": recoverySchedule, "WORKER_HOST_CONCURRENCY": "1000"})
	since := time.Now().Add(-time.Second)

	var healthy atomic.Bool
	endpointA := testenv.NewReceiver(t, downWhile(&healthy))
	okA := testenv.NewReceiver(t, nil)
	oldB := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(downStatus) })
	freshB := testenv.NewReceiver(t, nil)
	a := h.createCustomer("cust_a", endpointA.URL)
	b := h.createCustomer("cust_b", "")

	failedA := h.publishN(a.CustomerID, "down", n, "")
	succeededA := h.publishN(a.CustomerID, "fine", 5, okA.URL)
	failedB := h.publishN(b.CustomerID, "old", 10, oldB.URL)
	h.waitFailed(a.CustomerID, failedA, endpointA)
	h.waitStates(a.CustomerID, succeededA, status.Succeeded, 10*time.Second)
	h.waitFailed(b.CustomerID, failedB, oldB)
	before := endpointA.Count()
	if before != 21*n || oldB.Count() != 21*10 || okA.Count() != 5 {
		t.Fatalf("before the recovery: %d, %d and %d requests, want %d, %d and 5", before, oldB.Count(), okA.Count(), 21*n, 21*10)
	}

	healthy.Store(true)
	rec := h.startRecovery(a.APIKey, map[string]any{"since": since.Format(time.RFC3339Nano)})
	if rec.Status != "running" || rec.State != "failed" {
		t.Errorf("new recovery: %+v, want running, state failed", rec)
	}

	// Another customer's fresh callbacks, published while the recovery runs, all arrive while it
	// is still running: the recovery does not hold the workers.
	h.waitRecovery(a.APIKey, rec.ID, 10*time.Second, "under way", func(v recoveryView) bool { return v.Queued >= 10 })
	h.publishN(b.CustomerID, "fresh", 20, freshB.URL)
	testenv.Eventually(t, 10*time.Second, func() bool { return freshB.Count() == 20 }, "cust_b's fresh callbacks delivered")
	if v := h.recovery(a.APIKey, rec.ID); v.Status != "running" || v.Queued >= n {
		t.Errorf("cust_b's fresh callbacks were delivered only once the recovery had queued everything: %+v", v)
	}
	if res := h.as(b.APIKey, "GET", "/v1/callbacks/recover/"+rec.ID, nil); res.Code != http.StatusNotFound {
		t.Errorf("another customer's recovery: %d, want 404", res.Code)
	}

	v := h.waitRecovery(a.APIKey, rec.ID, 30*time.Second, "done", func(v recoveryView) bool { return v.Status == "done" })
	if v.Matched != n || v.Queued != n || v.Skipped != 0 || v.Done != n || v.Succeeded != n || v.Failed != 0 {
		t.Errorf("finished recovery: %+v, want %d matched, queued, done and succeeded", v, n)
	}
	again := endpointA.Requests()[before:]
	wantEachOnce(t, a.CustomerID, failedA, again)
	// Paced: n re-sends at rate per second take at least (n-1)/rate, less a margin for timing.
	if span, least := again[len(again)-1].At.Sub(again[0].At), (n-1)*time.Second/rate*8/10; span < least {
		t.Errorf("%d re-deliveries arrived within %s; paced at %d/s they take at least %s", n, span, rate, least)
	}
	if okA.Count() != 5 {
		t.Errorf("callbacks that had succeeded were re-sent by a recovery of failed ones: %d requests", okA.Count())
	}
	// Another customer's callbacks are never touched.
	if oldB.Count() != 21*10 {
		t.Errorf("cust_b's failed callbacks got %d more requests", oldB.Count()-21*10)
	}
	for _, id := range failedB {
		if cv, _ := h.callback(b.APIKey, id); cv.State != "failed" || cv.Delivery != 1 {
			t.Errorf("cust_b's task %s: state %s delivery %d, want failed, 1", id, cv.State, cv.Delivery)
		}
	}
	if cv, _ := h.callback(a.APIKey, failedA[0]); cv.State != "succeeded" || cv.Delivery != 2 {
		t.Errorf("cust_a's task %s after the recovery: state %s delivery %d, want succeeded, 2", failedA[0], cv.State, cv.Delivery)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		m := string(h.do("GET", "/metrics", nil, nil).Body)
		return strings.Contains(m, "refonte_gateway_recovery_requeued_total 300") &&
			strings.Contains(m, "refonte_gateway_recoveries_running 0")
	}, "/metrics shows 300 re-queued and no recovery running")
}

func TestRecover_overlapping_recoveries_resend_each_callback_once(t *testing.T) {
	t.Parallel()
	const n = 60
	h := newHarness(t, map[string]string{"RECOVER_RATE_PER_SECOND": "40", "RECOVER_MAX_ACTIVE": "2"})
	h.startWorker(map[string]string{"CALLBACK_RETRY_SCHEDULE": recoverySchedule, "WORKER_HOST_CONCURRENCY": "1000"})
	since := time.Now().Add(-time.Second)
	var healthy atomic.Bool
	rc := testenv.NewReceiver(t, downWhile(&healthy))
	c := h.createCustomer("cust_a", rc.URL)
	ids := h.publishN(c.CustomerID, "t", n, "")
	h.waitFailed(c.CustomerID, ids, rc)
	before := rc.Count()
	healthy.Store(true)

	// The second window overlaps the first, and asks for any state: without the first
	// recovery's claims it would re-send what the first already re-sent.
	first := h.startRecovery(c.APIKey, map[string]any{"since": since.Format(time.RFC3339Nano)})
	second := h.startRecovery(c.APIKey, map[string]any{"since": since.Add(-time.Hour).Format(time.RFC3339Nano), "state": "any"})
	wantError(t, h.as(c.APIKey, "POST", "/v1/callbacks/recover", map[string]any{"since": since.Format(time.RFC3339)}), http.StatusConflict)

	done := func(v recoveryView) bool { return v.Status == "done" }
	v1 := h.waitRecovery(c.APIKey, first.ID, 30*time.Second, "done", done)
	v2 := h.waitRecovery(c.APIKey, second.ID, 30*time.Second, "done", done)
	wantEachOnce(t, c.CustomerID, ids, rc.Requests()[before:])
	if v1.Queued+v2.Queued != n || v1.Done+v2.Done != n || v1.Succeeded+v2.Succeeded != n {
		t.Errorf("recoveries %+v and %+v: want %d queued, done and succeeded between them", v1, v2, n)
	}
	if v1.Skipped+v2.Skipped == 0 {
		t.Errorf("neither recovery passed over a task the other re-sent: %+v %+v", v1, v2)
	}
	// Once both are over, a new one may start again.
	h.startRecovery(c.APIKey, map[string]any{"since": since.Format(time.RFC3339Nano)})
}

func TestRecover_resumes_on_the_next_gateway_after_a_stop(t *testing.T) {
	t.Parallel()
	const n = 60
	h := newHarness(t, map[string]string{"RECOVER_RATE_PER_SECOND": "30"})
	h.startWorker(map[string]string{"CALLBACK_RETRY_SCHEDULE": recoverySchedule, "WORKER_HOST_CONCURRENCY": "1000"})
	since := time.Now().Add(-time.Second)
	var healthy atomic.Bool
	rc := testenv.NewReceiver(t, downWhile(&healthy))
	c := h.createCustomer("cust_a", rc.URL)
	ids := h.publishN(c.CustomerID, "t", n, "")
	h.waitFailed(c.CustomerID, ids, rc)
	before := rc.Count()
	healthy.Store(true)

	rec := h.startRecovery(c.APIKey, map[string]any{"since": since.Format(time.RFC3339Nano)})
	h.waitRecovery(c.APIKey, rec.ID, 10*time.Second, "under way", func(v recoveryView) bool { return v.Queued >= 10 })
	h.stopGateway()
	h.api, h.srv, h.stopGateway = h.startStoppableGateway(h.rdb, h.log)

	v := h.waitRecovery(c.APIKey, rec.ID, 30*time.Second, "done on the new gateway", func(v recoveryView) bool { return v.Status == "done" })
	if v.Queued != n || v.Succeeded != n {
		t.Errorf("resumed recovery: %+v, want %d queued and succeeded", v, n)
	}
	wantEachOnce(t, c.CustomerID, ids, rc.Requests()[before:])
	if h.logs.FilterMessage("recovery resumed").Len() != 1 {
		t.Errorf("the new gateway logged %d resumptions, want 1", h.logs.FilterMessage("recovery resumed").Len())
	}
}

func TestRecover_bad_input_is_400_and_a_recovery_is_its_customers_only(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	a := h.createCustomer("cust_a", "")
	b := h.createCustomer("cust_b", "")
	now := time.Now().UTC()
	at := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	for name, body := range map[string]any{
		"no body":             nil,
		"no since":            map[string]any{"state": "failed"},
		"since not a time":    map[string]any{"since": "yesterday"},
		"since a number":      map[string]any{"since": 1700000000},
		"until not a time":    map[string]any{"since": at(-time.Hour), "until": "now"},
		"since after until":   map[string]any{"since": at(-time.Hour), "until": at(-2 * time.Hour)},
		"since in the future": map[string]any{"since": at(time.Hour)},
		"longer than kept":    map[string]any{"since": at(-31 * 24 * time.Hour)},
		"unknown state":       map[string]any{"since": at(-time.Hour), "state": "pending"},
		"unknown field":       map[string]any{"since": at(-time.Hour), "customer_id": "cust_b"},
	} {
		res := h.as(a.APIKey, "POST", "/v1/callbacks/recover", body)
		if res.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", name, res.Code, res.Body)
			continue
		}
		wantError(t, res, http.StatusBadRequest)
	}
	wantError(t, h.do("POST", "/v1/callbacks/recover", map[string]any{"since": at(-time.Hour)}, nil), http.StatusUnauthorized)

	// A window in which the customer has nothing ends at once, with nothing matched; a
	// future until is taken as now.
	rec := h.startRecovery(a.APIKey, map[string]any{"since": at(-time.Hour), "until": at(time.Hour), "state": "any"})
	var view map[string]any
	unmarshal(t, h.as(a.APIKey, "GET", "/v1/callbacks/recover/"+rec.ID, nil).Body, &view)
	if until, _ := time.Parse(time.RFC3339Nano, view["until"].(string)); until.After(time.Now()) {
		t.Errorf("until = %v, want at most now", view["until"])
	}
	v := h.waitRecovery(a.APIKey, rec.ID, 10*time.Second, "done", func(v recoveryView) bool { return v.Status == "done" })
	if v.Matched != 0 || v.Queued != 0 {
		t.Errorf("empty window: %+v", v)
	}
	for _, id := range []string{rec.ID, "rcv_" + strings.Repeat("A", 26), "not-an-id"} {
		wantError(t, h.as(b.APIKey, "GET", "/v1/callbacks/recover/"+id, nil), http.StatusNotFound)
	}
}
