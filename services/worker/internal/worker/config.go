package worker

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"refonte.ai/callbacks/pkg/config"
	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/schedule"
	"refonte.ai/callbacks/pkg/stream"
)

// Config is everything a worker process reads from its environment (docs/operations.md, "Configuration"): the settings every service
// shares (NATS, Redis, stream, logging, tracing) and the worker's own.
type Config struct {
	config.Shared

	MetricsAddr string
	// Profiling serves net/http/pprof on MetricsAddr: off by default, since profiles show the
	// process's internals to whoever can reach that address.
	Profiling bool

	Consumer      string
	MaxAckPending int
	// AckWait is how long the server waits without hearing of a message before it hands it to
	// another worker. Held messages are kept alive with InProgress, so it need not cover an
	// attempt: it is how soon a dead worker's messages come back.
	AckWait time.Duration

	// Concurrency is the number of delivery slots: deliveries in flight in this process.
	Concurrency int
	// HostConcurrency is the ceiling of one host's adaptive limit: a fast, healthy host climbs
	// to it; one that times out or fails falls toward a single delivery. By default it is
	// Concurrency, so one busy host can use every slot when nothing else is waiting.
	HostConcurrency int
	// MaxHeld and MaxHeldBytes bound the window: the messages this process holds, queued for
	// their host or being delivered. HostQueue bounds one host's local queue; a message for a
	// host whose queue is full is deferred without using an attempt.
	MaxHeld      int
	MaxHeldBytes int
	HostQueue    int

	// EventMaxBytes is the largest event delivered (EVENT_MAX_BYTES); a larger one is refused
	// as too large and kept with the invalid events.
	EventMaxBytes int

	Timeout      time.Duration
	Schedule     schedule.Schedule
	AllowPrivate bool
	AllowedCIDRs []netip.Prefix
	Ports        []uint16

	SMTPAddr     string
	SMTPFrom     string
	SMTPUser     string
	SMTPPassword string

	ProfileCacheTTL time.Duration
	ShutdownGrace   time.Duration

	// AlertAfter consecutive failed attempts to one endpoint mail the customer's alert_email;
	// 0 turns alerts off. AlertInterval is the least time between two alerts for an endpoint.
	AlertAfter    int
	AlertInterval time.Duration
	// AutoPauseAfter of uninterrupted failure pauses an endpoint, for customers who opted in;
	// 0: never.
	AutoPauseAfter time.Duration
	// PausedRecheck is the longest a callback held for a paused endpoint waits before it is
	// looked at again (a short pause is rechecked sooner): the cost of holding callbacks against
	// how soon they flow after a resume.
	PausedRecheck time.Duration
	// PausedMaxHold is the longest a callback is held for a paused endpoint, counted from its
	// publication; then it ends as failed. By default an hour short of the stream's retention,
	// so that no held callback is ever dropped unrecorded.
	PausedMaxHold time.Duration
}

// gcPercent is the worker's garbage-collection target when GOGC is unset. A delivery allocates
// ~10 KB that dies within milliseconds over a small live heap, so collection ran several times a
// second for ~13% of the CPU at full speed; twice the heap growth halves that for ~20 MB more RSS.
const gcPercent = 200

// LoadConfig reads the configuration, applies defaults and validates it.
func LoadConfig(r *env.Reader) (Config, error) {
	c := Config{
		Shared:      config.Load(r, config.Defaults{GCPercent: gcPercent}),
		MetricsAddr: r.String("METRICS_ADDR", "127.0.0.1:9091"),
		Profiling:   r.Bool("PPROF", false),

		Consumer:      r.String("NATS_CONSUMER", "callback-workers"),
		MaxAckPending: r.Int("NATS_MAX_ACK_PENDING", stream.DefaultMaxAckPending),

		Concurrency:  r.Int("WORKER_CONCURRENCY", 256),
		MaxHeld:      r.Int("WORKER_MAX_HELD", 8192),
		MaxHeldBytes: r.Int("WORKER_MAX_HELD_BYTES", 64<<20),
		HostQueue:    r.Int("WORKER_HOST_QUEUE", 4096),

		EventMaxBytes: r.Int("EVENT_MAX_BYTES", event.DefaultMaxSize),

		Timeout:      r.Duration("CALLBACK_TIMEOUT", 30*time.Second),
		AllowPrivate: r.Bool("CALLBACK_ALLOW_PRIVATE", false),

		SMTPAddr:     r.String("SMTP_ADDR", ""),
		SMTPFrom:     r.String("SMTP_FROM", "hello@refonte.ai"),
		SMTPUser:     r.String("SMTP_USERNAME", ""),
		SMTPPassword: r.String("SMTP_PASSWORD", ""),

		ProfileCacheTTL: r.Duration("PROFILE_CACHE_TTL", 5*time.Second),
		ShutdownGrace:   r.Duration("SHUTDOWN_GRACE", 0),

		AlertAfter:     r.Int("ALERT_AFTER_FAILURES", 20),
		AlertInterval:  r.Duration("ALERT_INTERVAL", 6*time.Hour),
		AutoPauseAfter: r.Duration("ALERT_AUTO_PAUSE_AFTER", 0),
		PausedRecheck:  r.Duration("ENDPOINT_PAUSED_RECHECK", 15*time.Minute),
		PausedMaxHold:  r.Duration("ENDPOINT_PAUSED_MAX_HOLD", 0),
	}
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
	c.HostConcurrency = r.Int("WORKER_HOST_CONCURRENCY", 0)
	c.AckWait = r.Duration("NATS_ACK_WAIT", 0)
	if err := r.Err(); err != nil {
		return Config{}, err
	}
	c.setDefaults()
	return c, c.Validate()
}

// setDefaults derives what was left unset: a host may use every slot, a dead worker's messages
// come back after 30s, and shutdown waits out one attempt.
func (c *Config) setDefaults() {
	if c.HostConcurrency == 0 {
		c.HostConcurrency = c.Concurrency
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = c.Timeout + 10*time.Second
	}
	if c.PausedMaxHold == 0 {
		c.PausedMaxHold = c.Stream.MaxAge - time.Hour
	}
}

// Validate reports every value that parsed but makes no sense.
func (c Config) Validate() error {
	errs := []error{c.Shared.Validate()}
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Concurrency < 1 || c.Concurrency > 100_000 {
		fail("WORKER_CONCURRENCY=%d: want 1 to 100000", c.Concurrency)
	}
	if c.HostConcurrency < 1 {
		fail("WORKER_HOST_CONCURRENCY=%d: want at least 1", c.HostConcurrency)
	}
	if c.Timeout < 100*time.Millisecond || c.Timeout > 5*time.Minute {
		fail("CALLBACK_TIMEOUT=%s: want 100ms to 5m", c.Timeout)
	}
	if c.MaxHeld < c.Concurrency {
		fail("WORKER_MAX_HELD=%d: want at least WORKER_CONCURRENCY (%d)", c.MaxHeld, c.Concurrency)
	}
	if c.MaxHeldBytes < 1<<20 {
		fail("WORKER_MAX_HELD_BYTES=%d: want at least 1048576", c.MaxHeldBytes)
	}
	if c.EventMaxBytes < 1024 || c.EventMaxBytes > event.MaxSizeLimit {
		fail("EVENT_MAX_BYTES=%d: want 1024 to %d", c.EventMaxBytes, event.MaxSizeLimit)
	} else if c.EventMaxBytes > c.MaxHeldBytes {
		fail("EVENT_MAX_BYTES=%d: want at most WORKER_MAX_HELD_BYTES (%d), so that the window holds an event of that size", c.EventMaxBytes, c.MaxHeldBytes)
	}
	if c.HostQueue < 1 || c.HostQueue > c.MaxHeld {
		fail("WORKER_HOST_QUEUE=%d: want 1 to WORKER_MAX_HELD (%d)", c.HostQueue, c.MaxHeld)
	}
	if c.MaxAckPending < c.MaxHeld {
		fail("NATS_MAX_ACK_PENDING=%d: want at least WORKER_MAX_HELD (%d)", c.MaxAckPending, c.MaxHeld)
	}
	if c.AckWait < time.Second {
		// Heartbeats go out every fifth of it; under a second they would be most of the traffic.
		fail("NATS_ACK_WAIT=%s: want at least 1s", c.AckWait)
	}
	if c.Consumer == "" {
		fail("NATS_CONSUMER is empty")
	}
	if c.AlertAfter < 0 || c.AlertAfter > 1_000_000 {
		fail("ALERT_AFTER_FAILURES=%d: want 0 (off) to 1000000", c.AlertAfter)
	}
	if c.AlertInterval < time.Second {
		fail("ALERT_INTERVAL=%s: want at least 1s", c.AlertInterval)
	}
	if c.AutoPauseAfter < 0 {
		fail("ALERT_AUTO_PAUSE_AFTER=%s: want 0 (off) or a duration", c.AutoPauseAfter)
	}
	if c.PausedRecheck < minPausedDefer || c.PausedRecheck > time.Hour {
		fail("ENDPOINT_PAUSED_RECHECK=%s: want %s to 1h", c.PausedRecheck, minPausedDefer)
	}
	// A held callback is looked at again at most PausedRecheck (+10%) after its deadline has
	// not yet come: the deadline must leave that much of the stream's retention.
	if limit := c.Stream.MaxAge - c.PausedRecheck*11/10; c.PausedMaxHold <= 0 || c.PausedMaxHold > limit {
		fail("ENDPOINT_PAUSED_MAX_HOLD=%s: want more than 0 and at most %s (NATS_STREAM_MAX_AGE less ENDPOINT_PAUSED_RECHECK and 10%%)", c.PausedMaxHold, limit)
	}
	return errors.Join(errs...)
}
