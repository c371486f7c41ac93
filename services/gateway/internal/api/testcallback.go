package api

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/delivery"
	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/signing"
	"refonte.ai/callbacks/pkg/target"
	"refonte.ai/callbacks/pkg/version"
	"refonte.ai/callbacks/pkg/webhook"
)

// userAgent is sent with test callbacks, as the workers send theirs.
var userAgent = "Refonte-Callbacks/" + version.String()

// TestCallbackConfig configures POST /v1/profile/test-callback. The gateway sends test
// callbacks itself, through pkg/webhook like the workers, so the address filter is configured
// by the workers' variables: one environment file serves both services.
type TestCallbackConfig struct {
	// Timeout bounds one test callback; it stays well under the server's write timeout (30s).
	Timeout      time.Duration
	AllowPrivate bool
	AllowedCIDRs []netip.Prefix
	Ports        []uint16
	// PerMinute and Burst bound each customer's test callbacks: each one is a request to a URL
	// of the customer's choosing, sent at once.
	PerMinute int
	Burst     int
}

func loadTestCallbackConfig(r *env.Reader) TestCallbackConfig {
	c := TestCallbackConfig{
		Timeout:      r.Duration("TEST_CALLBACK_TIMEOUT", 10*time.Second),
		AllowPrivate: r.Bool("CALLBACK_ALLOW_PRIVATE", false),
		PerMinute:    r.Int("TEST_CALLBACK_RATE_PER_MINUTE", 6),
		Burst:        r.Int("TEST_CALLBACK_BURST", 3),
	}
	c.AllowedCIDRs = r.Prefixes("CALLBACK_ALLOWED_CIDRS")
	c.Ports = r.Ports("CALLBACK_ALLOWED_PORTS")
	return c
}

func (c TestCallbackConfig) validate() error {
	var errs []error
	if c.Timeout < 100*time.Millisecond || c.Timeout > 20*time.Second {
		errs = append(errs, fmt.Errorf("TEST_CALLBACK_TIMEOUT=%s: want 100ms to 20s", c.Timeout))
	}
	if c.PerMinute < 1 {
		errs = append(errs, fmt.Errorf("TEST_CALLBACK_RATE_PER_MINUTE=%d: want at least 1", c.PerMinute))
	}
	if c.Burst < 1 {
		errs = append(errs, fmt.Errorf("TEST_CALLBACK_BURST=%d: want at least 1", c.Burst))
	}
	return errors.Join(errs...)
}

// testCallbacks sends test callbacks.
type testCallbacks struct {
	sender  *webhook.Sender
	limiter *limiter
}

func newTestCallbacks(c TestCallbackConfig) *testCallbacks {
	return &testCallbacks{
		sender: webhook.New(webhook.Config{Timeout: c.Timeout, AllowPrivate: c.AllowPrivate,
			AllowedCIDRs: c.AllowedCIDRs, Ports: c.Ports, UserAgent: userAgent,
			MaxConnsPerHost: 4}),
		limiter: newLimiter(c.PerMinute, c.Burst),
	}
}

// testCallbackView is the answer of POST /v1/profile/test-callback: what was sent and what came
// back.
type testCallbackView struct {
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

// testTask is the sample task of a test callback. Its id starts with "test_" and its type is
// "test", so a receiver can tell it from a real completion.
type testTask struct {
	TaskID      string         `json:"task_id"`
	Type        string         `json:"type"`
	Status      string         `json:"status"`
	Instruction string         `json:"instruction"`
	Params      map[string]any `json:"params"`
	Response    map[string]any `json:"response"`
	Metadata    map[string]any `json:"metadata"`
	CreatedAt   time.Time      `json:"created_at"`
	CompletedAt time.Time      `json:"completed_at"`
}

// testCallback is POST /v1/profile/test-callback {"url": "…"}: one POST of a sample callback,
// signed and authenticated exactly like a real one (the customer's current signing secrets and
// Live Callback Auth Key), sent now, through the same address filter as the workers, without
// retries and without any record. Without a url the profile's default is used.
func (a *API) testCallback(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	if !a.rateLimited(w, a.tests.limiter, p.ID, "test callback") {
		return
	}
	var req struct {
		URL string `json:"url"`
	}
	if e := decodeJSON(w, r, a.cfg.MaxBodyBytes, &req); e != nil {
		writeError(w, e.code, e.msg)
		return
	}
	u := req.URL
	if u == "" {
		u = p.DefaultCallbackURL
	}
	if u == "" {
		writeError(w, http.StatusBadRequest, "url is required: the profile has no default_callback_url")
		return
	}
	tgt, err := target.Parse(u)
	if err != nil {
		writeError(w, http.StatusBadRequest, "url: "+err.Error())
		return
	}
	if tgt.Kind != target.HTTP {
		writeError(w, http.StatusBadRequest, "url: test callbacks go to http and https URLs only")
		return
	}
	now := a.now()
	keys, err := p.SigningKeys(now)
	if err != nil {
		a.Log.Error("signing secret unusable", zap.String("customer_id", p.ID), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "the signing secret is unusable")
		return
	}
	msg := sampleCallback(p, tgt, now, keys)
	res := a.tests.sender.Deliver(r.Context(), msg)
	a.Log.Info("test callback sent", zap.String("customer_id", p.ID), zap.String("target_host", tgt.Host()),
		zap.Int("status_code", res.StatusCode), zap.Duration("duration", res.Duration), zap.Bool("succeeded", res.OK()))
	writeJSON(w, http.StatusOK, testResult(msg, res))
}

// sampleCallback is the test callback's message: a sample task of a fresh "test_" id, signed
// with keys and carrying the customer's Live Callback Auth Key, like a real one.
func sampleCallback(p customer.Profile, tgt target.Target, now time.Time, keys []signing.Key) delivery.Message {
	id := "test_" + rand.Text()
	task, _ := json.Marshal(testTask{
		TaskID: id, Type: "test", Status: "completed",
		Instruction: "This is a test callback sent from the Refonte callbacks dashboard.",
		Params:      map[string]any{}, Response: map[string]any{"test": true}, Metadata: map[string]any{"test": true},
		CreatedAt: now.UTC(), CompletedAt: now.UTC(),
	})
	ev := event.Event{CustomerID: p.ID, TaskID: id, Status: "completed", Task: task,
		Response: json.RawMessage(`{"test":true}`)}
	body := ev.CallbackBody()
	return delivery.Message{
		Target: tgt, Body: body, CustomerID: p.ID, TaskID: id, Status: ev.Status,
		WebhookID: id, Timestamp: now,
		Signature: signing.Sign(id, now.Unix(), body, keys...),
		AuthKey:   p.CallbackAuthKey,
	}
}

// testResult is what the customer sees of the test callback: the outcome and the exact
// request that was sent.
func testResult(msg delivery.Message, res delivery.Result) testCallbackView {
	v := testCallbackView{
		URL: msg.Target.Raw, WebhookID: msg.WebhookID, Succeeded: res.OK(), DurationMS: res.Duration.Milliseconds(),
		ResponseExcerpt: res.Excerpt, RequestBody: msg.Body,
		RequestHeaders: map[string]string{
			"Content-Type":              "application/json",
			"User-Agent":                userAgent,
			"refonte-ai--callback-auth": msg.AuthKey,
			"webhook-id":                msg.WebhookID,
			"webhook-timestamp":         strconv.FormatInt(msg.Timestamp.Unix(), 10),
			"webhook-signature":         msg.Signature,
		},
	}
	if res.StatusCode != 0 {
		v.StatusCode = &res.StatusCode
	}
	if res.Err != nil {
		v.Error = res.Err.Error()
	}
	return v
}

// rateLimited takes a token from l for the customer, or answers 429 with Retry-After and
// reports false.
func (a *API) rateLimited(w http.ResponseWriter, l *limiter, customerID, what string) bool {
	ok, wait := l.allow(customerID, a.now())
	if ok {
		return true
	}
	secs := max(1, int((wait+time.Second-1)/time.Second))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many %s requests; retry in %d seconds", what, secs))
	return false
}
