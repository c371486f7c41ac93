package api_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
)

// The dashboard's live/test switch: each environment shows its own tasks and its own Callback
// Auth Key, the test one is marked as test all over the page, and a task of the other
// environment is not found whatever the URL says.
func TestDashboard_switches_between_live_and_test_in_Chromium(t *testing.T) {
	// Not parallel: a third browser beside the other dashboard tests would only slow the page
	// loads they time.
	chromiumPath(t)
	h := newHarness(t, map[string]string{"CALLBACK_ALLOW_PRIVATE": "true"})
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	c := h.createCustomer("cust_switch", rc.URL)
	for _, tc := range []struct {
		env environment.Env
		id  string
	}{{environment.Live, "live_only"}, {environment.Live, "shared_id"}, {environment.Test, "test_only"}, {environment.Test, "shared_id"}} {
		testenv.PublishIn(t, h.pub, c.CustomerID, tc.env, task(tc.id, ""))
		key := c.APIKey
		if tc.env == environment.Test {
			key = c.TestAPIKey
		}
		h.waitCallback(key, tc.id, 15*time.Second, "final", final)
	}

	b := newTab(t)
	base := h.srv.URL + "/dashboard"
	const rowsJS = `[...document.querySelectorAll('#callbacks-body tr td:first-child')].map((td) => td.textContent.trim()).sort().join(',')`
	waitRows := func(what, want string) {
		t.Helper()
		b.waitFor(what, fmt.Sprintf(`!document.getElementById('view-callbacks').hidden && %s === %q`, rowsJS, want))
	}
	testMarked := `document.body.classList.contains('env-test') && !document.getElementById('env-banner').hidden &&
		document.getElementById('env-test').getAttribute('aria-pressed') === 'true'`

	b.load(base, "refonte:sign-in-ready")
	b.fill("signin-key", c.APIKey)
	b.click("#signin-form button[type=submit]")
	waitRows("the live deliveries", "live_only,shared_id")
	if evalJS[bool](b, "!!("+testMarked+")") || !evalJS[bool](b, `document.getElementById('env-banner').hidden`) {
		t.Error("the live environment is marked as test")
	}

	// The first switch to test asks for the test key.
	b.click("#env-test")
	b.waitFor("the test sign-in", `!document.getElementById('view-signin').hidden && document.getElementById('signin-env').textContent.includes('test environment')`)
	b.fill("signin-key", c.TestAPIKey)
	b.click("#signin-form button[type=submit]")
	waitRows("the test deliveries", "shared_id,test_only")
	b.waitFor("the test marking", testMarked)
	b.shot("deliveries-test")

	b.click(`#nav a[data-view="profile"]`)
	b.waitFor("the test profile", `document.getElementById('auth-title').textContent === 'Test Callback Auth Key'`)
	b.click("#auth-reveal")
	b.waitFor("the Test Callback Auth Key", fmt.Sprintf(`document.getElementById('auth-value').textContent === %q`, c.TestCallbackAuthKey))
	b.click("#secret-reveal")
	b.waitFor("the test signing secret", fmt.Sprintf(`document.getElementById('secret-value').textContent === %q`, c.TestSigningSecret))
	var r struct {
		Problems []string `json:"problems"`
	}
	unmarshal(t, []byte(evalJS[string](b, a11yCheck)), &r)
	for _, p := range r.Problems {
		t.Errorf("test profile: %s", p)
	}
	b.shot("profile-test")

	// Back to live: no new sign-in, the live key and profile.
	b.click("#env-live")
	b.waitFor("the live profile", `document.getElementById('auth-title').textContent === 'Live Callback Auth Key' && !document.body.classList.contains('env-test')`)
	b.click("#auth-reveal")
	b.waitFor("the Live Callback Auth Key", fmt.Sprintf(`document.getElementById('auth-value').textContent === %q`, c.CallbackAuthKey))
	if body := b.text("main"); strings.Contains(body, c.TestCallbackAuthKey) || strings.Contains(body, c.TestSigningSecret) {
		t.Error("the live profile shows a test secret")
	}
	b.click(`#nav a[data-view="callbacks"]`)
	waitRows("the live deliveries again", "live_only,shared_id")

	// A test task is not found in live, whatever the URL says.
	b.do("open a test task in live", chromedp.Navigate(base+"#/callbacks/test_only"))
	b.waitFor("the refusal", `document.getElementById('cb-resend-status').textContent.includes('No callback found')`)

	// Signing out forgets both keys.
	b.click("#signout")
	b.waitFor("the sign-in form", `!document.getElementById('view-signin').hidden && document.getElementById('env-switch').hidden`)
	if n := evalJS[int](b, "sessionStorage.length"); n != 0 {
		t.Errorf("sessionStorage keeps %d items after signing out", n)
	}
	b.checkNoPageErrors()
}
