package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/stream"
)

// scrape reads a /metrics page into name → series.
func scrape(t *testing.T, addr string) map[string][]model.Metric {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil // not listening yet
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]model.Metric{}
	for name, f := range families {
		for _, m := range f.Metric {
			labels := model.Metric{}
			for _, l := range m.Label {
				labels[model.LabelName(l.GetName())] = model.LabelValue(l.GetValue())
			}
			switch {
			case m.Counter != nil:
				labels["__value__"] = model.LabelValue(fmt.Sprint(m.Counter.GetValue()))
			case m.Gauge != nil:
				labels["__value__"] = model.LabelValue(fmt.Sprint(m.Gauge.GetValue()))
			case m.Histogram != nil:
				labels["__value__"] = model.LabelValue(fmt.Sprint(m.Histogram.GetSampleCount()))
			}
			out[name] = append(out[name], labels)
		}
	}
	return out
}

func value(series []model.Metric, labels map[string]string) string {
	for _, s := range series {
		match := true
		for k, v := range labels {
			match = match && string(s[model.LabelName(k)]) == v
		}
		if match {
			return string(s["__value__"])
		}
	}
	return ""
}

// After a small load, the worker's /metrics shows the counters and histograms an on-call
// engineer reads: attempts and final results by transport, latencies, refusals by reason and the
// consumer's backlog.
func TestWorkerProcess_metrics_move_with_the_load(t *testing.T) {
	bin := testenv.Build(t, "services/worker")
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	ok := testenv.NewReceiver(t, nil)
	failing := testenv.NewReceiver(t, testenv.Failing(1000, http.StatusInternalServerError))
	if _, err := customer.NewStore(rdb, prefix).Create(ctx, "c1", ""); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	testenv.Start(t, bin, map[string]string{
		"NATS_URL": ns.URL(), "REDIS_URL": testenv.RedisURL(), "REDIS_PREFIX": prefix,
		"CALLBACK_ALLOW_PRIVATE": "true", "METRICS_ADDR": addr,
		"CALLBACK_RETRY_SCHEDULE": "10ms" + repeat(",10ms", 19),
	})
	pub, err := publish.New(ctx, js, stream.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		raw, _ := json.Marshal(map[string]any{"task_id": fmt.Sprintf("ok%d", i), "status": "completed", "callback_url": ok.URL})
		if _, err := pub.Publish(ctx, publish.Completion{CustomerID: "c1", Task: raw}); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := json.Marshal(map[string]any{"task_id": "bad", "status": "completed", "callback_url": failing.URL})
	if _, err := pub.Publish(ctx, publish.Completion{CustomerID: "c1", Task: raw}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "tasks.completed.c1", []byte("not json")); err != nil {
		t.Fatal(err)
	}

	var m map[string][]model.Metric
	testenv.Eventually(t, 30*time.Second, func() bool {
		m = scrape(t, addr)
		return value(m["refonte_callback_deliveries_total"], map[string]string{"transport": "http", "result": "exhausted"}) == "1" &&
			value(m["refonte_callback_deliveries_total"], map[string]string{"transport": "http", "result": "succeeded", "environment": "live"}) == "20" &&
			value(m["refonte_worker_held_messages"], nil) == "0" &&
			// sampled from the consumer's info now and then, so it follows the acks a little later
			value(m["refonte_consumer_ack_pending_messages"], nil) == "0"
	}, "deliveries counted, the window empty, nothing pending: %v, held %v, ack pending %v",
		m["refonte_callback_deliveries_total"], m["refonte_worker_held_messages"], m["refonte_consumer_ack_pending_messages"])

	checks := []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"refonte_callback_attempts_total", map[string]string{"transport": "http", "result": "succeeded"}, "20"},
		{"refonte_callback_attempts_total", map[string]string{"transport": "http", "result": "failed"}, "21"},
		{"refonte_callback_attempt_duration_seconds", map[string]string{"transport": "http"}, "41"},
		{"refonte_callback_publish_to_first_attempt_seconds", nil, "21"},
		{"refonte_callback_publish_to_success_seconds", nil, "20"},
		{"refonte_events_rejected_total", map[string]string{"reason": "malformed_json"}, "1"},
		{"refonte_events_rejected_total", map[string]string{"reason": "unknown_customer"}, "0"},
		{"refonte_consumer_ack_pending_messages", nil, "0"},
		{"refonte_consumer_max_ack_pending", nil, "1e+06"},
		// Everything settled: the window is empty again.
		{"refonte_worker_held_messages", nil, "0"},
		{"refonte_worker_queued_messages", nil, "0"},
		{"refonte_callback_in_flight", nil, "0"},
	}
	for _, c := range checks {
		if got := value(m[c.name], c.labels); got != c.want {
			t.Errorf("%s%v = %q, want %s", c.name, c.labels, got, c.want)
		}
	}
}
