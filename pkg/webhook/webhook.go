// Package webhook is the HTTP transport: one POST per attempt, with connect-time address
// filtering, TLS 1.2+, no redirects and capped reads, so that the URLs strangers choose can
// neither reach our own network nor hold a worker hostage.
package webhook

import (
	"bytes"
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

// Sender posts callbacks.
type Sender struct {
	client *http.Client
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
	tr := &http.Transport{
		Proxy:                  nil, // a proxy would dial for us, past the address filter
		DialContext:            dialer.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    cfg.ConnectTimeout,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxResponseHeaderBytes: 16 << 10,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    cfg.MaxConnsPerHost,
		MaxConnsPerHost:        cfg.MaxConnsPerHost,
		IdleConnTimeout:        90 * time.Second,
		ForceAttemptHTTP2:      true,
	}
	return &Sender{
		cfg: cfg,
		client: &http.Client{
			Transport: tr,
			// Redirects are never followed (CONTRACT §2): a 3xx is a failed attempt.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

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

// Deliver makes one attempt.
func (s *Sender) Deliver(ctx context.Context, m delivery.Message) delivery.Result {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	res := s.post(ctx, m)
	res.Duration = time.Since(start)
	return res
}

func (s *Sender) post(ctx context.Context, m delivery.Message) delivery.Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.Target.URL.String(), bytes.NewReader(m.Body))
	if err != nil {
		return delivery.Result{Err: err, Permanent: true}
	}
	// Keys already in canonical form, set directly: Header.Set canonicalises every key again.
	req.Header = http.Header{
		"Content-Type":              {"application/json"},
		"User-Agent":                {s.cfg.UserAgent},
		"Refonte-Ai--Callback-Auth": {m.AuthKey},
		"Webhook-Id":                {m.WebhookID},
		"Webhook-Timestamp":         {strconv.FormatInt(m.Timestamp.Unix(), 10)},
		"Webhook-Signature":         {m.Signature},
	}
	for k, v := range m.Header {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return delivery.Result{Err: describe(err, s.cfg.Timeout)}
	}
	defer resp.Body.Close()
	excerpt := make([]byte, delivery.ExcerptLimit)
	n, readErr := io.ReadFull(resp.Body, excerpt)
	if readErr == nil {
		// Read on a little so the connection can be reused; stop at the cap.
		_, readErr = io.CopyN(io.Discard, resp.Body, maxDrain)
	}
	res := delivery.Result{StatusCode: resp.StatusCode, Excerpt: printable(excerpt[:n])}
	if readErr != nil && !errors.Is(readErr, io.EOF) && !errors.Is(readErr, io.ErrUnexpectedEOF) {
		// The status line came, but the answer did not finish within the timeout (an endpoint
		// that trickles its answer): that is not a 2xx "within CALLBACK_TIMEOUT".
		res.Err = describe(readErr, s.cfg.Timeout)
		return res
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return res
	}
	res.Err = fmt.Errorf("HTTP %d", resp.StatusCode)
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		res.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return res
}

// describe turns a transport error into a sentence fit for the customer's attempt log.
func describe(err error, timeout time.Duration) error {
	var (
		opErr  *net.OpError
		dnsErr *net.DNSError
	)
	switch {
	case errors.Is(err, ssrf.ErrProhibitedIP), errors.Is(err, ssrf.ErrProhibitedPort),
		errors.Is(err, ssrf.ErrProhibitedNetwork), errors.Is(err, ssrf.ErrInvalidHostPort):
		return fmt.Errorf("blocked: the callback address is not allowed (%s)", innermost(err))
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return fmt.Errorf("timeout: no complete answer within %s", timeout)
	case errors.As(err, &dnsErr):
		return fmt.Errorf("DNS lookup of %s failed: %s", dnsErr.Name, dnsErr.Err)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("connection failed: %s", innermost(err))
	default:
		return fmt.Errorf("request failed: %s", innermost(err))
	}
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
