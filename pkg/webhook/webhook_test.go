package webhook_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"refonte.ai/callbacks/pkg/delivery"
	"refonte.ai/callbacks/pkg/target"
	"refonte.ai/callbacks/pkg/webhook"
)

func msg(t *testing.T, url string) delivery.Message {
	t.Helper()
	tg, err := target.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	return delivery.Message{Target: tg, Body: []byte(`{}`), WebhookID: "msg_1", Timestamp: time.Now(),
		Signature: "v1,x", AuthKey: "k"}
}

// countingServer counts TCP connections, not just requests, so "no connection" is checked.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func port(srv *httptest.Server) uint16 {
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

// With default settings, loopback targets are refused at connect time; the listener never sees
// a connection. The listener's port is allowed so that it is the address rule that refuses.
func TestDeliver_refuses_loopback_by_default(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	p := strconv.Itoa(int(port(srv)))
	s := webhook.New(webhook.Config{Timeout: 2 * time.Second, Ports: []uint16{port(srv)}})
	for _, u := range []string{
		"http://127.0.0.1:" + p + "/hook",
		"http://localhost:" + p + "/hook", // a name that resolves to loopback
		"http://[::1]:" + p + "/hook",
		"http://[::ffff:127.0.0.1]:" + p + "/hook", // IPv4-mapped IPv6
	} {
		res := s.Deliver(context.Background(), msg(t, u))
		if res.OK() || !strings.HasPrefix(res.Err.Error(), "blocked") {
			t.Errorf("%s: result %v, want a blocked attempt", u, res.Err)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the target saw %d connections", n)
	}
}

// A redirect to loopback from an allowed host is not followed (redirects never are), and the
// address filter would refuse it anyway.
func TestDeliver_redirect_to_internal_is_not_followed(t *testing.T) {
	internal, internalConns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	public := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/steal", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(public.Close)
	// The "public" server is allowed through an operator allow-list of its exact address.
	s := webhook.New(webhook.Config{Timeout: 2 * time.Second, Ports: []uint16{port(public), port(internal)},
		AllowedCIDRs: []netip.Prefix{netip.MustParsePrefix(public.Listener.Addr().(*net.TCPAddr).IP.String() + "/32")}})
	// Both listen on 127.0.0.1, so the allow-list admits both; the point here is that no
	// redirect is followed.
	res := s.Deliver(context.Background(), msg(t, public.URL+"/hook"))
	if res.OK() || res.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("result %d %v, want a failed 307", res.StatusCode, res.Err)
	}
	if n := internalConns.Load(); n != 0 {
		t.Errorf("the redirect target saw %d connections", n)
	}
}

// Private, shared, link-local (cloud metadata), multicast and unspecified addresses are refused
// before any packet is sent. These are checked on the dial path without a listener: traffic to
// such addresses must never leave this machine, even if the filter were broken.
func TestAddressPolicy_denies_non_public_ranges(t *testing.T) {
	deny := []string{"10.0.0.1:80", "172.16.5.4:443", "192.168.1.1:80", "100.64.0.1:80",
		"169.254.169.254:80", "224.0.0.1:80", "0.0.0.0:80", "127.0.0.1:80",
		"[::1]:80", "[fd00::1]:443", "[fe80::1]:80", "[::ffff:10.0.0.1]:80", "[::ffff:169.254.169.254]:80", "[::]:80"}
	check := webhook.AddressPolicy(webhook.Config{})
	for _, a := range deny {
		if err := check("tcp4", a); err == nil {
			t.Errorf("%s allowed by default", a)
		}
	}
	if err := check("tcp4", "93.184.216.34:443"); err != nil {
		t.Errorf("a public address is refused: %v", err)
	}
	if err := check("tcp4", "93.184.216.34:8080"); err == nil {
		t.Error("a port other than 80/443 is allowed by default")
	}
	allow := webhook.AddressPolicy(webhook.Config{AllowedCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}})
	if err := allow("tcp4", "10.1.2.3:443"); err != nil {
		t.Errorf("an allow-listed range is refused: %v", err)
	}
	if err := allow("tcp4", "10.2.0.1:443"); err == nil {
		t.Error("the allow-list lets through more than its range")
	}
	open := webhook.AddressPolicy(webhook.Config{AllowPrivate: true})
	if open != nil {
		if err := open("tcp4", "10.0.0.1:8080"); err != nil {
			t.Errorf("CALLBACK_ALLOW_PRIVATE does not lift the filter: %v", err)
		}
	}
}

func TestDeliver_reads_only_a_capped_excerpt(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Header().Set("Retry-After", "120")
		_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
	}))
	t.Cleanup(srv.Close)
	s := webhook.New(webhook.Config{Timeout: 5 * time.Second, AllowPrivate: true})
	res := s.Deliver(context.Background(), msg(t, srv.URL))
	if res.OK() || res.StatusCode != 503 || len(res.Excerpt) != delivery.ExcerptLimit {
		t.Errorf("status %d, excerpt %d bytes", res.StatusCode, len(res.Excerpt))
	}
}

func TestDeliver_retry_after_is_reported(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	s := webhook.New(webhook.Config{Timeout: 5 * time.Second, AllowPrivate: true})
	if res := s.Deliver(context.Background(), msg(t, srv.URL)); res.RetryAfter != 2*time.Minute {
		t.Errorf("RetryAfter = %s, want 2m", res.RetryAfter)
	}
}

// An endpoint that sends its status at once and then trickles the body past the timeout has not
// answered within CALLBACK_TIMEOUT.
func TestDeliver_trickling_answer_is_a_timeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		for range 20 {
			if _, err := w.Write([]byte("x")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(srv.Close)
	s := webhook.New(webhook.Config{Timeout: 300 * time.Millisecond, AllowPrivate: true})
	res := s.Deliver(context.Background(), msg(t, srv.URL))
	if res.OK() || !strings.HasPrefix(res.Err.Error(), "timeout") {
		t.Errorf("result %v, want a timeout", res.Err)
	}
}

// The request is the callback exactly: path and query as registered (not normalised), the
// contract's headers, the body byte for byte, and kept-alive connections reused.
func TestDeliver_sends_the_callback_as_given(t *testing.T) {
	type seen struct {
		method, uri, body string
		header            http.Header
	}
	got := make(chan seen, 2)
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, string(b), r.Header.Clone()}
	})
	s := webhook.New(webhook.Config{Timeout: 2 * time.Second, AllowPrivate: true, UserAgent: "Refonte-Callbacks/test"})
	m := msg(t, srv.URL+"/hooks//a%2Fb/./c?x=1&y=%20")
	m.Body = []byte(`{"task_id":"t1","status":"completed"}`)
	m.Header = map[string]string{"Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	for range 2 {
		if res := s.Deliver(context.Background(), m); !res.OK() {
			t.Fatalf("deliver: %v", res.Err)
		}
		r := <-got
		if r.method != http.MethodPost || r.uri != "/hooks//a%2Fb/./c?x=1&y=%20" || r.body != string(m.Body) {
			t.Errorf("got %s %s %q", r.method, r.uri, r.body)
		}
		for k, want := range map[string]string{
			"Content-Type": "application/json", "User-Agent": "Refonte-Callbacks/test",
			"Refonte-Ai--Callback-Auth": m.AuthKey, "Webhook-Id": m.WebhookID,
			"Webhook-Timestamp": strconv.FormatInt(m.Timestamp.Unix(), 10), "Webhook-Signature": m.Signature,
			"Traceparent": m.Header["Traceparent"],
		} {
			if v := r.header.Get(k); v != want {
				t.Errorf("header %s = %q, want %q", k, v, want)
			}
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("two deliveries opened %d connections, want 1 kept alive", n)
	}
}

// hijackingServer answers through the raw connection: answer(conn) writes what it likes and the
// connection is then closed without a "Connection: close", as a server that drops idle or
// broken connections does.
func hijackingServer(t *testing.T, answer func(c net.Conn)) (*httptest.Server, *atomic.Int64, *atomic.Int64) {
	var requests atomic.Int64
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		answer(c)
		_ = c.Close()
	})
	return srv, conns, &requests
}

// A kept-alive connection that the server closed after its last answer is not the endpoint's
// failure: the callback goes again once, on a new connection, within the same attempt.
func TestDeliver_connection_closed_while_idle_is_retried_on_a_new_one(t *testing.T) {
	srv, conns, requests := hijackingServer(t, func(c net.Conn) {
		_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	})
	s := webhook.New(webhook.Config{Timeout: 2 * time.Second, AllowPrivate: true})
	for i := range 3 {
		if res := s.Deliver(context.Background(), msg(t, srv.URL)); !res.OK() {
			t.Fatalf("delivery %d: %v", i+1, res.Err)
		}
	}
	if c, r := conns.Load(), requests.Load(); c != 3 || r != 3 {
		t.Errorf("%d connections and %d requests for 3 deliveries, want 3 and 3", c, r)
	}
}

// An endpoint that closes every connection without answering gets the callback twice at most
// (the retry above), and the attempt fails with a readable reason.
func TestDeliver_endpoint_closing_without_answer_fails(t *testing.T) {
	srv, _, requests := hijackingServer(t, func(net.Conn) {})
	s := webhook.New(webhook.Config{Timeout: 2 * time.Second, AllowPrivate: true})
	res := s.Deliver(context.Background(), msg(t, srv.URL))
	if res.OK() || res.Err.Error() != "connection closed by the endpoint before it answered" {
		t.Errorf("result %v, want a closed connection", res.Err)
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("the endpoint saw %d requests, want 2 (one retry)", n)
	}
}

// Headers past the cap fail the attempt instead of being buffered.
func TestDeliver_oversized_answer_headers_fail(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("x", 32<<10))
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	s := webhook.New(webhook.Config{Timeout: 2 * time.Second, AllowPrivate: true})
	res := s.Deliver(context.Background(), msg(t, srv.URL))
	if res.OK() || !strings.Contains(res.Err.Error(), "headers exceed") {
		t.Errorf("result %v, want a failed attempt", res.Err)
	}
}

// HTTPS endpoints must present a certificate we trust, for the name we dial, over TLS 1.2 or
// later; otherwise the attempt fails before any request is sent.
func TestDeliver_TLS_is_verified(t *testing.T) {
	var requests atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) })
	untrusted := httptest.NewTLSServer(h)
	t.Cleanup(untrusted.Close)
	old := httptest.NewUnstartedServer(h)
	old.TLS = &tls.Config{MaxVersion: tls.VersionTLS11}
	old.StartTLS()
	t.Cleanup(old.Close)

	s := webhook.New(webhook.Config{Timeout: 2 * time.Second, AllowPrivate: true})
	res := s.Deliver(context.Background(), msg(t, untrusted.URL+"/hook"))
	if res.OK() || !strings.Contains(res.Err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v; want a failed attempt naming the certificate", res.Err)
	}
	res = s.Deliver(context.Background(), msg(t, old.URL+"/hook"))
	if res.OK() || res.StatusCode != 0 {
		t.Errorf("TLS 1.1 endpoint: %d %v; want a failed handshake", res.StatusCode, res.Err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("the endpoints saw %d requests", n)
	}
}

// An answer that is not HTTP fails the attempt with a short, printable reason.
func TestDeliver_garbage_answer_fails_readably(t *testing.T) {
	srv, _, _ := hijackingServer(t, func(c net.Conn) {
		_, _ = c.Write(append([]byte("SSH-2.0-OpenSSH\r\n\xff\xfe"), strings.Repeat("z", 8<<10)...))
	})
	s := webhook.New(webhook.Config{Timeout: 2 * time.Second, AllowPrivate: true})
	res := s.Deliver(context.Background(), msg(t, srv.URL))
	if res.OK() || res.StatusCode != 0 || !utf8.ValidString(res.Err.Error()) || len(res.Err.Error()) > 512 {
		t.Errorf("result %d %q, want a failed attempt with a short printable reason", res.StatusCode, res.Err)
	}
}
