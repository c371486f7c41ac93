package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/endpoint"
	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/health"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/quarantine"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
	"refonte.ai/callbacks/schemas"
	"refonte.ai/callbacks/services/gateway/internal/api"
	"refonte.ai/callbacks/services/gateway/internal/recovery"
)

// fastSchedule runs all 21 attempts of a delivery in about a second.
var fastSchedule = strings.TrimSuffix(strings.Repeat("20ms,", 20), ",")

// harness is one gateway (in-process, behind httptest) on a NATS server and Redis prefix of its
// own, and optionally the real worker binary on the same ones.
type harness struct {
	t      *testing.T
	nats   *testenv.NATS
	nc     *nats.Conn
	js     jetstream.JetStream
	rdb    redis.UniversalClient
	prefix string
	// redisURL is the REDIS_URL the gateway and the workers get.
	redisURL string
	cfg      api.Config
	pub      *publish.Publisher
	// resendVia, when set, is what gateways started after it put resends on the stream through
	// instead of pub.
	resendVia resendPublisher
	api       *api.API
	srv       *httptest.Server
	logs      *observer.ObservedLogs
	log       *zap.Logger
	// stopGateway stops the gateway as SIGTERM would (h.api's background work included).
	stopGateway func()

	adminToken string
	workers    []*testenv.Process

	mu      sync.Mutex
	secrets map[string]bool
}

// newHarness starts a gateway; vars override its environment (ADMIN_TOKEN "" turns admin off).
func newHarness(t *testing.T, vars map[string]string) *harness {
	t.Helper()
	return newHarnessOn(t, testenv.RedisOf(t, testenv.ShapeStandalone), vars)
}

// newHarnessOn is newHarness on the given Redis (standalone, cluster or sentinel).
func newHarnessOn(t *testing.T, rt testenv.RedisTarget, vars map[string]string) *harness {
	t.Helper()
	h := &harness{t: t, nats: testenv.StartNATS(t), secrets: map[string]bool{}}
	h.nc, h.js = h.nats.Connect(t)
	h.rdb, h.prefix, h.redisURL = rt.Client, rt.Prefix, rt.URL
	h.adminToken = "admin_" + rand.Text()
	all := map[string]string{
		"NATS_URL":     h.nats.URL(),
		"REDIS_URL":    h.redisURL,
		"REDIS_PREFIX": h.prefix,
		"ADMIN_TOKEN":  h.adminToken,
	}
	for k, v := range vars {
		all[k] = v
	}
	h.adminToken = all["ADMIN_TOKEN"]
	h.remember(h.adminToken)
	cfg, err := api.LoadConfig(env.FromMap(all))
	if err != nil {
		t.Fatal(err)
	}
	h.cfg = cfg
	h.pub, err = publish.New(context.Background(), h.js, cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	var core zapcore.Core
	core, h.logs = observer.New(zap.DebugLevel)
	// Registered before the server's Close, so it runs after it: every request has been logged.
	t.Cleanup(h.checkLogsHoldNoSecret)
	h.log = zap.New(core)
	h.api, h.srv, h.stopGateway = h.startStoppableGateway(h.rdb, h.log)
	return h
}

// startGateway serves a gateway that talks to Redis through rdb.
func (h *harness) startGateway(rdb redis.UniversalClient, log *zap.Logger) (*api.API, *httptest.Server) {
	h.t.Helper()
	a, srv, _ := h.startStoppableGateway(rdb, log)
	return a, srv
}

// startStoppableGateway is startGateway with its background work (a.Run, which runs
// recoveries) and a stop that ends it as SIGTERM would, and closes the server.
func (h *harness) startStoppableGateway(rdb redis.UniversalClient, log *zap.Logger) (*api.API, *httptest.Server, func()) {
	h.t.Helper()
	statuses := status.NewStore(rdb, h.prefix, h.cfg.Retention)
	var resender resendPublisher = h.pub
	if h.resendVia != nil {
		resender = h.resendVia
	}
	a, err := api.New(h.cfg, api.Deps{
		Customers:  customer.NewStore(rdb, h.prefix),
		Status:     statuses,
		Resender:   resender,
		Originals:  stream.NewOriginals(h.js, h.cfg.Stream.Name),
		Announcer:  api.NATSAnnouncer{Conn: h.nc},
		Checks:     map[string]health.Check{"nats": health.NATS(h.nc), "redis": health.Redis(rdb)},
		Log:        log,
		Recoveries: recovery.NewStore(rdb, h.prefix, statuses, h.cfg.Retention),
		Invalid:    quarantine.NewStore(rdb, h.prefix, 0),
		Replayer:   h.pub,
		Limits:     api.NewSharedLimits(rdb, h.prefix),
		Endpoints:  endpoint.NewStore(rdb, h.prefix),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		if err := a.Run(ctx); err != nil {
			h.t.Errorf("gateway background work: %v", err)
		}
	}()
	srv := httptest.NewServer(a.Handler())
	stop := sync.OnceFunc(func() {
		srv.Close()
		cancel()
		<-ran
	})
	h.t.Cleanup(stop)
	return a, srv, stop
}

// startWorker runs the real worker binary. Its profile cache outlives any test, so a test sees a
// profile change in a callback only if the gateway announced it.
// vars override its environment.
func (h *harness) startWorker(vars ...map[string]string) {
	h.t.Helper()
	bin := testenv.Build(h.t, "services/worker")
	all := map[string]string{
		"NATS_URL":                h.nats.URL(),
		"REDIS_URL":               h.redisURL,
		"REDIS_PREFIX":            h.prefix,
		"CALLBACK_ALLOW_PRIVATE":  "true",
		"CALLBACK_RETRY_SCHEDULE": fastSchedule,
		"CALLBACK_TIMEOUT":        "5s",
		"PROFILE_CACHE_TTL":       "1h",
		"METRICS_ADDR":            testenv.FreeAddr(h.t),
	}
	for _, v := range vars {
		for k, val := range v {
			all[k] = val
		}
	}
	h.workers = append(h.workers, testenv.Start(h.t, bin, all))
}

// remember marks a string that must never appear in a log line.
func (h *harness) remember(secrets ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range secrets {
		if s != "" {
			h.secrets[s] = true
		}
	}
}

// checkLogsHoldNoSecret runs after every test: no key, token or secret that the test saw may
// appear in the gateway's log output, nor in the worker's.
func (h *harness) checkLogsHoldNoSecret() {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	var lines []string
	for _, e := range h.logs.All() {
		buf, err := enc.EncodeEntry(e.Entry, e.Context)
		if err != nil {
			h.t.Errorf("encoding a log entry: %v", err)
			continue
		}
		lines = append(lines, buf.String())
		buf.Free()
	}
	for _, w := range h.workers {
		if b, err := os.ReadFile(w.LogPath); err == nil {
			lines = append(lines, string(b))
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, line := range lines {
		for s := range h.secrets {
			if strings.Contains(line, s) {
				h.t.Errorf("a log line contains a secret (%.12s…): %.300s", s, line)
			}
		}
	}
}

// response is an answer of the gateway.
type response struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v\n%s", err, r.Body)
	}
	return m
}

// do sends a request; body is nil, a string (sent as is) or a value (sent as JSON).
func (h *harness) do(method, path string, body any, auth func(*http.Request)) response {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != nil {
		auth(req)
	}
	res, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return response{Code: res.StatusCode, Header: res.Header, Body: raw}
}

func basic(apiKey string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(apiKey, "") }
}

func bearer(token string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

// as calls a customer endpoint with the customer's API key.
func (h *harness) as(apiKey, method, path string, body any) response {
	h.t.Helper()
	return h.do(method, path, body, basic(apiKey))
}

// createCustomer creates a customer through the admin API.
func (h *harness) createCustomer(id, defaultURL string) customer.CreatedAnswer {
	h.t.Helper()
	res := h.do("POST", "/admin/v1/customers",
		map[string]string{"customer_id": id, "default_callback_url": defaultURL}, bearer(h.adminToken))
	if res.Code != http.StatusCreated {
		h.t.Fatalf("create customer %s: %d %s", id, res.Code, res.Body)
	}
	h.checkSchema("CustomerCreated", res.Body)
	var c customer.CreatedAnswer
	if err := json.Unmarshal(res.Body, &c); err != nil {
		h.t.Fatal(err)
	}
	h.remember(c.APIKey, c.CallbackAuthKey, c.SigningSecret, c.TestAPIKey, c.TestCallbackAuthKey, c.TestSigningSecret)
	return c
}

// task is a task object with a bit of everything the gateway must pass through untouched.
func task(id, callbackURL string) map[string]any {
	t := map[string]any{
		"task_id":     id,
		"type":        "categorization",
		"status":      "completed",
		"instruction": "Is this object red or blue? — «rouge» ou «bleu»",
		"params":      map[string]any{"attachment_type": "text", "attachment": "tomato", "categories": []any{"red", "blue"}},
		"response":    map[string]any{"category": "red"},
		"metadata":    map[string]any{"nested": map[string]any{"deep": []any{1.5, true, nil}}},
		"x_unknown":   "passed through",
	}
	if callbackURL != "" {
		t["callback_url"] = callbackURL
	}
	return t
}

func (h *harness) publish(customerID string, task map[string]any) {
	h.t.Helper()
	testenv.Publish(h.t, h.pub, customerID, task)
}

// callbackView is GET /v1/task/{id}/callback.
type callbackView struct {
	TaskID            string     `json:"task_id"`
	WebhookID         string     `json:"webhook_id"`
	Target            *string    `json:"target"`
	State             string     `json:"state"`
	CallbackSucceeded *bool      `json:"callback_succeeded"`
	Delivery          int        `json:"delivery"`
	NextAttemptAt     *time.Time `json:"next_attempt_at"`
	Attempts          []struct {
		Attempt         int       `json:"attempt"`
		Delivery        int       `json:"delivery"`
		At              time.Time `json:"at"`
		StatusCode      *int      `json:"status_code"`
		Error           string    `json:"error"`
		DurationMS      int64     `json:"duration_ms"`
		ResponseExcerpt string    `json:"response_excerpt"`
	} `json:"attempts"`
}

func (h *harness) callback(apiKey, taskID string) (callbackView, response) {
	h.t.Helper()
	res := h.as(apiKey, "GET", "/v1/task/"+taskID+"/callback", nil)
	var v callbackView
	if res.Code == http.StatusOK {
		h.checkSchema("CallbackStatus", res.Body)
		if err := json.Unmarshal(res.Body, &v); err != nil {
			h.t.Fatal(err)
		}
	}
	return v, res
}

// waitCallback waits until the task's callback view satisfies cond.
func (h *harness) waitCallback(apiKey, taskID string, timeout time.Duration, what string, cond func(callbackView) bool) callbackView {
	h.t.Helper()
	var last callbackView
	var lastRes response
	testenv.Eventually(h.t, timeout, func() bool {
		last, lastRes = h.callback(apiKey, taskID)
		return lastRes.Code == http.StatusOK && cond(last)
	}, "task %s: %s (last answer %d %s)", taskID, what, lastRes.Code, lastRes.Body)
	return last
}

func final(v callbackView) bool {
	return v.State == "succeeded" || v.State == "failed" || v.State == "no_callback"
}

// wantError checks the contract's error shape and code.
func wantError(t *testing.T, res response, code int) {
	t.Helper()
	if res.Code != code {
		t.Fatalf("status %d, want %d: %s", res.Code, code, res.Body)
	}
	var e struct {
		StatusCode int    `json:"status_code"`
		Error      string `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(res.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.StatusCode != code || e.Error == "" {
		t.Errorf("error body %s: want {\"status_code\": %d, \"error\": \"…\"}", res.Body, code)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q", ct)
	}
}

var openAPISchemas = sync.OnceValues(func() (*jsonschema.Compiler, error) {
	raw, err := schemas.Files.ReadFile(schemas.OpenAPIFile)
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("openapi.json", doc); err != nil {
		return nil, err
	}
	return c, nil
})

var schemaMu sync.Mutex

// checkSchema validates an answer against a schema of schemas/openapi.json, so the document
// cannot drift from what the gateway sends.
func (h *harness) checkSchema(name string, body []byte) {
	h.t.Helper()
	schemaMu.Lock()
	defer schemaMu.Unlock()
	c, err := openAPISchemas()
	if err != nil {
		h.t.Fatalf("openapi.json: %v", err)
	}
	sch, err := c.Compile("openapi.json#/components/schemas/" + name)
	if err != nil {
		h.t.Fatalf("openapi.json schema %s: %v", name, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		h.t.Fatalf("answer is not JSON: %v\n%s", err, body)
	}
	if err := sch.Validate(inst); err != nil {
		h.t.Errorf("answer does not match openapi.json's %s: %v\n%s", name, err, body)
	}
}

// callbackAfterChange publishes fresh tasks (without a callback_url) one at a time until a
// callback satisfies ok, and returns it. The gateway has announced a profile change before it
// answers, but the worker drops its cached profile on its subscription's own goroutine, beside
// the deliveries: a callback picked up in the same instant may still use the previous profile.
// The worker's cache outlives the test, so without the announcement no callback satisfies ok.
func (h *harness) callbackAfterChange(rc *testenv.Receiver, customerID string, ok func(testenv.Request) bool) testenv.Request {
	h.t.Helper()
	const tries = 5
	for i := 1; i <= tries; i++ {
		n := rc.Count()
		h.publish(customerID, task(fmt.Sprintf("after_change_%d", i), ""))
		testenv.Eventually(h.t, 10*time.Second, func() bool { return rc.Count() > n }, "callback after the profile change")
		if got := rc.Requests()[n]; ok(got) {
			if i > 1 {
				h.t.Logf("callback %d after the change was the first to reflect it", i)
			}
			return got
		}
	}
	h.t.Fatalf("none of %d callbacks after the profile change reflects it: the workers were not told", tries)
	return testenv.Request{}
}
