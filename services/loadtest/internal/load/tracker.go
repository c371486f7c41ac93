package load

import (
	"sort"
	"sync/atomic"
	"time"
)

// Tracker follows every measured callback from its publication to its deliveries. Callbacks are
// numbered 0, 1, 2, … by the publisher; their entries live in lazily allocated chunks, so a run
// pays only for the callbacks it publishes and the receiver never takes a lock.
type Tracker struct {
	chunks []atomic.Pointer[chunk]
	max    int

	published  atomic.Int64 // publishes handed to the client
	pubErrors  atomic.Int64 // publishes the stream refused or never acknowledged
	arrived    atomic.Int64 // callbacks whose first request reached the receiver
	delivered  atomic.Int64 // callbacks answered 2xx at least once
	requests   atomic.Int64 // every request, retries and duplicates included
	failed     atomic.Int64 // requests answered with a failure on purpose
	duplicates atomic.Int64 // 2xx deliveries beyond the first of the same webhook-id
	foreign    atomic.Int64 // requests whose webhook-id is not one of ours
	lastOK     atomic.Int64 // unix ns of the latest first-2xx delivery
	end        atomic.Int64 // one past the highest seq published
}

const chunkSize = 1 << 16

type chunk [chunkSize]entry

type entry struct {
	pubNs   atomic.Int64 // when it was published; 0: never
	pubErr  atomic.Bool  // the stream did not take it
	firstNs atomic.Int64 // latency of the first request, publish to arrival
	okNs    atomic.Int64 // latency of the first 2xx answer, publish to arrival
	reqs    atomic.Int32
	oks     atomic.Int32
}

// NewTracker follows up to max callbacks.
func NewTracker(max int) *Tracker {
	return &Tracker{chunks: make([]atomic.Pointer[chunk], max/chunkSize+1), max: max}
}

// Max is the number of callbacks the tracker can follow.
func (t *Tracker) Max() int { return t.max }

func (t *Tracker) get(seq int64) *entry {
	if seq < 0 || seq >= int64(t.max) {
		return nil
	}
	slot := &t.chunks[seq/chunkSize]
	c := slot.Load()
	if c == nil {
		fresh := new(chunk)
		if slot.CompareAndSwap(nil, fresh) {
			c = fresh
		} else {
			c = slot.Load()
		}
	}
	return &c[seq%chunkSize]
}

// Published records that callback seq was handed to the publisher at pubNs.
func (t *Tracker) Published(seq, pubNs int64) {
	t.get(seq).pubNs.Store(pubNs)
	t.published.Add(1)
	for {
		end := t.end.Load()
		if seq < end || t.end.CompareAndSwap(end, seq+1) {
			return
		}
	}
}

// PublishFailed records that the stream did not take callback seq.
func (t *Tracker) PublishFailed(seq int64) {
	if e := t.get(seq); e != nil && !e.pubErr.Swap(true) {
		t.pubErrors.Add(1)
	}
}

// Arrived records one request for callback seq, published at pubNs (as the body says), that
// reached the receiver at nowNs and was answered ok (2xx) or not. It reports false for a
// webhook-id the tracker does not know.
func (t *Tracker) Arrived(seq, pubNs, nowNs int64, ok bool) bool {
	e := t.get(seq)
	if e == nil {
		t.foreign.Add(1)
		return false
	}
	t.requests.Add(1)
	lat := max(nowNs-pubNs, 1)
	if e.reqs.Add(1) == 1 {
		e.firstNs.Store(lat)
		t.arrived.Add(1)
	}
	if !ok {
		t.failed.Add(1)
		return true
	}
	if e.oks.Add(1) == 1 {
		e.okNs.Store(lat)
		t.delivered.Add(1)
		for {
			last := t.lastOK.Load()
			if nowNs <= last || t.lastOK.CompareAndSwap(last, nowNs) {
				break
			}
		}
	} else {
		t.duplicates.Add(1)
	}
	return true
}

// Outstanding is how many published callbacks have not reached the receiver yet.
func (t *Tracker) Outstanding() int64 {
	return t.published.Load() - t.pubErrors.Load() - t.arrived.Load()
}

// Settled reports whether every callback the stream took has been answered 2xx.
func (t *Tracker) Settled() bool {
	return t.delivered.Load() >= t.published.Load()-t.pubErrors.Load()
}

// Counts is a snapshot of the tracker's counters.
type Counts struct {
	Published     int64 `json:"published"`
	PublishErrors int64 `json:"publish_errors"`
	Delivered     int64 `json:"delivered"`
	Requests      int64 `json:"requests"`
	FailedAnswers int64 `json:"failed_answers"`
	Duplicates    int64 `json:"duplicates"`
	Foreign       int64 `json:"foreign_requests"`
	// Lost: taken by the stream, never seen by the receiver.
	Lost int64 `json:"lost"`
	// AwaitingRetry: seen, but every answer so far was a failure (a retry is scheduled).
	AwaitingRetry int64 `json:"awaiting_retry"`
}

// Summary is what the tracker knows at the end of a run.
type Summary struct {
	Counts
	First   Percentiles // publish to first request
	Success Percentiles // publish to first 2xx
	// LostSeqs and DeliveredSeqs are samples, for inspection and verification.
	LostSeqs      []int64
	DeliveredSeqs []int64
}

// Percentiles of a latency distribution, in milliseconds.
type Percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// DeliveredBetween counts first-2xx deliveries whose publish time plus latency falls in
// [from, to).
func (t *Tracker) DeliveredBetween(from, to time.Time) int64 {
	f, u := from.UnixNano(), to.UnixNano()
	var n int64
	t.each(func(_ int64, e *entry) {
		if lat := e.okNs.Load(); lat > 0 {
			at := e.pubNs.Load() + lat
			if at >= f && at < u {
				n++
			}
		}
	})
	return n
}

// each calls fn for every published callback.
func (t *Tracker) each(fn func(seq int64, e *entry)) {
	end := t.end.Load()
	for seq := int64(0); seq < end; seq++ {
		c := t.chunks[seq/chunkSize].Load()
		if c == nil {
			seq += chunkSize - seq%chunkSize - 1
			continue
		}
		if e := &c[seq%chunkSize]; e.pubNs.Load() != 0 {
			fn(seq, e)
		}
	}
}

// Summarize walks every published callback. sample bounds the seq samples it keeps; latencies
// count only callbacks published at or after latencyFrom (unix ns), so a warm-up can be left out.
func (t *Tracker) Summarize(sample int, latencyFrom int64) Summary {
	s := Summary{Counts: Counts{
		Published:     t.published.Load(),
		PublishErrors: t.pubErrors.Load(),
		Delivered:     t.delivered.Load(),
		Requests:      t.requests.Load(),
		FailedAnswers: t.failed.Load(),
		Duplicates:    t.duplicates.Load(),
		Foreign:       t.foreign.Load(),
	}}
	first := make([]int64, 0, s.Published)
	succ := make([]int64, 0, s.Published)
	var delivered []int64
	t.each(func(seq int64, e *entry) {
		if e.pubErr.Load() {
			return
		}
		switch {
		case e.reqs.Load() == 0:
			s.Lost++
			if len(s.LostSeqs) < sample {
				s.LostSeqs = append(s.LostSeqs, seq)
			}
		case e.oks.Load() == 0:
			s.AwaitingRetry++
		default:
			delivered = append(delivered, seq)
		}
		if e.pubNs.Load() < latencyFrom {
			return
		}
		if v := e.firstNs.Load(); v > 0 {
			first = append(first, v)
		}
		if v := e.okNs.Load(); v > 0 {
			succ = append(succ, v)
		}
	})
	s.First, s.Success = percentiles(first), percentiles(succ)
	// An evenly spread sample of the delivered callbacks.
	if len(delivered) <= sample {
		s.DeliveredSeqs = delivered
	} else {
		step := float64(len(delivered)) / float64(sample)
		for i := range sample {
			s.DeliveredSeqs = append(s.DeliveredSeqs, delivered[int(float64(i)*step)])
		}
	}
	return s
}

func percentiles(ns []int64) Percentiles {
	if len(ns) == 0 {
		return Percentiles{}
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(ns))+0.5) - 1
		i = min(max(i, 0), len(ns)-1)
		return ms(ns[i])
	}
	return Percentiles{N: len(ns), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ms(ns[len(ns)-1])}
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }
