package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
)

func readyz(addr string) int {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Redis becomes unreachable for a few seconds in the middle of a load. The worker reports
// not-ready while it is away, acks nothing whose status it could not write, and once Redis is
// back every callback ends recorded as succeeded.
func TestWorkerProcess_Redis_outage_loses_no_status(t *testing.T) {
	bin := testenv.Build(t, "services/worker")
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	redisURL, _ := url.Parse(testenv.RedisURL())
	proxy := testenv.NewProxy(t, redisURL.Host)
	proxied := *redisURL
	proxied.Host = proxy.Addr()

	rc := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		time.Sleep(5 * time.Millisecond)
	})
	if _, _, err := customer.NewStore(rdb, prefix).Create(ctx, "c1", rc.URL); err != nil {
		t.Fatal(err)
	}
	metrics := testenv.FreeAddr(t)
	testenv.Start(t, bin, map[string]string{
		"NATS_URL": ns.URL(), "REDIS_URL": proxied.String(), "REDIS_PREFIX": prefix,
		"CALLBACK_ALLOW_PRIVATE": "true", "WORKER_CONCURRENCY": "8", "METRICS_ADDR": metrics,
		"CALLBACK_RETRY_SCHEDULE": "200ms" + repeat(",200ms", 19),
	})
	testenv.Eventually(t, 20*time.Second, func() bool { return readyz(metrics) == http.StatusOK }, "worker ready")

	pub, err := publish.New(ctx, js, stream.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	const n = 600
	for i := range n {
		raw, _ := json.Marshal(map[string]any{"task_id": fmt.Sprintf("t%d", i), "status": "completed"})
		if _, err := pub.Publish(ctx, publish.Completion{CustomerID: "c1", Task: raw}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return rc.Count() >= n/6 }, "some delivered before the outage")
	atCut := rc.Count()
	proxy.Cut()
	cutAt := time.Now()
	testenv.Eventually(t, 10*time.Second, func() bool { return readyz(metrics) == http.StatusServiceUnavailable },
		"/readyz reports not ready while Redis is away")
	// The outage itself: Redis stays unreachable for three seconds.
	time.Sleep(3 * time.Second)
	proxy.Restore()
	restoredAt := time.Now()
	testenv.Eventually(t, 20*time.Second, func() bool { return readyz(metrics) == http.StatusOK }, "ready again")
	if atCut >= n {
		t.Fatalf("the load was over before the outage (%d delivered)", atCut)
	}

	statuses := status.NewStore(rdb, prefix, 0)
	testenv.Eventually(t, 90*time.Second, func() bool {
		for i := range n {
			r, err := statuses.Get(ctx, "c1", fmt.Sprintf("t%d", i))
			if err != nil || r.Succeeded == nil || !*r.Succeeded {
				return false
			}
		}
		return true
	}, "every callback_succeeded ends true")
	recovered := time.Since(restoredAt)
	seen := map[string]int{}
	for _, r := range rc.Requests() {
		seen[r.Header.Get("webhook-id")]++
	}
	if len(seen) != n {
		t.Errorf("%d distinct callbacks delivered, want %d", len(seen), n)
	}
	t.Logf("Redis outage of %s: sent %d, delivered %d distinct, %d requests (%d duplicates), lost 0, all recorded %s after Redis returned",
		restoredAt.Sub(cutAt).Round(time.Millisecond), n, len(seen), rc.Count(), rc.Count()-len(seen), recovered.Round(time.Millisecond))
}

func repeat(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}
