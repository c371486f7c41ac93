package load

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/valyala/fasthttp"
)

// Behaviour is how the receiver answers: a share of requests fails, a share answers late, the
// rest answers 200 at once.
type Behaviour struct {
	Fail       float64       // share of requests answered FailStatus
	FailStatus int           // e.g. 500
	Slow       float64       // share of requests answered 200 after SlowDelay
	SlowDelay  time.Duration // must stay under the workers' CALLBACK_TIMEOUT
}

// Receiver plays the customers: it listens on one or more loopback ports (each one a "host" for
// the workers' per-host limits), records every request in the Tracker and answers as Behaviour
// says. It is a fasthttp server because it shares the machine with the fleet it measures: a
// receiver that answers cheaply leaves the CPU to the workers (net/http cost about twice as much
// per request here). Every SignCheckEvery-th callback is checked like a careful customer would: signature
// (with the reference Standard Webhooks verifier), auth key header and content type.
type Receiver struct {
	tracker  *Tracker
	idPrefix string
	b        Behaviour

	// customers, indexed by seq % len(customers), for the checks.
	customers      []Customer
	verifiers      []*standardwebhooks.Webhook
	signCheckEvery int64
	checked        atomic.Int64
	badChecks      atomic.Int64
	badMu          sync.Mutex
	badSamples     []string

	servers []*fasthttp.Server
	urls    []string

	onSuccess atomic.Pointer[func(seq int64)]
}

// OnSuccess sets a hook called for every callback answered 2xx (the status readers').
func (r *Receiver) OnSuccess(f func(seq int64)) { r.onSuccess.Store(&f) }

// Customer is what the receiver knows of one customer.
type Customer struct {
	ID            string
	AuthKey       string
	SigningSecret string
}

// NewReceiver listens on hosts loopback ports.
func NewReceiver(t *Tracker, idPrefix string, b Behaviour, hosts int, customers []Customer, signCheckEvery int) (*Receiver, error) {
	r := &Receiver{tracker: t, idPrefix: idPrefix, b: b, customers: customers, signCheckEvery: int64(signCheckEvery)}
	for _, c := range customers {
		v, err := standardwebhooks.NewWebhook(c.SigningSecret)
		if err != nil {
			return nil, fmt.Errorf("receiver: customer %s: %w", c.ID, err)
		}
		r.verifiers = append(r.verifiers, v)
	}
	urls, servers, err := listen(hosts, r.serve)
	if err != nil {
		return nil, err
	}
	r.urls, r.servers = urls, servers
	return r, nil
}

// URLs are the callback URLs, one per host.
func (r *Receiver) URLs() []string { return r.urls }

// Close stops listening.
func (r *Receiver) Close() { closeAll(r.servers) }

// Checks reports how many callbacks were checked and how many failed a check, with samples.
func (r *Receiver) Checks() (checked, bad int64, samples []string) {
	r.badMu.Lock()
	defer r.badMu.Unlock()
	return r.checked.Load(), r.badChecks.Load(), append([]string(nil), r.badSamples...)
}

func (r *Receiver) serve(ctx *fasthttp.RequestCtx) {
	now := time.Now().UnixNano()
	body := ctx.PostBody()
	seq, ok := parseSeq(string(ctx.Request.Header.Peek("webhook-id")), r.idPrefix)
	if !ok {
		r.tracker.foreign.Add(1)
		ctx.SetStatusCode(http.StatusOK)
		return
	}
	status := http.StatusOK
	roll := rand.Float64()
	slow := false
	switch {
	case roll < r.b.Fail:
		status = r.b.FailStatus
	case roll < r.b.Fail+r.b.Slow:
		slow = true
	}
	r.tracker.Arrived(seq, publishedAt(body, now), now, status < 300)
	if f := r.onSuccess.Load(); f != nil && status < 300 {
		(*f)(seq)
	}
	if r.signCheckEvery > 0 && seq%r.signCheckEvery == 0 && len(r.customers) > 0 {
		h := http.Header{}
		for k, v := range ctx.Request.Header.All() {
			h.Add(string(k), string(v))
		}
		r.check(seq, h, body)
	}
	if slow {
		time.Sleep(r.b.SlowDelay) // under the workers' timeout; the answer is what is late
	}
	ctx.SetStatusCode(status)
}

func (r *Receiver) check(seq int64, h http.Header, body []byte) {
	r.checked.Add(1)
	i := int(seq % int64(len(r.customers)))
	c := r.customers[i]
	var problem string
	switch {
	case h.Get("Content-Type") != "application/json":
		problem = "content type " + h.Get("Content-Type")
	case h.Get("refonte-ai--callback-auth") != c.AuthKey:
		problem = "wrong refonte-ai--callback-auth"
	case !strings.HasPrefix(h.Get("User-Agent"), "Refonte-Callbacks/"):
		problem = "user agent " + h.Get("User-Agent")
	case !bytes.Contains(body, []byte(`"task_id":"`+taskID(seq)+`"`)):
		problem = "body does not carry its task id"
	default:
		if err := r.verifiers[i].Verify(body, h); err != nil {
			problem = "signature: " + err.Error()
		}
	}
	if problem == "" {
		return
	}
	r.badChecks.Add(1)
	r.badMu.Lock()
	if len(r.badSamples) < 10 {
		r.badSamples = append(r.badSamples, fmt.Sprintf("%s: %s", h.Get("webhook-id"), problem))
	}
	r.badMu.Unlock()
}

// DeadEndpoint answers 500 to everything: the target of the parked callbacks.
type DeadEndpoint struct {
	hits    atomic.Int64
	servers []*fasthttp.Server
	urls    []string
}

// NewDeadEndpoint listens on hosts loopback ports.
func NewDeadEndpoint(hosts int) (*DeadEndpoint, error) {
	d := &DeadEndpoint{}
	urls, servers, err := listen(hosts, func(ctx *fasthttp.RequestCtx) {
		d.hits.Add(1)
		ctx.SetStatusCode(http.StatusInternalServerError)
	})
	if err != nil {
		return nil, err
	}
	d.urls, d.servers = urls, servers
	return d, nil
}

// URLs are the dead callback URLs.
func (d *DeadEndpoint) URLs() []string { return d.urls }

// Hits is the number of requests answered.
func (d *DeadEndpoint) Hits() int64 { return d.hits.Load() }

// Close stops listening.
func (d *DeadEndpoint) Close() { closeAll(d.servers) }

func listen(hosts int, h fasthttp.RequestHandler) ([]string, []*fasthttp.Server, error) {
	var (
		urls    []string
		servers []*fasthttp.Server
	)
	for range max(hosts, 1) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeAll(servers)
			return nil, nil, fmt.Errorf("receiver: %w", err)
		}
		srv := &fasthttp.Server{Handler: h, ReadTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			NoDefaultServerHeader: true, NoDefaultDate: true, NoDefaultContentType: true}
		go func() { _ = srv.Serve(l) }() // returns at Shutdown
		servers = append(servers, srv)
		urls = append(urls, "http://"+l.Addr().String()+"/callback")
	}
	return urls, servers, nil
}

func closeAll(servers []*fasthttp.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.ShutdownWithContext(ctx)
	}
}

// parseSeq reads the callback number out of a webhook-id "<prefix><seq>".
func parseSeq(id, prefix string) (int64, bool) {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	return n, err == nil && n >= 0
}

var publishedKey = []byte(`"published_at_ns":`)

// publishedAt reads the task's published_at_ns from a callback body; fallback when absent.
func publishedAt(body []byte, fallback int64) int64 {
	i := bytes.Index(body, publishedKey)
	if i < 0 {
		return fallback
	}
	var n int64
	digits := 0
	for _, c := range body[i+len(publishedKey):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
		digits++
	}
	if digits == 0 {
		return fallback
	}
	return n
}
