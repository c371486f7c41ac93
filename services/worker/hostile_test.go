package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/stream"
)

// Hostile endpoints cannot starve the others. Three endpoints receive a thousand callbacks each
// and misbehave — one never answers, one trickles its answer a byte at a time, one answers 500
// at once — while a healthy endpoint receives a steady stream. Each host's concurrency limit adapts
// (up to WORKER_HOST_CONCURRENCY): timeouts and 5xx bring the hostile hosts' limits down to one
// delivery each, their queues fill and the rest of their messages are deferred without using an
// attempt, and the healthy endpoint gets its turns and keeps its latency.
func TestWorkerProcess_hostile_endpoints_do_not_starve_a_healthy_one(t *testing.T) {
	perHostile := 1000
	if os.Getenv("CHAOS_LONG") != "" {
		perHostile = 5000
	}
	bin := testenv.Build(t, "services/worker")
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()

	hang := testenv.NewReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	trickle := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		for {
			if _, err := w.Write([]byte("x")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Second): // one byte a second
			}
		}
	})
	failing := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	})
	var (
		mu        sync.Mutex
		latencies []time.Duration
	)
	// Each latency runs from the task's publication to the arrival of its own request (the n-th,
	// as the receiver numbers them), whatever other requests arrived meanwhile.
	healthy := testenv.NewReceiver(t, nil)
	healthy.SetRespond(func(n int, _ http.ResponseWriter, _ *http.Request) {
		req := healthy.Request(n)
		var body struct {
			Task struct {
				PublishedAt string `json:"published_at_ns"`
			} `json:"task"`
		}
		if err := json.Unmarshal(req.Body, &body); err != nil {
			t.Errorf("healthy callback %d: %v", n, err)
			return
		}
		ns, err := strconv.ParseInt(body.Task.PublishedAt, 10, 64)
		if err != nil {
			t.Errorf("healthy callback %d: published_at_ns %q: %v", n, body.Task.PublishedAt, err)
			return
		}
		mu.Lock()
		latencies = append(latencies, req.At.Sub(time.Unix(0, ns)))
		mu.Unlock()
	})
	store := customer.NewStore(rdb, prefix)
	for _, c := range []string{"hostile", "good"} {
		if _, err := store.Create(ctx, c, ""); err != nil {
			t.Fatal(err)
		}
	}
	addr := testenv.FreeAddr(t)
	testenv.Start(t, bin, map[string]string{
		"NATS_URL": ns.URL(), "REDIS_URL": testenv.RedisURL(), "REDIS_PREFIX": prefix,
		"CALLBACK_ALLOW_PRIVATE": "true", "METRICS_ADDR": addr,
		"CALLBACK_TIMEOUT": "3s", "WORKER_CONCURRENCY": "64", "WORKER_HOST_CONCURRENCY": "8",
		"CALLBACK_RETRY_SCHEDULE": "5s" + repeat(",5s", 19), "LOG_LEVEL": "warn",
	})
	pub, err := publish.New(ctx, js, stream.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	publishTask := func(customerID, id, url string) {
		raw, _ := json.Marshal(map[string]any{"task_id": id, "status": "completed", "callback_url": url,
			"published_at_ns": strconv.FormatInt(time.Now().UnixNano(), 10)})
		if _, err := pub.Publish(ctx, publish.Completion{CustomerID: customerID, Task: raw}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range perHostile {
		publishTask("hostile", fmt.Sprintf("hang-%d", i), hang.URL)
		publishTask("hostile", fmt.Sprintf("trickle-%d", i), trickle.URL)
		publishTask("hostile", fmt.Sprintf("fail-%d", i), failing.URL)
	}
	// The healthy customer's steady stream: 40 a second for 10 seconds, published while the
	// hostile endpoints hold their slots. The ticker paces the load; it synchronises nothing.
	const healthyCount = 400
	tick := time.NewTicker(25 * time.Millisecond)
	for i := range healthyCount {
		<-tick.C
		publishTask("good", fmt.Sprintf("good-%d", i), healthy.URL)
	}
	tick.Stop()
	testenv.Eventually(t, 30*time.Second, func() bool { return healthy.Count() >= healthyCount },
		"every healthy callback delivered (have %d)", healthy.Count())
	// The hanging host, still busy with its thousand, is down to its floor of one delivery.
	var hangLimit int
	testenv.Eventually(t, 30*time.Second, func() bool {
		hangLimit = hostLimit(readHosts(t, addr), hang.URL)
		return hangLimit == 1
	}, "the hanging host's limit falls to 1 (is %d)", hangLimit)

	mu.Lock()
	slices.Sort(latencies)
	p50, p99, worst := latencies[len(latencies)/2], latencies[len(latencies)*99/100], latencies[len(latencies)-1]
	mu.Unlock()
	t.Logf("healthy endpoint: %d callbacks, publish-to-delivery p50 %s p99 %s max %s; meanwhile hang saw %d, trickle %d, failing %d attempts",
		healthyCount, p50.Round(time.Millisecond), p99.Round(time.Millisecond), worst.Round(time.Millisecond),
		hang.Count(), trickle.Count(), failing.Count())
	// Without the per-host cap the healthy callbacks queue behind 3-second timeouts; with it they
	// are delivered as they come. The bound is loose enough for a loaded 2-core machine.
	if p99 > 2*time.Second {
		t.Errorf("healthy p99 %s: hostile endpoints starve the healthy one", p99)
	}
	if hang.Count() == 0 || trickle.Count() == 0 || failing.Count() == 0 {
		t.Errorf("the hostile endpoints were not exercised")
	}
}
