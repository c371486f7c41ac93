package main_test

// The production shape: four worker processes share one consumer on a three-node JetStream
// cluster (nats-server child processes) with a stream and consumer of three replicas. Without
// faults every callback reaches the receiver exactly once; when a worker and the stream's leader
// are killed with SIGKILL at the same moment, every callback still arrives (duplicates are then
// allowed: delivery is at least once) and every status is recorded. The short versions run in the
// normal suite; the long ones (20,000 callbacks) are in chaos_long_test.go behind the chaos tag.

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/stream"
)

func TestChaos_cluster_four_workers_deliver_each_callback_once(t *testing.T) {
	clusterFleetNoFaults(t, 1500)
}

func TestChaos_cluster_worker_and_stream_leader_SIGKILL_lose_nothing(t *testing.T) {
	clusterFleetKill(t, 1500)
}

// clusterWorkers is how many worker processes share the consumer.
const clusterWorkers = 4

// clusterRig is the fleet on its cluster, and a publisher to its three-replica stream.
type clusterRig struct {
	*fleet
	cl      *testenv.ProcessCluster
	workers []*worker
	cfg     stream.Config
	pub     *publish.Publisher
	js      jetstream.JetStream
}

// startClusterFleet starts the three nats-server processes and the four workers.
func startClusterFleet(t *testing.T, vars map[string]string) clusterRig {
	t.Helper()
	cl := testenv.StartProcessCluster(t, 3)
	_, js := cl.Connect(t)
	vars["NATS_REPLICAS"] = "3"
	f := newFleet(t, cl.URLs(), vars)
	workers := make([]*worker, clusterWorkers)
	for i := range workers {
		workers[i] = f.start()
	}
	cfg := stream.DefaultConfig()
	cfg.Replicas = 3 // the same NATS_REPLICAS as the workers, or each start would resize the stream
	pub := newPublisher(t, js, cfg)
	testenv.Eventually(t, 60*time.Second, func() bool {
		for _, w := range workers {
			if !w.ready() {
				return false
			}
		}
		return true
	}, "the four workers are ready")
	return clusterRig{fleet: f, cl: cl, workers: workers, cfg: cfg, pub: pub, js: js}
}

// clusterFleetNoFaults sends n callbacks through the four workers and counts the requests per
// webhook-id at the receiver: each must be exactly one, answered 2xx, and each status succeeded.
func clusterFleetNoFaults(t *testing.T, n int) {
	// The project's default NATS_ACK_WAIT (the callback timeout plus 30s), as in production: a
	// message is redelivered only when its worker is gone.
	rig := startClusterFleet(t, map[string]string{"NATS_ACK_WAIT": "31s"})
	s := newSink(t, 5*time.Millisecond, nil)

	start := time.Now()
	ids := publishTasks(t, rig.pub, "a", n, s.URL)
	rig.waitSucceeded(ids, loadTimeout(n))
	elapsed := time.Since(start)
	fig := s.figures(t, ids)
	fig.check(t)

	// The four workers shared the load: each counted some deliveries, and their counts add up to
	// one per callback.
	perWorker := make([]int, len(rig.workers))
	testenv.Eventually(t, 30*time.Second, func() bool {
		total := 0
		for i, w := range rig.workers {
			v := value(scrape(t, w.metricsAddr)["refonte_callback_deliveries_total"],
				map[string]string{"transport": "http", "result": "succeeded"})
			count, _ := strconv.ParseFloat(v, 64)
			perWorker[i] = int(count)
			total += perWorker[i]
		}
		return total == n
	}, "the workers count %d succeeded deliveries in all (%v)", n, lazy(func() string { return fmt.Sprint(perWorker) }))
	for i, c := range perWorker {
		if c == 0 {
			t.Errorf("worker %d delivered nothing (%v): the load was not shared", i+1, perWorker)
		}
	}

	requests := 0
	for _, id := range ids {
		hits := s.hitTimes(id)
		requests += len(hits)
		if len(hits) != 1 {
			t.Errorf("%s reached the receiver %d times, want once", id, len(hits))
		}
	}
	if fig.duplicated != 0 {
		t.Errorf("%d duplicate deliveries, want 0", fig.duplicated)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		info := consumerInfo(t, rig.js)
		return info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0
	}, "every message acknowledged, none redelivered (%v)", lazy(func() string {
		info := consumerInfo(t, rig.js)
		return fmt.Sprintf("ack pending %d, pending %d, redelivered %d", info.NumAckPending, info.NumPending, info.NumRedelivered)
	}))
	t.Logf("four workers on three nodes, R3, no faults: %s; requests at the receiver %d; "+
		"all recorded succeeded %s after the first publish; deliveries per worker %v",
		fig, requests, elapsed.Round(time.Millisecond), perWorker)
}

// clusterFleetKill sends n callbacks through the four workers and, when a quarter is delivered
// and the receiver holds the requests in flight, kills one worker and the node leading the
// stream at the same moment (SIGKILL both).
func clusterFleetKill(t *testing.T, n int) {
	rig := startClusterFleet(t, map[string]string{})
	f, cl, cfg, js := rig.fleet, rig.cl, rig.cfg, rig.js
	s := newSink(t, 5*time.Millisecond, nil)
	ctx := context.Background()

	release := s.holdAfter(n / 4)
	t.Cleanup(release)
	ids := publishTasks(t, rig.pub, "a", n/2, s.URL)
	testenv.Eventually(t, loadTimeout(n), func() bool { return s.delivered() >= n/4 }, "a quarter delivered")
	leader, err := testenv.StreamLeader(ctx, js, cfg.Name)
	if err != nil || !cl.Has(leader) {
		t.Fatalf("stream leader %q: %v", leader, err)
	}
	consumerLeader, _ := testenv.ConsumerLeader(ctx, js, cfg.Name, "callback-workers")
	// The worker to kill holds deliveries the receiver keeps waiting: they must come back to the
	// others. Not every slot: held answers time out, and the adaptive host limit then shrinks
	// toward its floor of one.
	victim := rig.workers[0]
	var held int
	testenv.Eventually(t, 60*time.Second, func() bool {
		held = inFlight(t, victim)
		return held >= 1
	}, "the worker to kill holds a delivery (%v)", lazy(func() string { return fmt.Sprint(held) }))

	var kills sync.WaitGroup
	killedAt := time.Now()
	kills.Go(func() { cl.Kill(leader) })
	kills.Go(victim.Kill)
	kills.Wait()
	atKill := s.delivered()
	release()
	if atKill >= n/2 {
		t.Fatalf("the first half was over before the kill (%d delivered); the test proves nothing", atKill)
	}

	newLeader := testenv.NewStreamLeader(t, ctx, js, cfg.Name, leader)
	elected := time.Since(killedAt)

	second := publishTasks(t, rig.pub, "b", n-n/2, s.URL)
	ids = append(ids, second...)
	f.waitSucceeded(ids, loadTimeout(n))
	fig := s.figures(t, ids)
	fig.check(t)

	// The callbacks the dead worker had begun come back to the survivors after NATS_ACK_WAIT.
	begun, lastBegun := s.takenOver(f, ids)
	if len(begun) == 0 {
		t.Fatal("no callback the killed worker held was taken over; the test proves nothing")
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		info := consumerInfo(t, js)
		return info.NumAckPending == 0 && info.NumPending == 0
	}, "every message is acknowledged on the surviving nodes")
	t.Logf("worker + stream leader SIGKILL (four workers, three nodes, R3): %s; "+
		"%d delivered at the kill of stream leader %s (consumer leader %s) and one worker; new stream "+
		"leader %s after %s; first callback published after the kill delivered %s after it; the dead worker had %d "+
		"deliveries in flight, %d callbacks it had begun, all delivered %s after the kill (NATS_ACK_WAIT %s); longest "+
		"pause in deliveries %s",
		fig, atKill, leader, consumerLeader, newLeader,
		elected.Round(time.Millisecond), s.firstOK(second).Sub(killedAt).Round(time.Millisecond), held, len(begun),
		lastBegun.Sub(killedAt).Round(time.Millisecond), f.env["NATS_ACK_WAIT"],
		s.longestPause(killedAt, s.lastOK()).Round(time.Millisecond))
}

// inFlight is the worker's refonte_callback_in_flight gauge (0 while it does not answer).
func inFlight(t *testing.T, w *worker) int {
	t.Helper()
	v, _ := strconv.ParseFloat(value(scrape(t, w.metricsAddr)["refonte_callback_in_flight"], nil), 64)
	return int(v)
}
