package config_test

import (
	"strings"
	"testing"
	"time"

	"refonte.ai/callbacks/pkg/config"
	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
)

func TestLoad_defaults_are_valid_and_the_service_picks_its_GOGC(t *testing.T) {
	s := config.Load(env.FromMap(nil), config.Defaults{GCPercent: 200})
	if err := s.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if s.RedisPrefix != "rc:" || s.NATSURL != "nats://127.0.0.1:4222" || s.LogFormat != "json" || s.LogLevel != "info" {
		t.Errorf("defaults: %+v", s)
	}
	if s.Retention != status.DefaultRetention || s.Stream != stream.DefaultConfig() {
		t.Errorf("retention %s, stream %+v", s.Retention, s.Stream)
	}
	if s.GCPercent != 200 {
		t.Errorf("GCPercent = %d, want the service's 200", s.GCPercent)
	}
	if s.Tracing.Enabled() {
		t.Error("tracing is on without an endpoint")
	}
	if got := config.Load(env.FromMap(nil), config.Defaults{}).GCPercent; got != 100 {
		t.Errorf("GCPercent without a service default = %d, want the runtime's 100", got)
	}
}

func TestLoad_reads_every_shared_variable(t *testing.T) {
	r := env.FromMap(map[string]string{
		"NATS_URL": "nats://a:1,nats://b:2", "REDIS_URL": "redis://r:6380/3", "REDIS_PREFIX": "x:",
		"LOG_FORMAT": "console", "LOG_LEVEL": "debug", "STATUS_RETENTION": "48h",
		"NATS_STREAM": "CB", "NATS_REPLICAS": "3", "NATS_STREAM_MAX_AGE": "96h",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces", "GOGC": "off",
	})
	s := config.Load(r, config.Defaults{GCPercent: 200})
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	want := config.Shared{NATSURL: "nats://a:1,nats://b:2", RedisURL: "redis://r:6380/3", RedisPrefix: "x:",
		LogFormat: "console", LogLevel: "debug", Retention: 48 * time.Hour, GCPercent: -1}
	want.Stream = stream.DefaultConfig()
	want.Stream.Name, want.Stream.Replicas, want.Stream.MaxAge = "CB", 3, 96*time.Hour
	want.Tracing.TracesEndpoint = "http://collector:4318/v1/traces"
	if s != want {
		t.Errorf("got  %+v\nwant %+v", s, want)
	}
	if !s.Tracing.Enabled() {
		t.Error("tracing is off with a traces endpoint")
	}
}

func TestValidate_reports_every_problem_at_once(t *testing.T) {
	r := env.FromMap(map[string]string{
		"REDIS_URL": "http://nope", "LOG_FORMAT": "xml", "LOG_LEVEL": "loud",
		"STATUS_RETENTION": "1h", "NATS_REPLICAS": "9", "NATS_STREAM_MAX_AGE": "2h",
	})
	s := config.Load(r, config.Defaults{})
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	err := s.Validate()
	if err == nil {
		t.Fatal("Validate accepted bad settings")
	}
	for _, name := range []string{"REDIS_URL", "LOG_FORMAT", "LOG_LEVEL", "STATUS_RETENTION", "replicas"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
	s.RedisPrefix = ""
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "REDIS_PREFIX") {
		t.Errorf("an empty prefix passed: %v", err)
	}
}

func TestValidate_accepts_every_Redis_URL_form_the_services_connect_to(t *testing.T) {
	for _, u := range []string{"redis://127.0.0.1:6379/2", "rediss://r.example:6380/0",
		"redis-cluster://127.0.0.1:7000?addr=127.0.0.1:7001", "redis-sentinel://127.0.0.1:26379?master=primary"} {
		s := config.Load(env.FromMap(map[string]string{"REDIS_URL": u}), config.Defaults{})
		if err := s.Validate(); err != nil {
			t.Errorf("REDIS_URL=%s: %v", u, err)
		}
	}
}

func TestLoad_refuses_a_GOGC_that_is_not_a_number(t *testing.T) {
	r := env.FromMap(map[string]string{"GOGC": "lots"})
	config.Load(r, config.Defaults{})
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "GOGC") {
		t.Errorf("GOGC=lots: %v", err)
	}
}

// The stream keeps each task's event as long as its status lives: its default follows the
// retention, and a shorter one is valid but named.
func TestLoad_stream_max_age_covers_the_retention(t *testing.T) {
	s := config.Load(env.FromMap(map[string]string{"STATUS_RETENTION": "48h"}), config.Defaults{})
	if s.Stream.MaxAge != 96*time.Hour || len(s.Warnings()) != 0 {
		t.Errorf("48h retention: stream max age %s, warnings %v; want 96h, none", s.Stream.MaxAge, s.Warnings())
	}
	s = config.Load(env.FromMap(map[string]string{"NATS_STREAM_MAX_AGE": "72h"}), config.Defaults{})
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if w := s.Warnings(); len(w) != 1 || !strings.Contains(w[0], "NATS_STREAM_MAX_AGE=72h0m0s") {
		t.Errorf("72h stream with a 30-day retention: warnings %v", w)
	}
}
