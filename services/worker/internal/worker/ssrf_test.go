package worker_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"refonte.ai/callbacks/pkg/status"
)

// With default address filtering, a callback to loopback (by address or by a name that resolves
// to it) fails with "blocked" in its attempt log, and the target never sees a connection. The
// listener's port is allowed, so it is the address rule that refuses.
func TestSSRF_loopback_targets_are_blocked_and_recorded(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	h := newHarness(t, map[string]string{"CALLBACK_ALLOW_PRIVATE": "false", "CALLBACK_ALLOWED_PORTS": port})
	h.newCustomer("c1", "")
	h.startWorker()
	targets := map[string]string{
		"by-address": "http://127.0.0.1:" + port + "/hook",
		"by-name":    "http://localhost:" + port + "/hook",
		"ipv6":       "http://[::1]:" + port + "/hook",
	}
	for id, url := range targets {
		h.publish("c1", task(id, url))
	}
	for id := range targets {
		rec := h.waitFinal("c1", id, 30*time.Second)
		if rec.State != status.Failed || len(rec.Log) != 21 {
			t.Errorf("%s: state %s after %d attempts, want failed after 21", id, rec.State, len(rec.Log))
			continue
		}
		if !strings.HasPrefix(rec.Log[0].Error, "blocked") {
			t.Errorf("%s: attempt error %q, want a blocked reason", id, rec.Log[0].Error)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the target saw %d connections", n)
	}
}
