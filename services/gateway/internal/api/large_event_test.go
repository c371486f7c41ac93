package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

// A completion of 900 KiB (a labelling task's whole response) is delivered byte for byte and
// signed, read back whole through the gateway, and resent with the same body and webhook-id;
// Redis keeps none of it.
func TestLargeEvent_delivered_readable_and_resendable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	c := h.createCustomer("cust_big", rc.URL)

	annotations := make([]map[string]any, 0, 9400)
	for i := 0; len(annotations) < cap(annotations); i++ {
		annotations = append(annotations, map[string]any{"label": "box", "i": i, "note": strings.Repeat("x", 64)})
	}
	big := task("big1", "")
	big["response"] = map[string]any{"annotations": annotations}
	raw, _ := json.Marshal(map[string]any{"customer_id": c.CustomerID, "task": big})
	if n := len(raw); n < 900<<10 || n > 1000<<10 {
		t.Fatalf("event of %d bytes, want about 900 KiB", n)
	}
	h.publish(c.CustomerID, big)
	v := h.waitCallback(c.APIKey, "big1", 30*time.Second, "delivered", final)
	if v.State != "succeeded" || rc.Count() != 1 {
		t.Fatalf("state %s, %d callbacks; want succeeded, 1", v.State, rc.Count())
	}

	// Byte for byte: the body is the callback the task makes, and it verifies.
	first := rc.Request(1)
	var sent struct {
		Task     json.RawMessage `json:"task"`
		Response json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(first.Body, &sent); err != nil {
		t.Fatal(err)
	}
	var want, got any
	_ = json.Unmarshal(mustJSON(t, big), &want)
	_ = json.Unmarshal(sent.Task, &got)
	if !jsonEqual(want, got) {
		t.Fatal("the delivered task differs from the published one")
	}
	wh, err := standardwebhooks.NewWebhook(c.SigningSecret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(first.Body, first.Header); err != nil {
		t.Fatalf("signature of the large callback: %v", err)
	}

	// Read back whole through the gateway, and its callback body is the delivered one.
	res := h.as(c.APIKey, "GET", "/v1/task/big1", nil)
	if res.Code != http.StatusOK {
		t.Fatalf("GET /v1/task/big1: %d %.200s", res.Code, res.Body)
	}
	var read map[string]any
	if err := json.Unmarshal(res.Body, &read); err != nil {
		t.Fatal(err)
	}
	if read["callback_succeeded"] != true {
		t.Errorf("callback_succeeded = %v", read["callback_succeeded"])
	}
	delete(read, "callback_succeeded")
	if !jsonEqual(want, read) {
		t.Error("GET /v1/task answers another task than the published one")
	}
	if res := h.as(c.APIKey, "GET", "/v1/task/big1/callback/body", nil); res.Code != http.StatusOK || !bytes.Equal(bytes.TrimSuffix(res.Body, []byte("\n")), first.Body) {
		t.Errorf("callback body through the gateway: %d, equal to the delivered one: %v", res.Code, bytes.Equal(bytes.TrimSuffix(res.Body, []byte("\n")), first.Body))
	}

	// Redis keeps the status only: nothing of the event's size.
	if n := h.rdb.StrLen(context.Background(), h.prefix+"{cust_big}:t:big1").Val(); n == 0 || n > 400 {
		t.Errorf("the task's record in Redis is %d bytes, want a small record", n)
	}

	// Resent: the same body and webhook-id, signed afresh.
	if res := h.as(c.APIKey, "POST", "/v1/task/big1/send-callback", nil); res.Code != http.StatusOK {
		t.Fatalf("send-callback: %d %s", res.Code, res.Body)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return rc.Count() == 2 }, "the resend arrives")
	second := rc.Request(2)
	if !bytes.Equal(second.Body, first.Body) || second.Header.Get("webhook-id") != first.Header.Get("webhook-id") {
		t.Errorf("the resend differs: bodies equal %v, webhook-id %q vs %q", bytes.Equal(second.Body, first.Body),
			second.Header.Get("webhook-id"), first.Header.Get("webhook-id"))
	}
	if err := wh.Verify(second.Body, second.Header); err != nil {
		t.Errorf("signature of the resend: %v", err)
	}
	v = h.waitCallback(c.APIKey, "big1", 30*time.Second, "resend recorded", func(v callbackView) bool { return v.Delivery == 2 && final(v) })
	// The status now names the resend's message, which holds the same task.
	if res := h.as(c.APIKey, "GET", "/v1/task/big1", nil); res.Code != http.StatusOK {
		t.Fatalf("GET after the resend: %d %.200s", res.Code, res.Body)
	}
}

// A task whose message has left the stream (past its retention; deleted here, standing in for
// the days that would take) answers a clear error for its body and its resend, while its status
// and attempts stay readable. A status that names another task's message never shows it.
func TestTask_past_the_stream_retention_answers_gone(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	c := h.createCustomer("cust_old", rc.URL)
	h.publish(c.CustomerID, task("t1", ""))
	h.publish(c.CustomerID, task("t2", ""))
	h.waitCallback(c.APIKey, "t1", 10*time.Second, "delivered", final)
	h.waitCallback(c.APIKey, "t2", 10*time.Second, "delivered", final)
	statuses := status.NewStore(h.rdb, h.prefix, 0)
	rec, err := statuses.Get(context.Background(), c.CustomerID, environment.Live, "t1")
	if err != nil || rec.Chain == 0 {
		t.Fatalf("status %+v, %v", rec, err)
	}
	st, err := h.js.Stream(context.Background(), h.cfg.Stream.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(context.Background(), rec.Chain); err != nil {
		t.Fatal(err)
	}
	for _, req := range []struct{ method, path string }{
		{"GET", "/v1/task/t1"},
		{"GET", "/v1/task/t1/callback/body"},
		{"POST", "/v1/task/t1/send-callback"},
	} {
		res := h.as(c.APIKey, req.method, req.path, nil)
		wantError(t, res, http.StatusGone)
		if !strings.Contains(string(res.Body), "past the stream's retention") {
			t.Errorf("%s %s: %s", req.method, req.path, res.Body)
		}
	}
	if v, res := h.callback(c.APIKey, "t1"); res.Code != http.StatusOK || v.State != "succeeded" || len(v.Attempts) != 1 {
		t.Errorf("status of a task past retention: %d %s", res.Code, res.Body)
	}

	// t2's status pointed at t1's message (a stream recreated and its sequences reused would
	// do that): never t1's body under t2's id.
	rec2, err := statuses.Get(context.Background(), c.CustomerID, environment.Live, "t2")
	if err != nil {
		t.Fatal(err)
	}
	h.publish(c.CustomerID, task("t3", ""))
	h.waitCallback(c.APIKey, "t3", 10*time.Second, "delivered", final)
	rec3, _ := statuses.Get(context.Background(), c.CustomerID, environment.Live, "t3")
	if _, err := statuses.Queue(context.Background(), status.Delivery{CustomerID: c.CustomerID, TaskID: "t2",
		WebhookID: rec2.WebhookID, Chain: rec3.Chain}, time.Now()); err != nil {
		t.Fatal(err)
	}
	wantError(t, h.as(c.APIKey, "GET", "/v1/task/t2", nil), http.StatusInternalServerError)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// A large event refused for an unknown customer is kept truncated in Redis; once the customer
// exists, its replay reads the whole event back from the stream and it is delivered whole.
func TestLargeEvent_refused_then_replayed_whole_from_the_stream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	big := task("big2", rc.URL)
	big["response"] = map[string]any{"text": strings.Repeat("y", 500<<10)}
	raw := mustJSON(t, map[string]any{"customer_id": "cust_late", "task": big})
	h.publishRaw("tasks.completed.cust_late", "evt_big2", raw)
	var all invalidEventList
	testenv.Eventually(t, 10*time.Second, func() bool { all = h.invalidEvents(""); return len(all.Events) == 1 }, "refused")
	if e := all.Events[0]; e.Reason != "unknown_customer" || !e.Truncated {
		t.Fatalf("refused as %+v, want unknown_customer, truncated", e)
	}
	c := h.createCustomer("cust_late", "")
	if res := h.admin("POST", "/admin/v1/invalid-events/"+all.Events[0].ID+"/replay"); res.Code != http.StatusAccepted {
		t.Fatalf("replay: %d %s", res.Code, res.Body)
	}
	v := h.waitCallback(c.APIKey, "big2", 30*time.Second, "delivered", final)
	if v.State != "succeeded" || rc.Count() != 1 {
		t.Fatalf("state %s, %d callbacks", v.State, rc.Count())
	}
	var sent struct {
		Task json.RawMessage `json:"task"`
	}
	if err := json.Unmarshal(rc.Request(1).Body, &sent); err != nil {
		t.Fatal(err)
	}
	var want, got any
	_ = json.Unmarshal(mustJSON(t, big), &want)
	_ = json.Unmarshal(sent.Task, &got)
	if !jsonEqual(want, got) {
		t.Error("the replayed event is not the refused one, whole")
	}
}
