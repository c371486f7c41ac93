package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
)

// An endpoint that takes 5 seconds to answer 200, with an AckWait of 2 seconds and a callback
// timeout of 10: the worker keeps every message it holds alive (InProgress) while it waits in
// its host's queue, during the attempt and while the outcome is written, so JetStream never hands
// one to another worker. Each callback is POSTed exactly once and ends callback_succeeded true.
func TestWorkerProcess_slow_endpoint_past_AckWait_is_posted_once(t *testing.T) {
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	slow := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select { // the endpoint's own latency
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	f := newFleet(t, ns.URL(), map[string]string{"NATS_ACK_WAIT": "2s", "CALLBACK_TIMEOUT": "10s"})
	f.start()
	f.start() // a second worker that would take over any message whose AckWait ran out
	pub := newPublisher(t, js, stream.DefaultConfig())
	const n = 20
	ids := publishTasks(t, pub, "slow", n, slow.URL)

	f.waitSucceeded(ids, 90*time.Second)
	posts := map[string]int{}
	for _, r := range slow.Requests() {
		posts[r.Header.Get("webhook-id")]++
	}
	for _, id := range ids {
		if got := posts[webhookID(id)]; got != 1 {
			t.Errorf("%s POSTed %d times, want exactly once", id, got)
		}
		if rec := f.record(id); rec.Attempts != 1 || len(rec.Log) != 1 {
			t.Errorf("%s: %d attempts, %d logged; want 1 and 1 (none interrupted)", id, rec.Attempts, len(rec.Log))
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		info := consumerInfo(t, js)
		return info.NumAckPending == 0 && info.NumPending == 0
	}, "every message acknowledged")
	if info := consumerInfo(t, js); info.NumRedelivered != 0 {
		t.Errorf("%d messages redelivered, want 0", info.NumRedelivered)
	}
}

// A burst of callbacks to one customer's one endpoint does not hold back another customer: the
// worker skims past the burst (its host's queue is full, so the rest is deferred without using
// an attempt) and the second customer's callbacks, published after the whole burst, get their
// turns at once. Asserted by order, not time: every one of them arrives while most of the burst
// is still to be delivered.
func TestWorkerProcess_burst_to_one_endpoint_does_not_hold_back_another_customer(t *testing.T) {
	bin := testenv.Build(t, "services/worker")
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	store := customer.NewStore(rdb, prefix)
	for _, c := range []string{"busy", "other"} {
		if _, err := store.Create(ctx, c, ""); err != nil {
			t.Fatal(err)
		}
	}
	// The burst's endpoint answers in 20ms once everything is published; with 16 slots the burst
	// takes seconds to drain. Holding it until then keeps the order the test asserts independent
	// of how fast this process publishes (slow under the race detector on a loaded machine).
	published := testenv.NewGate(t, 0)
	burst := testenv.NewReceiver(t, func(i int, w http.ResponseWriter, r *http.Request) {
		if published.Wait(i, r) {
			time.Sleep(20 * time.Millisecond)
		}
	})
	other := testenv.NewReceiver(t, nil)
	addr := testenv.FreeAddr(t)
	testenv.Start(t, bin, map[string]string{
		"NATS_URL": ns.URL(), "REDIS_URL": testenv.RedisURL(), "REDIS_PREFIX": prefix,
		"CALLBACK_ALLOW_PRIVATE": "true", "METRICS_ADDR": addr, "LOG_LEVEL": "warn",
		"WORKER_CONCURRENCY": "16", "WORKER_MAX_HELD": "256", "WORKER_HOST_QUEUE": "64",
		"CALLBACK_RETRY_SCHEDULE": "1s" + repeat(",1s", 19),
	})
	pub := newPublisher(t, js, stream.DefaultConfig())
	const burstN, otherN = 3000, 20
	publishAsync(t, pub, "busy", "b", burstN, burst.URL)
	otherIDs := publishAsync(t, pub, "other", "o", otherN, other.URL)
	published.Open()

	// While the burst drains, the operators' view shows its host busy with its queue full.
	var view hostsView
	testenv.Eventually(t, 30*time.Second, func() bool {
		view = readHosts(t, addr)
		return len(view.Busiest) > 0 && view.Busiest[0].Queued > 0
	}, "the burst's host shows in /hosts with messages queued (%+v)", view)
	if view.Held > 256 || view.Busiest[0].Queued > 64 || view.Busiest[0].Limit > 16 {
		t.Errorf("the window's bounds are not kept: %+v", view)
	}

	testenv.Eventually(t, 60*time.Second, func() bool { return other.Count() >= otherN },
		"the other customer's callbacks delivered (%d of %d)", other.Count(), otherN)
	burstAtOther := burst.Count()
	t.Logf("the other customer's %d callbacks all arrived with %d of the burst's %d delivered", otherN, burstAtOther, burstN)
	if burstAtOther > burstN/2 {
		t.Errorf("the other customer's callbacks waited for %d of the burst's %d: the burst holds them back", burstAtOther, burstN)
	}
	for _, id := range otherIDs {
		var rec status.Record
		testenv.Eventually(t, 30*time.Second, func() bool {
			var err error
			rec, err = status.NewStore(rdb, prefix, 0).Get(ctx, "other", environment.Live, id)
			return err == nil && rec.State == status.Succeeded
		}, "%s succeeded (%q)", id, rec.State)
		if rec.Attempts != 1 {
			t.Errorf("%s took %d attempts; a deferral must not use one", id, rec.Attempts)
		}
	}
	testenv.Eventually(t, 120*time.Second, func() bool { return burst.Count() >= burstN },
		"the burst drained (%d of %d)", burst.Count(), burstN)
	seen := map[string]bool{}
	for _, r := range burst.Requests() {
		seen[r.Header.Get("webhook-id")] = true
	}
	if len(seen) != burstN {
		t.Errorf("%d distinct burst callbacks delivered, want %d", len(seen), burstN)
	}
	m := scrape(t, addr)
	if value(m["refonte_callback_deferred_total"], map[string]string{"reason": "host_queue_full"}) == "0" {
		t.Error("no deferral counted for the burst's full host queue")
	}
	if value(m["refonte_worker_host_limit"], nil) == "" {
		t.Error("no histogram of host limits")
	}
}

// publishAsync publishes n completions for customerID as fast as JetStream takes them and
// returns their task ids.
func publishAsync(t *testing.T, pub *publish.Publisher, customerID, prefix string, n int, url string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s%05d", prefix, i)
		raw, _ := json.Marshal(map[string]any{"task_id": ids[i], "status": "completed", "callback_url": url})
		if _, err := pub.Publish(context.Background(), publish.Completion{CustomerID: customerID, Task: raw}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// hostsView is the worker's /hosts answer.
type hostsView struct {
	Held    int         `json:"held"`
	Queued  int         `json:"queued"`
	Busiest []hostEntry `json:"busiest"`
}

type hostEntry struct {
	Host     string `json:"host"`
	Limit    int    `json:"limit"`
	InFlight int    `json:"in_flight"`
	Queued   int    `json:"queued"`
}

func readHosts(t *testing.T, addr string) hostsView {
	t.Helper()
	var v hostsView
	resp, err := http.Get("http://" + addr + "/hosts")
	if err != nil {
		return v // not listening yet
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("/hosts: %v", err)
	}
	return v
}

// hostLimit is the limit /hosts shows for the receiver at url, or -1 while it is not busy.
func hostLimit(v hostsView, url string) int {
	i := slices.IndexFunc(v.Busiest, func(h hostEntry) bool { return "http://"+h.Host == url })
	if i < 0 {
		return -1
	}
	return v.Busiest[i].Limit
}
