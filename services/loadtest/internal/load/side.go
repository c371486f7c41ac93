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
	"strings"
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
	arrivals  []sideArrival
	start     time.Time
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
	// ByPublishTime is the latency of the callbacks published in each half second of the run:
	// where in a burst the slow ones were published.
	ByPublishTime []SideSlice `json:"by_publish_time,omitempty"`
}

// SideSlice is the second customer's callbacks published in one half second of the run.
type SideSlice struct {
	From float64 `json:"from_s"` // seconds after the second customer's first publish
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	Max  float64 `json:"max_ms"`
}

type sideArrival struct {
	published time.Time
	latency   time.Duration
}

const sideSlice = 500 * time.Millisecond

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
	s := &Side{js: js, customer: customerID, idPrefix: idPrefix, rate: rate, seen: map[string]bool{}, start: time.Now(),
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
			published := time.Unix(0, body.Task.PublishedAt)
			s.latencies = append(s.latencies, at.Sub(published))
			s.arrivals = append(s.arrivals, sideArrival{published: published, latency: at.Sub(published)})
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
	return SideStats{Rate: s.rate, Sent: s.sent, Delivered: len(s.seen), Errors: s.errs, Latency: percentilesOf(lat),
		ByPublishTime: slicesByPublishTime(s.start, s.arrivals)}
}

// slicesByPublishTime groups arrivals by the half second they were published in.
func slicesByPublishTime(start time.Time, arrivals []sideArrival) []SideSlice {
	groups := map[int][]time.Duration{}
	last := -1
	for _, a := range arrivals {
		i := max(0, int(a.published.Sub(start)/sideSlice))
		groups[i] = append(groups[i], a.latency)
		last = max(last, i)
	}
	var out []SideSlice
	for i := 0; i <= last; i++ {
		lat := groups[i]
		if len(lat) == 0 {
			continue
		}
		slices.Sort(lat)
		p := percentilesOf(lat)
		out = append(out, SideSlice{From: (time.Duration(i) * sideSlice).Seconds(), N: p.N, P50: p.P50, Max: p.Max})
	}
	return out
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
		st.Rate, st.Sent, st.Delivered, st.Errors, st.Latency.P50, st.Latency.P90, st.Latency.P99, st.Latency.Max) +
		st.slicesString()
}

func (st SideStats) slicesString() string {
	if len(st.ByPublishTime) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n  by publish time (s: n p50/max ms):")
	for _, sl := range st.ByPublishTime {
		fmt.Fprintf(&b, " %.1f: %d %.0f/%.0f;", sl.From, sl.N, sl.P50, sl.Max)
	}
	return b.String()
}
