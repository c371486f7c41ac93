// Package config reads the settings every service shares — where NATS and Redis are, the
// stream's layout, logging, status retention, tracing and the garbage collector's target — once,
// with one set of defaults and one validation. Each service embeds Shared in its own Config and
// adds its own variables.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"

	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
	"refonte.ai/callbacks/pkg/tracing"
)

// Defaults are the values of shared settings that differ between services.
type Defaults struct {
	// GCPercent is the garbage collector's target when GOGC is unset (the runtime's own
	// default is 100).
	GCPercent int
}

// Shared is what every service reads from the same variables.
type Shared struct {
	NATSURL     string // NATS_URL, comma-separated servers
	RedisURL    string // REDIS_URL
	RedisPrefix string // REDIS_PREFIX, put before every key, so environments can share a Redis
	LogFormat   string // LOG_FORMAT: json or console
	LogLevel    string // LOG_LEVEL: debug, info, warn, error

	// Retention is how long a task's status and attempt log are kept (STATUS_RETENTION).
	Retention time.Duration
	// Stream is the stream's layout (NATS_STREAM, NATS_REPLICAS, NATS_STREAM_MAX_AGE). The
	// worker applies it; other services only compare it with the stream they find.
	Stream stream.Config
	// Tracing turns the OTLP exporter on (OTEL_EXPORTER_OTLP_ENDPOINT or
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; the exporter reads the other OTEL_* variables itself).
	Tracing tracing.Config
	// GCPercent is the garbage collector's target (GOGC; "off" is -1), applied by the service
	// at start.
	GCPercent int
}

// Load reads the shared variables through r (which collects parse errors), then fills what is
// unset from d and the project's defaults. Call Validate once r.Err() is nil.
func Load(r *env.Reader, d Defaults) Shared {
	s := Shared{
		NATSURL:     r.String("NATS_URL", ""),
		RedisURL:    r.String("REDIS_URL", ""),
		RedisPrefix: r.String("REDIS_PREFIX", ""),
		LogFormat:   r.String("LOG_FORMAT", ""),
		LogLevel:    r.String("LOG_LEVEL", ""),
		Retention:   r.Duration("STATUS_RETENTION", 0),
		Stream: stream.Config{
			Name:     r.String("NATS_STREAM", ""),
			Replicas: r.Int("NATS_REPLICAS", 0),
			MaxAge:   r.Duration("NATS_STREAM_MAX_AGE", 0),
		},
		Tracing: tracing.Config{
			Endpoint:       r.String("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
			TracesEndpoint: r.String("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""),
		},
		GCPercent: readGCPercent(r, d.GCPercent),
	}
	s.setDefaults()
	return s
}

// readGCPercent reads GOGC as the runtime does: a percentage, or "off".
func readGCPercent(r *env.Reader, def int) int {
	v := r.String("GOGC", "")
	if v == "" {
		if def == 0 {
			return 100
		}
		return def
	}
	if strings.EqualFold(v, "off") {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.Fail("GOGC=%q: not a whole number or off", v)
		return 100
	}
	return n
}

func (s *Shared) setDefaults() {
	if s.NATSURL == "" {
		s.NATSURL = "nats://127.0.0.1:4222"
	}
	if s.RedisURL == "" {
		s.RedisURL = "redis://127.0.0.1:6379/0"
	}
	if s.RedisPrefix == "" {
		s.RedisPrefix = "rc:"
	}
	if s.LogFormat == "" {
		s.LogFormat = "json"
	}
	if s.LogLevel == "" {
		s.LogLevel = "info"
	}
	if s.Retention == 0 {
		s.Retention = status.DefaultRetention
	}
	def := stream.DefaultConfig()
	if s.Stream.Name == "" {
		s.Stream.Name = def.Name
	}
	if s.Stream.Replicas == 0 {
		s.Stream.Replicas = def.Replicas
	}
	if s.Stream.MaxAge == 0 {
		// The stream keeps each task's event for as long as its status lives (see
		// StreamCoversRetention); with the default retention this is stream.DefaultMaxAge.
		s.Stream.MaxAge = s.Retention + def.MaxAge - status.DefaultRetention
	}
	if s.Stream.Duplicates == 0 {
		s.Stream.Duplicates = def.Duplicates
	}
	if s.Stream.MaxBytes == 0 {
		s.Stream.MaxBytes = def.MaxBytes
	}
}

// Validate reports every shared setting that parsed but makes no sense.
func (s Shared) Validate() error {
	var errs []error
	if strings.TrimSpace(s.NATSURL) == "" {
		errs = append(errs, errors.New("NATS_URL is empty"))
	}
	if err := checkRedisURL(s.RedisURL); err != nil {
		errs = append(errs, fmt.Errorf("REDIS_URL: %w", err))
	}
	if s.RedisPrefix == "" {
		errs = append(errs, errors.New("REDIS_PREFIX is empty"))
	}
	if s.LogFormat != "json" && s.LogFormat != "console" {
		errs = append(errs, fmt.Errorf("LOG_FORMAT=%q: want json or console", s.LogFormat))
	}
	if _, err := zapcore.ParseLevel(s.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", s.LogLevel))
	}
	if s.Retention < 24*time.Hour {
		errs = append(errs, fmt.Errorf("STATUS_RETENTION=%s: want at least 24h", s.Retention))
	}
	if s.GCPercent < -1 {
		errs = append(errs, fmt.Errorf("GOGC=%d: want a percentage or off", s.GCPercent))
	}
	if err := s.Stream.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// minStreamMargin is how much longer than the status retention the stream must keep a message:
// a status is renewed by each attempt of its delivery, up to a day after the message was
// published (the retry schedule), and lives the retention from then.
const minStreamMargin = 25 * time.Hour

// Warnings lists settings that are valid but cost something: a stream that drops messages before
// their statuses expire leaves tasks whose status is readable but whose event (GET /v1/task, the
// dashboard's body, resend) is gone.
func (s Shared) Warnings() []string {
	var out []string
	if s.Stream.MaxAge < s.Retention+minStreamMargin {
		out = append(out, fmt.Sprintf("NATS_STREAM_MAX_AGE=%s is shorter than STATUS_RETENTION=%s plus %s: "+
			"tasks older than that keep their status, but their event can no longer be read or resent",
			s.Stream.MaxAge, s.Retention, minStreamMargin))
	}
	return out
}

// checkRedisURL accepts the forms pkg/conn connects to: redis:// and rediss:// (standalone),
// redis-cluster:// and redis-sentinel:// (whose own checks run when conn builds the client).
func checkRedisURL(raw string) error {
	if strings.HasPrefix(raw, "redis-cluster://") || strings.HasPrefix(raw, "redis-sentinel://") {
		_, err := url.Parse(raw)
		return err
	}
	_, err := redis.ParseURL(raw)
	return err
}
