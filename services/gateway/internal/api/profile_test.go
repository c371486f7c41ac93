package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/signing"
	"refonte.ai/callbacks/pkg/stream"
)

func TestProfile_read_change_and_clear_the_default(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.createCustomer("cust_a", "https://hooks.example.com/a")

	res := h.as(c.APIKey, "GET", "/v1/profile", nil)
	h.checkSchema("Profile", res.Body)
	if m := res.json(t); m["customer_id"] != "cust_a" || m["default_callback_url"] != "https://hooks.example.com/a" ||
		m["callback_auth_key"] != c.CallbackAuthKey {
		t.Errorf("GET /v1/profile = %v", m)
	}
	for _, u := range []string{"http://hooks.example.com/b?x=1", "mailto:ops@example.com", "ops@example.com", ""} {
		res := h.as(c.APIKey, "PATCH", "/v1/profile", map[string]string{"default_callback_url": u})
		if res.Code != http.StatusOK {
			t.Fatalf("PATCH %q: %d %s", u, res.Code, res.Body)
		}
		h.checkSchema("Profile", res.Body)
		if got := h.as(c.APIKey, "GET", "/v1/profile", nil).json(t)["default_callback_url"]; got != u {
			t.Errorf("after PATCH %q the profile says %q", u, got)
		}
	}
}

func TestProfile_bad_input_is_400_and_changes_nothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.createCustomer("cust_a", "https://hooks.example.com/a")

	for name, body := range map[string]string{
		"malformed JSON":      `{"default_callback_url": `,
		"not an object":       `["https://hooks.example.com/b"]`,
		"unknown field":       `{"default_callback_url": "https://hooks.example.com/b", "signing_secret": "x"}`,
		"trailing object":     `{"default_callback_url": "https://hooks.example.com/b"} {}`,
		"trailing garbage":    `{"default_callback_url": "https://hooks.example.com/b"} x`,
		"wrong type":          `{"default_callback_url": 5}`,
		"missing field":       `{}`,
		"empty body":          ``,
		"ftp URL":             `{"default_callback_url": "ftp://hooks.example.com/b"}`,
		"javascript URL":      `{"default_callback_url": "javascript:alert(1)"}`,
		"no host":             `{"default_callback_url": "https:///path"}`,
		"words":               `{"default_callback_url": "not a url"}`,
		"two addresses":       `{"default_callback_url": "a@example.com,b@example.com"}`,
		"header injection":    `{"default_callback_url": "a@example.com\r\nBcc: x@example.com"}`,
		"display-name e-mail": `{"default_callback_url": "Ops <ops@example.com>"}`,
	} {
		res := h.as(c.APIKey, "PATCH", "/v1/profile", body)
		if res.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", name, res.Code, res.Body)
			continue
		}
		wantError(t, res, http.StatusBadRequest)
	}
	big := `{"default_callback_url": "https://hooks.example.com/` + strings.Repeat("a", 70<<10) + `"}`
	wantError(t, h.as(c.APIKey, "PATCH", "/v1/profile", big), http.StatusRequestEntityTooLarge)

	if got := h.as(c.APIKey, "GET", "/v1/profile", nil).json(t)["default_callback_url"]; got != "https://hooks.example.com/a" {
		t.Errorf("a refused PATCH changed the default to %q", got)
	}
}

func TestAuth_missing_or_wrong_key_is_401_on_every_customer_route(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.createCustomer("cust_a", "")
	wrong := "rk_live_" + strings.Repeat("x", 43)
	h.remember(wrong)

	for _, r := range h.api.Routes() {
		if !strings.HasPrefix(r.Path, "/v1/") {
			continue
		}
		path := strings.Replace(r.Path, "{taskId}", "t1", 1)
		for name, auth := range map[string]func(*http.Request){
			"no credentials":          nil,
			"wrong key":               basic(wrong),
			"key as password":         func(req *http.Request) { req.SetBasicAuth("", c.APIKey) },
			"key with a password":     func(req *http.Request) { req.SetBasicAuth(c.APIKey, "x") },
			"key as a bearer token":   bearer(c.APIKey),
			"malformed basic header":  func(req *http.Request) { req.Header.Set("Authorization", "Basic !!!") },
			"admin token as key":      basic(h.adminToken),
			"key with a trailing tab": basic(c.APIKey + "\t"),
		} {
			res := h.do(r.Method, path, `{"default_callback_url": ""}`, auth)
			if res.Code != http.StatusUnauthorized {
				t.Errorf("%s %s with %s: %d, want 401", r.Method, path, name, res.Code)
				continue
			}
			wantError(t, res, http.StatusUnauthorized)
			if ch := res.Header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Basic ") {
				t.Errorf("%s %s with %s: WWW-Authenticate = %q", r.Method, path, name, ch)
			}
		}
	}
	if res := h.as(c.APIKey, "GET", "/v1/profile", nil); res.Code != http.StatusOK {
		t.Errorf("the right key: %d %s", res.Code, res.Body)
	}
}

func TestAdmin_creates_customers_and_refuses_bad_input(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.createCustomer("cust_A-1_z", "mailto:ops@example.com")
	if c.CustomerID != "cust_A-1_z" || c.DefaultCallbackURL != "mailto:ops@example.com" ||
		!strings.HasPrefix(c.SigningSecret, signing.SecretPrefix) || len(c.APIKey) < 40 || len(c.CallbackAuthKey) < 40 {
		t.Errorf("created = %+v", c)
	}
	if _, err := signing.ParseSecret(c.SigningSecret); err != nil {
		t.Errorf("signing secret: %v", err)
	}
	other := h.createCustomer("cust_b", "")
	if other.APIKey == c.APIKey || other.CallbackAuthKey == c.CallbackAuthKey || other.SigningSecret == c.SigningSecret {
		t.Error("two customers share a secret")
	}
	if res := h.as(c.APIKey, "GET", "/v1/profile", nil); res.Code != http.StatusOK {
		t.Errorf("the new API key does not work: %d %s", res.Code, res.Body)
	}

	wantError(t, h.do("POST", "/admin/v1/customers", `{"customer_id": "cust_b"}`, bearer(h.adminToken)), http.StatusConflict)
	for name, body := range map[string]string{
		"dot in id":     `{"customer_id": "cust.b"}`,
		"space in id":   `{"customer_id": "cust b"}`,
		"wildcard id":   `{"customer_id": "cust>"}`,
		"empty id":      `{"customer_id": ""}`,
		"id too long":   `{"customer_id": "` + strings.Repeat("c", 65) + `"}`,
		"no id":         `{"default_callback_url": "https://hooks.example.com/"}`,
		"bad URL":       `{"customer_id": "cust_c", "default_callback_url": "gopher://hooks.example.com/"}`,
		"unknown field": `{"customer_id": "cust_c", "api_key": "mine"}`,
		"malformed":     `{"customer_id": "cust_c"`,
		"trailing data": `{"customer_id": "cust_c"}{"customer_id": "cust_d"}`,
	} {
		res := h.do("POST", "/admin/v1/customers", body, bearer(h.adminToken))
		if res.Code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", name, res.Code, res.Body)
		}
	}
	if res := h.do("POST", "/admin/v1/customers", `{"customer_id": "cust_c"}`, bearer(h.adminToken)); res.Code != http.StatusCreated {
		t.Errorf("cust_c after the refused attempts: %d %s", res.Code, res.Body)
	} else {
		h.remember(res.json(t)["api_key"].(string), res.json(t)["signing_secret"].(string), res.json(t)["callback_auth_key"].(string))
	}
}

func TestAdmin_wrong_token_is_401(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	for name, auth := range map[string]func(*http.Request){
		"no token":          nil,
		"wrong token":       bearer("admin_" + strings.Repeat("y", 26)),
		"token prefix":      bearer(h.adminToken[:len(h.adminToken)-1]),
		"token as basic":    basic(h.adminToken),
		"token, bad scheme": func(r *http.Request) { r.Header.Set("Authorization", "Token "+h.adminToken) },
	} {
		res := h.do("POST", "/admin/v1/customers", `{"customer_id": "cust_a"}`, auth)
		wantError(t, res, http.StatusUnauthorized)
		if res.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate", name)
		}
	}
	if res := h.do("POST", "/admin/v1/customers", `{"customer_id": "cust_a"}`, bearer(h.adminToken)); res.Code != http.StatusCreated {
		t.Errorf("the right token: %d %s", res.Code, res.Body)
	} else {
		m := res.json(t)
		h.remember(m["api_key"].(string), m["signing_secret"].(string), m["callback_auth_key"].(string))
	}
}

func TestAdmin_is_off_without_ADMIN_TOKEN(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"ADMIN_TOKEN": ""})
	for _, auth := range []func(*http.Request){nil, bearer(""), bearer("anything-at-all-really")} {
		wantError(t, h.do("POST", "/admin/v1/customers", `{"customer_id": "cust_a"}`, auth), http.StatusNotFound)
	}
	for _, r := range h.api.Routes() {
		if strings.HasPrefix(r.Path, "/admin/") {
			t.Errorf("admin route %s %s is registered without ADMIN_TOKEN", r.Method, r.Path)
		}
	}
}

func TestRotate_callback_auth_key_next_callback_carries_the_new_key(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	c := h.createCustomer("cust_a", rc.URL)
	h.publish(c.CustomerID, task("t1", ""))
	testenv.Eventually(t, 10*time.Second, func() bool { return rc.Count() == 1 }, "first callback")

	res := h.as(c.APIKey, "POST", "/v1/profile/callback-auth-key/rotate", nil)
	if res.Code != http.StatusOK {
		t.Fatalf("rotate: %d %s", res.Code, res.Body)
	}
	h.checkSchema("Profile", res.Body)
	newKey, _ := res.json(t)["callback_auth_key"].(string)
	h.remember(newKey)
	if newKey == "" || newKey == c.CallbackAuthKey {
		t.Fatalf("rotated key %q, old %q", newKey, c.CallbackAuthKey)
	}
	if got := h.as(c.APIKey, "GET", "/v1/profile", nil).json(t)["callback_auth_key"]; got != newKey {
		t.Errorf("profile shows %q after rotation", got)
	}

	if got := rc.Requests()[0].Header.Get("refonte-ai--callback-auth"); got != c.CallbackAuthKey {
		t.Errorf("first callback carried %q, want the original key", got)
	}
	h.callbackAfterChange(rc, c.CustomerID, func(r testenv.Request) bool {
		return r.Header.Get("refonte-ai--callback-auth") == newKey
	})
	// From then on, only the new key.
	n := rc.Count()
	h.publish(c.CustomerID, task("t_last", ""))
	testenv.Eventually(t, 10*time.Second, func() bool { return rc.Count() > n }, "one more callback")
	if got := rc.Requests()[n].Header.Get("refonte-ai--callback-auth"); got != newKey {
		t.Errorf("a later callback carried %q, want the new key", got)
	}
}

func TestRotate_signing_secret_signs_with_both_for_the_overlap(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	c := h.createCustomer("cust_a", rc.URL)
	h.publish(c.CustomerID, task("t1", ""))
	testenv.Eventually(t, 10*time.Second, func() bool { return rc.Count() == 1 }, "first callback")

	res := h.as(c.APIKey, "POST", "/v1/profile/signing-secret/rotate", nil)
	if res.Code != http.StatusOK {
		t.Fatalf("rotate: %d %s", res.Code, res.Body)
	}
	h.checkSchema("SigningSecretRotated", res.Body)
	var rot struct {
		SigningSecret string    `json:"signing_secret"`
		Expires       time.Time `json:"previous_secret_expires_at"`
		Message       string    `json:"message"`
	}
	unmarshal(t, res.Body, &rot)
	h.remember(rot.SigningSecret)
	if rot.SigningSecret == c.SigningSecret || !strings.HasPrefix(rot.SigningSecret, "whsec_") {
		t.Fatalf("new secret %q", rot.SigningSecret)
	}
	if d := time.Until(rot.Expires); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("previous secret expires in %s, want 24h", d)
	}
	if !strings.Contains(rot.Message, "24 hours") {
		t.Errorf("message does not explain the overlap: %q", rot.Message)
	}

	before := rc.Requests()[0]
	if n := len(strings.Fields(before.Header.Get("webhook-signature"))); n != 1 {
		t.Errorf("before rotation: %d signatures, want 1", n)
	}
	after := h.callbackAfterChange(rc, c.CustomerID, func(r testenv.Request) bool {
		return len(strings.Fields(r.Header.Get("webhook-signature"))) == 2
	})
	for _, sig := range strings.Fields(after.Header.Get("webhook-signature")) {
		if !strings.HasPrefix(sig, "v1,") {
			t.Errorf("after rotation: signature entry %q, want v1,…", sig)
		}
	}
	for name, secret := range map[string]string{"old": c.SigningSecret, "new": rot.SigningSecret} {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(after.Body, after.Header); err != nil {
			t.Errorf("a verifier with the %s secret rejects the callback: %v", name, err)
		}
	}
	stranger, _ := standardwebhooks.NewWebhook(signing.NewSecret())
	if stranger.Verify(after.Body, after.Header) == nil {
		t.Error("a verifier with an unrelated secret accepts the callback")
	}
}

func TestRotate_api_key_retires_the_old_one(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.createCustomer("cust_a", "")
	res := h.as(c.APIKey, "POST", "/v1/profile/api-key/rotate", nil)
	if res.Code != http.StatusOK {
		t.Fatalf("rotate: %d %s", res.Code, res.Body)
	}
	h.checkSchema("APIKeyRotated", res.Body)
	newKey, _ := res.json(t)["api_key"].(string)
	h.remember(newKey)
	if newKey == "" || newKey == c.APIKey {
		t.Fatalf("new key %q", newKey)
	}
	wantError(t, h.as(c.APIKey, "GET", "/v1/profile", nil), http.StatusUnauthorized)
	if res := h.as(newKey, "GET", "/v1/profile", nil); res.Code != http.StatusOK || res.json(t)["customer_id"] != "cust_a" {
		t.Errorf("new key: %d %s", res.Code, res.Body)
	}
}

func TestProfile_every_change_is_announced_to_the_workers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	sub, err := h.nc.SubscribeSync(stream.ProfileChanged)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The gateway flushes its announcement before it answers, so it is already on its way here.
	announced := func(what string) {
		t.Helper()
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil || string(msg.Data) != "cust_a" {
			t.Fatalf("%s: announcement %v, %v; want the customer id", what, msg, err)
		}
	}
	c := h.createCustomer("cust_a", "")
	announced("create")
	key := c.APIKey
	for _, change := range []struct{ method, path, body string }{
		{"PATCH", "/v1/profile", `{"default_callback_url": "https://hooks.example.com/"}`},
		{"PATCH", "/v1/profile", `{"default_callback_url": ""}`},
		{"POST", "/v1/profile/callback-auth-key/rotate", ""},
		{"POST", "/v1/profile/signing-secret/rotate", ""},
		{"POST", "/v1/profile/api-key/rotate", ""},
	} {
		res := h.as(key, change.method, change.path, change.body)
		if res.Code != http.StatusOK {
			t.Fatalf("%s %s: %d %s", change.method, change.path, res.Code, res.Body)
		}
		m := res.json(t)
		for _, k := range []string{"api_key", "signing_secret", "callback_auth_key"} {
			if s, ok := m[k].(string); ok {
				h.remember(s)
			}
		}
		if k, ok := m["api_key"].(string); ok {
			key = k
		}
		announced(change.method + " " + change.path)
	}
	// Reads and refused changes announce nothing.
	h.as(key, "GET", "/v1/profile", nil)
	h.as(key, "PATCH", "/v1/profile", `{"default_callback_url": "ftp://x.example"}`)
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := sub.Pending(); n != 0 {
		t.Errorf("%d announcements for reads and refused changes, want 0", n)
	}
}
