// Package health serves /healthz and /readyz: liveness says the process runs, readiness that
// every dependency answers.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// Check is one dependency's probe.
type Check func(ctx context.Context) error

// NATS is ready while the connection is up.
func NATS(nc *nats.Conn) Check {
	return func(context.Context) error {
		if !nc.IsConnected() {
			return errors.New("not connected: " + nc.Status().String())
		}
		return nil
	}
}

// Redis is ready while PING answers.
func Redis(rdb redis.UniversalClient) Check {
	return func(ctx context.Context) error { return rdb.Ping(ctx).Err() }
}

// Live answers 200 while the process can serve HTTP at all.
func Live(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ok"}`))
}

// Ready answers 200 when every check passes and 503 with the failures otherwise.
func Ready(checks map[string]Check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		result := map[string]string{}
		code := http.StatusOK
		for name, check := range checks {
			if err := check(ctx); err != nil {
				result[name] = err.Error()
				code = http.StatusServiceUnavailable
			} else {
				result[name] = "ok"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(result)
	}
}
