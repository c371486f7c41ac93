package api

import (
	"errors"
	"fmt"
	"net"
	"time"

	"refonte.ai/callbacks/pkg/config"
	"refonte.ai/callbacks/pkg/env"
)

// Config is everything the gateway reads from its environment (docs/operations.md, "Configuration"): the settings every service
// shares (NATS, Redis, stream, logging, tracing) and the gateway's own. The gateway only compares
// Stream with the stream it finds (the workers own its settings) and warns when they differ.
type Config struct {
	config.Shared

	Addr string
	// AdminToken guards the admin API; empty turns the admin API off (its routes answer 404).
	AdminToken string

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
		Shared:     config.Load(r, config.Defaults{}),
		Addr:       r.String("GATEWAY_ADDR", "127.0.0.1:8080"),
		AdminToken: r.String("ADMIN_TOKEN", ""),

		SendCallbackPerMinute: r.Int("SEND_CALLBACK_RATE_PER_MINUTE", 60),
		SendCallbackBurst:     r.Int("SEND_CALLBACK_BURST", 10),

		MaxBodyBytes:    int64(r.Int("GATEWAY_MAX_BODY_BYTES", 64<<10)),
		ShutdownTimeout: r.Duration("SHUTDOWN_TIMEOUT", 15*time.Second),
	}
	c.TestCallback = loadTestCallbackConfig(r)
	c.Recovery = loadRecoveryConfig(r)
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// MinAdminTokenLength keeps a guessable admin token out of production.
const MinAdminTokenLength = 16

// Validate reports every value that parsed but makes no sense.
func (c Config) Validate() error {
	errs := []error{c.Shared.Validate(), c.TestCallback.validate(), c.Recovery.validate()}
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		fail("GATEWAY_ADDR=%q: want host:port", c.Addr)
	}
	if c.AdminToken != "" && len(c.AdminToken) < MinAdminTokenLength {
		fail("ADMIN_TOKEN: want at least %d characters (or unset it to turn the admin API off)", MinAdminTokenLength)
	}
	if c.SendCallbackPerMinute < 1 {
		fail("SEND_CALLBACK_RATE_PER_MINUTE=%d: want at least 1", c.SendCallbackPerMinute)
	}
	if c.SendCallbackBurst < 1 {
		fail("SEND_CALLBACK_BURST=%d: want at least 1", c.SendCallbackBurst)
	}
	if c.MaxBodyBytes < 4<<10 {
		fail("GATEWAY_MAX_BODY_BYTES=%d: want at least 4096", c.MaxBodyBytes)
	}
	if c.ShutdownTimeout <= 0 {
		fail("SHUTDOWN_TIMEOUT=%s: want a positive duration", c.ShutdownTimeout)
	}
	return errors.Join(errs...)
}
