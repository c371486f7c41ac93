// Command bareloop is the hardware reference for the load tool, not a worker: the smallest loop
// that does a callback's unavoidable work: pull from the workers'
// JetStream consumer 64 at a time, POST each message with net/http (keep-alive), write the task's
// status hash with one Lua call, ack. No profile lookup, no signature, no attempt claim before
// the POST, no retries, no limits: what it reaches on a machine is the ceiling the fleet is
// compared with there.
//
// BARELOOP_HTTP=fasthttp POSTs with fasthttp instead (the client the worker uses), for the
// tighter of the two ceilings.
//
// It stands in for the worker binary (`loadtest -worker-bin bareloop -sign-check-every 0`): it
// reads the worker's NATS_URL, REDIS_URL, REDIS_PREFIX, METRICS_ADDR and WORKER_CONCURRENCY,
// answers /readyz, and counts its POSTs under the worker's metric name so that the load tool's
// report and its read-back of statuses work unchanged.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"refonte.ai/callbacks/pkg/stream"
)

// writeStatus is the one Lua call per delivery: the fields the load tool reads back.
var writeStatus = redis.NewScript(`
redis.call('HSET', KEYS[1], 'customer_id', ARGV[1], 'task_id', ARGV[2], 'webhook_id', ARGV[3],
  'state', 'succeeded', 'succeeded', '1', 'attempts', '1', 'updated_at', ARGV[4],
  'l:1', ARGV[5], 'logn', '1')
redis.call('EXPIRE', KEYS[1], 86400)
return 1`)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	slots := 64
	if v := os.Getenv("WORKER_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("WORKER_CONCURRENCY %q", v)
		}
		slots = n
	}
	nc, err := nats.Connect(os.Getenv("NATS_URL"))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	st, err := stream.Ensure(ctx, js, stream.DefaultConfig())
	if err != nil {
		return err
	}
	cons, err := stream.EnsureConsumer(ctx, st, stream.ConsumerConfig{Durable: "callback-workers",
		AckWait: 30 * time.Second, MaxAckPending: stream.DefaultMaxAckPending, Replicas: 1})
	if err != nil {
		return err
	}
	opt, err := redis.ParseURL(os.Getenv("REDIS_URL"))
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	opt.PoolSize = slots + 4
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := writeStatus.Load(ctx, rdb).Err(); err != nil {
		return fmt.Errorf("load the status script: %w", err)
	}
	l := &loop{cons: cons, rdb: rdb, prefix: os.Getenv("REDIS_PREFIX"), slots: slots}
	switch os.Getenv("BARELOOP_HTTP") {
	case "", "net/http":
		l.post = netHTTPPost(&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: slots, IdleConnTimeout: 30 * time.Second}})
	case "fasthttp":
		l.post = fastHTTPPost(&fasthttp.Client{MaxConnsPerHost: slots, MaxIdleConnDuration: 30 * time.Second})
	default:
		return fmt.Errorf("BARELOOP_HTTP %q: want net/http or fasthttp", os.Getenv("BARELOOP_HTTP"))
	}
	srv := &http.Server{Addr: os.Getenv("METRICS_ADDR"), Handler: l}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	l.run(ctx)
	return nil
}

type loop struct {
	cons   jetstream.Consumer
	rdb    *redis.Client
	post   func(ctx context.Context, url, id string, body []byte) (int, error)
	prefix string
	slots  int
	ok     atomic.Int64
	failed atomic.Int64
}

// ServeHTTP answers the load tool: /readyz, and /metrics with the worker's attempt counter.
func (l *loop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/metrics" {
		fmt.Fprintf(w, "refonte_callback_attempts_total{result=\"succeeded\"} %d\n", l.ok.Load())
		fmt.Fprintf(w, "refonte_callback_attempts_total{result=\"failed\"} %d\n", l.failed.Load())
		return
	}
	w.WriteHeader(http.StatusOK)
}

// run keeps slots messages in flight: a pull asks for as many as are free. It is the worker's
// pull loop, written out again on purpose: the ceiling must not move when the worker does.
func (l *loop) run(ctx context.Context) {
	free := make(chan struct{}, l.slots)
	for range l.slots {
		free <- struct{}{}
	}
	jobs := make(chan jetstream.Msg, l.slots)
	var wg sync.WaitGroup
	for range l.slots {
		wg.Go(func() {
			for msg := range jobs {
				l.deliver(ctx, msg)
				free <- struct{}{}
			}
		})
	}
	defer func() { close(jobs); wg.Wait() }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-free:
		}
		n := 1
		for n < l.slots && len(free) > 0 {
			<-free
			n++
		}
		pullCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		batch, err := l.cons.Fetch(n, jetstream.FetchContext(pullCtx))
		if err != nil {
			cancel()
			for range n {
				free <- struct{}{}
			}
			if ctx.Err() != nil {
				return
			}
			time.Sleep(100 * time.Millisecond) // a failed pull: a reference loop need not back off well
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			jobs <- msg
		}
		cancel()
		for range n - got {
			free <- struct{}{}
		}
	}
}

type completion struct {
	CustomerID string `json:"customer_id"`
	Task       struct {
		TaskID      string `json:"task_id"`
		CallbackURL string `json:"callback_url"`
	} `json:"task"`
}

func (l *loop) deliver(ctx context.Context, msg jetstream.Msg) {
	var ev completion
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		_ = msg.Term()
		return
	}
	id := msg.Headers().Get(jetstream.MsgIDHeader)
	started := time.Now()
	code, err := l.post(ctx, ev.Task.CallbackURL, id, msg.Data())
	if code/100 != 2 {
		if l.failed.Add(1) <= 3 {
			log.Printf("POST %s: status %d, %v", ev.Task.CallbackURL, code, err)
		}
		_ = msg.NakWithDelay(time.Second)
		return
	}
	entry := `{"attempt":1,"delivery":1,"at_ms":` + strconv.FormatInt(started.UnixMilli(), 10) +
		`,"status_code":` + strconv.Itoa(code) + `,"duration_ms":` + strconv.FormatInt(time.Since(started).Milliseconds(), 10) + `}`
	key := l.prefix + "{" + ev.CustomerID + "}:task:" + ev.Task.TaskID
	if err := writeStatus.EvalSha(ctx, l.rdb, []string{key}, ev.CustomerID, ev.Task.TaskID, id,
		started.UnixMilli(), entry).Err(); err != nil {
		_ = msg.Nak()
		return
	}
	l.ok.Add(1)
	_ = msg.Ack()
}

func netHTTPPost(c *http.Client) func(context.Context, string, string, []byte) (int, error) {
	return func(ctx context.Context, url, id string, body []byte) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("webhook-id", id)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return resp.StatusCode, nil
	}
}

func fastHTTPPost(c *fasthttp.Client) func(context.Context, string, string, []byte) (int, error) {
	return func(_ context.Context, url, id string, body []byte) (int, error) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		req.Header.SetMethod(http.MethodPost)
		req.Header.SetContentType("application/json")
		req.Header.Set("webhook-id", id)
		req.SetBodyRaw(body)
		if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
			return 0, err
		}
		return resp.StatusCode(), nil
	}
}
