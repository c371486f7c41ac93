// Command worker delivers task-completion callbacks: it pulls from the shared JetStream consumer
// and POSTs (or emails) each callback, retrying on the contract's schedule. Configuration is read
// from the environment (see internal/worker/config.go and the README).
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/conn"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/endpoint"
	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/health"
	"refonte.ai/callbacks/pkg/quarantine"
	"refonte.ai/callbacks/pkg/service"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
	"refonte.ai/callbacks/pkg/version"
	"refonte.ai/callbacks/services/worker/internal/worker"
)

func main() { service.Main("worker", run) }

// run wires the worker: configuration, logging, connections, the pipeline and the operations
// server; then it delivers until ctx ends.
func run(ctx context.Context) error {
	cfg, err := worker.LoadConfig(env.New())
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log, flush, err := service.Start(ctx, "worker", cfg.Shared)
	if err != nil {
		return err
	}
	defer flush()

	conns, err := connect(cfg, log)
	if err != nil {
		return err
	}
	defer conns.close()
	if maxPayload := conns.nc.MaxPayload(); int64(cfg.EventMaxBytes) > maxPayload {
		log.Warn("EVENT_MAX_BYTES is above the NATS server's max_payload: no event that large can be published",
			zap.Int("event_max_bytes", cfg.EventMaxBytes), zap.Int64("max_payload", maxPayload))
	}
	reg := prometheus.NewRegistry()
	w, err := build(ctx, cfg, conns, reg, log)
	if err != nil {
		return err
	}
	stopOps := serveOps(cfg, conns, reg, w, log)
	defer stopOps()

	log.Info("worker started", zap.Int("concurrency", cfg.Concurrency), zap.String("consumer", cfg.Consumer),
		zap.String("metrics_addr", cfg.MetricsAddr))
	err = w.Run(ctx)
	log.Info("worker stopped")
	return err
}

// conns are the worker's connections to NATS and Redis.
type conns struct {
	nc  *nats.Conn
	rdb redis.UniversalClient
}

func connect(cfg worker.Config, log *zap.Logger) (*conns, error) {
	nc, err := conn.NATS(cfg.NATSURL, "refonte-worker", log)
	if err != nil {
		return nil, err
	}
	// The intake stages look up profiles beside the delivery slots: a few more connections.
	rdb, err := conn.Redis(cfg.RedisURL, cfg.Concurrency+16)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &conns{nc: nc, rdb: rdb}, nil
}

func (c *conns) close() {
	_ = c.rdb.Close()
	c.nc.Close()
}

// build sets up the stream and consumer and assembles the worker and its collaborators.
func build(ctx context.Context, cfg worker.Config, c *conns, reg *prometheus.Registry, log *zap.Logger) (*worker.Worker, error) {
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	consumer, err := worker.SetupConsumer(ctx, js, cfg, log)
	if err != nil {
		return nil, err
	}
	profiles := customer.NewCache(customer.NewStore(c.rdb, cfg.RedisPrefix), cfg.ProfileCacheTTL)
	if _, err := c.nc.Subscribe(stream.ProfileChanged, func(m *nats.Msg) { profiles.Invalidate(string(m.Data)) }); err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", stream.ProfileChanged, err)
	}
	transports, err := worker.NewTransports(cfg)
	if err != nil {
		return nil, err
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), version.Collector(),
		worker.NewConsumerCollector(consumer))
	return worker.New(cfg, worker.Deps{
		Consumer:   consumer,
		Profiles:   profiles,
		Status:     status.NewStore(c.rdb, cfg.RedisPrefix, cfg.Retention),
		Invalid:    quarantine.NewStore(c.rdb, cfg.RedisPrefix, 0),
		Transports: transports,
		Log:        log,
		Metrics:    worker.NewMetrics(reg),
		Endpoints:  endpoint.NewStore(c.rdb, cfg.RedisPrefix),
		Alerts:     worker.AlertMailer(transports),
	})
}

// serveOps serves /healthz, /readyz, /metrics, /hosts (the busiest endpoint hosts) and, when
// enabled, pprof on METRICS_ADDR; the returned function stops it.
func serveOps(cfg worker.Config, c *conns, reg *prometheus.Registry, w *worker.Worker, log *zap.Logger) (stop func()) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", health.Live)
	mux.Handle("GET /readyz", health.Ready(map[string]health.Check{"nats": health.NATS(c.nc), "redis": health.Redis(c.rdb)}))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /hosts", w.HostsHandler())
	if cfg.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Addr: cfg.MetricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	return func() { _ = srv.Close() }
}
