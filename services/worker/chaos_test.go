package main_test

// Fault injection with real processes: worker processes are
// killed with SIGKILL, the broker is stopped and restarted, the leader of a three-node JetStream
// cluster is shut down, and a worker dies in the middle of a delivery's last attempt. Each test
// asserts outcomes (every callback delivered, every flag right), never timing, and logs the
// figures of the closing note: sent, delivered, duplicated, lost, time to recover.
//
// These short versions run in the normal suite. Longer ones (20,000 callbacks, a cluster of
// nats-server child processes killed with SIGKILL) are in chaos_long_test.go:
//
//	go test -tags chaos ./services/worker/ -run TestChaos -v -timeout 30m

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
)

// 1. A worker process is killed with SIGKILL in the middle of a load; the other carries on. The
// callbacks the dead worker held come back after NATS_ACK_WAIT and are delivered by the
// survivor: every task is delivered at least once, every duplicate carries the task's
// webhook-id, and every callback_succeeded ends true.
func TestChaos_worker_SIGKILL_mid_load_loses_nothing(t *testing.T) {
	workerCrash(t, 2000)
}

// 2. The broker is stopped during a load and started again on the same port and store. The
// workers reconnect by themselves, nothing is lost, and retries that were parked when it stopped
// keep their schedule: they are neither lost nor made early by the restart.
func TestChaos_broker_restart_loses_nothing_and_keeps_the_schedule(t *testing.T) {
	brokerRestart(t, 2000, 50)
}

// 3. Three JetStream nodes, stream and consumer with three replicas. The stream's leader is shut
// down during a load; a new leader is elected, deliveries and publishes continue, nothing is
// lost.
func TestChaos_cluster_stream_leader_loss_loses_nothing(t *testing.T) {
	cl := testenv.StartCluster(t, 3)
	_, js := cl.Connect(t)
	clusterLeaderLoss(t, 1000, cluster{
		urls: cl.URLs(), js: js, how: "shut down",
		has:  func(name string) bool { return cl.Node(name) != nil },
		lose: func(name string) { cl.Node(name).Stop() },
	})
}

// 7. A worker is killed while the 21st and last attempt is in flight. The attempt is never
// finished by anyone, yet once another worker gets the message back (after NATS_ACK_WAIT) the
// delivery is recorded as failed with callback_succeeded=false, the interrupted attempt is
// logged, no 22nd attempt is made and the message is ended: no task stays "retrying".
func TestChaos_worker_SIGKILL_during_last_attempt_records_false(t *testing.T) {
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)

	arrived := make(chan struct{})
	var once sync.Once
	stop := make(chan struct{})
	rc := testenv.NewReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 21 {
			// The last attempt: tell the test, and hold it until the worker dies.
			once.Do(func() { close(arrived) })
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	})
	t.Cleanup(func() { close(stop) }) // runs before the receiver is closed

	f := newFleet(t, ns.URL(), map[string]string{
		"CALLBACK_RETRY_SCHEDULE": strings.TrimSuffix(strings.Repeat("20ms,", 20), ","),
		// The worker must still be waiting for the answer when it is killed; the test checks
		// that it was.
		"CALLBACK_TIMEOUT": "3s",
		"NATS_ACK_WAIT":    "4s",
	})
	w1 := f.start()
	pub := newPublisher(t, js, stream.DefaultConfig())
	sent := publishTasks(t, pub, "x", 1, rc.URL)

	select {
	case <-arrived:
	case <-time.After(60 * time.Second):
		t.Fatalf("the 21st attempt never came (receiver saw %d)", rc.Count())
	}
	killedAt := time.Now()
	w1.Kill()

	rec := f.record(sent[0])
	if rec.State != status.Retrying || rec.Attempts != 21 || len(rec.Log) != 20 {
		t.Fatalf("the worker was killed too late to test anything: state %q, %d attempts begun, %d logged",
			rec.State, rec.Attempts, len(rec.Log))
	}

	f.start()
	testenv.Eventually(t, 60*time.Second, func() bool {
		rec = f.record(sent[0])
		return rec.State == status.Failed
	}, "the delivery is recorded as failed after the crash")
	recovered := time.Since(killedAt)

	if rec.Succeeded == nil || *rec.Succeeded {
		t.Errorf("callback_succeeded = %v, want false", rec.Succeeded)
	}
	if rec.Attempts != 21 || len(rec.Log) != 21 {
		t.Errorf("%d attempts counted, %d logged; want 21 and 21", rec.Attempts, len(rec.Log))
	}
	if len(rec.Log) == 0 {
		t.Fatal("no attempt logged")
	}
	if last := rec.Log[len(rec.Log)-1]; last.Attempt != 21 || !strings.Contains(last.Error, "interrupted") {
		t.Errorf("last log entry = %+v, want attempt 21 logged as interrupted", last)
	}
	if rec.NextAttemptAt != nil {
		t.Errorf("next_attempt_at = %v, want none", rec.NextAttemptAt)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		info := consumerInfo(t, js)
		return info.NumAckPending == 0 && info.NumPending == 0
	}, "the exhausted message is ended, not left for redelivery")
	if n := rc.Count(); n != 21 {
		t.Errorf("receiver saw %d attempts, want 21 (no attempt after the last)", n)
	}
	t.Logf("exhaustion after a crash: sent 1, attempts 21 (the 21st interrupted by SIGKILL), "+
		"callback_succeeded=false recorded %s after the kill (NATS_ACK_WAIT 4s), state %q, lost 0",
		recovered.Round(time.Millisecond), rec.State)
}

// workerCrash is scenario 1 with a load of n callbacks.
func workerCrash(t *testing.T, n int) {
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	s := newSink(t, 5*time.Millisecond, nil)
	f := newFleet(t, ns.URL(), nil)
	w1 := f.start()
	f.start()
	pub := newPublisher(t, js, stream.DefaultConfig())

	// Half the load first, the kill once a quarter is delivered, then the other half. The
	// receiver holds callbacks from a quarter on until the worker is dead, so the load is surely
	// not over when it dies, however fast the fleet drains it, and it dies with deliveries in
	// flight.
	release := s.holdAfter(n / 4)
	t.Cleanup(release)
	ids := publishTasks(t, pub, "a", n/2, s.URL)
	testenv.Eventually(t, loadTimeout(n), func() bool { return s.delivered() >= n/4 }, "a quarter delivered")
	atKill := s.delivered()
	killedAt := time.Now()
	w1.Kill()
	release()
	if atKill >= n/2 {
		t.Fatalf("the first half was over before the kill (%d delivered); the test proves nothing", atKill)
	}
	ids = append(ids, publishTasks(t, pub, "b", n-n/2, s.URL)...)

	f.waitSucceeded(ids, loadTimeout(n))
	fig := s.figures(t, ids)
	fig.check(t)

	begun, lastBegun := s.takenOver(f, ids)
	if len(begun) == 0 {
		t.Fatal("no callback the killed worker held was taken over; the test proves nothing")
	}
	// The survivor kept going: the longest pause in deliveries between the kill and the moment
	// the dead worker's callbacks could come back (NATS_ACK_WAIT), when only the survivor works.
	pause := s.longestPause(killedAt, s.lastOKBefore(killedAt.Add(3*time.Second)))
	t.Logf("worker SIGKILL: %s; %d delivered at the kill; "+
		"%d callbacks the dead worker had begun, all delivered %s after the kill (NATS_ACK_WAIT 3s); "+
		"longest pause in deliveries before NATS_ACK_WAIT ran out %s",
		fig, atKill, len(begun),
		lastBegun.Sub(killedAt).Round(time.Millisecond), pause.Round(time.Millisecond))
}

// brokerRestart is scenario 2 with a load of n callbacks and flakyN callbacks whose receiver
// fails the first attempt.
func brokerRestart(t *testing.T, n, flakyN int) {
	const (
		firstDelay = 6 * time.Second
		outage     = 3500 * time.Millisecond
	)
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	s := newSink(t, 5*time.Millisecond, func(path string) bool { return path == "/flaky" })
	f := newFleet(t, ns.URL(), map[string]string{
		"CALLBACK_RETRY_SCHEDULE": firstDelay.String() + strings.Repeat(",1s", 19),
	})
	workers := []*worker{f.start(), f.start()}
	pub := newPublisher(t, js, stream.DefaultConfig())

	flaky := publishTasks(t, pub, "f", flakyN, s.URL+"/flaky")
	testenv.Eventually(t, loadTimeout(n), func() bool { return s.attempted(flaky) == flakyN },
		"every flaky callback failed once")
	// The receiver holds callbacks once a quarter is delivered, so the broker stops in the middle
	// of the first half however fast the fleet drains it; they are answered once it is down.
	release := s.holdAfter(n / 4)
	t.Cleanup(release)
	ids := publishTasks(t, pub, "a", n/2, s.URL+"/ok")
	testenv.Eventually(t, loadTimeout(n), func() bool { return s.delivered() >= 100 }, "the load is under way")

	// Every flaky callback is now parked for its first retry, firstDelay after its failure.
	stoppedAt := time.Now()
	ns.Stop()
	atStop := s.delivered()
	release()
	if atStop >= n/2 {
		t.Fatalf("the first half was over before the broker stopped (%d delivered); the test proves nothing", atStop)
	}
	for _, id := range flaky {
		if hits := s.hitTimes(id); len(hits) > 1 {
			t.Fatalf("%s was retried %s after its failure, before the broker stopped: either the schedule is "+
				"broken or the machine is too slow for the test to park a retry across the restart", id, hits[1].Sub(hits[0]))
		}
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		for _, w := range workers {
			if w.ready() {
				return false
			}
		}
		return true
	}, "the workers notice the broker is gone (readyz)")
	// The fault lasts a while (this is its duration, not a synchronisation): longer than a pull
	// request lives (2s, plus 1s of client grace), so the workers' pulls run out while the
	// broker is away and the pull loop must start over once it is back.
	time.Sleep(outage - time.Since(stoppedAt))
	ns.Restart()
	upAt := time.Now()
	testenv.Eventually(t, 60*time.Second, func() bool {
		for _, w := range workers {
			if !w.ready() {
				return false
			}
		}
		return true
	}, "the workers reconnect by themselves (readyz)")
	reconnected := time.Since(upAt)

	second := publishTasks(t, pub, "b", n-n/2, s.URL+"/ok")
	ids = append(ids, second...)
	all := append(slices.Clone(flaky), ids...)
	f.waitSucceeded(all, loadTimeout(n))
	fig := s.figures(t, all)
	fig.check(t)

	// The retries kept their schedule: each came no earlier than its delay less the contract's
	// 10% of jitter, and after the restart, never lost.
	minGap := time.Duration(float64(firstDelay) * 0.9)
	var early []string
	for _, id := range flaky {
		hits := s.hitTimes(id)
		if len(hits) < 2 {
			t.Errorf("%s was never retried", id)
			continue
		}
		if gap := hits[1].Sub(hits[0]); gap < minGap {
			early = append(early, fmt.Sprintf("%s after %s", id, gap.Round(time.Millisecond)))
		}
		if hits[1].Before(upAt) {
			t.Errorf("%s was retried while the broker was down", id)
		}
	}
	if len(early) > 0 {
		t.Errorf("%d of %d retries came before the schedule allows (%s at the earliest): %s",
			len(early), flakyN, minGap, strings.Join(early[:min(len(early), 5)], ", "))
	}
	resumed := s.firstOKAfter(upAt)
	firstAfter := s.firstOK(second)
	t.Logf("broker restart: %s (%d of the sent failing their first attempt); "+
		"%d delivered at the stop; broker down %s; workers ready %s after it came back, delivering again after %s; "+
		"first callback published after the restart delivered %s after it came back; every retry came %s or more "+
		"after its failure (schedule %s)",
		fig, flakyN, atStop, upAt.Sub(stoppedAt).Round(time.Millisecond),
		reconnected.Round(time.Millisecond), resumed.Sub(upAt).Round(time.Millisecond), firstAfter.Sub(upAt).Round(time.Millisecond),
		s.minRetryGap(flaky).Round(time.Millisecond), firstDelay)
}

// cluster is what scenario 3 needs of a three-node JetStream cluster.
type cluster struct {
	urls string
	js   jetstream.JetStream
	has  func(name string) bool // is name one of the nodes
	lose func(name string)      // takes the node away
	how  string                 // how it goes away, for the log
}

// clusterLeaderLoss is scenario 3 with a load of n callbacks.
func clusterLeaderLoss(t *testing.T, n int, cl cluster) {
	js := cl.js
	s := newSink(t, 5*time.Millisecond, nil)
	f := newFleet(t, cl.urls, map[string]string{"NATS_REPLICAS": "3"})
	f.start()
	f.start()
	cfg := stream.DefaultConfig()
	cfg.Replicas = 3 // the same NATS_REPLICAS as the workers, or each start would resize the stream
	pub := newPublisher(t, js, cfg)
	ctx := context.Background()

	release := s.holdAfter(n / 4)
	t.Cleanup(release)
	ids := publishTasks(t, pub, "a", n/2, s.URL)
	testenv.Eventually(t, loadTimeout(n), func() bool { return s.delivered() >= n/4 }, "a quarter delivered")
	leader, err := testenv.StreamLeader(ctx, js, cfg.Name)
	if err != nil || !cl.has(leader) {
		t.Fatalf("stream leader %q: %v", leader, err)
	}
	consumerLeader, _ := testenv.ConsumerLeader(ctx, js, cfg.Name, "callback-workers")
	killedAt := time.Now()
	cl.lose(leader)
	atKill := s.delivered()
	release()
	if atKill >= n/2 {
		t.Fatalf("the first half was over before the leader went (%d delivered); the test proves nothing", atKill)
	}

	newLeader := testenv.NewStreamLeader(t, ctx, js, cfg.Name, leader)
	elected := time.Since(killedAt)

	second := publishTasks(t, pub, "b", n-n/2, s.URL)
	ids = append(ids, second...)
	f.waitSucceeded(ids, loadTimeout(n))
	fig := s.figures(t, ids)
	fig.check(t)

	info, err := js.Stream(ctx, cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	si, err := info.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if si.Config.Replicas != 3 {
		t.Errorf("stream replicas = %d, want 3", si.Config.Replicas)
	}
	ci := consumerInfo(t, js)
	if ci.Config.Replicas != 3 {
		t.Errorf("consumer replicas = %d, want 3", ci.Config.Replicas)
	}
	t.Logf("cluster leader loss: %s; %d delivered when stream leader %s "+
		"(consumer leader %s) was %s; new stream leader %s elected after %s; first callback published after the "+
		"loss delivered %s after it; longest pause in deliveries %s",
		fig, atKill, leader, consumerLeader, cl.how, newLeader,
		elected.Round(time.Millisecond), s.firstOK(second).Sub(killedAt).Round(time.Millisecond),
		s.longestPause(killedAt, s.lastOK()).Round(time.Millisecond))
}

// fleet is a set of worker processes sharing one stream, one Redis prefix and customer "c1".
type fleet struct {
	t        *testing.T
	bin      string
	env      map[string]string
	statuses *status.Store
}

// worker is one worker process.
type worker struct {
	*testenv.Process
	metricsAddr string
}

// newFleet prepares worker processes for natsURL. Crash recovery is made fast: a callback a dead
// worker held comes back after NATS_ACK_WAIT (3s) instead of the default 31s.
func newFleet(t *testing.T, natsURL string, vars map[string]string) *fleet {
	t.Helper()
	return newFleetOn(t, natsURL, testenv.RedisOf(t, testenv.ShapeStandalone), vars)
}

// newFleetOn is newFleet on the given Redis (standalone, cluster or sentinel).
func newFleetOn(t *testing.T, natsURL string, rt testenv.RedisTarget, vars map[string]string) *fleet {
	t.Helper()
	rdb, prefix := rt.Client, rt.Prefix
	f := &fleet{
		t:   t,
		bin: testenv.Build(t, "services/worker"),
		env: map[string]string{
			"NATS_URL": natsURL, "REDIS_URL": rt.URL, "REDIS_PREFIX": prefix,
			"CALLBACK_ALLOW_PRIVATE": "true", "WORKER_CONCURRENCY": "8",
			"CALLBACK_TIMEOUT": "1s", "NATS_ACK_WAIT": "3s",
		},
		statuses: status.NewStore(rdb, prefix, 0),
	}
	maps.Copy(f.env, vars)
	if _, err := customer.NewStore(rdb, prefix).Create(context.Background(), "c1", ""); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fleet) start() *worker {
	f.t.Helper()
	env := maps.Clone(f.env)
	env["METRICS_ADDR"] = testenv.FreeAddr(f.t)
	return &worker{Process: testenv.Start(f.t, f.bin, env), metricsAddr: env["METRICS_ADDR"]}
}

// ready reports whether the worker's /readyz answers 200.
func (w *worker) ready() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + w.metricsAddr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (f *fleet) record(taskID string) status.Record {
	r, err := f.statuses.Get(context.Background(), "c1", environment.Live, taskID)
	if err != nil && !errors.Is(err, status.ErrNotFound) {
		f.t.Fatal(err)
	}
	return r
}

// waitSucceeded waits until every task's callback_succeeded is true; a false fails at once.
func (f *fleet) waitSucceeded(ids []string, timeout time.Duration) {
	f.t.Helper()
	pending := slices.Clone(ids)
	var last status.Record
	testenv.Eventually(f.t, timeout, func() bool {
		for len(pending) > 0 {
			last = f.record(pending[0])
			if last.Succeeded != nil && !*last.Succeeded {
				f.t.Fatalf("%s: callback_succeeded is false (state %q, log %+v)", pending[0], last.State, last.Log)
			}
			if last.Succeeded == nil || last.State != status.Succeeded {
				return false
			}
			pending = pending[1:]
		}
		return true
	}, "every callback_succeeded is true (%v)", lazy(func() string {
		return fmt.Sprintf("%d left; %s is %q after %d attempts", len(pending), pending[0], last.State, last.Attempts)
	}))
}

// lazy formats when printed, so a failure message shows the state at the deadline.
type lazy func() string

func (l lazy) String() string { return l() }

func newPublisher(t *testing.T, js jetstream.JetStream, cfg stream.Config) *publish.Publisher {
	t.Helper()
	var pub *publish.Publisher
	testenv.Eventually(t, 30*time.Second, func() bool {
		var err error
		pub, err = publish.New(context.Background(), js, cfg)
		return err == nil
	}, "the stream can be created")
	return pub
}

// publishTasks publishes n completions for customer c1, task ids <prefix>00000…, and returns the
// ids. A publish that fails (the broker restarting, a leader being elected) is retried, as a
// careful upstream would; the Nats-Msg-Id keeps a retry from becoming a second callback.
func publishTasks(t *testing.T, pub *publish.Publisher, prefix string, n int, url string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		id := fmt.Sprintf("%s%05d", prefix, i)
		raw, _ := json.Marshal(map[string]any{"task_id": id, "status": "completed", "callback_url": url})
		testenv.Eventually(t, 60*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := pub.Publish(ctx, publish.Completion{CustomerID: "c1", Task: raw, MsgID: webhookID(id)})
			return err == nil
		}, "publish %s", id)
		ids[i] = id
	}
	return ids
}

// loadTimeout is a generous deadline for a load of n callbacks on a busy two-core machine.
func loadTimeout(n int) time.Duration { return 90*time.Second + time.Duration(n)*20*time.Millisecond }

func webhookID(taskID string) string { return "evt_c1_" + taskID }

func consumerInfo(t *testing.T, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	ctx := context.Background()
	c, err := js.Consumer(ctx, "CALLBACKS", "callback-workers")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// sink is the customers' endpoint for a load: it answers 200 after latency (500 to the first
// attempt of a callback whose path failFirst names) and keeps, per webhook-id, every request's
// time and answer.
type sink struct {
	*testenv.Receiver
	mu   sync.Mutex
	hits map[string][]hit
	ok   int // webhook-ids answered 2xx at least once

	t    testing.TB
	gate *testenv.Gate // holds requests once ok passes its count (nil: never)
}

// holdAfter makes requests wait once n callbacks were answered 2xx, until the returned release is
// called: a fault injected meanwhile then lands with deliveries still to come, however fast the
// workers are, instead of the load racing the injection.
func (s *sink) holdAfter(n int) (release func()) {
	g := testenv.NewGate(s.t, n)
	s.mu.Lock()
	s.gate = g
	s.mu.Unlock()
	return g.Open
}

// waitIfHeld blocks r while the sink holds requests.
func (s *sink) waitIfHeld(r *http.Request) {
	s.mu.Lock()
	gate, answered := s.gate, s.ok
	s.mu.Unlock()
	if gate != nil {
		gate.Wait(answered+1, r)
	}
}

type hit struct {
	at   time.Time
	code int
}

func newSink(t *testing.T, latency time.Duration, failFirst func(path string) bool) *sink {
	s := &sink{hits: map[string][]hit{}, t: t}
	s.Receiver = testenv.NewReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		time.Sleep(latency) // a receiver with some latency keeps deliveries in flight
		s.waitIfHeld(r)
		id := r.Header.Get("webhook-id")
		s.mu.Lock()
		code := http.StatusOK
		if failFirst != nil && failFirst(r.URL.Path) && len(s.hits[id]) == 0 {
			code = http.StatusInternalServerError
		}
		if code == http.StatusOK && len(s.okLocked(id)) == 0 {
			s.ok++
		}
		s.hits[id] = append(s.hits[id], hit{at: time.Now(), code: code})
		s.mu.Unlock()
		w.WriteHeader(code)
	})
	return s
}

func (s *sink) okLocked(webhookID string) []time.Time {
	var out []time.Time
	for _, h := range s.hits[webhookID] {
		if h.code == http.StatusOK {
			out = append(out, h.at)
		}
	}
	return out
}

// delivered is the number of callbacks answered 2xx at least once.
func (s *sink) delivered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ok
}

// okTimes is when the task's callback was answered 2xx.
func (s *sink) okTimes(taskID string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.okLocked(webhookID(taskID))
}

// hitTimes is when the task's callback was received, whatever the answer.
func (s *sink) hitTimes(taskID string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for _, h := range s.hits[webhookID(taskID)] {
		out = append(out, h.at)
	}
	return out
}

// attempted is how many of the tasks were received at least once.
func (s *sink) attempted(taskIDs []string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, id := range taskIDs {
		if len(s.hits[webhookID(id)]) > 0 {
			n++
		}
	}
	return n
}

// lastOKBefore is the last 2xx answer before until, to any callback.
func (s *sink) lastOKBefore(until time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last time.Time
	for _, hs := range s.hits {
		for _, h := range hs {
			if h.code == http.StatusOK && h.at.Before(until) && h.at.After(last) {
				last = h.at
			}
		}
	}
	return last
}

// lastOK is the last 2xx answer to any callback.
func (s *sink) lastOK() time.Time { return s.lastOKBefore(time.Now().Add(time.Hour)) }

// firstOK is the first 2xx answer to any of the tasks.
func (s *sink) firstOK(taskIDs []string) time.Time {
	var first time.Time
	for _, id := range taskIDs {
		if ts := s.okTimes(id); len(ts) > 0 && (first.IsZero() || ts[0].Before(first)) {
			first = ts[0]
		}
	}
	return first
}

// firstOKAfter is the first 2xx answer after from, to any callback.
func (s *sink) firstOKAfter(from time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first time.Time
	for _, hs := range s.hits {
		for _, h := range hs {
			if h.code == http.StatusOK && h.at.After(from) && (first.IsZero() || h.at.Before(first)) {
				first = h.at
			}
		}
	}
	return first
}

// minRetryGap is the shortest time between a task's first and second request.
func (s *sink) minRetryGap(taskIDs []string) time.Duration {
	var gap time.Duration = -1
	for _, id := range taskIDs {
		if ts := s.hitTimes(id); len(ts) > 1 && (gap < 0 || ts[1].Sub(ts[0]) < gap) {
			gap = ts[1].Sub(ts[0])
		}
	}
	return gap
}

// longestPause is the longest time between from and until without any 2xx answer.
func (s *sink) longestPause(from, until time.Time) time.Duration {
	s.mu.Lock()
	var times []time.Time
	for _, hs := range s.hits {
		for _, h := range hs {
			if h.code == http.StatusOK && h.at.After(from) && !h.at.After(until) {
				times = append(times, h.at)
			}
		}
	}
	s.mu.Unlock()
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	var longest time.Duration
	prev := from
	for _, at := range times {
		longest = max(longest, at.Sub(prev))
		prev = at
	}
	return longest
}

// figures are the closing note's numbers for one scenario.
type figures struct {
	sent, delivered, duplicated, lost int
}

// figures counts, over the tasks sent, those delivered (answered 2xx at least once), the extra
// 2xx deliveries (duplicates) and those never delivered (lost). Every request must carry the
// webhook-id of the task in its body: a duplicate is recognisable as one.
func (s *sink) figures(t *testing.T, taskIDs []string) figures {
	t.Helper()
	for _, r := range s.Requests() {
		var body struct {
			TaskID string `json:"task_id"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Errorf("callback body is not JSON: %v", err)
			continue
		}
		if got := r.Header.Get("webhook-id"); got != webhookID(body.TaskID) {
			t.Errorf("callback for %s carries webhook-id %q, want %q", body.TaskID, got, webhookID(body.TaskID))
		}
	}
	fig := figures{sent: len(taskIDs)}
	for _, id := range taskIDs {
		ok := len(s.okTimes(id))
		if ok == 0 {
			fig.lost++
			continue
		}
		fig.delivered++
		fig.duplicated += ok - 1
	}
	return fig
}

// String is how every scenario's closing note starts.
func (fig figures) String() string {
	return fmt.Sprintf("sent %d, delivered %d, duplicated %d, lost %d", fig.sent, fig.delivered, fig.duplicated, fig.lost)
}

// takenOver is, of the tasks sent, those a killed worker had begun and a survivor finished: an
// attempt logged as interrupted, or a second 2xx at the receiver. last is the latest of their
// deliveries, when the survivors had finished the dead worker's work.
func (s *sink) takenOver(f *fleet, taskIDs []string) (begun []string, last time.Time) {
	for _, id := range taskIDs {
		oks := s.okTimes(id)
		if f.record(id).Attempts > 1 || len(oks) > 1 {
			begun = append(begun, id)
			if len(oks) > 0 && oks[len(oks)-1].After(last) {
				last = oks[len(oks)-1]
			}
		}
	}
	return begun, last
}

func (fig figures) check(t *testing.T) {
	t.Helper()
	if fig.lost != 0 || fig.delivered != fig.sent {
		t.Errorf("sent %d, delivered %d, lost %d; want every callback delivered", fig.sent, fig.delivered, fig.lost)
	}
}
