package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/schemas"
	"refonte.ai/callbacks/services/gateway/internal/api"
)

func unmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
}

func TestSendCallback_rate_limit_answers_429_with_Retry_After(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"SEND_CALLBACK_BURST": "2", "SEND_CALLBACK_RATE_PER_MINUTE": "1"})
	a := h.createCustomer("cust_a", "")
	b := h.createCustomer("cust_b", "")

	for i := range 2 {
		if res := h.as(a.APIKey, "POST", "/v1/task/t1/send-callback", nil); res.Code != http.StatusNotFound {
			t.Fatalf("request %d: %d %s, want 404 (within the burst)", i+1, res.Code, res.Body)
		}
	}
	res := h.as(a.APIKey, "POST", "/v1/task/t1/send-callback", nil)
	wantError(t, res, http.StatusTooManyRequests)
	secs, err := strconv.Atoi(res.Header.Get("Retry-After"))
	if err != nil || secs < 1 || secs > 60 {
		t.Errorf("Retry-After = %q, want 1 to 60 seconds", res.Header.Get("Retry-After"))
	}
	// The limit is per customer, and only on send-callback.
	if res := h.as(b.APIKey, "POST", "/v1/task/t1/send-callback", nil); res.Code != http.StatusNotFound {
		t.Errorf("another customer: %d, want 404", res.Code)
	}
	if res := h.as(a.APIKey, "GET", "/v1/task/t1", nil); res.Code != http.StatusNotFound {
		t.Errorf("GET of the limited customer: %d, want 404", res.Code)
	}
}

func TestHealth_readyz_follows_NATS_and_metrics_count_routes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if res := h.do("GET", "/healthz", nil, nil); res.Code != http.StatusOK || res.json(t)["status"] != "ok" {
		t.Errorf("/healthz: %d %s", res.Code, res.Body)
	}
	res := h.do("GET", "/readyz", nil, nil)
	if m := res.json(t); res.Code != http.StatusOK || m["nats"] != "ok" || m["redis"] != "ok" {
		t.Errorf("/readyz: %d %s", res.Code, res.Body)
	}
	h.do("GET", "/v1/task/secret-looking-path", nil, nil)
	h.do("GET", "/no/such/route/abc123", nil, nil)

	metrics := string(h.do("GET", "/metrics", nil, nil).Body)
	for _, want := range []string{
		`refonte_gateway_http_requests_total{code="200",route="GET /readyz"} 1`,
		`refonte_gateway_http_requests_total{code="401",route="GET /v1/task/{taskId}"} 1`,
		`refonte_gateway_http_requests_total{code="404",route="unmatched"} 1`,
		`refonte_gateway_http_request_duration_seconds_count{route="GET /healthz"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, leak := range []string{"secret-looking-path", "abc123"} {
		if strings.Contains(metrics, leak) {
			t.Errorf("/metrics labels a raw path (%s)", leak)
		}
	}

	h.nats.Stop()
	testenv.Eventually(t, 10*time.Second, func() bool { return h.do("GET", "/readyz", nil, nil).Code == http.StatusServiceUnavailable },
		"/readyz answers 503 without NATS")
	if m := h.do("GET", "/readyz", nil, nil).json(t); m["nats"] == "ok" || m["redis"] != "ok" {
		t.Errorf("/readyz without NATS = %v", m)
	}
}

func TestRedis_errors_answer_503_JSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.createCustomer("cust_a", "")

	// A read that Redis refuses (here: a key of the wrong type) is a 503, not a 500 or a crash.
	// Both forms a status takes: t9's record (a string) and t8's hash of the old form.
	if err := h.rdb.HSet(context.Background(), h.prefix+"{cust_a}:t:t9", "not", "a string").Err(); err != nil {
		t.Fatal(err)
	}
	if err := h.rdb.Set(context.Background(), h.prefix+"{cust_a}:task:t8", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"t9", "t8"} {
		for _, req := range []struct{ method, path string }{
			{"GET", "/v1/task/" + id}, {"GET", "/v1/task/" + id + "/callback"}, {"POST", "/v1/task/" + id + "/send-callback"},
		} {
			wantError(t, h.as(c.APIKey, req.method, req.path, nil), http.StatusServiceUnavailable)
		}
	}

	// Redis unreachable altogether.
	dead := redis.NewClient(&redis.Options{Addr: testenv.FreeAddr(t), MaxRetries: -1, DialerRetries: 1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { dead.Close() })
	h.api, h.srv = h.startGateway(dead, zap.NewNop())

	for _, path := range []string{"/v1/profile", "/v1/task/t1", "/v1/task/t1/callback"} {
		res := h.as(c.APIKey, "GET", path, nil)
		wantError(t, res, http.StatusServiceUnavailable)
		if res.Header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", path)
		}
	}
	if res := h.do("GET", "/readyz", nil, nil); res.Code != http.StatusServiceUnavailable || res.json(t)["redis"] == "ok" {
		t.Errorf("/readyz with Redis down: %d %s", res.Code, res.Body)
	}
}

func TestHTTP_every_answer_is_JSON_with_security_headers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.createCustomer("cust_a", "")
	cases := []struct {
		name    string
		res     response
		code    int
		isError bool
	}{
		{"profile", h.as(c.APIKey, "GET", "/v1/profile", nil), 200, false},
		{"unauthorised", h.do("GET", "/v1/profile", nil, nil), 401, true},
		{"unknown route", h.do("GET", "/v2/anything", nil, nil), 404, true},
		{"wrong method", h.as(c.APIKey, "DELETE", "/v1/profile", nil), 405, true},
		{"health", h.do("GET", "/healthz", nil, nil), 200, false},
		{"cross-origin browser POST", h.do("POST", "/v1/profile/api-key/rotate", nil, func(r *http.Request) {
			r.SetBasicAuth(c.APIKey, "")
			r.Header.Set("Sec-Fetch-Site", "cross-site")
			r.Header.Set("Origin", "https://evil.example")
		}), 403, true},
	}
	for _, tc := range cases {
		if tc.res.Code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, tc.res.Code, tc.res.Body, tc.code)
			continue
		}
		if tc.isError {
			wantError(t, tc.res, tc.code)
		}
		for header, want := range map[string]string{
			"X-Content-Type-Options": "nosniff",
			"Cache-Control":          "no-store",
			"X-Frame-Options":        "DENY",
			"Content-Type":           "application/json",
		} {
			if got := tc.res.Header.Get(header); got != want {
				t.Errorf("%s: %s = %q, want %q", tc.name, header, got, want)
			}
		}
		if !strings.Contains(tc.res.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("%s: Content-Security-Policy = %q", tc.name, tc.res.Header.Get("Content-Security-Policy"))
		}
	}
	if allow := cases[3].res.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "PATCH") {
		t.Errorf("405 Allow = %q, want GET and PATCH", allow)
	}
	// The refused cross-origin request did not rotate the key.
	if res := h.as(c.APIKey, "GET", "/v1/profile", nil); res.Code != http.StatusOK {
		t.Errorf("the API key stopped working after a refused cross-origin rotation: %d", res.Code)
	}
}

func TestLogs_never_contain_a_secret(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	h.remember("pa55word-in-url")
	c := h.createCustomer("cust_a", strings.Replace(rc.URL, "http://", "http://user:pa55word-in-url@", 1))
	h.publish(c.CustomerID, task("t1", ""))
	h.waitCallback(c.APIKey, "t1", 10*time.Second, "delivered", final)

	// Everything that handles a secret, including refused credentials.
	h.do("GET", "/v1/profile", nil, basic("rk_live_wrong-key-that-must-not-be-logged"))
	h.remember("rk_live_wrong-key-that-must-not-be-logged", "admin-guess-that-must-not-be-logged")
	h.do("POST", "/admin/v1/customers", `{"customer_id":"x"}`, bearer("admin-guess-that-must-not-be-logged"))
	h.as(c.APIKey, "POST", "/v1/task/t1/send-callback", nil)
	for _, path := range []string{"callback-auth-key", "signing-secret"} {
		res := h.as(c.APIKey, "POST", "/v1/profile/"+path+"/rotate", nil)
		m := res.json(t)
		for _, k := range []string{"callback_auth_key", "signing_secret"} {
			if s, ok := m[k].(string); ok {
				h.remember(s)
			}
		}
	}
	res := h.as(c.APIKey, "POST", "/v1/profile/api-key/rotate", nil)
	h.remember(res.json(t)["api_key"].(string))
	testenv.Eventually(t, 10*time.Second, func() bool { return rc.Count() == 2 }, "resend delivered")

	// The check itself runs at cleanup, for this and every other test; here make sure there is
	// something to check.
	var customerLines int
	for _, e := range h.logs.FilterMessage("request").All() {
		if e.ContextMap()["customer_id"] == "cust_a" {
			customerLines++
		}
	}
	if customerLines < 5 || h.logs.FilterMessage("resend queued").Len() != 1 {
		t.Errorf("captured %d request lines of cust_a and %d resend lines; the log capture is not working",
			customerLines, h.logs.FilterMessage("resend queued").Len())
	}
}

func TestOpenAPI_documents_exactly_the_registered_routes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	raw, err := schemas.Files.ReadFile(schemas.OpenAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	unmarshal(t, raw, &doc)
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Errorf("openapi = %q, want 3.1.x", doc.OpenAPI)
	}
	var documented, registered []string
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
			var o struct {
				Responses map[string]json.RawMessage `json:"responses"`
			}
			unmarshal(t, op, &o)
			if len(o.Responses) == 0 {
				t.Errorf("%s %s documents no response", method, path)
			}
		}
	}
	for _, r := range h.api.Routes() {
		registered = append(registered, r.Method+" "+r.Path)
	}
	slices.Sort(documented)
	slices.Sort(registered)
	if !slices.Equal(documented, registered) {
		t.Errorf("openapi.json and the gateway disagree:\ndocumented: %q\nregistered: %q", documented, registered)
	}
}

func TestConfig_defaults_and_validation(t *testing.T) {
	t.Parallel()
	cfg, err := api.LoadConfig(env.FromMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:8080" || cfg.AdminToken != "" || cfg.RedisPrefix != "rc:" || cfg.Stream.Name != "CALLBACKS" ||
		cfg.SendCallbackPerMinute < 1 || cfg.SendCallbackBurst < 1 || cfg.MaxBodyBytes != 64<<10 {
		t.Errorf("defaults = %+v", cfg)
	}
	for name, vars := range map[string]map[string]string{
		"short admin token": {"ADMIN_TOKEN": "short"},
		"bad address":       {"GATEWAY_ADDR": "8080"},
		"zero rate":         {"SEND_CALLBACK_RATE_PER_MINUTE": "0"},
		"not a number":      {"SEND_CALLBACK_BURST": "many"},
		"bad duration":      {"STATUS_RETENTION": "forever"},
		"short retention":   {"STATUS_RETENTION": "1h"},
		"bad stream name":   {"NATS_STREAM": "a.b"},
	} {
		if _, err := api.LoadConfig(env.FromMap(vars)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Two gateways on the same Redis take send-callback tokens from one bucket per customer: the
// limit holds across them, not once per gateway.
func TestSendCallback_rate_limit_is_one_limit_across_gateways(t *testing.T) {
	t.Parallel()
	const burst = 3
	h := newHarness(t, map[string]string{"SEND_CALLBACK_BURST": fmt.Sprint(burst), "SEND_CALLBACK_RATE_PER_MINUTE": "1"})
	_, second := h.startGateway(h.rdb, h.log)
	a := h.createCustomer("cust_a", "")
	started := time.Now()
	allowed := 0
	for i := range 2 * burst {
		srv := h.srv
		if i%2 == 1 {
			srv = second
		}
		req, _ := http.NewRequest("POST", srv.URL+"/v1/task/t1/send-callback", nil)
		req.SetBasicAuth(a.APIKey, "")
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		switch res.StatusCode {
		case http.StatusNotFound: // within the limit (the task does not exist)
			allowed++
		case http.StatusTooManyRequests:
		default:
			t.Fatalf("request %d: %d", i+1, res.StatusCode)
		}
	}
	// One token comes back a minute: a test slower than that may see one more.
	if most := burst + int(time.Since(started)/time.Minute); allowed < burst || allowed > most {
		t.Errorf("%d of %d requests alternating between two gateways were let through, want %d", allowed, 2*burst, burst)
	}
}
