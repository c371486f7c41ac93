package api_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/status"
)

// asOn calls a customer endpoint of another gateway of the harness.
func (h *harness) asOn(base, apiKey, method, path string) response {
	h.t.Helper()
	saved := h.srv.URL
	h.srv.URL = base
	defer func() { h.srv.URL = saved }()
	return h.as(apiKey, method, path, nil)
}

// failedWindow publishes n tasks to a receiver that fails until healthy is set, waits until all
// have failed, then sets it. It returns the tasks, the receiver and the window's start.
func failedWindow(h *harness, customerID, prefix string, n int) ([]string, *testenv.Receiver, time.Time) {
	h.t.Helper()
	since := time.Now().Add(-time.Second)
	var healthy atomic.Bool
	rc := testenv.NewReceiver(h.t, downWhile(&healthy))
	ids := h.publishN(customerID, prefix, n, rc.URL)
	h.waitFailed(customerID, ids, rc)
	healthy.Store(true)
	return ids, rc, since
}

// Two recoveries of one customer, started on two gateways, share the customer's pace: together
// they re-send no faster than the rate, where each gateway pacing on its own would double it.
func TestRecover_pacing_is_one_rate_across_gateways(t *testing.T) {
	t.Parallel()
	const n, rate = 20, 10
	h := newHarness(t, map[string]string{"RECOVER_RATE_PER_SECOND": "10"})
	h.startWorker(map[string]string{"CALLBACK_RETRY_SCHEDULE": recoverySchedule, "WORKER_HOST_CONCURRENCY": "1000"})
	_, second := h.startGateway(h.rdb, h.log)
	c := h.createCustomer("cust_a", "")
	ok := testenv.NewReceiver(t, nil)
	succeeded := h.publishN(c.CustomerID, "fine", n, ok.URL)
	h.waitStates(c.CustomerID, succeeded, status.Succeeded, 30*time.Second)
	failed, down, since := failedWindow(h, c.CustomerID, "down", n)
	sinceArg := since.Add(-time.Minute).Format(time.RFC3339Nano)

	r1 := h.startRecovery(c.APIKey, map[string]any{"since": sinceArg})
	saved := h.srv
	h.srv = second
	r2 := h.startRecovery(c.APIKey, map[string]any{"since": sinceArg, "state": "succeeded"})
	h.srv = saved
	done := func(v recoveryView) bool { return v.Status == "done" }
	h.waitRecovery(c.APIKey, r1.ID, 60*time.Second, "done", done)
	h.waitRecovery(c.APIKey, r2.ID, 60*time.Second, "done", done)

	again := append(down.Requests()[21*n:], ok.Requests()[n:]...)
	wantEachOnce(t, c.CustomerID, append(failed, succeeded...), again)
	if len(again) == 0 {
		t.Fatal("nothing re-delivered")
	}
	first, last := again[0].At, again[0].At
	for _, r := range again {
		if r.At.Before(first) {
			first = r.At
		}
		if r.At.After(last) {
			last = r.At
		}
	}
	// 2n re-sends at rate per second take at least (2n-1)/rate, less a margin for timing; each
	// gateway pacing on its own would take half that.
	if span, least := last.Sub(first), (2*n-1)*time.Second/rate*8/10; span < least {
		t.Errorf("%d re-deliveries from two gateways arrived within %s; one pace of %d/s takes at least %s", 2*n, span, rate, least)
	}
}

// DELETE stops a recovery whichever gateway runs it: no re-send is queued after the next one,
// it shows cancelled, and the customer's slot is free again.
func TestRecover_DELETE_cancels_it_on_whichever_gateway_runs_it(t *testing.T) {
	t.Parallel()
	const n = 100
	h := newHarness(t, map[string]string{"RECOVER_RATE_PER_SECOND": "20", "RECOVER_MAX_ACTIVE": "1"})
	h.startWorker(map[string]string{"CALLBACK_RETRY_SCHEDULE": recoverySchedule, "WORKER_HOST_CONCURRENCY": "1000"})
	_, second := h.startGateway(h.rdb, h.log)
	c := h.createCustomer("cust_a", "")
	other := h.createCustomer("cust_b", "")
	ids, rc, since := failedWindow(h, c.CustomerID, "t", n)
	before := rc.Count()

	rec := h.startRecovery(c.APIKey, map[string]any{"since": since.Format(time.RFC3339Nano)})
	h.waitRecovery(c.APIKey, rec.ID, 30*time.Second, "under way", func(v recoveryView) bool { return v.Queued >= 5 })
	wantError(t, h.asOn(second.URL, other.APIKey, "DELETE", "/v1/callbacks/recover/"+rec.ID), http.StatusNotFound)

	// Cancelled through the other gateway.
	res := h.asOn(second.URL, c.APIKey, "DELETE", "/v1/callbacks/recover/"+rec.ID)
	if res.Code != http.StatusOK {
		t.Fatalf("DELETE: %d %s", res.Code, res.Body)
	}
	h.checkSchema("Recovery", res.Body)
	var atCancel recoveryView
	unmarshal(t, res.Body, &atCancel)
	if atCancel.Status != "cancelled" {
		t.Errorf("DELETE answered status %q, want cancelled", atCancel.Status)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(string(h.do("GET", "/metrics", nil, nil).Body), "refonte_gateway_recoveries_running 0")
	}, "the gateway running the recovery stops it")
	testenv.Eventually(t, 30*time.Second, func() bool {
		info, err := h.js.Consumer(t.Context(), h.cfg.Stream.Name, "callback-workers")
		if err != nil {
			return false
		}
		ci, err := info.Info(t.Context())
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
	}, "every queued re-send is delivered")

	final := h.recovery(c.APIKey, rec.ID)
	sent := rc.Count() - before
	if final.Status != "cancelled" || final.Queued > atCancel.Queued+1 {
		t.Errorf("after the cancel: %+v; want cancelled, at most one more queued than the %d at the cancel", final, atCancel.Queued)
	}
	if sent > atCancel.Queued+1 || sent >= n {
		t.Errorf("%d re-deliveries of %d tasks after a cancel with %d queued", sent, len(ids), atCancel.Queued)
	}
	// Idempotent; the customer may start another; a finished one cannot be cancelled.
	if res := h.as(c.APIKey, "DELETE", "/v1/callbacks/recover/"+rec.ID, nil); res.Code != http.StatusOK {
		t.Errorf("second DELETE: %d %s", res.Code, res.Body)
	}
	next := h.startRecovery(c.APIKey, map[string]any{"since": since.Format(time.RFC3339Nano)})
	h.waitRecovery(c.APIKey, next.ID, 60*time.Second, "done", func(v recoveryView) bool { return v.Status == "done" })
	wantError(t, h.as(c.APIKey, "DELETE", "/v1/callbacks/recover/"+next.ID, nil), http.StatusConflict)
	wantError(t, h.as(c.APIKey, "DELETE", "/v1/callbacks/recover/rcv_AAAAAAAAAAAAAAAAAAAAAAAAAA", nil), http.StatusNotFound)
}

// RECOVER_MAX_RUNNING caps the recoveries running at once across customers and gateways.
func TestRecover_global_cap_across_customers_and_gateways(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"RECOVER_RATE_PER_SECOND": "1", "RECOVER_MAX_RUNNING": "1"})
	h.startWorker(map[string]string{"CALLBACK_RETRY_SCHEDULE": recoverySchedule})
	_, second := h.startGateway(h.rdb, h.log)
	a := h.createCustomer("cust_a", "")
	b := h.createCustomer("cust_b", "")
	_, _, since := failedWindow(h, a.CustomerID, "t", 10)
	body := map[string]any{"since": since.Add(-time.Minute).Format(time.RFC3339Nano)}

	rec := h.startRecovery(a.APIKey, body)
	saved := h.srv
	h.srv = second
	res := h.as(b.APIKey, "POST", "/v1/callbacks/recover", body)
	h.srv = saved
	wantError(t, res, http.StatusServiceUnavailable)
	if res.Header.Get("Retry-After") == "" || !strings.Contains(string(res.Body), "across all customers") {
		t.Errorf("cap reached: Retry-After %q, body %s", res.Header.Get("Retry-After"), res.Body)
	}
	if res := h.as(a.APIKey, "DELETE", "/v1/callbacks/recover/"+rec.ID, nil); res.Code != http.StatusOK {
		t.Fatalf("DELETE: %d %s", res.Code, res.Body)
	}
	h.startRecovery(b.APIKey, body)
}
