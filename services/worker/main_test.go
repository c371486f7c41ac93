package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
)

// Two worker processes share the stream; one gets SIGTERM in the middle of a load. It finishes
// what it holds and exits cleanly, the other carries on, and every callback ends delivered.
func TestWorkerProcess_SIGTERM_mid_load_loses_nothing(t *testing.T) {
	bin := testenv.Build(t, "services/worker")
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()

	rc := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		time.Sleep(10 * time.Millisecond) // a receiver with some latency keeps deliveries in flight
		w.WriteHeader(http.StatusOK)
	})
	if _, _, err := customer.NewStore(rdb, prefix).Create(ctx, "c1", rc.URL); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"NATS_URL": ns.URL(), "REDIS_URL": testenv.RedisURL(), "REDIS_PREFIX": prefix,
		"CALLBACK_ALLOW_PRIVATE": "true", "WORKER_CONCURRENCY": "8",
	}
	env["METRICS_ADDR"] = testenv.FreeAddr(t)
	w1 := testenv.Start(t, bin, env)
	env2 := map[string]string{}
	for k, v := range env {
		env2[k] = v
	}
	env2["METRICS_ADDR"] = testenv.FreeAddr(t)
	testenv.Start(t, bin, env2)

	pub, err := publish.New(ctx, js, stream.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	for i := range n {
		raw, _ := json.Marshal(map[string]any{"task_id": fmt.Sprintf("t%d", i), "status": "completed"})
		if _, err := pub.Publish(ctx, publish.Completion{CustomerID: "c1", Task: raw}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return rc.Count() >= n/4 }, "a quarter delivered")
	atSignal := rc.Count()
	w1.Signal(syscall.SIGTERM)
	if err, ok := w1.Wait(45 * time.Second); !ok || err != nil {
		t.Fatalf("worker did not exit cleanly on SIGTERM: exited=%v err=%v", ok, err)
	}

	statuses := status.NewStore(rdb, prefix, 0)
	testenv.Eventually(t, 60*time.Second, func() bool {
		for i := range n {
			r, err := statuses.Get(ctx, "c1", fmt.Sprintf("t%d", i))
			if err != nil || r.Succeeded == nil || !*r.Succeeded {
				return false
			}
		}
		return true
	}, "every callback_succeeded is true")
	seen := map[string]int{}
	for _, r := range rc.Requests() {
		seen[r.Header.Get("webhook-id")]++
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	if atSignal >= n {
		t.Fatalf("the load was over before SIGTERM (%d delivered); the test proves nothing", atSignal)
	}
	if len(seen) != n {
		t.Errorf("%d distinct callbacks delivered, want %d", len(seen), n)
	}
	t.Logf("sent %d, delivered %d distinct, %d duplicates", n, len(seen), dups)
}
