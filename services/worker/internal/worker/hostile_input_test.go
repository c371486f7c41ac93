package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
)

// Hostile events each get a clear, recorded rejection, and the valid events around them are
// delivered as usual.
func TestInvalid_hostile_events_are_refused_and_others_flow(t *testing.T) {
	// A limit under the broker's payload limit, so an event over it can be published at all.
	const limit = 256 << 10
	h := newHarness(t, map[string]string{"EVENT_MAX_BYTES": fmt.Sprint(limit)})
	rc := testenv.NewReceiver(t, nil)
	h.newCustomer("c1", "")
	h.startWorker()

	valid := func(id string) []byte {
		b, _ := json.Marshal(map[string]any{"customer_id": "c1", "task": task(id, rc.URL)})
		return b
	}
	wrap := func(taskJSON string) []byte {
		return []byte(`{"customer_id":"c1","task":` + taskJSON + `}`)
	}
	cases := []struct {
		name, subject string
		data          []byte
		reason        event.Reason
	}{
		{"over the size limit", "tasks.completed.c1", wrap(`{"task_id":"big","status":"completed","pad":"` + strings.Repeat("a", limit) + `"}`), event.ReasonTooLarge},
		{"deeply nested", "tasks.completed.c1", wrap(`{"task_id":"deep","status":"completed","x":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`), event.ReasonMalformed},
		{"invalid UTF-8", "tasks.completed.c1", wrap("{\"task_id\":\"utf\",\"status\":\"completed\",\"x\":\"\xc3\x28\"}"), event.ReasonMalformed},
		{"huge number", "tasks.completed.c1", wrap(`{"task_id":"num","status":"completed","n":1e400}`), event.ReasonMalformed},
		{"duplicate keys", "tasks.completed.c1", wrap(`{"task_id":"dup","task_id":"dup2","status":"completed"}`), event.ReasonMalformed},
		{"task_id with path characters", "tasks.completed.c1", wrap(`{"task_id":"../../admin","status":"completed"}`), event.ReasonSchema},
		{"task_id with glob characters", "tasks.completed.c1", wrap(`{"task_id":"*","status":"completed"}`), event.ReasonSchema},
		{"customer id that is not a subject token", "tasks.completed.c1", []byte(`{"customer_id":"c1.>","task":{"task_id":"x","status":"completed"}}`), event.ReasonSchema},
		{"subject with an extra token", "tasks.completed.c1.extra", valid("extra"), event.ReasonSubjectMismatch},
	}
	ctx := context.Background()
	for i, c := range cases {
		if _, err := h.js.Publish(ctx, c.subject, c.data); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if _, err := h.js.Publish(ctx, "tasks.completed.c1", valid(fmt.Sprintf("ok-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range cases {
		rec := h.waitFinal("c1", fmt.Sprintf("ok-%d", i), 10*time.Second)
		if rec.Succeeded == nil || !*rec.Succeeded {
			t.Errorf("valid task ok-%d after a hostile one was not delivered", i)
		}
	}
	var kept map[string]string
	testenv.Eventually(t, 10*time.Second, func() bool {
		evs, err := h.invalid.List(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		kept = map[string]string{}
		for _, e := range evs {
			kept[e.Subject+"|"+e.Detail] = e.Reason
		}
		return len(evs) == len(cases)
	}, "every hostile event is kept with its reason")
	for _, c := range cases {
		found := false
		for k, reason := range kept {
			if strings.HasPrefix(k, c.subject+"|") && reason == string(c.reason) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no rejection recorded with reason %s", c.name, c.reason)
		}
	}
	for _, id := range []string{"big", "deep", "utf", "num", "dup", "extra"} {
		if _, ok := h.record("c1", id); ok {
			t.Errorf("a task was recorded for the refused event %q", id)
		}
	}
}

// No log line of the worker, at any level, carries a customer's secrets: not on success, not on
// failure, not for a refused event, not after a rotation.
func TestLogs_carry_no_secrets(t *testing.T) {
	h := newHarness(t, map[string]string{"CALLBACK_TIMEOUT": "200ms"})
	core, logs := observer.New(zap.DebugLevel)
	h.log = zap.New(core)
	ok := testenv.NewReceiver(t, nil)
	failing := testenv.NewReceiver(t, testenv.Failing(2, 500))
	p := h.newCustomer("c1", "")
	h.startWorker()
	h.publish("c1", task("t-ok", ok.URL))
	h.publish("c1", task("t-fail", failing.URL+"/?token=abc"))
	h.publish("c1", task("t-userinfo", "https://user:url-password@127.0.0.1:1/"))
	_, _ = h.js.Publish(context.Background(), "tasks.completed.c1", []byte(`{"customer_id":"c1","task":{"oops"`))
	h.waitFinal("c1", "t-ok", 10*time.Second)
	h.waitFinal("c1", "t-fail", 10*time.Second)
	h.waitFinal("c1", "t-userinfo", 30*time.Second)
	rotated, err := h.customers.RotateSigningSecret(context.Background(), "c1", environment.Live)
	if err != nil {
		t.Fatal(err)
	}
	h.publish("c1", task("t-after", ok.URL))
	h.waitFinal("c1", "t-after", 10*time.Second)

	secrets := []string{p.CallbackAuthKey, p.SigningSecret, rotated.SigningSecret,
		strings.TrimPrefix(p.SigningSecret, "whsec_"), "url-password"}
	if logs.Len() == 0 {
		t.Fatal("no logs captured")
	}
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("log line carries a secret: %s", line)
			}
		}
	}
}
