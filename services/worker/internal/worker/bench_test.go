package worker_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/conn"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/delivery"
	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/pkg/quarantine"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/stream"
	"refonte.ai/callbacks/pkg/target"
	"refonte.ai/callbacks/pkg/webhook"
	"refonte.ai/callbacks/services/worker/internal/worker"
)

// BenchmarkDelivery is the whole pipeline: b.N task completions published (async, as a busy
// upstream does) → one worker (256 slots) decodes, looks up the customer, claims the attempt in
// Redis, signs and POSTs to a local receiver, records the success in Redis and acks. One op is
// one callback recorded as succeeded, so ns/op is the fleet's time per callback at full
// pipeline and 1e9/(ns/op) its throughput on this machine with NATS, Redis, the receiver and the
// worker all on it. allocs/op counts the whole process: worker, in-process NATS server and
// receiver.
//
// All callbacks go to one receiver, whose adaptive limit climbs to the worker's concurrency (the
// default ceiling); what does not fit in its queue is deferred and counted in the time per op.
// log_info runs with the workers' default LOG_LEVEL
// (info: one JSON line per attempt, written to io.Discard) to show what logging costs.
func BenchmarkDelivery(b *testing.B) {
	b.Run("log_warn", func(b *testing.B) { benchDelivery(b, zapcore.WarnLevel) })
	b.Run("log_info", func(b *testing.B) { benchDelivery(b, zapcore.InfoLevel) })
}

func benchDelivery(b *testing.B, level zapcore.Level) {
	ctx := context.Background()
	ns := testenv.StartNATS(b)
	nc, js := ns.Connect(b)
	_, prefix := testenv.Redis(b) // the prefix, and its keys deleted at the end
	cfg, err := worker.LoadConfig(env.FromMap(map[string]string{
		"NATS_URL":               ns.URL(),
		"REDIS_PREFIX":           prefix,
		"CALLBACK_ALLOW_PRIVATE": "true",
		"WORKER_CONCURRENCY":     "256",
	}))
	if err != nil {
		b.Fatal(err)
	}
	// A pool as big as the worker's own (cmd: concurrency + 16); the test client's default pool
	// (10 per CPU) would make every delivery queue for a connection.
	rdb, err := conn.Redis(testenv.RedisURL(), cfg.Concurrency+16)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rdb.Close() })

	var (
		received atomic.Int64
		recorded atomic.Int64
		want     atomic.Int64
		done     = make(chan struct{}, 1)
	)
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		received.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(rc.Close)

	customers := customer.NewStore(rdb, prefix)
	if _, err := customers.Create(ctx, "cust_bench", rc.URL+"/callback"); err != nil {
		b.Fatal(err)
	}
	statuses := status.NewStore(rdb, prefix, cfg.Retention)
	if err := statuses.Load(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := stream.Ensure(ctx, js, cfg.Stream); err != nil {
		b.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	consumer, err := worker.SetupConsumer(wctx, js, cfg, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	st := &countingStatus{Store: statuses, onSuccess: func() {
		if recorded.Add(1) == want.Load() {
			done <- struct{}{}
		}
	}}
	tr := &timedTransport{Transport: webhook.New(webhook.Config{Timeout: cfg.Timeout, AllowPrivate: true,
		UserAgent: "Refonte-Callbacks/bench", MaxConnsPerHost: cfg.HostConcurrency})}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(io.Discard), level))
	w, err := worker.New(cfg, worker.Deps{
		Consumer:   consumer,
		Profiles:   customer.NewCache(customers, cfg.ProfileCacheTTL),
		Status:     st,
		Invalid:    quarantine.NewStore(rdb, prefix, 0),
		Transports: map[target.Kind]worker.Transport{target.HTTP: tr},
		Log:        log,
	})
	if err != nil {
		b.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := w.Run(wctx); err != nil {
			b.Errorf("worker: %v", err)
		}
	}()
	b.Cleanup(func() { cancel(); <-stopped })

	pub, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	// The events are built before the clock starts; publishing them is part of the measure.
	msgs := make([]*nats.Msg, b.N)
	for i := range msgs {
		id := strconv.Itoa(i)
		m := nats.NewMsg(stream.CompletedSubject("cust_bench"))
		m.Data = []byte(`{"customer_id":"cust_bench","task":{"task_id":"bench_` + id + `","type":"categorization",` +
			`"status":"completed","instruction":"Is this object red or blue?","params":{"attachment_type":"text",` +
			`"attachment":"tomato","categories":["red","blue"]},"response":{"category":"red"},"metadata":{},` +
			`"created_at":"2016-06-23T20:08:31.573Z","completed_at":"2016-06-23T21:54:44.904Z"}}`)
		m.Header.Set(jetstream.MsgIDHeader, "evt_bench_"+id)
		msgs[i] = m
	}
	want.Store(int64(b.N))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for _, m := range msgs {
		if _, err := pub.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(time.Minute + time.Duration(b.N)*time.Millisecond):
		b.Fatalf("only %d of %d callbacks recorded as succeeded (%d received)", recorded.Load(), b.N, received.Load())
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "callbacks/s")
	st.begin.report(b, "begin")
	tr.deliver.report(b, "post")
	st.finish.report(b, "finish")
	if got := received.Load(); got != int64(b.N) {
		b.Errorf("receiver got %d requests for %d callbacks", got, b.N)
	}
}

// stage adds up the time spent in one stage of the pipeline.
type stage struct{ n, ns atomic.Int64 }

func (s *stage) since(t time.Time) {
	s.n.Add(1)
	s.ns.Add(int64(time.Since(t)))
}

func (s *stage) report(b *testing.B, name string) {
	if n := s.n.Load(); n > 0 {
		b.ReportMetric(float64(s.ns.Load())/float64(n)/1e3, name+"-µs")
	}
}

// countingStatus is the real status store, timing its calls and counting the successes it
// records.
type countingStatus struct {
	*status.Store
	onSuccess     func()
	begin, finish stage
}

func (c *countingStatus) Begin(ctx context.Context, d status.Delivery, target string, maxAttempts int, now time.Time) (status.Begun, error) {
	defer c.begin.since(time.Now())
	return c.Store.Begin(ctx, d, target, maxAttempts, now)
}

func (c *countingStatus) Finish(ctx context.Context, d status.Delivery, target string, o status.Outcome,
	e *status.AttemptLog, next, now time.Time) (bool, error) {
	start := time.Now()
	changed, err := c.Store.Finish(ctx, d, target, o, e, next, now)
	c.finish.since(start)
	if err == nil && o == status.OutcomeSucceeded {
		c.onSuccess()
	}
	return changed, err
}

// timedTransport times the HTTP attempts.
type timedTransport struct {
	worker.Transport
	deliver stage
}

func (t *timedTransport) Deliver(ctx context.Context, m delivery.Message) delivery.Result {
	defer t.deliver.since(time.Now())
	return t.Transport.Deliver(ctx, m)
}
