package api_test

import (
	"bytes"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
)

// The delivery flows end to end — the gateway in-process, the real worker binary — on each
// shape REDIS_URL takes: the machine's Redis, a Redis Cluster of three masters with a replica
// each (redis-cluster://) and a primary with a replica behind three sentinels
// (redis-sentinel://). On a cluster every script must keep its keys in one hash slot; a key
// that does not would fail with CROSSSLOT here.
func TestRedisShapes_delivery_acceptance(t *testing.T) {
	t.Parallel()
	for _, shape := range testenv.RedisShapes {
		t.Run(shape, func(t *testing.T) {
			t.Parallel()
			deliveryAcceptance(t, testenv.RedisOf(t, shape))
		})
	}
}

func deliveryAcceptance(t *testing.T, rt testenv.RedisTarget) {
	h := newHarnessOn(t, rt, nil)
	h.startWorker()
	var down atomic.Bool
	down.Store(true)
	rc := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/down" && down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	c := h.createCustomer("cust_a", rc.URL+"/ok")
	other := h.createCustomer("cust_b", rc.URL+"/ok")

	// Happy path: one attempt, the flag true on the task.
	h.publish(c.CustomerID, task("t_ok", ""))
	v := h.waitCallback(c.APIKey, "t_ok", 20*time.Second, "succeeded", func(v callbackView) bool { return v.State == "succeeded" })
	if len(v.Attempts) != 1 || v.CallbackSucceeded == nil || !*v.CallbackSucceeded {
		t.Errorf("t_ok: %d attempts, callback_succeeded %v; want 1 and true", len(v.Attempts), v.CallbackSucceeded)
	}
	if res := h.as(c.APIKey, "GET", "/v1/task/t_ok", nil); res.Code != http.StatusOK || res.json(t)["callback_succeeded"] != true {
		t.Errorf("GET /v1/task/t_ok: %d %s", res.Code, res.Body)
	}
	wantError(t, h.as(other.APIKey, "GET", "/v1/task/t_ok", nil), http.StatusNotFound)

	// The same task id in the test environment: another task, delivered with the test key (its
	// profile and status keys share the customer's slot).
	testenv.PublishIn(t, h.pub, c.CustomerID, environment.Test, task("t_ok", ""))
	tv := h.waitCallback(c.TestAPIKey, "t_ok", 20*time.Second, "test task succeeded", func(v callbackView) bool { return v.State == "succeeded" })
	if tv.WebhookID == v.WebhookID {
		t.Errorf("the test task t_ok shares the live one's webhook-id %s", v.WebhookID)
	}

	// 21 attempts, then false.
	failing := []string{"t_fail", "t_r1", "t_r2"}
	for _, id := range failing {
		h.publish(c.CustomerID, task(id, rc.URL+"/down"))
	}
	for _, id := range failing {
		v = h.waitCallback(c.APIKey, id, 60*time.Second, "failed", func(v callbackView) bool { return v.State == "failed" })
		if len(v.Attempts) != 21 || v.CallbackSucceeded == nil || *v.CallbackSucceeded {
			t.Errorf("%s: %d attempts, callback_succeeded %v; want 21 and false", id, len(v.Attempts), v.CallbackSucceeded)
		}
	}

	// Resend once the endpoint is back: the flag turns true.
	down.Store(false)
	res := h.as(c.APIKey, "POST", "/v1/task/t_fail/send-callback", nil)
	if res.Code != http.StatusOK {
		t.Fatalf("send-callback: %d %s", res.Code, res.Body)
	}
	h.waitCallback(c.APIKey, "t_fail", 20*time.Second, "succeeded after the resend", func(v callbackView) bool {
		return v.State == "succeeded" && v.CallbackSucceeded != nil && *v.CallbackSucceeded
	})

	// Recovery of what is still failed: the two others, once each.
	before := rc.Count()
	r := h.startRecovery(c.APIKey, map[string]any{"since": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)})
	r = h.waitRecovery(c.APIKey, r.ID, 60*time.Second, "done", func(v recoveryView) bool { return v.Status == "done" })
	if r.Matched != 2 || r.Queued != 2 || r.Succeeded != 2 {
		t.Errorf("recovery: %+v; want 2 matched, queued and succeeded", r)
	}
	for _, id := range failing[1:] {
		h.waitCallback(c.APIKey, id, 20*time.Second, "succeeded after the recovery", func(v callbackView) bool { return v.State == "succeeded" })
	}
	if got := rc.Count() - before; got != 2 {
		t.Errorf("the recovery sent %d callbacks, want 2", got)
	}

	// An invalid event is refused and kept with its reason.
	h.publishRaw("tasks.completed.cust_a", "evt_garbage", []byte("{not json"))
	var bad invalidEventList
	testenv.Eventually(t, 20*time.Second, func() bool { bad = h.invalidEvents(""); return len(bad.Events) == 1 },
		"the invalid event is listed")
	if bad.Events[0].Reason != "malformed_json" {
		t.Errorf("invalid event reason %q, want malformed_json", bad.Events[0].Reason)
	}

	// The dashboard's endpoints.
	if l := h.list(c.APIKey, "?state=succeeded"); len(l.Callbacks) != 4 {
		t.Errorf("GET /v1/callbacks?state=succeeded: %v, want the 4 tasks", taskIDs(l))
	}
	if l := h.list(other.APIKey, ""); len(l.Callbacks) != 0 {
		t.Errorf("another customer's list: %v", taskIDs(l))
	}
	if res := h.as(c.APIKey, "GET", "/v1/callbacks/stats", nil); res.Code != http.StatusOK {
		t.Errorf("GET /v1/callbacks/stats: %d %s", res.Code, res.Body)
	} else {
		h.checkSchema("CallbackStats", res.Body)
	}
	res = h.as(c.APIKey, "GET", "/v1/task/t_ok/callback/body", nil)
	if first := rc.Requests()[0].Body; res.Code != http.StatusOK || !bytes.Equal(bytes.TrimSuffix(res.Body, []byte("\n")), first) {
		t.Errorf("GET /v1/task/t_ok/callback/body: %d %s; sent %s", res.Code, res.Body, first)
	}

	// Rotation: the next callbacks carry both signatures, each verifies.
	res = h.as(c.APIKey, "POST", "/v1/profile/signing-secret/rotate", nil)
	if res.Code != http.StatusOK {
		t.Fatalf("rotate: %d %s", res.Code, res.Body)
	}
	var rot struct {
		SigningSecret string `json:"signing_secret"`
	}
	unmarshal(t, res.Body, &rot)
	h.remember(rot.SigningSecret)
	after := h.callbackAfterChange(rc, c.CustomerID, func(r testenv.Request) bool {
		return len(strings.Fields(r.Header.Get("webhook-signature"))) == 2
	})
	for _, secret := range []string{c.SigningSecret, rot.SigningSecret} {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(after.Body, after.Header); err != nil {
			t.Errorf("after rotation a verifier rejects the callback: %v", err)
		}
	}
	res = h.as(c.APIKey, "POST", "/v1/profile/api-key/rotate", nil)
	if res.Code != http.StatusOK {
		t.Fatalf("rotate the API key: %d %s", res.Code, res.Body)
	}
	var key struct {
		APIKey string `json:"api_key"`
	}
	unmarshal(t, res.Body, &key)
	h.remember(key.APIKey)
	wantError(t, h.as(c.APIKey, "GET", "/v1/profile", nil), http.StatusUnauthorized)
	if res := h.as(key.APIKey, "GET", "/v1/profile", nil); res.Code != http.StatusOK {
		t.Errorf("GET /v1/profile with the new key: %d %s", res.Code, res.Body)
	}
}
