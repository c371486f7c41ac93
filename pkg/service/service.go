// Package service holds the start-up every binary shares, so each main.go only wires its own
// pieces: a context that SIGINT and SIGTERM cancel, the exit code, the logger and tracing.
package service

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/logging"
	"refonte.ai/callbacks/pkg/tracing"
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

// Observe builds the service's logger and starts tracing; flush writes out what both hold and
// must be deferred by the caller.
func Observe(ctx context.Context, name, logFormat, logLevel string) (log *zap.Logger, flush func(), err error) {
	log, err = logging.New(name, logFormat, logLevel)
	if err != nil {
		return nil, nil, err
	}
	stopTracing, err := tracing.Setup(ctx, "refonte-"+name)
	if err != nil {
		return nil, nil, err
	}
	return log, func() {
		_ = stopTracing(context.Background())
		_ = log.Sync()
	}, nil
}
