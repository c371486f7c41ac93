// Package service holds the start-up every binary shares, so each main.go only wires its own
// pieces: a context that SIGINT and SIGTERM cancel, the exit code, the garbage collector's
// target, the logger, tracing and the build's version.
package service

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/config"
	"refonte.ai/callbacks/pkg/logging"
	"refonte.ai/callbacks/pkg/tracing"
	"refonte.ai/callbacks/pkg/version"
)

// Main runs run with a context that SIGINT or SIGTERM cancels, and exits 1 when it fails.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Start applies the shared settings a process needs before anything else — the garbage
// collector's target, the logger, tracing — and logs which build starts. flush writes out what
// the logger and tracing hold and must be deferred by the caller.
func Start(ctx context.Context, name string, cfg config.Shared) (log *zap.Logger, flush func(), err error) {
	debug.SetGCPercent(cfg.GCPercent)
	log, err = logging.New(name, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return nil, nil, fmt.Errorf("logger: %w", err)
	}
	stopTracing, err := tracing.Setup(ctx, "refonte-"+name, cfg.Tracing)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	v := version.Get()
	log.Info("starting", zap.String("version", v.Version), zap.String("revision", v.Revision),
		zap.String("go_version", v.GoVersion), zap.Int("gogc", cfg.GCPercent))
	for _, w := range cfg.Warnings() {
		log.Warn("configuration: " + w)
	}
	return log, func() {
		_ = stopTracing(context.Background())
		_ = log.Sync()
	}, nil
}
