package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
)

type endpointView struct {
	Endpoint            string     `json:"endpoint"`
	State               string     `json:"state"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	FailingSince        *time.Time `json:"failing_since"`
	LastSuccessAt       *time.Time `json:"last_success_at"`
	LastError           string     `json:"last_error"`
	PausedAt            *time.Time `json:"paused_at"`
	PausedBy            string     `json:"paused_by"`
}

func (h *harness) endpoints(apiKey string) []endpointView {
	h.t.Helper()
	res := h.as(apiKey, "GET", "/v1/endpoints", nil)
	if res.Code != http.StatusOK {
		h.t.Fatalf("GET /v1/endpoints: %d %s", res.Code, res.Body)
	}
	h.checkSchema("EndpointList", res.Body)
	var v struct {
		Endpoints []endpointView `json:"endpoints"`
	}
	unmarshal(h.t, res.Body, &v)
	return v.Endpoints
}

func TestProfile_alert_settings_are_set_shown_and_validated(t *testing.T) {
	h := newHarness(t, nil)
	c := h.createCustomer("c1", "")
	res := h.as(c.APIKey, "PATCH", "/v1/profile", map[string]any{"alert_email": "ops@example.com", "auto_pause": true})
	if res.Code != http.StatusOK {
		t.Fatalf("PATCH: %d %s", res.Code, res.Body)
	}
	h.checkSchema("Profile", res.Body)
	got := h.as(c.APIKey, "GET", "/v1/profile", nil).json(t)
	if got["alert_email"] != "ops@example.com" || got["auto_pause"] != true {
		t.Errorf("profile %v; want the alert settings", got)
	}
	// Changing the URL alone leaves the alert settings as they are.
	h.as(c.APIKey, "PATCH", "/v1/profile", map[string]any{"default_callback_url": "https://example.com/x"})
	if got := h.as(c.APIKey, "GET", "/v1/profile", nil).json(t); got["alert_email"] != "ops@example.com" {
		t.Errorf("profile %v after a URL change; want the alert email kept", got)
	}
	// The test environment has its own.
	if got := h.as(c.TestAPIKey, "GET", "/v1/profile", nil).json(t); got["alert_email"] != "" || got["auto_pause"] != false {
		t.Errorf("test profile %v; want no alert settings", got)
	}
	for _, body := range []any{
		map[string]any{"alert_email": "not an address"},
		map[string]any{"alert_email": "Bob <a@b.example>"},
		map[string]any{"alert_email": "a@b.example, c@d.example"},
		map[string]any{"alert_email": "mailto:a@b.example"},
		map[string]any{"auto_pause": "yes"},
		map[string]any{},
	} {
		wantError(t, h.as(c.APIKey, "PATCH", "/v1/profile", body), http.StatusBadRequest)
	}
	if got := h.as(c.APIKey, "GET", "/v1/profile", nil).json(t); got["alert_email"] != "ops@example.com" {
		t.Errorf("a refused PATCH changed the profile: %v", got)
	}
	res = h.as(c.APIKey, "PATCH", "/v1/profile", map[string]any{"alert_email": ""})
	if got := res.json(t); res.Code != http.StatusOK || got["alert_email"] != "" {
		t.Errorf("clearing: %d %v", res.Code, got)
	}
}

func TestEndpoints_pause_and_resume_through_the_API(t *testing.T) {
	h := newHarness(t, map[string]string{"CALLBACK_ALLOW_PRIVATE": "true"})
	h.startWorker()
	rc := testenv.NewReceiver(t, alwaysFailing)
	c := h.createCustomer("c1", rc.URL+"/hook")
	h.publish(c.CustomerID, task("t1", ""))
	h.waitCallback(c.APIKey, "t1", 30*time.Second, "failed", final)
	ep := rc.URL // http://127.0.0.1:<port>: the form an endpoint has
	list := h.endpoints(c.APIKey)
	if len(list) != 1 || list[0].Endpoint != ep || list[0].State != "failing" || list[0].ConsecutiveFailures != 21 ||
		list[0].FailingSince == nil || list[0].LastError == "" {
		t.Fatalf("endpoints %+v; want %s failing after 21 failures", list, ep)
	}
	if other := h.endpoints(c.TestAPIKey); len(other) != 0 {
		t.Errorf("the test environment lists %+v; want nothing", other)
	}

	// Any URL of the endpoint names it.
	res := h.as(c.APIKey, "POST", "/v1/endpoints/pause", map[string]any{"endpoint": rc.URL + "/other/path?x=1"})
	if res.Code != http.StatusOK {
		t.Fatalf("pause: %d %s", res.Code, res.Body)
	}
	h.checkSchema("EndpointHealth", res.Body)
	var v endpointView
	unmarshal(t, res.Body, &v)
	if v.Endpoint != ep || v.State != "paused" || v.PausedBy != "customer" || v.PausedAt == nil || v.ConsecutiveFailures != 21 {
		t.Errorf("pause answered %+v; want %s paused by the customer, its failures kept", v, ep)
	}
	if list := h.endpoints(c.APIKey); len(list) != 1 || list[0].State != "paused" {
		t.Errorf("endpoints %+v; want it paused", list)
	}
	if m := string(h.as("", "GET", "/metrics", nil).Body); !strings.Contains(m, `refonte_endpoints{state="paused"} 1`) ||
		!strings.Contains(m, `refonte_endpoints{state="failing"} 1`) {
		t.Errorf("metrics lack one paused and one failing endpoint:\n%s", grepLines(m, "refonte_endpoints"))
	}
	res = h.as(c.APIKey, "POST", "/v1/endpoints/resume", map[string]any{"endpoint": ep})
	unmarshal(t, res.Body, &v)
	if res.Code != http.StatusOK || v.State != "failing" || v.PausedAt != nil {
		t.Errorf("resume: %d %+v; want it failing again, not paused", res.Code, v)
	}
	// A paused endpoint that never had a callback is listed too.
	res = h.as(c.APIKey, "POST", "/v1/endpoints/pause", map[string]any{"endpoint": "https://Example.com"})
	unmarshal(t, res.Body, &v)
	if res.Code != http.StatusOK || v.Endpoint != "https://example.com:443" || v.State != "paused" {
		t.Errorf("pausing a new endpoint: %d %+v", res.Code, v)
	}
	if list := h.endpoints(c.APIKey); len(list) != 2 {
		t.Errorf("endpoints %+v; want both", list)
	}
}

func TestEndpoints_bad_pause_bodies_are_refused(t *testing.T) {
	h := newHarness(t, nil)
	c := h.createCustomer("c1", "")
	for _, body := range []string{
		`{}`, `{"endpoint": ""}`, `{"endpoint": "ftp://example.com"}`, `{"endpoint": "not an endpoint"}`,
		`{"endpoint": 3}`, `{"endpoint": "https://example.com", "extra": 1}`, `{"endpoint": "https://a.example"} {}`,
		`{"Endpoint": "https://example.com"}`, `[]`, `not json`,
	} {
		for _, path := range []string{"/v1/endpoints/pause", "/v1/endpoints/resume"} {
			req, err := http.NewRequest("POST", h.srv.URL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.SetBasicAuth(c.APIKey, "")
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e map[string]any
			if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(b, &e) != nil || e["status_code"] != float64(400) {
				t.Errorf("%s %s: %d %s; want a 400 error", path, body, resp.StatusCode, b)
			}
		}
	}
	if list := h.endpoints(c.APIKey); len(list) != 0 {
		t.Errorf("endpoints %+v after refused requests", list)
	}
	wantError(t, h.as("", "GET", "/v1/endpoints", nil), http.StatusUnauthorized)
	wantError(t, h.as(c.APIKey+"x", "POST", "/v1/endpoints/pause", map[string]any{"endpoint": "https://a.example"}), http.StatusUnauthorized)
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
