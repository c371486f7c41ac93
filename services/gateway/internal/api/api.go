// Package api is the gateway's HTTP API (docs/api.md, schemas/openapi.json): the admin endpoint that creates
// customers, the customer's profile and key rotations, task status with its attempt log, and
// send-callback, which puts a stored callback back on the stream for a worker to deliver again.
//
// Every answer is JSON, errors included ({"status_code": N, "error": "…"}), but the customer
// dashboard's page and files (dashboard.go); every route is registered in one table (routes),
// which the tests compare with schemas/openapi.json.
package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/health"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
	"refonte.ai/callbacks/services/gateway/internal/recovery"
)

// profileStore keeps each customer's two profiles (live and test). An API key authenticates in
// its own environment only, and every change names the environment it applies to.
type profileStore interface {
	Create(ctx context.Context, id, defaultURL string) (customer.Created, error)
	EnableTest(ctx context.Context, id string) (customer.Profile, customer.Credentials, error)
	Authenticate(ctx context.Context, apiKey string) (customer.Profile, error)
	SetDefaultCallbackURL(ctx context.Context, id string, env environment.Env, url string) (customer.Profile, error)
	RotateCallbackAuthKey(ctx context.Context, id string, env environment.Env) (customer.Profile, error)
	RotateSigningSecret(ctx context.Context, id string, env environment.Env) (customer.Profile, error)
	RotateAPIKey(ctx context.Context, id string, env environment.Env) (customer.Credentials, error)
	SetAlerts(ctx context.Context, id string, env environment.Env, alertEmail *string, autoPause *bool) (customer.Profile, error)
	Get(ctx context.Context, id string, env environment.Env) (customer.Profile, error)
}

type statusStore interface {
	Get(ctx context.Context, customerID string, env environment.Env, taskID string) (status.Record, error)
	Queue(ctx context.Context, d status.Delivery, now time.Time) (int, error)
	callbackIndex
}

type resender interface {
	Resend(ctx context.Context, ev event.Event, webhookID, dedupID string) (uint64, error)
}

// originals reads back the stream message that carried a delivery, where a task's event is kept
// (Redis keeps only its sequence); a message past the stream's retention answers stream.ErrGone.
type originals interface {
	Get(ctx context.Context, seq uint64) (stream.Original, error)
}

// Announcer tells the workers that a customer's profile changed, so they drop their cached copy
// and the next callback carries the new key or goes to the new default URL.
type Announcer interface {
	ProfileChanged(ctx context.Context, customerID string) error
}

// Deps are the API's collaborators.
type Deps struct {
	Customers profileStore
	Status    statusStore
	Resender  resender
	// Originals reads tasks' events from the stream.
	Originals originals
	Announcer Announcer
	// Checks are the dependencies /readyz probes.
	Checks map[string]health.Check
	Log    *zap.Logger
	// Registry receives the API's metrics and is what /metrics serves; nil: a private one.
	Registry *prometheus.Registry
	// Recoveries keeps recovery records; nil: no recover routes.
	Recoveries *recovery.Store
	// Invalid is the store of refused events and Replayer publishes them again; the admin
	// routes over them exist when both are set (and the admin API is on).
	Invalid  invalidStore
	Replayer replayer
	// Limits shares the send-callback rate limit between gateways through Redis; nil: each
	// gateway limits on its own.
	Limits *SharedLimits
	// Endpoints is the endpoint health and pauses store; nil: no endpoint routes.
	Endpoints endpointStore
}

// API serves the gateway's routes.
type API struct {
	Deps
	cfg Config
	// sendLimit bounds each customer's send-callback calls (shared when Deps.Limits is set).
	sendLimit bucketLimiter
	tests     *testCallbacks
	metrics   *metrics
	mux       *http.ServeMux
	handler   http.Handler
	routes    []Route
	now       func() time.Time

	// recoveries runs POST /v1/callbacks/recover (recover.go); nil without Deps.Recoveries.
	recoveries     *recovery.Manager
	invalidMetrics *invalidMetrics
}

// Route is one registered method and path pattern, as OpenAPI names them.
type Route struct {
	Method string
	Path   string
}

// New builds the API. Routes of the admin API exist only when cfg.AdminToken is set. It is long
// because it holds the route table: every method and path the gateway serves, read in one place.
func New(cfg Config, d Deps) (*API, error) {
	if d.Customers == nil || d.Status == nil || d.Resender == nil || d.Originals == nil || d.Announcer == nil || d.Log == nil {
		return nil, errors.New("api: missing dependency")
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	a := &API{
		Deps:    d,
		cfg:     cfg,
		tests:   newTestCallbacks(cfg.TestCallback),
		metrics: newMetrics(d.Registry),
		mux:     http.NewServeMux(),
		now:     time.Now,
	}
	a.sendLimit = localBucket{l: newLimiter(cfg.SendCallbackPerMinute, cfg.SendCallbackBurst), now: func() time.Time { return a.now() }}
	if d.Limits != nil {
		a.sendLimit = d.Limits.bucket("send-callback", cfg.SendCallbackPerMinute, cfg.SendCallbackBurst)
	}
	a.recoveries = a.newRecoveries()
	customerRoutes := []struct {
		method, path string
		h            customerHandler
	}{
		{"GET", "/v1/profile", a.getProfile},
		{"PATCH", "/v1/profile", a.patchProfile},
		{"POST", "/v1/profile/callback-auth-key/rotate", a.rotateCallbackAuthKey},
		{"POST", "/v1/profile/signing-secret/rotate", a.rotateSigningSecret},
		{"POST", "/v1/profile/api-key/rotate", a.rotateAPIKey},
		{"GET", "/v1/task/{taskId}", a.getTask},
		{"GET", "/v1/task/{taskId}/callback", a.getCallback},
		{"POST", "/v1/task/{taskId}/send-callback", a.sendCallback},
		// The dashboard's own calls (dashboard.go, callbacks.go, testcallback.go).
		{"GET", "/v1/profile/signing-secret", a.getSigningSecret},
		{"POST", "/v1/profile/test-callback", a.testCallback},
		{"GET", "/v1/callbacks", a.listCallbacks},
		{"GET", "/v1/callbacks/stats", a.callbackStats},
		{"GET", "/v1/task/{taskId}/callback/body", a.getCallbackBody},
	}
	for _, r := range customerRoutes {
		a.handle(r.method, r.path, a.authCustomer(r.h))
	}
	if d.Endpoints != nil {
		d.Registry.MustRegister(newEndpointCollector(d.Endpoints, cfg.Retention))
		a.handle("GET", "/v1/endpoints", a.authCustomer(a.listEndpoints))
		a.handle("POST", "/v1/endpoints/pause", a.authCustomer(a.pauseEndpoint))
		a.handle("POST", "/v1/endpoints/resume", a.authCustomer(a.resumeEndpoint))
	}
	if a.recoveries != nil {
		a.handle("POST", "/v1/callbacks/recover", a.authCustomer(a.startRecovery))
		a.handle("GET", "/v1/callbacks/recover/{id}", a.authCustomer(a.getRecovery))
		a.handle("DELETE", "/v1/callbacks/recover/{id}", a.authCustomer(a.cancelRecovery))
	}
	if cfg.AdminToken != "" {
		a.handle("POST", "/admin/v1/customers", a.authAdmin(http.HandlerFunc(a.createCustomer)))
		a.handle("POST", "/admin/v1/customers/{customerId}/test-environment", a.authAdmin(http.HandlerFunc(a.enableTestEnvironment)))
		if d.Invalid != nil && d.Replayer != nil {
			a.invalidMetrics = newInvalidMetrics(d.Registry, d.Invalid)
			a.handle("GET", "/admin/v1/invalid-events", a.authAdmin(http.HandlerFunc(a.listInvalidEvents)))
			a.handle("GET", "/admin/v1/invalid-events/{id}", a.authAdmin(http.HandlerFunc(a.getInvalidEvent)))
			a.handle("POST", "/admin/v1/invalid-events/{id}/replay", a.authAdmin(http.HandlerFunc(a.replayInvalidEvent)))
			a.handle("DELETE", "/admin/v1/invalid-events/{id}", a.authAdmin(http.HandlerFunc(a.deleteInvalidEvent)))
		}
	}
	a.handle("GET", "/healthz", http.HandlerFunc(health.Live))
	a.handle("GET", "/readyz", health.Ready(d.Checks))
	a.handle("GET", "/metrics", promhttp.HandlerFor(d.Registry, promhttp.HandlerOpts{}))
	a.handle("GET", "/dashboard", http.HandlerFunc(a.dashboardPage))
	a.handle("GET", "/dashboard/{asset}", http.HandlerFunc(a.dashboardAsset))
	// ServeMux answers unknown paths and methods in plain text; this keeps every answer JSON.
	a.mux.HandleFunc("/", a.unmatched)

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
	}))
	a.handler = a.observe(securityHeaders(limitHeaders(canonicalPaths(cop.Handler(a.mux)))))
	return a, nil
}

func (a *API) handle(method, path string, h http.Handler) {
	a.mux.Handle(method+" "+path, h)
	a.routes = append(a.routes, Route{Method: method, Path: path})
}

// Handler is the whole API, with its middleware.
func (a *API) Handler() http.Handler { return a.handler }

// Routes lists every registered route.
func (a *API) Routes() []Route { return append([]Route(nil), a.routes...) }

var probeMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// unmatched answers 405 with Allow when the path exists under other methods, else 404.
func (a *API) unmatched(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range probeMethods {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host}
		if _, pattern := a.mux.Handler(probe); pattern != "" && pattern != "/" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		writeError(w, http.StatusNotFound, "no such route")
		return
	}
	if allowed[0] == http.MethodGet {
		allowed = append(allowed, http.MethodHead)
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
}
