package api_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
)

// The dashboard's alert settings and Endpoints panel: an alert address saved in the profile
// gets the failing endpoint's alert, the panel shows the endpoint failing, and its Pause and
// Resume buttons hold and release its callbacks in the real worker.
func TestDashboard_endpoints_panel_pauses_and_resumes_in_Chromium(t *testing.T) {
	chromiumPath(t)
	h := newHarness(t, map[string]string{"CALLBACK_ALLOW_PRIVATE": "true"})
	relay := testenv.NewSMTPSink(t, testenv.SMTPOptions{})
	metrics := testenv.FreeAddr(t)
	h.startWorker(map[string]string{"SMTP_ADDR": relay.Addr, "ALERT_AFTER_FAILURES": "5", "METRICS_ADDR": metrics})
	rc := testenv.NewReceiver(t, alwaysFailing)
	c := h.createCustomer("cust_ep", rc.URL+"/hook")
	ep := rc.URL

	b := newTab(t)
	base := h.srv.URL + "/dashboard"
	b.load(base, "refonte:sign-in-ready")
	b.fill("signin-key", c.APIKey)
	b.click("#signin-form button[type=submit]")
	b.waitFor("the deliveries", `!document.getElementById('view-callbacks').hidden`)

	// The alert address, set in the profile.
	b.click(`#nav a[data-view="profile"]`)
	b.waitFor("the profile", `!document.getElementById('view-profile').hidden && document.getElementById('alerts-email').value === ''`)
	b.fill("alerts-email", "not an address")
	b.click("#alerts-save")
	b.waitFor("the refusal", `document.getElementById('alerts-error').textContent.includes('email address')`)
	b.fill("alerts-email", "ops@example.com")
	b.click("#alerts-save")
	b.waitFor("the confirmation", `document.getElementById('flash').textContent.includes('ops@example.com')`)
	if got := h.as(c.APIKey, "GET", "/v1/profile", nil).json(t); got["alert_email"] != "ops@example.com" {
		t.Fatalf("profile %v; want the alert email the dashboard saved", got)
	}

	// A task fails all its attempts: the alert goes out, the panel shows the endpoint failing.
	h.publish(c.CustomerID, task("down_1", ""))
	h.waitCallback(c.APIKey, "down_1", 30*time.Second, "failed", final)
	testenv.Eventually(t, 10*time.Second, func() bool { return relay.Count() == 1 }, "the alert is mailed (%d mails)", relay.Count())
	if m := relay.Messages()[0]; len(m.To) != 1 || m.To[0] != "ops@example.com" {
		t.Errorf("the alert went to %v", m.To)
	}
	b.click(`#nav a[data-view="endpoints"]`)
	row := fmt.Sprintf(`document.querySelector('#endpoints-body tr[data-endpoint=%q]')`, ep)
	b.waitFor("the failing endpoint", row+`?.textContent.includes('Failing') && `+row+`.querySelector('td.num').textContent === '21'`)
	if body := b.text("#endpoints-body"); !strings.Contains(body, "HTTP 503") && !strings.Contains(body, "503") {
		t.Errorf("the panel does not show the last error: %q", body)
	}
	b.shot("endpoints-failing")

	// Pause: the row says so, and a new callback is held without an attempt.
	b.click(fmt.Sprintf(`#endpoints-body button[data-endpoint=%q]`, ep))
	b.waitFor("the paused endpoint", row+`?.textContent.includes('Paused') && `+row+`.querySelector('button').textContent === 'Resume'`)
	rc.SetRespond(nil) // the endpoint is fixed; the pause alone holds the callback now
	h.publish(c.CustomerID, task("held_1", ""))
	testenv.Eventually(t, 15*time.Second, func() bool { return deferredPaused(t, metrics) >= 1 }, "the worker holds the callback")
	if _, res := h.callback(c.APIKey, "held_1"); res.Code != http.StatusNotFound {
		t.Errorf("the held task has a status (%d %s); want no attempt at all", res.Code, res.Body)
	}
	if n := rc.Count(); n != 21 {
		t.Errorf("the endpoint got %d requests; want the 21 before the pause", n)
	}
	b.shot("endpoints-paused")

	// Resume: the held callback is delivered, once.
	b.click(fmt.Sprintf(`#endpoints-body button[data-endpoint=%q]`, ep))
	b.waitFor("the resumed endpoint", row+`?.querySelector('button').textContent === 'Pause'`)
	v := h.waitCallback(c.APIKey, "held_1", 30*time.Second, "succeeded", final)
	if v.State != "succeeded" || len(v.Attempts) != 1 {
		t.Errorf("held_1: state %q after %d attempts; want succeeded at the first", v.State, len(v.Attempts))
	}
	b.load(base+"#/endpoints", "refonte:endpoints-rendered")
	b.waitFor("the healthy endpoint", row+`?.textContent.includes('Healthy')`)
	testenv.Eventually(t, 10*time.Second, func() bool { return relay.Count() == 2 }, "the recovery is mailed (%d mails)", relay.Count())
	var r struct {
		Problems []string `json:"problems"`
	}
	unmarshal(t, []byte(evalJS[string](b, a11yCheck)), &r)
	for _, p := range r.Problems {
		t.Errorf("endpoints panel: %s", p)
	}
	b.checkNoPageErrors()
}

// deferredPaused reads the worker's count of callbacks held for a paused endpoint.
func deferredPaused(t *testing.T, addr string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, `refonte_callback_deferred_total{reason="endpoint_paused"} `); ok {
			var v float64
			_, _ = fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}
