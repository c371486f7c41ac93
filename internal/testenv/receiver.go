package testenv

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Request is one request the receiver got.
type Request struct {
	At     time.Time
	Header http.Header
	Body   []byte
}

// Receiver is an httptest server that records every request and answers with Respond.
type Receiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []Request
	// Respond answers the n-th request (1-based); nil answers 200.
	Respond func(n int, w http.ResponseWriter, r *http.Request)
}

// NewReceiver starts a receiver, closed at cleanup.
func NewReceiver(t testing.TB, respond func(n int, w http.ResponseWriter, r *http.Request)) *Receiver {
	rc := &Receiver{Respond: respond}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Server.Close)
	return rc
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.requests = append(rc.requests, Request{At: time.Now(), Header: r.Header.Clone(), Body: body})
	n := len(rc.requests)
	respond := rc.Respond
	rc.mu.Unlock()
	if respond == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	respond(n, w, r)
}

// SetRespond replaces Respond while the receiver serves, e.g. with a function that looks at the
// receiver's own records.
func (rc *Receiver) SetRespond(respond func(n int, w http.ResponseWriter, r *http.Request)) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.Respond = respond
}

// Requests returns a copy of what was received so far.
func (rc *Receiver) Requests() []Request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Request(nil), rc.requests...)
}

// Request returns the n-th request received (1-based, as Respond numbers them).
func (rc *Receiver) Request(n int) Request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests[n-1]
}

// Count is the number of requests received.
func (rc *Receiver) Count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.requests)
}

// Failing answers status to the first n requests and 200 afterwards.
func Failing(n, status int) func(int, http.ResponseWriter, *http.Request) {
	return func(i int, w http.ResponseWriter, _ *http.Request) {
		if i <= n {
			w.WriteHeader(status)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

// Gate holds a receiver's answers past the first few until Open: a fault injected meanwhile
// (a signal, a kill, an outage) lands with deliveries in flight and more to come, however fast
// the workers drain the load, instead of the load racing the injection.
type Gate struct {
	after int
	open  chan struct{}
	once  sync.Once
}

// NewGate holds answers to requests after the first `after`; it opens at cleanup at the latest.
func NewGate(t testing.TB, after int) *Gate {
	g := &Gate{after: after, open: make(chan struct{})}
	t.Cleanup(g.Open)
	return g
}

// Wait blocks the n-th request (1-based, as Respond numbers them) while the gate holds it; false
// if the client gave up meanwhile.
func (g *Gate) Wait(n int, r *http.Request) bool {
	if n <= g.after {
		return true
	}
	select {
	case <-g.open:
		return true
	case <-r.Context().Done():
		return false
	}
}

// Open lets every held request through, and the ones after them.
func (g *Gate) Open() { g.once.Do(func() { close(g.open) }) }
