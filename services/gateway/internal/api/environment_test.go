package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

func signedWith(t *testing.T, secret string, r testenv.Request) bool {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	return wh.Verify(r.Body, r.Header) == nil
}

// The acceptance of live and test environments, end to end through the gateway and the real
// worker: a test task and a live task with the same id are two tasks, each delivered with its own
// environment's credentials; each API key reads only its environment's tasks; a resend with the
// test key reaches only the test target; rotating the test secret leaves the live one alone.
func TestEnvironments_keys_tasks_and_resends_stay_in_their_environment(t *testing.T) {
	h := newHarness(t, nil)
	liveRC := testenv.NewReceiver(t, nil)
	testRC := testenv.NewReceiver(t, nil)
	c := h.createCustomer("cust_env", "")
	if !strings.HasPrefix(c.APIKey, "rk_live_") || !strings.HasPrefix(c.TestAPIKey, "rk_test_") ||
		c.TestCallbackAuthKey == c.CallbackAuthKey || c.TestSigningSecret == c.SigningSecret {
		t.Fatalf("created %+v: want distinct live and test credentials", c)
	}
	h.startWorker()
	testenv.PublishIn(t, h.pub, c.CustomerID, environment.Test, task("t1", testRC.URL))
	testenv.PublishIn(t, h.pub, c.CustomerID, environment.Live, task("t1", liveRC.URL))
	testenv.PublishIn(t, h.pub, c.CustomerID, environment.Test, task("only-test", testRC.URL))
	succeeded := func(v callbackView) bool { return v.State == "succeeded" }
	lv := h.waitCallback(c.APIKey, "t1", 20*time.Second, "live t1 delivered", succeeded)
	tv := h.waitCallback(c.TestAPIKey, "t1", 20*time.Second, "test t1 delivered", succeeded)
	h.waitCallback(c.TestAPIKey, "only-test", 20*time.Second, "test only-test delivered", succeeded)
	if *lv.Target != liveRC.URL || *tv.Target != testRC.URL || lv.WebhookID == tv.WebhookID {
		t.Fatalf("live view %s %s, test view %s %s: want two tasks", *lv.Target, lv.WebhookID, *tv.Target, tv.WebhookID)
	}

	// Each callback carries its own environment's auth key and signature, never the other's.
	live := liveRC.Requests()
	if len(live) != 1 || live[0].Header.Get("refonte-ai--callback-auth") != c.CallbackAuthKey ||
		!signedWith(t, c.SigningSecret, live[0]) || signedWith(t, c.TestSigningSecret, live[0]) {
		t.Fatalf("live callbacks %d: want one, with the live key and signature only", len(live))
	}
	for _, r := range testRC.Requests() {
		if r.Header.Get("refonte-ai--callback-auth") != c.TestCallbackAuthKey ||
			!signedWith(t, c.TestSigningSecret, r) || signedWith(t, c.SigningSecret, r) {
			t.Fatalf("a test callback does not carry the test key and signature only: %s", r.Body)
		}
	}

	// Each key reads only its own environment's tasks.
	wantError(t, h.as(c.APIKey, "GET", "/v1/task/only-test", nil), http.StatusNotFound)
	wantError(t, h.as(c.APIKey, "GET", "/v1/task/only-test/callback", nil), http.StatusNotFound)
	wantError(t, h.as(c.APIKey, "POST", "/v1/task/only-test/send-callback", nil), http.StatusNotFound)
	if res := h.as(c.TestAPIKey, "GET", "/v1/task/only-test", nil); res.Code != http.StatusOK {
		t.Fatalf("test key reading its task: %d %s", res.Code, res.Body)
	}
	for key, want := range map[string]string{c.APIKey: "t1", c.TestAPIKey: "only-test,t1"} {
		res := h.as(key, "GET", "/v1/callbacks", nil)
		var list struct {
			Callbacks []struct {
				TaskID string `json:"task_id"`
			} `json:"callbacks"`
		}
		if err := json.Unmarshal(res.Body, &list); err != nil || res.Code != http.StatusOK {
			t.Fatalf("list: %d %s", res.Code, res.Body)
		}
		var ids []string
		for _, cb := range list.Callbacks {
			ids = append(ids, cb.TaskID)
		}
		slices.Sort(ids)
		if got := strings.Join(ids, ","); got != want {
			t.Errorf("%s… lists %s, want %s", key[:8], got, want)
		}
	}

	// A resend with the test key goes to the test target only, with the test credentials.
	before := testRC.Count()
	if res := h.as(c.TestAPIKey, "POST", "/v1/task/t1/send-callback", nil); res.Code != http.StatusOK {
		t.Fatalf("test send-callback: %d %s", res.Code, res.Body)
	}
	h.waitCallback(c.TestAPIKey, "t1", 20*time.Second, "test resend delivered", func(v callbackView) bool {
		return v.Delivery == 2 && v.State == "succeeded"
	})
	reqs := testRC.Requests()
	if len(reqs) != before+1 || reqs[before].Header.Get("webhook-id") != tv.WebhookID ||
		reqs[before].Header.Get("refonte-ai--callback-auth") != c.TestCallbackAuthKey || !signedWith(t, c.TestSigningSecret, reqs[before]) {
		t.Fatalf("test resend: %d test callbacks (had %d), want one more with the test credentials", len(reqs), before)
	}
	if v, _ := h.callback(c.APIKey, "t1"); v.Delivery != 1 || liveRC.Count() != 1 {
		t.Errorf("the test resend touched the live task: delivery %d, %d live callbacks", v.Delivery, liveRC.Count())
	}

	// Rotating the test signing secret leaves the live one as it was.
	if res := h.as(c.TestAPIKey, "POST", "/v1/profile/signing-secret/rotate", nil); res.Code != http.StatusOK {
		t.Fatalf("rotate: %d %s", res.Code, res.Body)
	} else {
		h.remember(res.json(t)["signing_secret"].(string))
		h.checkSchema("SigningSecretRotated", res.Body)
	}
	res := h.as(c.APIKey, "GET", "/v1/profile/signing-secret", nil)
	if m := res.json(t); m["signing_secret"] != c.SigningSecret || m["previous_secret_expires_at"] != nil || m["environment"] != "live" {
		t.Errorf("live signing secret after the test rotation: %v", m)
	}
	res = h.as(c.TestAPIKey, "GET", "/v1/profile/signing-secret", nil)
	if m := res.json(t); m["signing_secret"] == c.TestSigningSecret || m["previous_secret_expires_at"] == nil || m["environment"] != "test" {
		t.Errorf("test signing secret after its rotation: %v", m)
	}
}

// GET /v1/profile answers for the key's environment and names it; each environment's default
// callback URL is its own.
func TestEnvironments_profile_names_its_environment(t *testing.T) {
	h := newHarness(t, nil)
	c := h.createCustomer("cust_env", "https://hooks.example/live")
	for key, want := range map[string]string{c.APIKey: "live", c.TestAPIKey: "test"} {
		res := h.as(key, "GET", "/v1/profile", nil)
		h.checkSchema("Profile", res.Body)
		if m := res.json(t); m["environment"] != want || m["default_callback_url"] != "https://hooks.example/live" {
			t.Errorf("%s profile %v", want, m)
		}
	}
	res := h.as(c.TestAPIKey, "PATCH", "/v1/profile", map[string]string{"default_callback_url": "https://hooks.example/test"})
	if m := res.json(t); res.Code != http.StatusOK || m["environment"] != "test" || m["default_callback_url"] != "https://hooks.example/test" {
		t.Fatalf("test PATCH: %d %v", res.Code, m)
	}
	if m := h.as(c.APIKey, "GET", "/v1/profile", nil).json(t); m["default_callback_url"] != "https://hooks.example/live" ||
		m["callback_auth_key"] != c.CallbackAuthKey {
		t.Errorf("the test PATCH changed the live profile: %v", m)
	}
	res = h.as(c.TestAPIKey, "POST", "/v1/profile/api-key/rotate", nil)
	h.checkSchema("APIKeyRotated", res.Body)
	m := res.json(t)
	newKey, _ := m["api_key"].(string)
	h.remember(newKey)
	if !strings.HasPrefix(newKey, "rk_test_") || m["environment"] != "test" {
		t.Fatalf("test key rotation %v", m)
	}
	if res := h.as(c.APIKey, "GET", "/v1/profile", nil); res.Code != http.StatusOK {
		t.Errorf("the live key stopped working after the test key's rotation: %d", res.Code)
	}
	wantError(t, h.as(c.TestAPIKey, "GET", "/v1/profile", nil), http.StatusUnauthorized)
}

// A customer stored before test environments existed keeps its live environment untouched and
// gets a test environment and key from the admin route.
func TestEnvironments_admin_gives_an_old_customer_its_test_environment(t *testing.T) {
	h := newHarness(t, nil)
	c := h.createCustomer("old1", "https://hooks.example/old")
	// Back to the form stored before test environments: no test profile, no test key.
	ctx := context.Background()
	if err := h.rdb.Del(ctx, h.prefix+"{old1}:test:profile").Err(); err != nil {
		t.Fatal(err)
	}
	wantError(t, h.as(c.TestAPIKey, "GET", "/v1/profile", nil), http.StatusUnauthorized)
	liveBefore := h.as(c.APIKey, "GET", "/v1/profile", nil).json(t)

	res := h.do("POST", "/admin/v1/customers/old1/test-environment", nil, bearer(h.adminToken))
	if res.Code != http.StatusOK {
		t.Fatalf("enable: %d %s", res.Code, res.Body)
	}
	h.checkSchema("TestEnvironmentEnabled", res.Body)
	var enabled struct {
		TestAPIKey          string `json:"test_api_key"`
		TestCallbackAuthKey string `json:"test_callback_auth_key"`
		TestSigningSecret   string `json:"test_signing_secret"`
		DefaultCallbackURL  string `json:"default_callback_url"`
	}
	if err := json.Unmarshal(res.Body, &enabled); err != nil {
		t.Fatal(err)
	}
	h.remember(enabled.TestAPIKey, enabled.TestCallbackAuthKey, enabled.TestSigningSecret)
	if enabled.DefaultCallbackURL != "https://hooks.example/old" || enabled.TestCallbackAuthKey == c.CallbackAuthKey ||
		enabled.TestSigningSecret == c.SigningSecret {
		t.Fatalf("enabled %+v", enabled)
	}
	m := h.as(enabled.TestAPIKey, "GET", "/v1/profile", nil).json(t)
	if m["environment"] != "test" || m["callback_auth_key"] != enabled.TestCallbackAuthKey {
		t.Errorf("test profile %v", m)
	}
	liveAfter := h.as(c.APIKey, "GET", "/v1/profile", nil).json(t)
	for k, v := range liveBefore {
		if liveAfter[k] != v {
			t.Errorf("live profile %s changed: %v -> %v", k, v, liveAfter[k])
		}
	}
	wantError(t, h.do("POST", "/admin/v1/customers/nobody/test-environment", nil, bearer(h.adminToken)), http.StatusNotFound)
	wantError(t, h.do("POST", "/admin/v1/customers/old1/test-environment", nil, bearer("wrong-token-wrong-token")), http.StatusUnauthorized)
}

// A recovery started with the test key walks and re-sends the test environment's tasks only,
// with the test credentials, and is read back only with a key of its environment.
func TestEnvironments_recovery_stays_in_its_environment(t *testing.T) {
	h := newHarness(t, map[string]string{"RECOVER_RATE_PER_SECOND": "50"})
	h.startWorker(map[string]string{"CALLBACK_RETRY_SCHEDULE": recoverySchedule})
	since := time.Now().Add(-time.Second)
	var healthy atomic.Bool
	rc := testenv.NewReceiver(t, downWhile(&healthy))
	c := h.createCustomer("cust_rec", rc.URL)
	ids := []string{"t_1", "t_2", "t_3"}
	for _, id := range ids {
		for _, env := range environment.All {
			testenv.PublishIn(t, h.pub, c.CustomerID, env, task(id, ""))
		}
	}
	st := status.NewStore(h.rdb, h.prefix, h.cfg.Retention)
	states := func(env environment.Env) map[status.State]int {
		briefs, err := st.Briefs(context.Background(), c.CustomerID, env, ids)
		if err != nil {
			t.Fatal(err)
		}
		out := map[status.State]int{}
		for _, b := range briefs {
			out[b.State]++
		}
		return out
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		return states(environment.Live)[status.Failed] == 3 && states(environment.Test)[status.Failed] == 3
	}, "every task of both environments fails")
	before := rc.Count()
	healthy.Store(true)

	rec := h.startRecovery(c.TestAPIKey, map[string]any{"since": since.Format(time.RFC3339Nano)})
	wantError(t, h.as(c.APIKey, "GET", "/v1/callbacks/recover/"+rec.ID, nil), http.StatusNotFound)
	wantError(t, h.as(c.APIKey, "DELETE", "/v1/callbacks/recover/"+rec.ID, nil), http.StatusNotFound)
	v := h.waitRecovery(c.TestAPIKey, rec.ID, 30*time.Second, "done", func(v recoveryView) bool { return v.Status == "done" })
	if v.Queued != 3 || v.Succeeded != 3 {
		t.Errorf("test recovery %+v: want the 3 test tasks re-sent and succeeded", v)
	}
	resent := rc.Requests()[before:]
	if len(resent) != 3 {
		t.Fatalf("%d re-deliveries, want the 3 test tasks'", len(resent))
	}
	for _, r := range resent {
		if !strings.HasSuffix(r.Header.Get("webhook-id"), "_test") || r.Header.Get("refonte-ai--callback-auth") != c.TestCallbackAuthKey ||
			!signedWith(t, c.TestSigningSecret, r) {
			t.Errorf("a re-delivery that is not a test task's with the test credentials: webhook-id %s", r.Header.Get("webhook-id"))
		}
	}
	if got := states(environment.Live); got[status.Failed] != 3 {
		t.Errorf("the live tasks after the test recovery: %v, want all still failed", got)
	}
	if got := states(environment.Test); got[status.Succeeded] != 3 {
		t.Errorf("the test tasks after their recovery: %v, want all succeeded", got)
	}
}

// A refused test event is listed with its environment, so an operator sees which environment's
// integration sends it.
func TestEnvironments_refused_test_event_names_its_environment(t *testing.T) {
	h := newHarness(t, nil)
	h.startWorker()
	body, _ := json.Marshal(map[string]any{"customer_id": "cust_none", "environment": "test", "task": task("t1", "")})
	h.publishRaw("tasks.completed.cust_none", "evt_none_test", body)
	var l invalidEventList
	testenv.Eventually(t, 10*time.Second, func() bool { l = h.invalidEvents(""); return len(l.Events) == 1 },
		"the refused event is listed")
	if e := l.Events[0]; e.Reason != "unknown_customer" || e.Environment == nil || *e.Environment != "test" {
		t.Errorf("refused test event listed as %+v", e)
	}
}
