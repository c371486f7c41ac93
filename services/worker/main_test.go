package main_test

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/stream"
)

// Two worker processes share the stream; one gets SIGTERM in the middle of a load. It finishes
// what it holds and exits cleanly, the other carries on, and every callback ends delivered.
func TestWorkerProcess_SIGTERM_mid_load_loses_nothing(t *testing.T) {
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	const n = 1000
	// Past the first quarter, answers wait until the signal is sent: the load is surely not over
	// when it comes, however fast the workers go, and both workers have deliveries in flight.
	gate := testenv.NewGate(t, n/4)
	rc := testenv.NewReceiver(t, func(i int, w http.ResponseWriter, r *http.Request) {
		if gate.Wait(i, r) {
			time.Sleep(10 * time.Millisecond) // a receiver with some latency keeps deliveries in flight
		}
	})
	f := newFleet(t, ns.URL(), nil)
	w1 := f.start()
	f.start()
	pub := newPublisher(t, js, stream.DefaultConfig())
	ids := publishTasks(t, pub, "t", n, rc.URL)

	testenv.Eventually(t, 30*time.Second, func() bool { return rc.Count() > n/4 }, "a quarter delivered")
	atSignal := rc.Count()
	w1.Signal(syscall.SIGTERM)
	gate.Open()
	if err, ok := w1.Wait(45 * time.Second); !ok || err != nil {
		t.Fatalf("worker did not exit cleanly on SIGTERM: exited=%v err=%v", ok, err)
	}
	if atSignal >= n {
		t.Fatalf("the load was over before SIGTERM (%d delivered); the test proves nothing", atSignal)
	}
	f.waitSucceeded(ids, loadTimeout(n))
	seen := map[string]int{}
	for _, r := range rc.Requests() {
		seen[r.Header.Get("webhook-id")]++
	}
	if len(seen) != n {
		t.Errorf("%d distinct callbacks delivered, want %d", len(seen), n)
	}
	t.Logf("SIGTERM: sent %d, delivered %d distinct, %d duplicates, lost 0", n, len(seen), rc.Count()-len(seen))
}
