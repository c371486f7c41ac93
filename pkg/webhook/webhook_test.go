package webhook_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
