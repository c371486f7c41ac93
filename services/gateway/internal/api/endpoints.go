package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/endpoint"
	"refonte.ai/callbacks/pkg/environment"
)

// endpointStore is endpoint health as the workers record it, and the customer's pauses.
type endpointStore interface {
	List(ctx context.Context, customerID string, env environment.Env) ([]endpoint.Health, error)
	Pause(ctx context.Context, customerID string, env environment.Env, ep string, now time.Time) error
	Resume(ctx context.Context, customerID string, env environment.Env, ep string) error
	CountStates(ctx context.Context, staleBefore time.Time) (map[endpoint.State]int64, error)
}

// endpointCollector is the fleet's endpoints by state, read from Redis (two ZCARDs) when
// /metrics is scraped.
type endpointCollector struct {
	store     endpointStore
	retention time.Duration
	desc      *prometheus.Desc
}

func newEndpointCollector(store endpointStore, retention time.Duration) *endpointCollector {
	return &endpointCollector{store: store, retention: retention, desc: prometheus.NewDesc("refonte_endpoints",
		"Customer endpoints (all customers and environments) that are failing (their latest attempt failed) or paused.",
		[]string{"state"}, nil)}
}

func (c *endpointCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *endpointCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	counts, err := c.store.CountStates(ctx, time.Now().Add(-c.retention))
	for _, st := range []endpoint.State{endpoint.Failing, endpoint.Paused} {
		v := math.NaN()
		if err == nil {
			v = float64(counts[st])
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, string(st))
	}
}

// endpointList is GET /v1/endpoints.
type endpointList struct {
	Environment environment.Env   `json:"environment"`
	Endpoints   []endpoint.Health `json:"endpoints"`
}

func (a *API) listEndpoints(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	list, err := a.Endpoints.List(r.Context(), p.ID, p.Env)
	if err != nil {
		a.Log.Warn("listing endpoints failed", zap.String("customer_id", p.ID), zap.Error(err))
		unavailable(w)
		return
	}
	writeJSON(w, http.StatusOK, endpointList{Environment: p.Env, Endpoints: list})
}

func (a *API) pauseEndpoint(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	a.changePause(w, r, p, true)
}

func (a *API) resumeEndpoint(w http.ResponseWriter, r *http.Request, p customer.Profile) {
	a.changePause(w, r, p, false)
}

// changePause pauses or resumes the endpoint the body names, in the key's environment, and
// answers the endpoint as GET /v1/endpoints shows it now. The workers learn it from the
// announcement (at once) or their profile cache's expiry.
func (a *API) changePause(w http.ResponseWriter, r *http.Request, p customer.Profile, pause bool) {
	var req struct {
		Endpoint *string `json:"endpoint"`
	}
	if e := decodeJSON(w, r, a.cfg.MaxBodyBytes, &req); e != nil {
		writeError(w, e.code, e.msg)
		return
	}
	if req.Endpoint == nil {
		writeError(w, http.StatusBadRequest, `endpoint is required, e.g. "https://example.com:443"`)
		return
	}
	ep, err := endpoint.Parse(*req.Endpoint)
	if err != nil {
		writeError(w, http.StatusBadRequest, "endpoint: "+err.Error())
		return
	}
	if pause {
		err = a.Endpoints.Pause(r.Context(), p.ID, p.Env, ep, a.now())
	} else {
		err = a.Endpoints.Resume(r.Context(), p.ID, p.Env, ep)
	}
	if errors.Is(err, endpoint.ErrNotFound) {
		err = customer.ErrNotFound
	}
	if !a.profileWritten(r.Context(), w, p.ID, err) {
		return
	}
	list, err := a.Endpoints.List(r.Context(), p.ID, p.Env)
	if err != nil {
		unavailable(w)
		return
	}
	view := endpoint.Health{Endpoint: ep, State: endpoint.Healthy}
	for _, h := range list {
		if h.Endpoint == ep {
			view = h
		}
	}
	a.Log.Info("endpoint pause changed", zap.String("customer_id", p.ID), zap.String("environment", p.Env.String()),
		zap.String("endpoint", ep), zap.Bool("paused", pause))
	writeJSON(w, http.StatusOK, view)
}
