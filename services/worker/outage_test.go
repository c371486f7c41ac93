package main_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/stream"
)

// Redis becomes unreachable for a few seconds in the middle of a load. The worker reports
// not-ready while it is away, acks nothing whose status it could not write, and once Redis is
// back every callback ends recorded as succeeded.
func TestWorkerProcess_Redis_outage_loses_no_status(t *testing.T) {
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	redisURL, _ := url.Parse(testenv.RedisURL())
	proxy := testenv.NewProxy(t, redisURL.Host)
	proxied := *redisURL
	proxied.Host = proxy.Addr()

	const n = 600
	// Past the first sixth, answers wait until Redis is cut off: the load is surely not over
	// before the outage, however fast the worker goes, and deliveries are in flight through it.
	gate := testenv.NewGate(t, n/6)
	rc := testenv.NewReceiver(t, func(i int, w http.ResponseWriter, r *http.Request) {
		if gate.Wait(i, r) {
			time.Sleep(5 * time.Millisecond)
		}
	})
	// The workers reach Redis through the proxy; the test reads statuses directly.
	f := newFleet(t, ns.URL(), map[string]string{
		"REDIS_URL": proxied.String(), "CALLBACK_RETRY_SCHEDULE": "200ms" + repeat(",200ms", 19),
		"CALLBACK_TIMEOUT": "5s", "NATS_ACK_WAIT": "35s",
	})
	w := f.start()
	testenv.Eventually(t, 20*time.Second, w.ready, "worker ready")

	pub := newPublisher(t, js, stream.DefaultConfig())
	ids := publishTasks(t, pub, "t", n, rc.URL)
	testenv.Eventually(t, 30*time.Second, func() bool { return rc.Count() > n/6 }, "some delivered before the outage")
	atCut := rc.Count()
	proxy.Cut()
	gate.Open()
	cutAt := time.Now()
	testenv.Eventually(t, 10*time.Second, func() bool { return !w.ready() }, "/readyz reports not ready while Redis is away")
	// The outage itself: Redis stays unreachable for three seconds.
	time.Sleep(3 * time.Second)
	proxy.Restore()
	restoredAt := time.Now()
	testenv.Eventually(t, 20*time.Second, w.ready, "ready again")
	if atCut >= n {
		t.Fatalf("the load was over before the outage (%d delivered)", atCut)
	}

	f.waitSucceeded(ids, 90*time.Second)
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
