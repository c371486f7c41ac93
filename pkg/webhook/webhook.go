// Package webhook is the HTTP transport: one POST per attempt, with connect-time address
// filtering, TLS 1.2+, no redirects and capped reads, so that the URLs strangers choose can
// neither reach our own network nor hold a worker hostage.
package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"code.dny.dev/ssrf"
	"github.com/valyala/fasthttp"

	"refonte.ai/callbacks/pkg/delivery"
)

// Config of the HTTP transport.
type Config struct {
	// Timeout bounds a whole attempt: connect, TLS, request, response headers and the read.
	Timeout time.Duration
	// ConnectTimeout bounds the TCP connect alone.
	ConnectTimeout time.Duration
	// AllowPrivate lifts the address filter (development and tests only).
	AllowPrivate bool
	// AllowedCIDRs are ranges let through although they are private (an operator's one
	// internal range).
	AllowedCIDRs []netip.Prefix
	// Ports that may be dialled; empty with AllowPrivate means any port.
	Ports []uint16
	// UserAgent is sent on every request.
	UserAgent string
	// MaxConnsPerHost caps connections to one host.
	MaxConnsPerHost int
}

// DefaultPorts are the only ports callbacks go to unless configured otherwise.
var DefaultPorts = []uint16{80, 443}

// maxDrain is how much of an answer is read past the excerpt so the connection can be reused;
// a bigger answer closes the connection instead.
const maxDrain = 64 << 10

// maxHeaderBytes bounds an answer's status line and headers; a bigger header fails the attempt.
const maxHeaderBytes = 16 << 10

// Sender posts callbacks.
//
// It is built on fasthttp rather than net/http: under load the net/http client (a reader and a
// writer goroutine per connection, a request and response object graph per attempt) was the
// biggest single cost of a delivery; fasthttp's pooled requests and connections halve the
// CPU of an attempt (BenchmarkDeliver). What that costs: a context bounds an attempt only
// through its deadline, and endpoints are spoken to in HTTP/1.1 (no HTTP/2).
type Sender struct {
	client *fasthttp.Client
	cfg    Config
}

// New builds a Sender.
func New(cfg Config) *Sender {
	if cfg.ConnectTimeout <= 0 || cfg.ConnectTimeout > cfg.Timeout {
		cfg.ConnectTimeout = min(10*time.Second, cfg.Timeout)
	}
	if cfg.MaxConnsPerHost <= 0 {
		cfg.MaxConnsPerHost = 64
	}
	dialer := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	if policy := AddressPolicy(cfg); policy != nil {
		dialer.Control = func(network, address string, _ syscall.RawConn) error { return policy(network, address) }
	}
	return &Sender{
		cfg: cfg,
		client: &fasthttp.Client{
			// Our dialer, so that every address passes the filter after DNS resolution. No proxy
			// is ever used: a proxy would dial for us, past the filter.
			DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
				ctx, cancel := context.WithTimeout(context.Background(), min(timeout, cfg.ConnectTimeout))
				defer cancel()
				return dialer.DialContext(ctx, "tcp", addr)
			},
			TLSConfig:          &tls.Config{MinVersion: tls.VersionTLS12},
			MaxConnsPerHost:    cfg.MaxConnsPerHost,
			MaxConnWaitTimeout: cfg.Timeout,
			// Shorter than the keep-alive timeouts of most load balancers (60 s and more); a
			// server that drops idle connections sooner (Node and Apache: 5 s) costs one
			// retried write, below.
			MaxIdleConnDuration:      idleConnTimeout,
			ReadBufferSize:           maxHeaderBytes,
			StreamResponseBody:       true, // the answer is read up to a cap, never buffered whole
			NoDefaultUserAgentHeader: true,
			DisablePathNormalizing:   true, // the customer's path is sent exactly as registered
			ConfigureClient: func(hc *fasthttp.HostClient) error {
				// Parse errors otherwise quote kilobytes of the answer, which would land in the
				// attempt log and our logs.
				hc.SecureErrorLogMessage = true
				return nil
			},
			// A POST is never repeated, except once when a kept-alive connection turns out to
			// have been closed by the server before it answered (as net/http does): the
			// callback carries its webhook-id, and the alternative is a failed attempt and a
			// retry minutes later for an endpoint that did nothing wrong.
			MaxIdemponentCallAttempts: 2,
			RetryIfErr: func(_ *fasthttp.Request, attempts int, err error) (bool, bool) {
				return false, attempts == 1 && closedBeforeAnswer(err)
			},
		},
	}
}

// idleConnTimeout is how long an unused connection to an endpoint is kept.
const idleConnTimeout = 30 * time.Second

// AddressPolicy is the check every connection passes at dial time, after DNS resolution, so a
// name that resolves (or rebinds) to an internal address is refused like the address itself. It
// is nil when nothing is filtered (AllowPrivate without a port list).
func AddressPolicy(cfg Config) func(network, address string) error {
	if cfg.AllowPrivate && len(cfg.Ports) == 0 {
		return nil
	}
	g := guardian(cfg)
	return func(network, address string) error { return g.Safe(network, address, nil) }
}

func guardian(cfg Config) *ssrf.Guardian {
	var opts []ssrf.Option
	switch {
	case len(cfg.Ports) > 0:
		opts = append(opts, ssrf.WithPorts(cfg.Ports...))
	case cfg.AllowPrivate:
		opts = append(opts, ssrf.WithAnyPort())
	default:
		opts = append(opts, ssrf.WithPorts(DefaultPorts...))
	}
	if cfg.AllowPrivate {
		opts = append(opts, ssrf.WithAllowedV4Prefixes(netip.MustParsePrefix("0.0.0.0/0")),
			ssrf.WithAllowedV6Prefixes(netip.MustParsePrefix("::/0")))
	}
	var v4, v6 []netip.Prefix
	for _, p := range cfg.AllowedCIDRs {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	opts = append(opts, ssrf.WithAllowedV4Prefixes(v4...), ssrf.WithAllowedV6Prefixes(v6...))
	return ssrf.New(opts...)
}

// Deliver makes one attempt. ctx bounds it through its deadline only.
func (s *Sender) Deliver(ctx context.Context, m delivery.Message) delivery.Result {
	start := time.Now()
	deadline := start.Add(s.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	res := s.post(m, deadline)
	res.Duration = time.Since(start)
	return res
}

func (s *Sender) post(m delivery.Message, deadline time.Time) delivery.Result {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)

	req.SetRequestURI(m.Target.URL.String())
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.SetUserAgent(s.cfg.UserAgent)
	req.Header.Set("Refonte-Ai--Callback-Auth", m.AuthKey)
	req.Header.Set("Webhook-Id", m.WebhookID)
	var ts [20]byte
	req.Header.SetBytesV("Webhook-Timestamp", strconv.AppendInt(ts[:0], m.Timestamp.Unix(), 10))
	req.Header.Set("Webhook-Signature", m.Signature)
	for k, v := range m.Header {
		req.Header.Set(k, v)
	}
	req.SetBodyRaw(m.Body)

	// Redirects are never followed (docs/receiving.md): Do returns the 3xx, a failed attempt.
	if err := s.client.DoDeadline(req, resp, deadline); err != nil {
		return delivery.Result{Err: describe(err, s.cfg.Timeout)}
	}
	code := resp.StatusCode()
	excerpt := make([]byte, delivery.ExcerptLimit)
	var (
		n       int
		readErr error
	)
	if body := resp.BodyStream(); body != nil {
		n, readErr = io.ReadFull(body, excerpt)
		if readErr == nil {
			// Read on a little so the connection can be reused; past the cap, closing the
			// stream closes the connection.
			_, readErr = io.CopyN(io.Discard, body, maxDrain)
		}
		_ = resp.CloseBodyStream()
	}
	res := delivery.Result{StatusCode: code, Excerpt: printable(excerpt[:n])}
	if readErr != nil && !errors.Is(readErr, io.EOF) && !errors.Is(readErr, io.ErrUnexpectedEOF) {
		// The status line came, but the answer did not finish within the timeout (an endpoint
		// that trickles its answer): that is not a 2xx "within CALLBACK_TIMEOUT".
		res.Err = describe(readErr, s.cfg.Timeout)
		return res
	}
	if code >= 200 && code < 300 {
		return res
	}
	res.Err = fmt.Errorf("HTTP %d", code)
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		res.RetryAfter = parseRetryAfter(string(resp.Header.Peek("Retry-After")), time.Now())
	}
	return res
}

// closedBeforeAnswer tells a connection the server closed before it sent a byte of an answer.
func closedBeforeAnswer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// describe turns a transport error into a sentence fit for the customer's attempt log.
func describe(err error, timeout time.Duration) error {
	var (
		opErr       *net.OpError
		dnsErr      *net.DNSError
		smallBuffer *fasthttp.ErrSmallBuffer
	)
	switch {
	case errors.Is(err, ssrf.ErrProhibitedIP), errors.Is(err, ssrf.ErrProhibitedPort),
		errors.Is(err, ssrf.ErrProhibitedNetwork), errors.Is(err, ssrf.ErrInvalidHostPort):
		return fmt.Errorf("blocked: the callback address is not allowed (%s)", innermost(err))
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return fmt.Errorf("timeout: no connection to the endpoint came free within %s", timeout)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, fasthttp.ErrTimeout) ||
		errors.Is(err, fasthttp.ErrDialTimeout) || errors.Is(err, fasthttp.ErrTLSHandshakeTimeout) || isTimeout(err):
		return fmt.Errorf("timeout: no complete answer within %s", timeout)
	case errors.As(err, &smallBuffer):
		return fmt.Errorf("request failed: the answer's headers exceed %d bytes", maxHeaderBytes)
	case closedBeforeAnswer(err):
		return errors.New("connection closed by the endpoint before it answered")
	case errors.As(err, &dnsErr):
		return fmt.Errorf("DNS lookup of %s failed: %s", dnsErr.Name, dnsErr.Err)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("connection failed: %s", innermost(err))
	default:
		return fmt.Errorf("request failed: %s", shorten(innermost(err)))
	}
}

// maxReason bounds a transport error as shown in the attempt log.
const maxReason = 300

// shorten keeps a reason printable and at most maxReason bytes.
func shorten(reason string) string {
	if len(reason) <= maxReason {
		return printable([]byte(reason))
	}
	return printable([]byte(reason[:maxReason])) + "…"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// innermost drops the `Post "<url>":` prefix of a *url.Error: the URL may hold credentials and
// the attempt log shows the target anyway.
func innermost(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// printable keeps an excerpt safe to show: a rune cut at the end is dropped, any other invalid
// byte replaced.
func printable(b []byte) string {
	for i := 0; i < utf8.UTFMax-1 && len(b) > 0 && !utf8.Valid(b); i++ {
		b = b[:len(b)-1]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
