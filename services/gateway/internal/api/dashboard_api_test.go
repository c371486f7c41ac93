package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/internal/testenv"
)

// The JSON endpoints the dashboard uses (GET /v1/callbacks, /v1/callbacks/stats,
// /v1/task/{id}/callback/body, GET /v1/profile/signing-secret, POST /v1/profile/test-callback),
// tested without a browser.

type listedCallback struct {
	TaskID            string     `json:"task_id"`
	State             string     `json:"state"`
	Target            *string    `json:"target"`
	CallbackSucceeded *bool      `json:"callback_succeeded"`
	Attempts          int        `json:"attempts"`
	Delivery          int        `json:"delivery"`
	LastAttemptAt     *time.Time `json:"last_attempt_at"`
	NextAttemptAt     *time.Time `json:"next_attempt_at"`
	LastAttempt       *struct {
		StatusCode *int   `json:"status_code"`
		Error      string `json:"error"`
	} `json:"last_attempt"`
}

type callbackList struct {
	Callbacks  []listedCallback `json:"callbacks"`
	NextCursor *string          `json:"next_cursor"`
}

// list calls GET /v1/callbacks with the query, checks the answer's schema and returns it.
func (h *harness) list(apiKey, query string) callbackList {
	h.t.Helper()
	res := h.as(apiKey, "GET", "/v1/callbacks"+query, nil)
	if res.Code != http.StatusOK {
		h.t.Fatalf("GET /v1/callbacks%s: %d %s", query, res.Code, res.Body)
	}
	h.checkSchema("CallbackList", res.Body)
	var l callbackList
	unmarshal(h.t, res.Body, &l)
	return l
}

func taskIDs(l callbackList) []string {
	var out []string
	for _, c := range l.Callbacks {
		out = append(out, c.TaskID)
	}
	return out
}

// alwaysFailing answers 503 with a short body to every request.
func alwaysFailing(_ int, w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte("down for maintenance"))
}

func TestCallbacks_list_newest_first_filtered_searched_and_paged(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	ok := testenv.NewReceiver(t, nil)
	down := testenv.NewReceiver(t, alwaysFailing)
	c := h.createCustomer("cust_a", "")
	for _, tc := range []struct{ id, url string }{
		{"ok_1", ok.URL}, {"bad_1", down.URL}, {"none_1", ""}, {"ok_2", ok.URL},
	} {
		h.publish(c.CustomerID, task(tc.id, tc.url))
		h.waitCallback(c.APIKey, tc.id, 15*time.Second, "final", final)
	}

	all := h.list(c.APIKey, "")
	if got := taskIDs(all); !slices.Equal(got, []string{"ok_2", "none_1", "bad_1", "ok_1"}) || all.NextCursor != nil {
		t.Fatalf("list = %v (next %v), want newest first: ok_2 none_1 bad_1 ok_1", got, all.NextCursor)
	}
	for i := 1; i < len(all.Callbacks); i++ {
		if all.Callbacks[i].LastAttemptAt.After(*all.Callbacks[i-1].LastAttemptAt) {
			t.Errorf("not newest first at %d", i)
		}
	}

	failed := h.list(c.APIKey, "?state=failed")
	if len(failed.Callbacks) != 1 {
		t.Fatalf("state=failed: %v", taskIDs(failed))
	}
	f := failed.Callbacks[0]
	if f.TaskID != "bad_1" || f.Attempts != 21 || f.Delivery != 1 || f.CallbackSucceeded == nil || *f.CallbackSucceeded ||
		f.Target == nil || *f.Target != down.URL || f.LastAttempt == nil || f.LastAttempt.StatusCode == nil ||
		*f.LastAttempt.StatusCode != 503 || f.NextAttemptAt != nil {
		t.Errorf("failed item = %+v (last attempt %+v)", f, f.LastAttempt)
	}
	none := h.list(c.APIKey, "?state=no_callback")
	if got := taskIDs(none); !slices.Equal(got, []string{"none_1"}) || none.Callbacks[0].Target != nil ||
		none.Callbacks[0].CallbackSucceeded != nil {
		t.Errorf("state=no_callback: %+v", none.Callbacks)
	}
	if got := taskIDs(h.list(c.APIKey, "?state=succeeded")); !slices.Equal(got, []string{"ok_2", "ok_1"}) {
		t.Errorf("state=succeeded: %v", got)
	}
	if got := h.list(c.APIKey, "?state=retrying"); len(got.Callbacks) != 0 {
		t.Errorf("state=retrying: %v", taskIDs(got))
	}

	// Search by task id: exact, combined with the state filter.
	if got := taskIDs(h.list(c.APIKey, "?task_id=bad_1")); !slices.Equal(got, []string{"bad_1"}) {
		t.Errorf("task_id=bad_1: %v", got)
	}
	for _, q := range []string{"?task_id=bad_1&state=succeeded", "?task_id=bad", "?task_id=unknown", "?task_id=" + url.QueryEscape("../bad_1")} {
		if got := h.list(c.APIKey, q); len(got.Callbacks) != 0 || got.NextCursor != nil {
			t.Errorf("%s: %v", q, taskIDs(got))
		}
	}

	// Pages of one: the same four, in the same order, then no cursor.
	var paged []string
	q := "?limit=1"
	for range 10 {
		p := h.list(c.APIKey, q)
		paged = append(paged, taskIDs(p)...)
		if p.NextCursor == nil {
			break
		}
		q = "?limit=1&cursor=" + url.QueryEscape(*p.NextCursor)
	}
	if !slices.Equal(paged, taskIDs(all)) {
		t.Errorf("paged = %v, want %v", paged, taskIDs(all))
	}

	for _, q := range []string{
		"?state=bogus", "?limit=0", "?limit=101", "?limit=x", "?cursor=not-a-cursor", "?cursor=" + url.QueryEscape("Zm9v"),
		"?customer_id=cust_b", "?state=failed&state=succeeded", "?%zz",
	} {
		wantError(t, h.as(c.APIKey, "GET", "/v1/callbacks"+q, nil), http.StatusBadRequest)
	}
	wantError(t, h.do("GET", "/v1/callbacks", nil, nil), http.StatusUnauthorized)
}

func TestCallbacks_another_customers_deliveries_never_appear(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	a := h.createCustomer("cust_a", rc.URL)
	b := h.createCustomer("cust_b", rc.URL)
	for _, id := range []string{"a_1", "a_2", "shared_id"} {
		h.publish(a.CustomerID, task(id, ""))
		h.waitCallback(a.APIKey, id, 10*time.Second, "final", final)
	}
	h.publish(b.CustomerID, task("shared_id", ""))
	h.waitCallback(b.APIKey, "shared_id", 10*time.Second, "final", final)

	// Cursors that a's listing hands out position nothing in b's index but b's own entries.
	var aCursors []string
	q := "?limit=1"
	for {
		p := h.list(a.APIKey, q)
		if p.NextCursor == nil {
			break
		}
		aCursors = append(aCursors, *p.NextCursor)
		q = "?limit=1&cursor=" + url.QueryEscape(*p.NextCursor)
	}
	if len(aCursors) != 2 {
		t.Fatalf("a's listing gave %d cursors, want 2", len(aCursors))
	}
	queries := []string{"", "?state=succeeded", "?limit=100", "?task_id=a_1", "?task_id=a_2", "?task_id=shared_id"}
	for _, c := range aCursors {
		queries = append(queries, "?cursor="+url.QueryEscape(c), "?state=succeeded&cursor="+url.QueryEscape(c))
	}
	for _, q := range queries {
		for _, item := range h.list(b.APIKey, q).Callbacks {
			if item.TaskID != "shared_id" || item.Attempts != 1 {
				t.Errorf("b's GET /v1/callbacks%s shows %+v", q, item)
			}
		}
	}
	// b's own shared_id is b's: one attempt; a's record of the same id is not mixed in.
	if got := h.list(b.APIKey, "?task_id=shared_id"); len(got.Callbacks) != 1 {
		t.Errorf("b's own task: %v", taskIDs(got))
	}
	// Asking for another customer by name is refused, not ignored.
	wantError(t, h.as(b.APIKey, "GET", "/v1/callbacks?customer_id=cust_a", nil), http.StatusBadRequest)

	// Stats count b's attempts only.
	res := h.as(b.APIKey, "GET", "/v1/callbacks/stats", nil)
	var s struct {
		Totals struct{ Succeeded, Failed int } `json:"totals"`
		Tasks  int                             `json:"tasks"`
	}
	unmarshal(t, res.Body, &s)
	if s.Totals.Succeeded != 1 || s.Totals.Failed != 0 || s.Tasks != 1 {
		t.Errorf("b's stats = %+v, want b's one attempt", s)
	}
	wantError(t, h.as(b.APIKey, "GET", "/v1/callbacks/stats?customer_id=cust_a", nil), http.StatusBadRequest)

	// One callback: another customer's is a 404, like a missing one.
	for _, path := range []string{"/v1/task/a_1/callback", "/v1/task/a_1/callback/body", "/v1/task/a_1"} {
		wantError(t, h.as(b.APIKey, "GET", path, nil), http.StatusNotFound)
	}
	var av, bv callbackView
	unmarshal(t, h.as(a.APIKey, "GET", "/v1/task/shared_id/callback", nil).Body, &av)
	unmarshal(t, h.as(b.APIKey, "GET", "/v1/task/shared_id/callback", nil).Body, &bv)
	if av.WebhookID == bv.WebhookID || bv.WebhookID != "evt_cust_b_shared_id" {
		t.Errorf("shared task id: a sees %q, b sees %q", av.WebhookID, bv.WebhookID)
	}
}

func TestCallbackBody_is_the_body_every_attempt_sends(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)
	c := h.createCustomer("cust_a", rc.URL)
	h.publish(c.CustomerID, task("t1", ""))
	h.waitCallback(c.APIKey, "t1", 10*time.Second, "delivered", final)

	res := h.as(c.APIKey, "GET", "/v1/task/t1/callback/body", nil)
	if res.Code != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("body: %d %s", res.Code, res.Body)
	}
	h.checkSchema("CallbackBody", res.Body)
	if got, want := bytes.TrimSuffix(res.Body, []byte("\n")), rc.Requests()[0].Body; !bytes.Equal(got, want) {
		t.Errorf("body shown:\n%s\nbody sent:\n%s", got, want)
	}
	wantError(t, h.as(c.APIKey, "GET", "/v1/task/unknown/callback/body", nil), http.StatusNotFound)
}

func TestCallbackStats_count_the_attempts_of_the_last_24_hours_per_hour(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	flaky := testenv.NewReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		time.Sleep(15 * time.Millisecond)
		testenv.Failing(2, http.StatusInternalServerError)(n, w, nil)
	})
	c := h.createCustomer("cust_a", flaky.URL)
	// The attempts fall in the current hour, or across two when the test runs over hh:00: the
	// hours they may fall in are those that overlap [before, after].
	before := time.Now()
	h.publish(c.CustomerID, task("t1", ""))
	h.waitCallback(c.APIKey, "t1", 10*time.Second, "succeeded", func(v callbackView) bool { return v.State == "succeeded" })
	h.publish(c.CustomerID, task("t2", ""))
	h.waitCallback(c.APIKey, "t2", 10*time.Second, "succeeded", func(v callbackView) bool { return v.State == "succeeded" })

	res := h.as(c.APIKey, "GET", "/v1/callbacks/stats", nil)
	after := time.Now()
	if res.Code != http.StatusOK {
		t.Fatalf("stats: %d %s", res.Code, res.Body)
	}
	h.checkSchema("CallbackStats", res.Body)
	type bucket struct {
		Start        time.Time `json:"start"`
		Succeeded    int       `json:"succeeded"`
		Failed       int       `json:"failed"`
		LatencyMSP50 *int64    `json:"latency_ms_p50"`
		LatencyMSP95 *int64    `json:"latency_ms_p95"`
		LatencyMSMax *int64    `json:"latency_ms_max"`
	}
	var s struct {
		From          time.Time `json:"from"`
		To            time.Time `json:"to"`
		BucketSeconds int       `json:"bucket_seconds"`
		Hours         []bucket  `json:"hours"`
		Totals        bucket    `json:"totals"`
		Tasks         int       `json:"tasks"`
		Complete      bool      `json:"complete"`
	}
	unmarshal(t, res.Body, &s)
	if len(s.Hours) != 24 || s.BucketSeconds != 3600 || !s.Complete || s.Tasks != 2 {
		t.Fatalf("stats = %d hours, bucket %ds, complete %v, %d tasks", len(s.Hours), s.BucketSeconds, s.Complete, s.Tasks)
	}
	if s.To.Sub(s.From) > 24*time.Hour || s.To.Sub(s.From) < 23*time.Hour || !s.Hours[0].Start.Equal(s.From) {
		t.Errorf("window %s to %s, first hour %s", s.From, s.To, s.Hours[0].Start)
	}
	if s.Totals.Succeeded != 2 || s.Totals.Failed != 2 {
		t.Errorf("totals %+v; want 2 succeeded and 2 failed", s.Totals)
	}
	var succeeded, failed int
	for _, b := range s.Hours {
		during := b.Start.Before(after) && b.Start.Add(time.Hour).After(before)
		if !during {
			if b.Succeeded+b.Failed != 0 || b.LatencyMSP50 != nil {
				t.Errorf("an hour outside the test has attempts: %+v", b)
			}
			continue
		}
		succeeded, failed = succeeded+b.Succeeded, failed+b.Failed
		if b.Succeeded+b.Failed == 0 {
			continue
		}
		// Every attempt, failed or not, waited 15 ms in the receiver.
		if b.LatencyMSP50 == nil || *b.LatencyMSP50 < 15 || *b.LatencyMSMax < *b.LatencyMSP95 || *b.LatencyMSP95 < *b.LatencyMSP50 {
			t.Errorf("hour %s: latency p50 %v p95 %v max %v; the receiver took 15 ms", b.Start, b.LatencyMSP50, b.LatencyMSP95, b.LatencyMSMax)
		}
	}
	if succeeded != 2 || failed != 2 {
		t.Errorf("the hours of the test hold %d succeeded and %d failed, want 2 and 2: %+v", succeeded, failed, s.Hours)
	}
}

func TestSigningSecret_is_shown_to_its_customer_with_the_rotation_overlap(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.createCustomer("cust_a", "")
	type shown struct {
		CustomerID              string     `json:"customer_id"`
		SigningSecret           string     `json:"signing_secret"`
		PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at"`
	}
	get := func() shown {
		res := h.as(c.APIKey, "GET", "/v1/profile/signing-secret", nil)
		if res.Code != http.StatusOK {
			t.Fatalf("signing secret: %d %s", res.Code, res.Body)
		}
		h.checkSchema("SigningSecret", res.Body)
		var s shown
		unmarshal(t, res.Body, &s)
		return s
	}
	if s := get(); s.SigningSecret != c.SigningSecret || s.CustomerID != "cust_a" || s.PreviousSecretExpiresAt != nil {
		t.Errorf("before any rotation: %+v", s)
	}
	res := h.as(c.APIKey, "POST", "/v1/profile/signing-secret/rotate", nil)
	var rot struct {
		SigningSecret string `json:"signing_secret"`
	}
	unmarshal(t, res.Body, &rot)
	h.remember(rot.SigningSecret)
	s := get()
	if s.SigningSecret != rot.SigningSecret || s.PreviousSecretExpiresAt == nil ||
		time.Until(*s.PreviousSecretExpiresAt) < 23*time.Hour || time.Until(*s.PreviousSecretExpiresAt) > 24*time.Hour {
		t.Errorf("after a rotation: %+v", s)
	}
	if strings.Contains(string(h.as(c.APIKey, "GET", "/v1/profile", nil).Body), "whsec_") {
		t.Error("GET /v1/profile carries a signing secret")
	}
	wantError(t, h.do("GET", "/v1/profile/signing-secret", nil, nil), http.StatusUnauthorized)
}

type testCallbackResult struct {
	URL             string            `json:"url"`
	WebhookID       string            `json:"webhook_id"`
	Succeeded       bool              `json:"succeeded"`
	StatusCode      *int              `json:"status_code"`
	Error           string            `json:"error"`
	DurationMS      int64             `json:"duration_ms"`
	ResponseExcerpt string            `json:"response_excerpt"`
	RequestHeaders  map[string]string `json:"request_headers"`
	RequestBody     json.RawMessage   `json:"request_body"`
}

func (h *harness) testCallback(apiKey string, body any) (testCallbackResult, response) {
	h.t.Helper()
	res := h.as(apiKey, "POST", "/v1/profile/test-callback", body)
	var r testCallbackResult
	if res.Code == http.StatusOK {
		h.checkSchema("TestCallbackResult", res.Body)
		unmarshal(h.t, res.Body, &r)
	}
	return r, res
}

func TestTestCallback_sends_a_signed_sample_now_and_shows_the_answer(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"CALLBACK_ALLOW_PRIVATE": "true", "TEST_CALLBACK_BURST": "4", "TEST_CALLBACK_RATE_PER_MINUTE": "1"})
	rc := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte("got it"))
	})
	c := h.createCustomer("cust_a", "")

	r, res := h.testCallback(c.APIKey, map[string]string{"url": rc.URL + "/hook"})
	if res.Code != http.StatusOK || !r.Succeeded || r.StatusCode == nil || *r.StatusCode != 202 || r.Error != "" ||
		r.ResponseExcerpt != "got it" || r.URL != rc.URL+"/hook" {
		t.Fatalf("test callback: %d %s", res.Code, res.Body)
	}
	if rc.Count() != 1 {
		t.Fatalf("receiver got %d requests", rc.Count())
	}
	got := rc.Requests()[0]
	if !bytes.Equal(got.Body, r.RequestBody) {
		t.Errorf("sent %s\nshown %s", got.Body, r.RequestBody)
	}
	for k, v := range r.RequestHeaders {
		if got.Header.Get(k) != v {
			t.Errorf("header %s: sent %q, shown %q", k, got.Header.Get(k), v)
		}
	}
	if got.Header.Get("refonte-ai--callback-auth") != c.CallbackAuthKey || !strings.HasPrefix(got.Header.Get("User-Agent"), "Refonte-Callbacks/") {
		t.Errorf("headers %v", got.Header)
	}
	wh, err := standardwebhooks.NewWebhook(c.SigningSecret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(got.Body, got.Header); err != nil {
		t.Errorf("the test callback does not verify with the customer's signing secret: %v", err)
	}
	var body struct {
		Task struct {
			TaskID string `json:"task_id"`
			Type   string `json:"type"`
		} `json:"task"`
		TaskID string `json:"task_id"`
		Status string `json:"status"`
	}
	unmarshal(t, got.Body, &body)
	if !strings.HasPrefix(body.TaskID, "test_") || body.Task.TaskID != body.TaskID || body.Task.Type != "test" ||
		body.Status != "completed" || got.Header.Get("webhook-id") != body.TaskID {
		t.Errorf("sample body %s", got.Body)
	}

	// Without a url: the profile's default, or a 400 when there is none. Only http(s) URLs.
	wantError(t, h.as(c.APIKey, "POST", "/v1/profile/test-callback", `{}`), http.StatusBadRequest)
	wantError(t, h.as(c.APIKey, "POST", "/v1/profile/test-callback", `{"url":"ops@example.com"}`), http.StatusBadRequest)
	if res := h.as(c.APIKey, "PATCH", "/v1/profile", map[string]string{"default_callback_url": rc.URL + "/default"}); res.Code != http.StatusOK {
		t.Fatal(res.Code)
	}
	// The burst of 4 is spent (one 200, two 400s, this one); the next is refused.
	if r, res := h.testCallback(c.APIKey, map[string]string{"url": ""}); res.Code != http.StatusOK || r.URL != rc.URL+"/default" {
		t.Errorf("default URL: %d %s", res.Code, res.Body)
	}
	res = h.as(c.APIKey, "POST", "/v1/profile/test-callback", map[string]string{"url": rc.URL})
	wantError(t, res, http.StatusTooManyRequests)
	if secs, err := strconv.Atoi(res.Header.Get("Retry-After")); err != nil || secs < 1 {
		t.Errorf("Retry-After = %q", res.Header.Get("Retry-After"))
	}
	if rc.Count() != 2 {
		t.Errorf("receiver got %d requests, want 2", rc.Count())
	}
}

func TestTestCallback_goes_through_the_workers_address_filter(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil) // CALLBACK_ALLOW_PRIVATE unset: loopback is refused
	rc := testenv.NewReceiver(t, nil)
	c := h.createCustomer("cust_a", "")
	r, res := h.testCallback(c.APIKey, map[string]string{"url": rc.URL})
	if res.Code != http.StatusOK || r.Succeeded || r.StatusCode != nil || !strings.HasPrefix(r.Error, "blocked:") {
		t.Errorf("test callback to loopback: %d %s", res.Code, res.Body)
	}
	if rc.Count() != 0 {
		t.Errorf("the receiver on loopback got %d requests", rc.Count())
	}
}

func TestDashboard_files_are_embedded_and_served_with_their_own_CSP(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	page := h.do("GET", "/dashboard", nil, nil)
	if page.Code != http.StatusOK || page.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /dashboard: %d %s", page.Code, page.Header.Get("Content-Type"))
	}
	csp := page.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
		"frame-ancestors 'none'", "require-trusted-types-for 'script'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %s", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") || page.Header.Get("X-Frame-Options") != "DENY" || page.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("page headers %v", page.Header)
	}
	// Every file the page loads is one of ours.
	refs := regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(string(page.Body), -1)
	if len(refs) < 3 {
		t.Fatalf("the page references %d files", len(refs))
	}
	for _, m := range refs {
		ref := m[1]
		if strings.HasPrefix(ref, "#") {
			continue
		}
		if !strings.HasPrefix(ref, "/dashboard/") {
			t.Errorf("the page references %q, not a file of the gateway", ref)
			continue
		}
		res := h.do("GET", ref, nil, nil)
		if res.Code != http.StatusOK || res.Header.Get("ETag") == "" || res.Header.Get("Cache-Control") != "no-cache" ||
			res.Header.Get("Content-Security-Policy") != csp || len(res.Body) == 0 {
			t.Errorf("GET %s: %d %v", ref, res.Code, res.Header)
			continue
		}
		for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
			if bytes.Contains(res.Body, []byte(sink)) {
				t.Errorf("%s uses %s", ref, sink)
			}
		}
		again := h.do("GET", ref, nil, func(r *http.Request) { r.Header.Set("If-None-Match", res.Header.Get("ETag")) })
		if again.Code != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", ref, again.Code)
		}
	}
	for _, path := range []string{"/dashboard/index.html", "/dashboard/nope.js", "/dashboard/../go.mod", "/dashboard/web"} {
		if res := h.do("GET", path, nil, nil); res.Code != http.StatusNotFound && res.Code != http.StatusMovedPermanently {
			t.Errorf("GET %s: %d", path, res.Code)
		}
	}
	wantError(t, h.do("POST", "/dashboard", nil, nil), http.StatusMethodNotAllowed)

	// The dashboard's calls get a 401 without a Basic challenge, so that the browser does not
	// open its own sign-in prompt; any other client gets the challenge.
	xhr := h.do("GET", "/v1/profile", nil, func(r *http.Request) {
		r.SetBasicAuth("rk_live_wrong", "")
		r.Header.Set("X-Requested-With", "XMLHttpRequest")
	})
	wantError(t, xhr, http.StatusUnauthorized)
	if xhr.Header.Get("WWW-Authenticate") != "" {
		t.Errorf("the dashboard's 401 carries WWW-Authenticate: %q", xhr.Header.Get("WWW-Authenticate"))
	}
	if res := h.do("GET", "/v1/profile", nil, basic("rk_live_wrong")); !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("a plain 401 lacks the Basic challenge: %v", res.Header)
	}
}
