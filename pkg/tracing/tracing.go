// Package tracing carries OpenTelemetry trace context from the upstream publisher through the
// stream to each delivery attempt and on to the customer as a traceparent header. Spans are
// exported over OTLP/HTTP only when an endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); otherwise tracing costs next to nothing and exports
// nothing, but an upstream trace id is still passed on.
package tracing

import (
	"context"
	"fmt"
	"net/http"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

const instrumentation = "refonte.ai/callbacks"

var propagator = propagation.TraceContext{}

// Setup installs the OTLP exporter when cfg enables it. The returned function flushes and
// stops it; it is a no-op when tracing is off.
func Setup(ctx context.Context, service string, cfg Config) (func(context.Context) error, error) {
	if !cfg.Enabled() {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// Tracer is the project's tracer, from the global provider (no-op unless Setup installed one).
func Tracer() trace.Tracer { return otel.Tracer(instrumentation) }

// InjectNATS writes ctx's trace context into message headers.
func InjectNATS(ctx context.Context, h nats.Header) {
	propagator.Inject(ctx, propagation.HeaderCarrier(http.Header(h)))
}

// ExtractNATS reads a trace context from message headers.
func ExtractNATS(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, propagation.HeaderCarrier(http.Header(h)))
}

// Headers returns ctx's trace context as headers to send to the customer (traceparent, and
// tracestate when set); nil when there is no trace.
func Headers(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	carrier := propagation.MapCarrier{}
	propagator.Inject(ctx, carrier)
	return carrier
}
