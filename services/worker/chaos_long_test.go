//go:build chaos

package main_test

// The long versions of the fault-injection tests in chaos_test.go, kept out of the normal suite:
//
//	go test -tags chaos ./services/worker/ -run TestChaos -v -timeout 30m
//
// (-run TestChaos_long for these alone.) They need the same Redis as the other tests, and build
// nats-server from the module cache for the SIGKILL cluster test.

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
)

func TestChaos_long_worker_SIGKILL_20k(t *testing.T) {
	workerCrash(t, 20_000)
}

func TestChaos_long_broker_restart_20k(t *testing.T) {
	brokerRestart(t, 20_000, 500)
}

func TestChaos_long_cluster_stream_leader_shutdown_20k(t *testing.T) {
	cl := testenv.StartCluster(t, 3)
	_, js := cl.Connect(t)
	clusterLeaderLoss(t, 20_000, cluster{
		urls: cl.URLs(), js: js, how: "shut down",
		has:  func(name string) bool { return cl.Node(name) != nil },
		lose: func(name string) { cl.Node(name).Stop() },
	})
}

// An in-process server hands its leaderships over when it shuts down; a node killed with SIGKILL
// cannot, so the others must notice it is gone and elect a new leader by themselves.
func TestChaos_long_cluster_stream_leader_SIGKILL_5k(t *testing.T) {
	cl := testenv.StartProcessCluster(t, 3)
	_, js := cl.Connect(t)
	clusterLeaderLoss(t, 5_000, cluster{
		urls: cl.URLs(), js: js, how: "killed with SIGKILL",
		has:  cl.Has,
		lose: cl.Kill,
	})
}

// Point 7 at scale: many callbacks exhaust their attempts at once, and the worker is killed every
// time all the deliveries it holds are in their 21st attempt, until every one is recorded. Each
// must end failed with callback_succeeded=false, never more than 21 attempts, nothing left
// "retrying" and nothing left on the consumer.
func TestChaos_long_exhaustion_with_repeated_SIGKILL(t *testing.T) {
	const k = 30
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	f := newFleet(t, ns.URL(), map[string]string{
		"CALLBACK_RETRY_SCHEDULE": strings.TrimSuffix(strings.Repeat("20ms,", 20), ","),
		"CALLBACK_TIMEOUT":        "5s",
		"NATS_ACK_WAIT":           "6s",
		"WORKER_CONCURRENCY":      "32", // every delivery in flight at once
	})

	var (
		mu       sync.Mutex
		blocked  = map[string]bool{}
		requests = map[string]int{}
	)
	stop := make(chan struct{})
	rc := testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		taskID := strings.TrimPrefix(r.Header.Get("webhook-id"), webhookID(""))
		mu.Lock()
		requests[taskID]++
		mu.Unlock()
		// The attempt in flight is the one Begin counted last.
		if rec, err := f.statuses.Get(context.Background(), "c1", environment.Live, taskID); err != nil || rec.Attempts < 21 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		blocked[taskID] = true
		mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-stop:
		}
		mu.Lock()
		delete(blocked, taskID)
		mu.Unlock()
	})
	t.Cleanup(func() { close(stop) })
	pub := newPublisher(t, js, stream.DefaultConfig())
	ids := publishTasks(t, pub, "x", k, rc.URL)

	final := func() int {
		n := 0
		for _, id := range ids {
			if st := f.record(id).State; st == status.Failed || st == status.Succeeded {
				n++
			}
		}
		return n
	}
	kills := 0
	start := time.Now()
	for final() < k {
		w := f.start()
		testenv.Eventually(t, 120*time.Second, func() bool {
			mu.Lock()
			b := len(blocked)
			mu.Unlock()
			left := k - final()
			return left == 0 || (b > 0 && b >= left)
		}, "every open delivery is in its last attempt, or recorded")
		if final() < k {
			w.Kill()
			kills++
		}
		if kills > k {
			t.Fatalf("%d kills and still %d deliveries open", kills, k-final())
		}
	}
	interrupted := 0
	for _, id := range ids {
		rec := f.record(id)
		if rec.State != status.Failed || rec.Succeeded == nil || *rec.Succeeded || rec.Attempts != 21 || rec.NextAttemptAt != nil {
			t.Errorf("%s: state %q, flag %v, %d attempts, next %v; want failed, false, 21, none",
				id, rec.State, rec.Succeeded, rec.Attempts, rec.NextAttemptAt)
		}
		if len(rec.Log) > 0 && strings.Contains(rec.Log[len(rec.Log)-1].Error, "interrupted") {
			interrupted++
		}
		mu.Lock()
		if requests[id] > 21 {
			t.Errorf("%s: receiver saw %d attempts, more than 21", id, requests[id])
		}
		mu.Unlock()
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		info := consumerInfo(t, js)
		return info.NumAckPending == 0 && info.NumPending == 0
	}, "every exhausted message is ended")
	t.Logf("exhaustion under repeated SIGKILL: sent %d, all recorded failed/false, %d with the 21st attempt "+
		"interrupted by a kill, %d kills, lost 0, done in %s", k, interrupted, kills, time.Since(start).Round(time.Millisecond))
}

// Four workers on three nats-server processes with a three-replica stream: each callback reaches
// the receiver exactly once.
func TestChaos_long_cluster_four_workers_20k_once(t *testing.T) {
	clusterFleetNoFaults(t, 20_000)
}

// The same fleet, one worker and the stream's leader killed with SIGKILL at the same moment.
func TestChaos_long_cluster_worker_and_stream_leader_SIGKILL_20k(t *testing.T) {
	clusterFleetKill(t, 20_000)
}
