package load

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Side is a second customer, on an endpoint (host) of its own, publishing at a steady rate while
// the main load runs: what a quiet customer sees while another customer's burst is delivered.
type Side struct {
	js       jetstream.JetStream
	customer string
	idPrefix string
	rate     float64
	srv      *http.Server
	url      string

	mu        sync.Mutex
	seen      map[string]bool
	latencies []time.Duration
	sent      int
	errs      int

	stop chan struct{}
	done chan struct{}
}

// SideStats is the second customer's part of the report.
type SideStats struct {
	Rate      float64     `json:"rate"`
	Sent      int         `json:"sent"`
	Delivered int         `json:"delivered"`
	Errors    int         `json:"publish_errors"`
	Latency   Percentiles `json:"latency"`
}

// StartSide starts the second customer's endpoint and begins publishing rate callbacks a second
// for customerID until Finish.
func StartSide(ctx context.Context, nc *nats.Conn, customerID, idPrefix string, rate float64) (*Side, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Side{js: js, customer: customerID, idPrefix: idPrefix, rate: rate, seen: map[string]bool{},
		url: "http://" + ln.Addr().String() + "/side", stop: make(chan struct{}), done: make(chan struct{})}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.receive), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	go s.publish(ctx)
	return s, nil
}

func (s *Side) publish(ctx context.Context) {
	defer close(s.done)
	tick := time.NewTicker(time.Duration(float64(time.Second) / s.rate))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-s.stop:
			return
		case <-tick.C:
		}
		id := s.idPrefix + strconv.Itoa(i)
		body := Body(s.customer, id, time.Now().UnixNano(), s.url, "")
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.js.Publish(pctx, "tasks.completed."+s.customer, body, jetstream.WithMsgID(id))
		cancel()
		s.mu.Lock()
		if err != nil {
			s.errs++
		} else {
			s.sent++
		}
		s.mu.Unlock()
	}
}

func (s *Side) receive(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	raw, _ := io.ReadAll(r.Body)
	var body struct {
		Task struct {
			PublishedAt int64 `json:"published_at_ns"`
		} `json:"task"`
	}
	if err := json.Unmarshal(raw, &body); err == nil && body.Task.PublishedAt > 0 {
		id := r.Header.Get("webhook-id")
		s.mu.Lock()
		if !s.seen[id] {
			s.seen[id] = true
			s.latencies = append(s.latencies, at.Sub(time.Unix(0, body.Task.PublishedAt)))
		}
		s.mu.Unlock()
	}
	w.WriteHeader(http.StatusOK)
}

// Finish stops publishing, waits up to drain for the callbacks still on their way, stops the
// endpoint and returns the figures.
func (s *Side) Finish(drain time.Duration) SideStats {
	close(s.stop)
	<-s.done
	deadline := time.Now().Add(drain)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		all := len(s.seen) >= s.sent
		s.mu.Unlock()
		if all {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the count; nothing else to wait on
	}
	_ = s.srv.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	lat := slices.Clone(s.latencies)
	slices.Sort(lat)
	return SideStats{Rate: s.rate, Sent: s.sent, Delivered: len(s.seen), Errors: s.errs, Latency: percentilesOf(lat)}
}

// percentilesOf summarises sorted latencies.
func percentilesOf(sorted []time.Duration) Percentiles {
	if len(sorted) == 0 {
		return Percentiles{}
	}
	at := func(q float64) float64 {
		return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))].Seconds() * 1000
	}
	return Percentiles{N: len(sorted), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: at(1)}
}

func (st SideStats) String() string {
	return fmt.Sprintf("second customer (own endpoint, %g/s during the load): sent %d, delivered %d, publish errors %d; "+
		"publish to arrival p50 %.0fms p90 %.0fms p99 %.0fms max %.0fms",
		st.Rate, st.Sent, st.Delivered, st.Errors, st.Latency.P50, st.Latency.P90, st.Latency.P99, st.Latency.Max)
}
