package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/publish"
)

// One trace spans the upstream publish, the worker's consume and the POST, and the receiver
// gets the trace context as a traceparent header.
func TestTracing_one_trace_from_publish_to_the_POST(t *testing.T) {
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	h.newCustomer("c1", "")
	h.startWorker()

	ctx, root := tp.Tracer("upstream").Start(context.Background(), "label task")
	raw, _ := json.Marshal(task("t1", rc.URL))
	if _, err := h.pub.Publish(ctx, publish.Completion{CustomerID: "c1", Task: raw}); err != nil {
		t.Fatal(err)
	}
	root.End()
	h.waitFinal("c1", "t1", 10*time.Second)
	traceID := root.SpanContext().TraceID()

	tp_ := rc.Requests()[0].Header.Get("traceparent")
	if len(tp_) != 55 || tp_[3:35] != traceID.String() {
		t.Errorf("traceparent = %q, want one in trace %s", tp_, traceID)
	}
	want := map[string]trace.SpanKind{
		"publish tasks.completed.*": trace.SpanKindProducer,
		"callback.deliver":          trace.SpanKindConsumer,
		"callback.attempt":          trace.SpanKindClient,
	}
	var spans tracetest.SpanStubs
	testenv.Eventually(t, 5*time.Second, func() bool {
		spans = exporter.GetSpans()
		return len(spans) >= 4
	}, "spans exported")
	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	for name, kind := range want {
		s, ok := byName[name]
		if !ok {
			t.Errorf("no %q span (have %d spans)", name, len(spans))
			continue
		}
		if s.SpanContext.TraceID() != traceID || s.SpanKind != kind {
			t.Errorf("%s: trace %s kind %s; want trace %s kind %s", name, s.SpanContext.TraceID(), s.SpanKind, traceID, kind)
		}
	}
	if byName["callback.attempt"].Parent.SpanID() != byName["callback.deliver"].SpanContext.SpanID() ||
		byName["callback.deliver"].Parent.SpanID() != byName["publish tasks.completed.*"].SpanContext.SpanID() {
		t.Error("spans are not chained publish → deliver → attempt")
	}
	// Attributes are set only on spans that record; these do.
	attr := func(name string, key attribute.Key) attribute.Value {
		for _, kv := range byName[name].Attributes {
			if kv.Key == key {
				return kv.Value
			}
		}
		return attribute.Value{}
	}
	if v := attr("callback.deliver", "refonte.task_id"); v.AsString() != "t1" {
		t.Errorf("callback.deliver refonte.task_id = %q, want t1", v.String())
	}
	if v := attr("callback.attempt", "refonte.attempt"); v.AsInt64() != 1 {
		t.Errorf("callback.attempt refonte.attempt = %q, want 1", v.String())
	}
	if tp_[36:52] != byName["callback.attempt"].SpanContext.SpanID().String() {
		t.Errorf("traceparent names span %s, want the attempt span", tp_[36:52])
	}
}
