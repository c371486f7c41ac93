package main_test

// A Redis failover under load: the Sentinel primary, or the Cluster master that holds the
// customer's keys, is killed with SIGKILL while callbacks flow. The short versions run in the
// normal suite; the long ones (5,000 callbacks) in redis_failover_long_test.go behind the chaos
// tag. Figures are logged for docs/operations.md.

import (
	"context"
	"sync"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
)

func TestChaos_redis_sentinel_primary_SIGKILL_loses_nothing(t *testing.T) {
	t.Parallel()
	redisFailover(t, testenv.ShapeSentinel, 600)
}

func TestChaos_redis_cluster_master_SIGKILL_loses_nothing(t *testing.T) {
	t.Parallel()
	redisFailover(t, testenv.ShapeCluster, 600)
}

// redisFailover sends n callbacks through two workers, kills the Redis node that holds the
// customer's status when a quarter is delivered, and checks that every callback is delivered,
// every status ends succeeded, and no status once succeeded is ever read otherwise.
func redisFailover(t *testing.T, shape string, n int) {
	rt := testenv.RedisOf(t, shape)
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	s := newSink(t, 2*time.Millisecond, nil)
	f := newFleetOn(t, ns.URL(), rt, nil)
	f.start()
	f.start()
	pub := newPublisher(t, js, stream.DefaultConfig())

	// The node to kill: the one that serves customer c1's keys (all share its hash tag).
	victim := func() *testenv.RedisNode {
		if rt.Cluster != nil {
			return rt.Cluster.MasterOf(rt.Prefix + "{c1}:task")
		}
		return rt.Sentinel.Primary()
	}

	release := s.holdAfter(n / 4)
	t.Cleanup(release)
	first := publishTasks(t, pub, "a", n/2, s.URL)
	testenv.Eventually(t, loadTimeout(n), func() bool { return s.delivered() >= n/4 }, "a quarter delivered")

	// Redis replicates asynchronously: a write the victim acknowledged but had not yet passed to
	// its replica is lost with it (docs/operations.md, "Redis failover"). The test is about what
	// the fleet does at a failover, not about that window, so it closes it: the receiver holds
	// every further callback, each answered one has its status recorded, and the victim's
	// replica has acknowledged everything written so far before the SIGKILL.
	testenv.Eventually(t, loadTimeout(n), func() bool {
		return succeededCount(f.statuses, first) >= s.delivered()
	}, "the delivered callbacks' statuses recorded")
	node := victim()
	if node == nil {
		t.Fatal("no primary to kill")
	}
	testenv.WaitReplicated(t, []*testenv.RedisNode{node})
	w := watchSucceeded(t, f.statuses, first)
	killedAt := time.Now()
	node.Kill()
	atKill := s.delivered()
	release()

	// Published while Redis fails over. The write path is back when one of them has its status
	// recorded; both that and the promotion are watched from the kill on.
	var promoted, recorded time.Duration
	var mu sync.Mutex
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watchCtx.Err() == nil {
			if v := victim(); v != nil && v != node {
				mu.Lock()
				promoted = time.Since(killedAt)
				mu.Unlock()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	second := publishTasks(t, pub, "b", n-n/2, s.URL)
	ids := append(first, second...)
	w.add(second)
	testenv.Eventually(t, loadTimeout(n), func() bool {
		for _, id := range second[:min(len(second), 50)] {
			// Errors are expected while Redis fails over; only a recorded state counts.
			if rec, err := f.statuses.Get(context.Background(), "c1", environment.Live, id); err == nil && rec.State == status.Succeeded {
				recorded = time.Since(killedAt)
				return true
			}
		}
		return false
	}, "a callback published after the kill has its status recorded")
	testenv.Eventually(t, 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return promoted > 0
	}, "another node serves the keys")
	stopWatch()
	<-watched

	f.waitSucceeded(ids, loadTimeout(n))
	w.stop()
	fig := s.figures(t, ids)
	fig.check(t)
	t.Logf("redis %s failover: %s; %d delivered at the SIGKILL; "+
		"another node serves the keys %s after it, first status recorded after it (of %d published after it) %s, longest pause in deliveries %s; "+
		"%d status reads, no succeeded status ever read otherwise",
		shape, fig, atKill, promoted.Round(time.Millisecond),
		len(second), recorded.Round(time.Millisecond), s.longestPause(killedAt, s.lastOK()).Round(time.Millisecond), w.reads())
}

// succeededCount is how many of ids read succeeded now (0 while Redis does not answer).
func succeededCount(st *status.Store, ids []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	briefs, err := st.Briefs(ctx, "c1", environment.Live, ids)
	if err != nil {
		return 0
	}
	n := 0
	for _, b := range briefs {
		if b.State == status.Succeeded {
			n++
		}
	}
	return n
}

// succeededWatch reads the tasks' states over and over while a fault is injected, and fails
// the test if a task once read succeeded is ever read in another state (absent included): a
// write the old primary acknowledged and the new one never got would show so.
type succeededWatch struct {
	t      *testing.T
	st     *status.Store
	mu     sync.Mutex
	ids    []string
	seen   map[string]bool
	nreads int
	cancel context.CancelFunc
	done   chan struct{}
}

func watchSucceeded(t *testing.T, st *status.Store, ids []string) *succeededWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &succeededWatch{t: t, st: st, ids: ids, seen: map[string]bool{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			w.mu.Lock()
			ids := w.ids
			w.mu.Unlock()
			for start := 0; start < len(ids) && ctx.Err() == nil; start += 500 {
				chunk := ids[start:min(start+500, len(ids))]
				rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
				briefs, err := st.Briefs(rctx, "c1", environment.Live, chunk)
				rcancel()
				if err != nil {
					continue // Redis is failing over; an error is not a wrong answer
				}
				w.mu.Lock()
				for i, b := range briefs {
					id := chunk[i]
					w.nreads++
					if b.State == status.Succeeded {
						w.seen[id] = true
					} else if w.seen[id] {
						t.Errorf("task %s was read succeeded, then %q (found %v)", id, b.State, b.Found)
					}
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *succeededWatch) add(ids []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ids = append(append([]string(nil), w.ids...), ids...)
}

func (w *succeededWatch) stop() {
	w.cancel()
	<-w.done
}

func (w *succeededWatch) reads() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nreads
}
