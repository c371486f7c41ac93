package api

import (
	"fmt"
	"net"
	"time"

	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
)

// Config is everything the gateway reads from its environment (docs/operations.md, "Configuration").
type Config struct {
	Addr string
	// AdminToken guards the admin API; empty turns the admin API off (its routes answer 404).
	AdminToken  string
	NATSURL     string
	RedisURL    string
	RedisPrefix string
	LogFormat   string
	LogLevel    string

	// Stream must be the workers' stream configuration: the gateway ensures the stream too
	// (it publishes resends), and two services ensuring different settings would fight.
	Stream    stream.Config
	Retention time.Duration

	// SendCallbackPerMinute and SendCallbackBurst bound each customer's send-callback calls:
	// every resend is a request to the customer's endpoint, so an unbounded loop in a client
	// would turn the platform into a traffic amplifier.
	SendCallbackPerMinute int
	SendCallbackBurst     int

	// TestCallback configures the dashboard's test callbacks (testcallback.go).
	TestCallback TestCallbackConfig
	// Recovery configures POST /v1/callbacks/recover (recover.go).
	Recovery RecoveryConfig

	// MaxBodyBytes bounds a request body; the largest legitimate one is a URL of 2 KiB.
	MaxBodyBytes int64
	// ShutdownTimeout is how long requests in flight get to finish after SIGTERM.
	ShutdownTimeout time.Duration
}

// LoadConfig reads the configuration, applies defaults and validates it.
func LoadConfig(r *env.Reader) (Config, error) {
	c := Config{
		Addr:        r.String("GATEWAY_ADDR", "127.0.0.1:8080"),
		AdminToken:  r.String("ADMIN_TOKEN", ""),
		NATSURL:     r.String("NATS_URL", "nats://127.0.0.1:4222"),
		RedisURL:    r.String("REDIS_URL", "redis://127.0.0.1:6379/0"),
		RedisPrefix: r.String("REDIS_PREFIX", "rc:"),
		LogFormat:   r.String("LOG_FORMAT", "json"),
		LogLevel:    r.String("LOG_LEVEL", "info"),

		Retention: r.Duration("STATUS_RETENTION", status.DefaultRetention),

		SendCallbackPerMinute: r.Int("SEND_CALLBACK_RATE_PER_MINUTE", 60),
		SendCallbackBurst:     r.Int("SEND_CALLBACK_BURST", 10),

		MaxBodyBytes:    int64(r.Int("GATEWAY_MAX_BODY_BYTES", 64<<10)),
		ShutdownTimeout: r.Duration("SHUTDOWN_TIMEOUT", 15*time.Second),
	}
	c.TestCallback = loadTestCallbackConfig(r)
	c.Recovery = loadRecoveryConfig(r)
	c.Stream = stream.DefaultConfig()
	c.Stream.Name = r.String("NATS_STREAM", c.Stream.Name)
	c.Stream.Replicas = r.Int("NATS_REPLICAS", c.Stream.Replicas)
	c.Stream.MaxAge = r.Duration("NATS_STREAM_MAX_AGE", c.Stream.MaxAge)
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// MinAdminTokenLength keeps a guessable admin token out of production.
const MinAdminTokenLength = 16

// Validate checks values that parsed but make no sense.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("GATEWAY_ADDR=%q: want host:port", c.Addr)
	}
	switch {
	case c.AdminToken != "" && len(c.AdminToken) < MinAdminTokenLength:
		return fmt.Errorf("ADMIN_TOKEN: want at least %d characters (or unset it to turn the admin API off)", MinAdminTokenLength)
	case c.RedisPrefix == "":
		return fmt.Errorf("REDIS_PREFIX is empty")
	case c.Retention < 24*time.Hour:
		return fmt.Errorf("STATUS_RETENTION=%s: want at least 24h", c.Retention)
	case c.SendCallbackPerMinute < 1:
		return fmt.Errorf("SEND_CALLBACK_RATE_PER_MINUTE=%d: want at least 1", c.SendCallbackPerMinute)
	case c.SendCallbackBurst < 1:
		return fmt.Errorf("SEND_CALLBACK_BURST=%d: want at least 1", c.SendCallbackBurst)
	case c.MaxBodyBytes < 4<<10:
		return fmt.Errorf("GATEWAY_MAX_BODY_BYTES=%d: want at least 4096", c.MaxBodyBytes)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("SHUTDOWN_TIMEOUT=%s: want a positive duration", c.ShutdownTimeout)
	}
	if err := c.TestCallback.validate(); err != nil {
		return err
	}
	if err := c.Recovery.validate(); err != nil {
		return err
	}
	return c.Stream.Validate()
}
