// Command gateway is the HTTP API that customers and operators use (docs/api.md): profiles and
// keys, task status with its attempt log, and resends. Configuration is read from the
// environment (see internal/api/config.go and docs/operations.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
	"refonte.ai/callbacks/services/gateway/internal/api"
	"refonte.ai/callbacks/services/gateway/internal/recovery"
)

func main() { service.Main("gateway", run) }

// run reads the configuration, connects, builds the API and serves it until ctx ends.
func run(ctx context.Context) error {
	cfg, err := api.LoadConfig(env.New())
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log, flush, err := service.Start(ctx, "gateway", cfg.Shared)
	if err != nil {
		return err
	}
	defer flush()

	c, err := connect(cfg, log)
	if err != nil {
		return err
	}
	defer c.close()
	pub := startPublisher(ctx, c.js, cfg.Stream, log)
	a, err := newAPI(cfg, c, pub, log)
	if err != nil {
		return fmt.Errorf("build the API: %w", err)
	}
	return serve(ctx, cfg, a, log, c.nc)
}

// connections are the gateway's clients of NATS and Redis.
type connections struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	rdb redis.UniversalClient
}

func connect(cfg api.Config, log *zap.Logger) (*connections, error) {
	nc, err := conn.NATS(cfg.NATSURL, "refonte-gateway", log)
	if err != nil {
		return nil, err
	}
	rdb, err := conn.Redis(cfg.RedisURL, 0)
	if err != nil {
		nc.Close()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		_ = rdb.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &connections{nc: nc, js: js, rdb: rdb}, nil
}

func (c *connections) close() {
	_ = c.rdb.Close()
	c.nc.Close()
}

// newAPI wires the stores, the publisher and the metrics into the API.
func newAPI(cfg api.Config, c *connections, pub *lazyPublisher, log *zap.Logger) (*api.API, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		version.Collector())
	statuses := status.NewStore(c.rdb, cfg.RedisPrefix, cfg.Retention)
	return api.New(cfg, api.Deps{
		Customers:  customer.NewStore(c.rdb, cfg.RedisPrefix),
		Status:     statuses,
		Resender:   pub,
		Originals:  stream.NewOriginals(c.js, cfg.Stream.Name),
		Announcer:  api.NATSAnnouncer{Conn: c.nc},
		Checks:     map[string]health.Check{"nats": health.NATS(c.nc), "redis": health.Redis(c.rdb), "stream": pub.Ready},
		Log:        log,
		Registry:   reg,
		Recoveries: recovery.NewStore(c.rdb, cfg.RedisPrefix, statuses, cfg.Retention),
		Invalid:    quarantine.NewStore(c.rdb, cfg.RedisPrefix, 0),
		Replayer:   pub,
		Limits:     api.NewSharedLimits(c.rdb, cfg.RedisPrefix),
		Endpoints:  endpoint.NewStore(c.rdb, cfg.RedisPrefix),
	})
}

// serve runs the HTTP server and the API's background work (recoveries) until ctx ends, then
// lets requests in flight finish and hands running recoveries on to the next gateway.
func serve(ctx context.Context, cfg api.Config, a *api.API, log *zap.Logger, nc *nats.Conn) error {
	background := make(chan error, 1)
	go func() { background <- a.Run(ctx) }()
	srv := api.NewServer(cfg, a.Handler(), log)
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	log.Info("gateway started", zap.String("addr", cfg.Addr), zap.Bool("admin_api", cfg.AdminToken != ""))

	select {
	case err := <-served:
		return fmt.Errorf("serve %s: %w", cfg.Addr, err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing requests in flight")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", cfg.Addr, err)
	}
	waitBackground(shutdownCtx, background, log)
	// Resends were acknowledged by JetStream and announcements flushed before each answer; this
	// only bounds the wait for anything a client abandoned mid-request.
	_ = nc.FlushTimeout(2 * time.Second)
	log.Info("gateway stopped")
	return nil
}

func waitBackground(ctx context.Context, background <-chan error, log *zap.Logger) {
	select {
	case err := <-background:
		if err != nil {
			log.Warn("background work stopped with an error", zap.Error(err))
		}
	case <-ctx.Done():
		log.Warn("background work did not stop in time")
	}
}
