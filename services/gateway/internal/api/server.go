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
		MaxHeaderBytes:    serverMaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
}

// serverMaxHeaderBytes is net/http's own bound (its default), above which it answers 431 in
// plain text and closes the connection. Below it, limitHeaders refuses anything over
// maxHeaderBytes with the API's JSON error.
const serverMaxHeaderBytes = 1 << 20
