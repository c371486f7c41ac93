package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/endpoint"
	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/quarantine"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
	"refonte.ai/callbacks/services/worker/internal/worker"
)

// fastSchedule runs all 21 attempts in about a second.
const fastSchedule = "20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms"

type harness struct {
	t         *testing.T
	nats      *testenv.NATS
	nc        *nats.Conn
	js        jetstream.JetStream
	rdb       redis.UniversalClient
	cfg       worker.Config
	customers *customer.Store
	statuses  *status.Store
	invalid   *quarantine.Store
	pub       *publish.Publisher
	log       *zap.Logger
	// profileTTL is how long the worker caches a profile (1s unless a test changes it).
	profileTTL time.Duration
	endpoints  *endpoint.Store
	// regs are the metric registries of the workers started, one each.
	regs []*prometheus.Registry
}

func newHarness(t *testing.T, vars map[string]string) *harness {
	t.Helper()
	h := &harness{t: t, nats: testenv.StartNATS(t), profileTTL: time.Second}
	h.nc, h.js = h.nats.Connect(t)
	var prefix string
	h.rdb, prefix = testenv.Redis(t)
	all := map[string]string{
		"NATS_URL":                h.nats.URL(),
		"REDIS_PREFIX":            prefix,
		"CALLBACK_ALLOW_PRIVATE":  "true",
		"CALLBACK_RETRY_SCHEDULE": fastSchedule,
		"CALLBACK_TIMEOUT":        "2s",
	}
	for k, v := range vars {
		all[k] = v
	}
	cfg, err := worker.LoadConfig(env.FromMap(all))
	if err != nil {
		t.Fatal(err)
	}
	h.cfg = cfg
	h.log = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	h.customers = customer.NewStore(h.rdb, prefix)
	h.statuses = status.NewStore(h.rdb, prefix, cfg.Retention)
	h.invalid = quarantine.NewStore(h.rdb, prefix, 0)
	h.endpoints = endpoint.NewStore(h.rdb, prefix)
	h.pub, err = publish.New(context.Background(), h.js, cfg.Stream)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// startWorker runs one worker until the test ends; the returned function stops it early.
func (h *harness) startWorker() (stop func()) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	consumer, err := worker.SetupConsumer(ctx, h.js, h.cfg, h.log)
	if err != nil {
		h.t.Fatal(err)
	}
	transports, err := worker.NewTransports(h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h.regs = append(h.regs, reg)
	w, err := worker.New(h.cfg, worker.Deps{
		Consumer:   consumer,
		Profiles:   customer.NewCache(h.customers, h.profileTTL),
		Status:     h.statuses,
		Invalid:    h.invalid,
		Transports: transports,
		Log:        h.log,
		Endpoints:  h.endpoints,
		Alerts:     worker.AlertMailer(transports),
		Metrics:    worker.NewMetrics(reg),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			h.t.Errorf("worker: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	h.t.Cleanup(stop)
	return stop
}

// counter sums a counter over every worker started, for the series with the given labels.
func (h *harness) counter(name string, labels map[string]string) float64 {
	h.t.Helper()
	var sum float64
	for _, reg := range h.regs {
		families, err := reg.Gather()
		if err != nil {
			h.t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
		metrics:
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
						continue metrics
					}
				}
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func (h *harness) newCustomer(id, defaultURL string) customer.Profile {
	h.t.Helper()
	c, err := h.customers.Create(context.Background(), id, defaultURL)
	if err != nil {
		h.t.Fatal(err)
	}
	return c.Live
}

// task is a minimal valid task object.
func task(id, callbackURL string) map[string]any {
	t := map[string]any{
		"task_id":  id,
		"type":     "categorization",
		"status":   "completed",
		"response": map[string]any{"category": "red"},
		"metadata": map[string]any{},
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

func (h *harness) record(customerID, taskID string) (status.Record, bool) {
	r, err := h.statuses.Get(context.Background(), customerID, environment.Live, taskID)
	if err != nil {
		return status.Record{}, false
	}
	return r, true
}

// waitFinal waits until the task's delivery reached a final state and returns its record.
func (h *harness) waitFinal(customerID, taskID string, timeout time.Duration) status.Record {
	h.t.Helper()
	var rec status.Record
	testenv.Eventually(h.t, timeout, func() bool {
		r, ok := h.record(customerID, taskID)
		rec = r
		return ok && (r.State == status.Succeeded || r.State == status.Failed || r.State == status.NoCallback)
	}, "task %s reaches a final state (last seen: %q)", taskID, rec.State)
	return rec
}

func (h *harness) consumerInfo() *jetstream.ConsumerInfo {
	h.t.Helper()
	c, err := h.js.Consumer(context.Background(), h.cfg.Stream.Name, h.cfg.Consumer)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info
}

// original reads back and decodes the stream message a status names (its chain).
func (h *harness) original(rec status.Record) event.Event {
	h.t.Helper()
	m, err := stream.NewOriginals(h.js, h.cfg.Stream.Name).Get(context.Background(), rec.Chain)
	if err != nil {
		h.t.Fatalf("reading message %d of task %s: %v", rec.Chain, rec.TaskID, err)
	}
	ev, err := event.Decode(m.Data)
	if err != nil || ev.TaskID != rec.TaskID || ev.CustomerID != rec.CustomerID {
		h.t.Fatalf("message %d is task %s of %s (%v), want %s of %s", rec.Chain, ev.TaskID, ev.CustomerID, err, rec.TaskID, rec.CustomerID)
	}
	return ev
}
