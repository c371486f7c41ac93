// Command worker delivers task-completion callbacks: it pulls from the shared JetStream consumer
// and POSTs (or emails) each callback, retrying on the contract's schedule. Configuration is read
// from the environment (see internal/worker/config.go and the README).
package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/conn"
	"refonte.ai/callbacks/pkg/customer"
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

func run(ctx context.Context) error {
	cfg, err := worker.LoadConfig(env.New())
	if err != nil {
		return err
	}
	log, flush, err := service.Start(ctx, "worker", cfg.Shared)
	if err != nil {
		return err
	}
	defer flush()

	nc, err := conn.NATS(cfg.NATSURL, "refonte-worker", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	rdb, err := conn.Redis(cfg.RedisURL, cfg.Concurrency+16)
	if err != nil {
		return err
	}
	defer rdb.Close()

	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	consumer, err := worker.SetupConsumer(ctx, js, cfg, log)
	if err != nil {
		return err
	}

	profiles := customer.NewCache(customer.NewStore(rdb, cfg.RedisPrefix), cfg.ProfileCacheTTL)
	if _, err := nc.Subscribe(stream.ProfileChanged, func(m *nats.Msg) { profiles.Invalidate(string(m.Data)) }); err != nil {
		return err
	}
	statuses := status.NewStore(rdb, cfg.RedisPrefix, cfg.Retention)

	transports, err := worker.NewTransports(cfg)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		worker.NewConsumerCollector(consumer), version.Collector())
	w, err := worker.New(cfg, worker.Deps{
		Consumer:   consumer,
		Profiles:   profiles,
		Status:     statuses,
		Invalid:    quarantine.NewStore(rdb, cfg.RedisPrefix, 0),
		Transports: transports,
		Log:        log,
		Metrics:    worker.NewMetrics(reg),
	})
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", health.Live)
	mux.Handle("GET /readyz", health.Ready(map[string]health.Check{"nats": health.NATS(nc), "redis": health.Redis(rdb)}))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
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
	defer srv.Close()

	log.Info("worker started", zap.Int("concurrency", cfg.Concurrency), zap.String("consumer", cfg.Consumer),
		zap.String("metrics_addr", cfg.MetricsAddr))
	err = w.Run(ctx)
	log.Info("worker stopped")
	return err
}
