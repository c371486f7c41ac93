package api

import (
	"net/http"
	"time"

	"go.uber.org/zap"
)

// NewServer wraps h in an http.Server with the timeouts a public endpoint needs: a slow or
// stalled client cannot hold a connection (or a goroutine) for long.
func NewServer(cfg Config, h http.Handler, log *zap.Logger) *http.Server {
	return &http.Server{
		Addr:              cfg.Addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
}
