package worker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
)

// verifies reports whether the callback's signature verifies with secret.
func verifies(t *testing.T, secret string, header http.Header, body []byte) bool {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	return wh.Verify(body, header) == nil
}

func (h *harness) recordIn(customerID string, env environment.Env, taskID string) (status.Record, bool) {
	r, err := h.statuses.Get(context.Background(), customerID, env, taskID)
	return r, err == nil
}

// A test task's callback carries the Test Callback Auth Key and the test signature; a live task
// with the same task id is another task, delivered with the live credentials. Neither
// environment's secret verifies the other's callback.
func TestEnvironment_test_and_live_tasks_use_their_own_credentials(t *testing.T) {
	h := newHarness(t, nil)
	liveRC := testenv.NewReceiver(t, nil)
	testRC := testenv.NewReceiver(t, nil)
	c, err := h.customers.Create(context.Background(), "c1", "")
	if err != nil {
		t.Fatal(err)
	}
	h.startWorker()
	testenv.PublishIn(t, h.pub, "c1", environment.Test, task("t1", testRC.URL))
	testenv.PublishIn(t, h.pub, "c1", environment.Live, task("t1", liveRC.URL))
	for _, env := range environment.All {
		testenv.Eventually(t, 10*time.Second, func() bool {
			r, ok := h.recordIn("c1", env, "t1")
			return ok && r.State == status.Succeeded
		}, "the %s task t1 is delivered", env)
	}
	for _, tc := range []struct {
		rc          *testenv.Receiver
		own, other  customer.Profile
		environment environment.Env
	}{{testRC, c.Test, c.Live, environment.Test}, {liveRC, c.Live, c.Test, environment.Live}} {
		reqs := tc.rc.Requests()
		if len(reqs) != 1 {
			t.Fatalf("the %s receiver got %d callbacks, want 1", tc.environment, len(reqs))
		}
		r := reqs[0]
		if got := r.Header.Get("refonte-ai--callback-auth"); got != tc.own.CallbackAuthKey {
			t.Errorf("%s callback auth key %q, want the %s one", tc.environment, got, tc.environment)
		}
		if !verifies(t, tc.own.SigningSecret, r.Header, r.Body) {
			t.Errorf("the %s callback does not verify with the %s secret", tc.environment, tc.environment)
		}
		if verifies(t, tc.other.SigningSecret, r.Header, r.Body) {
			t.Errorf("the %s callback verifies with the other environment's secret", tc.environment)
		}
	}
	lr, _ := h.recordIn("c1", environment.Live, "t1")
	tr, _ := h.recordIn("c1", environment.Test, "t1")
	if lr.Target != liveRC.URL || tr.Target != testRC.URL || lr.WebhookID == tr.WebhookID {
		t.Errorf("live record %s %s, test record %s %s: want two tasks", lr.Target, lr.WebhookID, tr.Target, tr.WebhookID)
	}
}

// Rotating the test signing secret signs test callbacks with both test secrets for the overlap
// and leaves live callbacks signed with the live secret alone.
func TestEnvironment_rotating_the_test_secret_leaves_live_alone(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	c, err := h.customers.Create(context.Background(), "c1", rc.URL)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := h.customers.RotateSigningSecret(context.Background(), "c1", environment.Test)
	if err != nil {
		t.Fatal(err)
	}
	h.startWorker()
	testenv.PublishIn(t, h.pub, "c1", environment.Test, task("t-test", ""))
	testenv.PublishIn(t, h.pub, "c1", environment.Live, task("t-live", ""))
	testenv.Eventually(t, 10*time.Second, func() bool { return rc.Count() == 2 }, "both callbacks arrive")
	for _, r := range rc.Requests() {
		sigs := strings.Fields(r.Header.Get("webhook-signature"))
		switch {
		case strings.Contains(string(r.Body), `"t-test"`):
			if len(sigs) != 2 || !verifies(t, rotated.SigningSecret, r.Header, r.Body) ||
				!verifies(t, c.Test.SigningSecret, r.Header, r.Body) || verifies(t, c.Live.SigningSecret, r.Header, r.Body) {
				t.Errorf("test callback signatures %q: want the new and the previous test secret only", sigs)
			}
		default:
			if len(sigs) != 1 || !verifies(t, c.Live.SigningSecret, r.Header, r.Body) ||
				verifies(t, rotated.SigningSecret, r.Header, r.Body) || verifies(t, c.Test.SigningSecret, r.Header, r.Body) {
				t.Errorf("live callback signatures %q: want the live secret only", sigs)
			}
		}
	}
}

// A customer stored before test environments existed gets one when its first test task comes,
// and the task is delivered with the new test credentials, never the live ones.
func TestEnvironment_first_test_task_of_an_old_customer(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	live := h.newCustomer("c1", rc.URL)
	if err := h.rdb.Del(context.Background(), h.cfg.RedisPrefix+"{c1}:test:profile").Err(); err != nil {
		t.Fatal(err)
	}
	h.startWorker()
	testenv.PublishIn(t, h.pub, "c1", environment.Test, task("t1", ""))
	testenv.Eventually(t, 10*time.Second, func() bool { return rc.Count() == 1 }, "the test callback arrives")
	test, err := h.customers.Get(context.Background(), "c1", environment.Test)
	if err != nil {
		t.Fatal(err)
	}
	r := rc.Requests()[0]
	if got := r.Header.Get("refonte-ai--callback-auth"); got != test.CallbackAuthKey || got == live.CallbackAuthKey {
		t.Errorf("auth key %q, want the new test key", got)
	}
	if !verifies(t, test.SigningSecret, r.Header, r.Body) || verifies(t, live.SigningSecret, r.Header, r.Body) {
		t.Error("the callback is not signed with the test secret alone")
	}
}

// An email callback of a test task is signed with the test secret, not the live one.
func TestEnvironment_email_is_signed_with_its_environment_secret(t *testing.T) {
	h, sink := newEmailHarness(t, nil)
	c, err := h.customers.Create(context.Background(), "c1", "")
	if err != nil {
		t.Fatal(err)
	}
	h.startWorker()
	tk := task("t1", "a@b.example")
	testenv.PublishIn(t, h.pub, "c1", environment.Test, tk)
	testenv.Eventually(t, 10*time.Second, func() bool { return sink.Count() == 1 }, "the test mail arrives")
	header, body, err := sink.Messages()[0].Parse()
	if err != nil {
		t.Fatal(err)
	}
	hdr := http.Header{}
	for _, name := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
		hdr.Set(name, header.Get(name))
	}
	want := callbackBody(t, "c1", tk)
	if !verifies(t, c.Test.SigningSecret, hdr, want) || verifies(t, c.Live.SigningSecret, hdr, want) {
		t.Errorf("mail signature %q: want the test secret's only (body %s)", hdr.Get("webhook-signature"), body)
	}
}

// Without a Nats-Msg-Id, the webhook-id is derived from the task's own environment, so the test
// and live completions of one task have different ids, each the one its environment derives.
func TestEnvironment_derived_webhook_id_names_the_environment(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	h.newCustomer("c1", rc.URL)
	h.startWorker()
	tk := task("t1", "")
	tk["completed_at"] = "2016-06-23T21:54:44.904Z"
	for _, env := range environment.All {
		raw, err := json.Marshal(map[string]any{"customer_id": "c1", "environment": env, "task": tk})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.js.Publish(context.Background(), stream.CompletedSubject("c1"), raw); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return rc.Count() == 2 }, "both callbacks arrive")
	got := map[string]bool{}
	for _, r := range rc.Requests() {
		got[r.Header.Get("webhook-id")] = true
	}
	for _, env := range environment.All {
		want := event.DerivedWebhookID("c1", env.String(), "t1", "2016-06-23T21:54:44.904Z")
		if !got[want] {
			t.Errorf("no callback with the %s environment's derived webhook-id %s (got %v)", env, want, got)
		}
		if r, ok := h.recordIn("c1", env, "t1"); !ok || r.WebhookID != want {
			t.Errorf("%s record webhook-id %q, want %q", env, r.WebhookID, want)
		}
	}
}
