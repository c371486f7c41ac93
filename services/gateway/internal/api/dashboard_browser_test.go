package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"refonte.ai/callbacks/internal/testenv"
)

// The dashboard in a real browser: headless Chromium (Debian's chromium package) driven with
// chromedp, against the gateway in-process and the real worker binary.
//
// Without Chromium these tests fail, with what to run: `go tool task test` finds or installs it
// first (scripts/ensure-chromium.sh), and a test that skips unseen would let the dashboard
// break unseen.

// chromiumPath finds the browser, or fails the test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("CHROMIUM_PATH"), "/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	t.Fatal("Chromium is not installed, and the dashboard's browser tests need it: run " +
		"`bash scripts/ensure-chromium.sh` (what `go tool task test` does first; it installs Debian's chromium), " +
		"or `apt-get install -y chromium`, or set CHROMIUM_PATH to a Chromium or Chrome binary")
	return ""
}

// tab is one browser tab, with the errors the page reported.
type tab struct {
	t   *testing.T
	ctx context.Context

	mu     sync.Mutex
	errors []string
}

// newTab starts headless Chromium with a fresh profile and opens a tab; both end with the test.
func newTab(t *testing.T) *tab {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	start := time.Now()
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout of its own
		t.Fatalf("starting Chromium: %v", err)
	}
	t.Logf("Chromium started in %s", time.Since(start).Round(time.Millisecond))
	b := &tab{t: t, ctx: ctx}
	// Anything the page reports at error level fails the test: an uncaught exception, a
	// console.error, a CSP violation. HTTP errors the page handles itself (a 401 for a wrong
	// key) are network entries and not counted.
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	entries := chromedp.Events(ctx, log.EntryAdded)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			b.report("exception: " + ev.ExceptionDetails.Text + " " + describe(ev.ExceptionDetails.Exception))
		}
	}()
	go func() {
		for ev, err := range entries {
			if err != nil {
				return
			}
			if e := ev.Entry; e.Level == log.EntryLevelError && e.Source != log.EntrySourceNetwork {
				b.report(fmt.Sprintf("%s: %s (%s)", e.Source, e.Text, e.URL))
			}
		}
	}()
	return b
}

func describe(o *runtime.RemoteObject) string {
	if o == nil {
		return ""
	}
	return o.Description
}

func (b *tab) report(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors = append(b.errors, msg)
}

// checkNoPageErrors fails the test for every error the page reported so far.
func (b *tab) checkNoPageErrors() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errors {
		b.t.Errorf("the page reported an error: %s", e)
	}
	b.errors = nil
}

const step = 15 * time.Second

// do runs actions, each step bounded.
func (b *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func evalJS[T any](b *tab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, step)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluating %.80s: %v", expr, err)
	}
	return v
}

// waitFor waits until the expression is true in the page.
func (b *tab) waitFor(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(step)
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string]("document.querySelector('main').innerText"))
			b.t.Fatalf("waiting for %s (%s): timed out (last error %v); the page shows:\n%.2000s", what, expr, err, body)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	return evalJS[string](b, fmt.Sprintf("(document.querySelector(%q)?.textContent ?? '').trim()", sel))
}

// fill replaces an input's value as a user would: select all, type.
func (b *tab) fill(id, value string) {
	b.t.Helper()
	evalJS[chromedp.Void](b, fmt.Sprintf(`document.getElementById(%q).value = ''`, id))
	b.do("fill #"+id, chromedp.SendKeys(chromedp.ID(id), value))
}

func (b *tab) click(sel string) {
	b.t.Helper()
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// shot saves a full-page screenshot under the test's artifact folder ($TEST_ARTIFACTS, else a
// temporary folder) and a copy under $TMPDIR/refonte-dashboard/, and logs both paths.
func (b *tab) shot(name string) {
	b.t.Helper()
	// The viewport is stretched to the page's height, so the picture shows all of it.
	height := evalJS[float64](b, "document.documentElement.scrollHeight")
	b.do("fit the viewport to the page", chromedp.EmulateViewport(1280, int64(height)))
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	b.do("reset the viewport", chromedp.ResetViewport())
	dir := os.Getenv("TEST_ARTIFACTS")
	if dir == "" {
		dir = b.t.TempDir()
	}
	dir = filepath.Join(dir, "dashboard")
	copyDir := filepath.Join(os.TempDir(), "refonte-dashboard")
	for _, d := range []string{dir, copyDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.t.Fatal(err)
		}
		p := filepath.Join(d, name+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			b.t.Fatal(err)
		}
		b.t.Logf("screenshot %s: %s", name, p)
	}
}

// loadTiming is the Navigation Timing of the page's last load, and when a mark of the dashboard
// (set once its data is on screen) came, in ms since the navigation started.
type loadTiming struct {
	TTFB     float64 `json:"ttfb"`
	DOMReady float64 `json:"dom_ready"`
	Load     float64 `json:"load"`
	Rendered float64 `json:"rendered"`
}

// load navigates to url as a fresh page load and waits for the mark.
func (b *tab) load(url, mark string) loadTiming {
	b.t.Helper()
	b.do("navigate away", chromedp.Navigate("about:blank"))
	b.do("navigate to "+url, chromedp.Navigate(url))
	b.waitFor("the load event and "+mark, fmt.Sprintf(
		`performance.getEntriesByType('navigation')[0]?.loadEventEnd > 0 && performance.getEntriesByName(%q).length > 0`, mark))
	raw := evalJS[string](b, fmt.Sprintf(`(() => {
		const n = performance.getEntriesByType('navigation')[0];
		const m = performance.getEntriesByName(%q)[0];
		return JSON.stringify({ttfb: n.responseStart - n.startTime, dom_ready: n.domContentLoadedEventEnd - n.startTime,
			load: n.loadEventEnd - n.startTime, rendered: m.startTime - n.startTime});
	})()`, mark))
	var lt loadTiming
	if err := json.Unmarshal([]byte(raw), &lt); err != nil {
		b.t.Fatal(err)
	}
	return lt
}

func TestDashboard_end_to_end_in_Chromium(t *testing.T) {
	t.Parallel()
	chromiumPath(t)
	began := time.Now()
	h := newHarness(t, map[string]string{"CALLBACK_ALLOW_PRIVATE": "true"})
	// A mail relay for the email task, so its attempt has an SMTP reply to show.
	relay := testenv.NewSMTPSink(t, testenv.SMTPOptions{})
	h.startWorker(map[string]string{"SMTP_ADDR": relay.Addr})
	// Receivers that take a little time, so the latency chart has something to draw.
	down := testenv.NewReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Duration(2+n%5) * time.Millisecond)
		alwaysFailing(n, w, r)
	})
	up := testenv.NewReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		time.Sleep(time.Duration(15+n%3*10) * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"received":true}`))
	})
	c := h.createCustomer("cust_dash", down.URL+"/hook")
	// Some history: two delivered tasks around one whose every attempt fails (the profile's
	// default URL is down).
	for _, tc := range []struct{ id, url string }{
		{"order_ok_1", up.URL + "/own"}, {"order_failed_7", ""}, {"order_ok_2", up.URL + "/own"}, {"order_none_3", "mailto:ops@example.com"},
	} {
		h.publish(c.CustomerID, task(tc.id, tc.url))
		h.waitCallback(c.APIKey, tc.id, 15*time.Second, "final", final)
	}
	// Another customer's task, which must never show.
	other := h.createCustomer("cust_other", up.URL)
	h.publish(other.CustomerID, task("other_customer_task", ""))
	h.waitCallback(other.APIKey, "other_customer_task", 10*time.Second, "final", final)
	t.Logf("stack and history ready in %s", time.Since(began).Round(time.Millisecond))

	b := newTab(t)
	base := h.srv.URL + "/dashboard"

	// Sign in: a wrong key is refused in the page, the right one opens the deliveries.
	// The browser's very first page pays for its own start-up (a renderer process, the first
	// connection): logged, not asserted. The page loads that count come after.
	first := b.load(base, "refonte:sign-in-ready")
	cold := b.load(base, "refonte:sign-in-ready")
	b.waitFor("the sign-in form", `!document.getElementById('view-signin').hidden`)
	h.remember("rk_live_not-a-key-of-anyone")
	b.fill("signin-key", "rk_live_not-a-key-of-anyone")
	b.click("#signin-form button[type=submit]")
	b.waitFor("the refusal", `document.getElementById('signin-error').textContent.includes('not accepted')`)
	b.fill("signin-key", c.APIKey)
	b.click("#signin-form button[type=submit]")
	b.waitFor("the deliveries", `!document.getElementById('view-callbacks').hidden && document.querySelectorAll('#callbacks-body tr').length === 4`)
	if href := evalJS[string](b, "location.href"); strings.Contains(href, c.APIKey) || strings.Contains(href, "rk_live") {
		t.Errorf("the API key is in the URL: %s", href)
	}
	if got := evalJS[string](b, "sessionStorage.getItem('refonte.apiKey.live')"); got != c.APIKey {
		t.Errorf("sessionStorage holds %q", got)
	}
	if got := evalJS[string](b, "document.cookie + localStorage.length"); got != "0" {
		t.Errorf("cookies or localStorage in use: %q", got)
	}

	// The signed-in page, loaded afresh: the load and the time until the list is on screen.
	warm := b.load(base+"#/callbacks", "refonte:callbacks-rendered")
	t.Logf("page load (Navigation Timing), browser's first page: TTFB %.1f ms, load %.1f ms", first.TTFB, first.Load)
	t.Logf("page load (Navigation Timing), sign-in page: TTFB %.1f ms, DOMContentLoaded %.1f ms, load %.1f ms",
		cold.TTFB, cold.DOMReady, cold.Load)
	t.Logf("page load (Navigation Timing), deliveries: TTFB %.1f ms, DOMContentLoaded %.1f ms, load %.1f ms, list rendered %.1f ms",
		warm.TTFB, warm.DOMReady, warm.Load, warm.Rendered)
	// Only that each moment was reached is checked: how long it took is logged above, not
	// asserted, because a loaded machine makes any bound either flaky or meaningless.
	for what, ms := range map[string]float64{"sign-in load": cold.Load, "deliveries load": warm.Load, "deliveries rendered": warm.Rendered} {
		if ms <= 0 {
			t.Errorf("%s was never reached (Navigation Timing %.1f ms)", what, ms)
		}
	}
	b.waitFor("the chart", `document.querySelectorAll('#chart-count rect').length > 0 && document.getElementById('chart-summary').textContent.includes('attempts')`)
	if body := b.text("main"); strings.Contains(body, "other_customer_task") || strings.Contains(body, "cust_other") {
		t.Error("the deliveries page shows another customer's task")
	}
	b.shot("deliveries")

	// Profile: change the default callback URL, reveal the keys, send a test callback.
	b.click(`#nav a[data-view="profile"]`)
	b.waitFor("the profile", fmt.Sprintf(`document.getElementById('url-input').value === %q`, down.URL+"/hook"))
	b.fill("url-input", "not a url")
	b.click("#url-save")
	b.waitFor("the URL refused", `document.getElementById('url-error').textContent.includes('URL')`)
	b.fill("url-input", up.URL+"/default")
	b.click("#url-save")
	b.waitFor("the URL saved", `document.getElementById('flash').textContent.includes('saved')`)
	var p struct {
		DefaultCallbackURL string `json:"default_callback_url"`
	}
	unmarshal(t, h.as(c.APIKey, "GET", "/v1/profile", nil).Body, &p)
	if p.DefaultCallbackURL != up.URL+"/default" {
		t.Fatalf("default_callback_url = %q after saving in the page", p.DefaultCallbackURL)
	}
	if got := b.text("#auth-value"); strings.Contains(got, c.CallbackAuthKey) || !strings.HasPrefix(got, "cbk_") {
		t.Errorf("the callback auth key is not masked: %q", got)
	}
	b.click("#auth-reveal")
	b.waitFor("the revealed auth key", fmt.Sprintf(`document.getElementById('auth-value').textContent === %q`, c.CallbackAuthKey))
	b.click("#secret-reveal")
	b.waitFor("the revealed signing secret", fmt.Sprintf(`document.getElementById('secret-value').textContent === %q`, c.SigningSecret))
	b.click("#secret-reveal")
	b.waitFor("the signing secret masked again", `document.getElementById('secret-value').textContent.includes('•')`)
	b.fill("test-url", up.URL+"/test")
	b.click("#test-send")
	b.waitFor("the test callback's answer", `document.getElementById('test-outcome').textContent === 'Delivered'`)
	if n := up.Count(); n == 0 || !strings.Contains(b.text("#test-excerpt"), "received") {
		t.Errorf("test callback: receiver count %d, excerpt %q", n, b.text("#test-excerpt"))
	}
	b.click("#secret-rotate")
	b.waitFor("the rotation's explanation", `!document.getElementById('secret-confirm').hidden`)
	b.shot("profile")
	b.click("#secret-rotate-no")

	// Deliveries: find the failed task by id, open it, resend, see the new attempt.
	b.click(`#nav a[data-view="callbacks"]`)
	b.waitFor("the deliveries", `!document.getElementById('view-callbacks').hidden`)
	b.fill("filter-task", "order_failed_7")
	b.click("#filter-apply")
	b.waitFor("the search result", `document.querySelectorAll('#callbacks-body tr').length === 1 && document.querySelector('#callbacks-body tr').textContent.includes('order_failed_7')`)
	if row := b.text("#callbacks-body tr"); !strings.Contains(row, "Failed") || !strings.Contains(row, "HTTP 503") {
		t.Errorf("the failed task's row reads %q", row)
	}
	// A reply code is one unit: "HTTP 503" never breaks over two lines of a narrow cell.
	if ws := evalJS[string](b, `getComputedStyle(document.querySelector('#callbacks-body .reply-code')).whiteSpace`); ws != "nowrap" {
		t.Errorf("the reply code's white-space is %q; want nowrap", ws)
	}
	b.click("#callbacks-body a")
	b.waitFor("the callback", `!document.getElementById('view-callback').hidden && document.querySelectorAll('#attempts-body tr').length === 21`)
	if body := b.text("#cb-body"); !strings.Contains(body, `"task_id": "order_failed_7"`) {
		t.Errorf("the body shown is %.200q", body)
	}
	if raw := b.text("#cb-body-raw"); raw != string(down.Requests()[0].Body) {
		t.Errorf("the exact body shown differs from the body sent:\n%s\n%s", raw, down.Requests()[0].Body)
	}
	if state := b.text("#cb-state"); !strings.Contains(state, "Failed") {
		t.Errorf("state shows %q", state)
	}
	b.click("#cb-resend")
	b.waitFor("the resend's attempt", `document.querySelector('#attempts-body tr[data-delivery="2"]')?.textContent.includes('HTTP 200')`)
	b.waitFor("the resend's outcome", `document.getElementById('cb-resend-status').textContent.includes('succeeded')`)
	b.waitFor("the new state", `document.getElementById('cb-state').textContent.includes('Succeeded')`)
	if n := len(up.Requests()); !strings.HasSuffix(up.Requests()[n-1].Header.Get("webhook-id"), "order_failed_7") {
		t.Errorf("the receiver's last callback is not the resend: %v", up.Requests()[n-1].Header)
	}
	b.shot("delivery")

	// The email task's attempt was answered by the mail relay: an SMTP reply, not an HTTP one.
	b.do("navigate to the email task", chromedp.Navigate(base+"#/callbacks/order_none_3"))
	b.waitFor("the email task's attempt", `document.querySelectorAll('#attempts-body tr').length === 1`)
	if got := b.text("#attempts-body tr"); !strings.Contains(got, "SMTP 250") || strings.Contains(got, "HTTP") {
		t.Errorf("the email attempt's row reads %q; want SMTP 250", got)
	}

	// Whatever the URL says, another customer's callback is not shown.
	b.do("navigate to another customer's task", chromedp.Navigate(base+"#/callbacks/other_customer_task"))
	b.waitFor("the refusal", `document.getElementById('cb-resend-status').textContent.includes('No callback found')`)
	if n := evalJS[int](b, `document.querySelectorAll('#attempts-body tr').length`); n != 0 {
		t.Errorf("another customer's task shows %d attempts", n)
	}

	// Signing out forgets the key.
	b.click("#signout")
	b.waitFor("the sign-in form", `!document.getElementById('view-signin').hidden`)
	if got := evalJS[int](b, "sessionStorage.length"); got != 0 {
		t.Errorf("sessionStorage keeps %d items after signing out", got)
	}
	b.checkNoPageErrors()
	t.Logf("end-to-end test ran in %s", time.Since(began).Round(time.Millisecond))
}

// a11yCheck returns what fails a small accessibility check of the page as it is: every control
// has an accessible name, every image a text alternative, and every visible text (placeholders
// included) a contrast of at least 4.5:1 with the colour behind it.
const a11yCheck = `(() => {
  const problems = [];
  const who = (e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : '');
  const shown = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
  const byIds = (ids) => ids.split(/\s+/).map((id) => document.getElementById(id)?.textContent || '').join(' ').trim();
  const name = (e) => {
    const label = (e.getAttribute('aria-label') || '').trim();
    if (label) return label;
    if (e.getAttribute('aria-labelledby')) { const t = byIds(e.getAttribute('aria-labelledby')); if (t) return t; }
    if (e.labels && e.labels.length) { const t = [...e.labels].map((l) => l.textContent).join(' ').trim(); if (t) return t; }
    if (['button', 'a', 'summary'].includes(e.tagName.toLowerCase())) { const t = e.textContent.trim(); if (t) return t; }
    if (e.tagName === 'svg') { const t = e.querySelector(':scope > title'); if (t && t.textContent.trim()) return t.textContent.trim(); }
    return (e.getAttribute('title') || '').trim();
  };
  let controls = 0;
  for (const e of document.querySelectorAll('input:not([type=hidden]), select, textarea, button, a[href], summary, [role=button], [tabindex]:not([tabindex="-1"])')) {
    controls++;
    if (!name(e)) problems.push('no accessible name: ' + who(e));
  }
  for (const e of document.querySelectorAll('img')) if (!e.hasAttribute('alt')) problems.push('image without alt: ' + who(e));
  for (const e of document.querySelectorAll('svg')) {
    if (e.getAttribute('role') === 'img') { if (!name(e)) problems.push('svg image without a name: ' + who(e)); }
    else if (e.getAttribute('aria-hidden') !== 'true' && !e.closest('svg[role=img]')) problems.push('svg neither an image nor hidden: ' + who(e));
  }
  if (!document.documentElement.lang) problems.push('html without lang');
  if (!document.title.trim()) problems.push('no title');
  const h1s = [...document.querySelectorAll('h1')].filter(shown);
  if (h1s.length !== 1) problems.push(h1s.length + ' visible h1');

  const rgba = (c) => {
    const m = /rgba?\(([^)]+)\)/.exec(c || '');
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(parseFloat);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, under) => ({ r: top.r * top.a + under.r * (1 - top.a), g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a), a: 1 });
  const background = (e) => {
    const layers = [];
    for (let n = e; n; n = n.parentElement) {
      const c = rgba(getComputedStyle(n).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let bg = { r: 255, g: 255, b: 255, a: 1 };
    for (const l of layers.reverse()) bg = over(l, bg);
    return bg;
  };
  const lum = (c) => {
    const ch = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * ch(c.r) + 0.7152 * ch(c.g) + 0.0722 * ch(c.b);
  };
  const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const hex = (c) => '#' + [c.r, c.g, c.b].map((v) => Math.round(v).toString(16).padStart(2, '0')).join('');
  let texts = 0, lowest = 21;
  const check = (e, fg, what) => {
    const bg = background(e);
    const r = ratio(over(fg, bg), bg);
    texts++;
    lowest = Math.min(lowest, r);
    if (r < 4.5) problems.push('contrast ' + r.toFixed(2) + ':1 (' + hex(fg) + ' on ' + hex(bg) + ') of ' + what + ' in ' + who(e));
  };
  const seen = new Set();
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const node = walk.currentNode;
    if (!node.textContent.trim()) continue;
    let e = node.parentElement;
    const tag = e.tagName.toLowerCase();
    if (['title', 'script', 'style', 'noscript'].includes(tag)) continue;
    if (tag === 'option') e = e.closest('select');
    if (!e || seen.has(e) || !shown(e)) continue;
    seen.add(e);
    const s = getComputedStyle(e);
    const fg = rgba(e instanceof SVGElement ? s.fill : s.color);
    if (fg) check(e, fg, JSON.stringify(node.textContent.trim().slice(0, 40)));
  }
  for (const e of document.querySelectorAll('input[placeholder]')) {
    if (shown(e)) check(e, rgba(getComputedStyle(e, '::placeholder').color), 'its placeholder');
  }
  return JSON.stringify({ problems, controls, texts, lowest, heading: h1s.map((h) => h.textContent.trim()).join(' | ') });
})()`

func TestDashboard_pages_pass_an_accessibility_check(t *testing.T) {
	t.Parallel()
	chromiumPath(t)
	h := newHarness(t, map[string]string{"CALLBACK_ALLOW_PRIVATE": "true"})
	h.startWorker()
	down := testenv.NewReceiver(t, alwaysFailing)
	up := testenv.NewReceiver(t, nil)
	c := h.createCustomer("cust_a11y", down.URL)
	for _, tc := range []struct{ id, url string }{{"a11y_failed", ""}, {"a11y_ok", up.URL}, {"a11y_none", "mailto:x@example.com"}} {
		h.publish(c.CustomerID, task(tc.id, tc.url))
		h.waitCallback(c.APIKey, tc.id, 15*time.Second, "final", final)
	}
	b := newTab(t)
	base := h.srv.URL + "/dashboard"

	type a11yResult struct {
		Problems []string `json:"problems"`
		Controls int      `json:"controls"`
		Texts    int      `json:"texts"`
		Lowest   float64  `json:"lowest"`
		Heading  string   `json:"heading"`
	}
	check := func(page string) {
		t.Helper()
		var r a11yResult
		unmarshal(t, []byte(evalJS[string](b, a11yCheck)), &r)
		t.Logf("%s (h1 %q): %d controls named, %d texts, lowest contrast %.2f:1", page, r.Heading, r.Controls, r.Texts, r.Lowest)
		if r.Texts < 5 || r.Controls < 3 {
			t.Errorf("%s: the check saw %d texts and %d controls; is the page there?", page, r.Texts, r.Controls)
		}
		for _, p := range r.Problems {
			t.Errorf("%s: %s", page, p)
		}
	}

	b.load(base, "refonte:sign-in-ready")
	b.waitFor("the sign-in form", `!document.getElementById('view-signin').hidden`)
	b.fill("signin-key", "wrong")
	b.click("#signin-form button[type=submit]")
	b.waitFor("the refusal", `document.getElementById('signin-error').textContent !== ''`)
	check("sign-in (with an error)")

	b.fill("signin-key", c.APIKey)
	b.click("#signin-form button[type=submit]")
	b.waitFor("the deliveries", `document.querySelectorAll('#callbacks-body tr').length === 3 && document.querySelectorAll('#chart-count rect').length > 0`)
	check("deliveries")

	b.do("open the failed task", chromedp.Navigate(base+"#/callbacks/a11y_failed"))
	b.waitFor("the callback", `document.querySelectorAll('#attempts-body tr').length === 21`)
	check("one callback")

	b.do("open the profile", chromedp.Navigate(base+"#/profile"))
	b.waitFor("the profile", `document.getElementById('url-input').value !== ''`)
	b.fill("test-url", up.URL)
	b.click("#test-send")
	b.waitFor("the test result", `!document.getElementById('test-result').hidden`)
	b.click("#auth-rotate")
	b.click("#secret-rotate")
	b.do("open the request", chromedp.Click(chromedp.CSS("#test-result summary")))
	b.fill("url-input", "nope")
	b.click("#url-save")
	b.waitFor("the URL error", `document.getElementById('url-error').textContent !== ''`)
	check("profile (confirmations, test result and an error open)")

	// The check itself catches what it looks for: grey on white, a button without a name.
	evalJS[chromedp.Void](b, `(() => {
		const p = document.createElement('p'); p.id = 'bad-text'; p.textContent = 'faint text';
		p.style.color = '#aaaaaa'; p.style.background = '#ffffff';
		const btn = document.createElement('button'); btn.id = 'bad-button';
		document.querySelector('main').append(p, btn);
	})()`)
	var bad a11yResult
	unmarshal(t, []byte(evalJS[string](b, a11yCheck)), &bad)
	if len(bad.Problems) != 2 || !strings.Contains(strings.Join(bad.Problems, "\n"), "contrast 2.32:1") ||
		!strings.Contains(strings.Join(bad.Problems, "\n"), "no accessible name: button#bad-button") {
		t.Errorf("the check missed planted problems: %q", bad.Problems)
	}
	b.checkNoPageErrors()
}
