package worker

import (
	"fmt"
	"net/netip"
	"time"

	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/schedule"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
)

// Version is sent in the User-Agent.
var Version = "0.1.0"

// Config is everything a worker process reads from its environment (docs/operations.md, "Configuration").
type Config struct {
	NATSURL     string
	RedisURL    string
	RedisPrefix string
	MetricsAddr string
	// Profiling serves net/http/pprof on MetricsAddr: off by default, since profiles show the
	// process's internals to whoever can reach that address.
	Profiling bool
	LogFormat string
	LogLevel  string

	Stream        stream.Config
	Consumer      string
	MaxAckPending int
	// AckWait is how long the server waits for a worker's verdict before it hands the message
	// to another worker: one whole attempt plus room to record it.
	AckWait time.Duration

	// Concurrency is the number of deliveries in flight in this process; it is also the most
	// messages this process ever holds, so nothing waits in a buffer while its AckWait runs.
	Concurrency int
	// HostConcurrency caps deliveries in flight to one host, so a slow endpoint cannot take
	// every slot. Messages over the cap are deferred briefly without using up an attempt.
	HostConcurrency int

	Timeout      time.Duration
	Schedule     schedule.Schedule
	AllowPrivate bool
	AllowedCIDRs []netip.Prefix
	Ports        []uint16

	SMTPAddr     string
	SMTPFrom     string
	SMTPUser     string
	SMTPPassword string

	Retention       time.Duration
	ProfileCacheTTL time.Duration
	ShutdownGrace   time.Duration
}

// LoadConfig reads the configuration, applies defaults and validates it.
func LoadConfig(r *env.Reader) (Config, error) {
	c := Config{
		NATSURL:     r.String("NATS_URL", "nats://127.0.0.1:4222"),
		RedisURL:    r.String("REDIS_URL", "redis://127.0.0.1:6379/0"),
		RedisPrefix: r.String("REDIS_PREFIX", "rc:"),
		MetricsAddr: r.String("METRICS_ADDR", "127.0.0.1:9091"),
		Profiling:   r.Bool("PPROF", false),
		LogFormat:   r.String("LOG_FORMAT", "json"),
		LogLevel:    r.String("LOG_LEVEL", "info"),

		Consumer:      r.String("NATS_CONSUMER", "callback-workers"),
		MaxAckPending: r.Int("NATS_MAX_ACK_PENDING", stream.DefaultMaxAckPending),

		Concurrency:     r.Int("WORKER_CONCURRENCY", 256),
		HostConcurrency: r.Int("WORKER_HOST_CONCURRENCY", 32),

		Timeout:      r.Duration("CALLBACK_TIMEOUT", 30*time.Second),
		AllowPrivate: r.Bool("CALLBACK_ALLOW_PRIVATE", false),

		SMTPAddr:     r.String("SMTP_ADDR", ""),
		SMTPFrom:     r.String("SMTP_FROM", "hello@refonte.ai"),
		SMTPUser:     r.String("SMTP_USERNAME", ""),
		SMTPPassword: r.String("SMTP_PASSWORD", ""),

		Retention:       r.Duration("STATUS_RETENTION", status.DefaultRetention),
		ProfileCacheTTL: r.Duration("PROFILE_CACHE_TTL", 5*time.Second),
		ShutdownGrace:   r.Duration("SHUTDOWN_GRACE", 0),
	}
	c.Stream = stream.DefaultConfig()
	c.Stream.Name = r.String("NATS_STREAM", c.Stream.Name)
	c.Stream.Replicas = r.Int("NATS_REPLICAS", c.Stream.Replicas)
	c.Stream.MaxAge = r.Duration("NATS_STREAM_MAX_AGE", c.Stream.MaxAge)

	c.Schedule = schedule.Default
	if s := r.String("CALLBACK_RETRY_SCHEDULE", ""); s != "" {
		sch, err := schedule.Parse(s)
		if err != nil {
			r.Fail("CALLBACK_RETRY_SCHEDULE: %v", err)
		} else {
			c.Schedule = sch
		}
	}
	c.AllowedCIDRs = r.Prefixes("CALLBACK_ALLOWED_CIDRS")
	c.Ports = r.Ports("CALLBACK_ALLOWED_PORTS")
	c.AckWait = r.Duration("NATS_ACK_WAIT", c.Timeout+30*time.Second)
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = c.Timeout + 10*time.Second
	}
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// Validate checks values that parsed but make no sense.
func (c Config) Validate() error {
	switch {
	case c.Concurrency < 1 || c.Concurrency > 100_000:
		return fmt.Errorf("WORKER_CONCURRENCY=%d: want 1 to 100000", c.Concurrency)
	case c.HostConcurrency < 1:
		return fmt.Errorf("WORKER_HOST_CONCURRENCY=%d: want at least 1", c.HostConcurrency)
	case c.Timeout < 100*time.Millisecond || c.Timeout > 5*time.Minute:
		return fmt.Errorf("CALLBACK_TIMEOUT=%s: want 100ms to 5m", c.Timeout)
	case c.MaxAckPending < c.Concurrency:
		return fmt.Errorf("NATS_MAX_ACK_PENDING=%d: want at least WORKER_CONCURRENCY", c.MaxAckPending)
	case c.Retention < 24*time.Hour:
		return fmt.Errorf("STATUS_RETENTION=%s: want at least 24h", c.Retention)
	case c.AckWait < c.Timeout+time.Second:
		return fmt.Errorf("NATS_ACK_WAIT=%s: want at least CALLBACK_TIMEOUT plus 1s", c.AckWait)
	case c.Consumer == "":
		return fmt.Errorf("NATS_CONSUMER is empty")
	}
	return c.Stream.Validate()
}
