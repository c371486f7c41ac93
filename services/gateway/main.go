// Command gateway is the HTTP API that customers and operators use (CONTRACT §4): profiles and
// keys, task status with its attempt log, and resends. Configuration is read from the
// environment (see internal/api/config.go and README.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/conn"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/health"
	"refonte.ai/callbacks/pkg/quarantine"
	"refonte.ai/callbacks/pkg/service"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/version"
	"refonte.ai/callbacks/services/gateway/internal/api"
	"refonte.ai/callbacks/services/gateway/internal/recovery"
)

func main() { service.Main("gateway", run) }

func run(ctx context.Context) error {
	cfg, err := api.LoadConfig(env.New())
	if err != nil {
		return err
	}
	log, flush, err := service.Start(ctx, "gateway", cfg.Shared)
	if err != nil {
		return err
	}
	defer flush()

	nc, err := conn.NATS(cfg.NATSURL, "refonte-gateway", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	rdb, err := conn.Redis(cfg.RedisURL, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pub := startPublisher(ctx, js, cfg.Stream, log)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		version.Collector())
	statuses := status.NewStore(rdb, cfg.RedisPrefix, cfg.Retention)
	a, err := api.New(cfg, api.Deps{
		Customers:  customer.NewStore(rdb, cfg.RedisPrefix),
		Status:     statuses,
		Resender:   pub,
		Announcer:  api.NATSAnnouncer{Conn: nc},
		Checks:     map[string]health.Check{"nats": health.NATS(nc), "redis": health.Redis(rdb), "stream": pub.Ready},
		Log:        log,
		Registry:   reg,
		Recoveries: recovery.NewStore(rdb, cfg.RedisPrefix, statuses, cfg.Retention),
		Invalid:    quarantine.NewStore(rdb, cfg.RedisPrefix, 0),
		Replayer:   pub,
	})
	if err != nil {
		return err
	}
	// Background work (recoveries) lives as long as ctx; on SIGTERM it hands running
	// recoveries on to the next gateway.
	background := make(chan error, 1)
	go func() { background <- a.Run(ctx) }()

	srv := api.NewServer(cfg, a.Handler(), log)
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	log.Info("gateway started", zap.String("addr", cfg.Addr), zap.Bool("admin_api", cfg.AdminToken != ""))

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing requests in flight")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	select {
	case err := <-background:
		if err != nil {
			log.Warn("background work stopped with an error", zap.Error(err))
		}
	case <-shutdownCtx.Done():
		log.Warn("background work did not stop in time")
	}
	// Resends were acknowledged by JetStream and announcements flushed before each answer; this
	// only bounds the wait for anything a client abandoned mid-request.
	_ = nc.FlushTimeout(2 * time.Second)
	log.Info("gateway stopped")
	return nil
}
