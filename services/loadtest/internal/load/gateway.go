package load

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Gateway is the gateway process of the run: customers read their tasks' status through it.
type Gateway struct {
	*proc
	URL string
}

// PID is the process id.
func (g *Gateway) PID() int { return g.cmd.Process.Pid }

// StartGateway starts the gateway with env (KEY=VALUE) on a free loopback port and waits until
// it is ready.
func StartGateway(ctx context.Context, bin, dir string, env []string) (*Gateway, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := spawn("gateway", bin, dir, append(env, "GATEWAY_ADDR="+addr))
	if err != nil {
		return nil, err
	}
	g := &Gateway{proc: p, URL: "http://" + addr}
	if err := waitHTTP(ctx, g.URL+"/readyz", 60*time.Second, g.done); err != nil {
		g.stop(5 * time.Second)
		return nil, fmt.Errorf("gateway: %w\n%s", err, g.tail())
	}
	return g, nil
}

// StatusReads is what the customers' status reads through the gateway saw.
type StatusReads struct {
	Share   float64 `json:"share"` // of delivered callbacks
	Reads   int64   `json:"reads"`
	OK      int64   `json:"ok"`
	Failed  int64   `json:"failed"`
	Dropped int64   `json:"dropped"` // the readers were busy; not sent
	// FailedSample is a few of the failures, for the report.
	FailedSample []string    `json:"failed_sample,omitempty"`
	Latency      Percentiles `json:"latency"`
}

// StatusReader plays customers who read a task's callback status (GET
// /v1/task/{id}/callback) right after its callback arrived, for one callback in every.
type StatusReader struct {
	gateway string
	share   float64
	every   int64
	apiKeys []string // by seq % len
	client  *http.Client
	queue   chan int64
	wg      sync.WaitGroup

	reads, ok, failed, dropped atomic.Int64
	closing                    sync.RWMutex // Arrived sends on queue only while it is open
	closed                     bool
	mu                         sync.Mutex
	latencies                  []int64
	failedSample               []string
}

// statusReaders is how many reads may be in flight at once: customers poll in parallel, but
// the load tool shares the machine with what it measures.
const statusReaders = 8

// NewStatusReader reads the status of one callback in round(1/share), as the customer whose
// API key is apiKeys[seq % len(apiKeys)].
func NewStatusReader(gatewayURL string, share float64, apiKeys []string) *StatusReader {
	r := &StatusReader{
		gateway: gatewayURL,
		share:   share,
		every:   max(int64(1/share+0.5), 1),
		apiKeys: apiKeys,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: statusReaders}},
		queue: make(chan int64, 4096),
	}
	for range statusReaders {
		r.wg.Go(func() {
			for seq := range r.queue {
				r.read(seq)
			}
		})
	}
	return r
}

// Arrived is the receiver's hook: a callback for seq arrived and was answered 2xx.
func (r *StatusReader) Arrived(seq int64) {
	if seq%r.every != 0 {
		return
	}
	r.closing.RLock()
	defer r.closing.RUnlock()
	if r.closed {
		return
	}
	select {
	case r.queue <- seq:
	default:
		r.dropped.Add(1)
	}
}

func (r *StatusReader) read(seq int64) {
	r.reads.Add(1)
	start := time.Now()
	problem := ""
	req, err := http.NewRequest(http.MethodGet, r.gateway+"/v1/task/"+taskID(seq)+"/callback", nil)
	if err == nil {
		req.SetBasicAuth(r.apiKeys[seq%int64(len(r.apiKeys))], "")
		var resp *http.Response
		if resp, err = r.client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				problem = fmt.Sprintf("%s: status %d", taskID(seq), resp.StatusCode)
			}
		}
	}
	if err != nil {
		problem = fmt.Sprintf("%s: %v", taskID(seq), err)
	}
	took := time.Since(start).Nanoseconds()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latencies = append(r.latencies, took)
	if problem != "" {
		r.failed.Add(1)
		if len(r.failedSample) < 5 {
			r.failedSample = append(r.failedSample, problem)
		}
		return
	}
	r.ok.Add(1)
}

// Close waits for the reads queued so far and reports them.
func (r *StatusReader) Close() *StatusReads {
	r.closing.Lock()
	if !r.closed {
		r.closed = true
		close(r.queue)
	}
	r.closing.Unlock()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	return &StatusReads{Share: r.share, Reads: r.reads.Load(), OK: r.ok.Load(), Failed: r.failed.Load(),
		Dropped: r.dropped.Load(), FailedSample: r.failedSample, Latency: percentiles(r.latencies)}
}
