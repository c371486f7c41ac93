// Package testenv gives tests the real things they talk to: an in-process NATS server with
// JetStream (its own port and store, so a test can stop, restart or cluster it), the machine's
// Redis under a key prefix of the test's own, and a recording HTTP receiver that plays the
// customer.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/publish"
)

// NATS is an in-process nats-server with JetStream.
type NATS struct {
	t      testing.TB
	opts   *server.Options
	Server *server.Server
}

// StartNATS starts a server on a random loopback port with file storage in a temp dir.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
	n := &NATS{t: t, opts: opts}
	n.start()
	t.Cleanup(n.Stop)
	return n
}

func (n *NATS) start() {
	n.t.Helper()
	s, err := server.NewServer(n.opts)
	if err != nil {
		n.t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		n.t.Fatal("nats server did not start")
	}
	// Keep the port across restarts, so clients reconnect to the same URL.
	if n.opts.Port == server.RANDOM_PORT {
		n.opts.Port = s.Addr().(*net.TCPAddr).Port
	}
	n.Server = s
}

// URL is the client URL.
func (n *NATS) URL() string { return n.Server.ClientURL() }

// Stop shuts the server down (idempotent).
func (n *NATS) Stop() {
	if n.Server != nil && n.Server.Running() {
		n.Server.Shutdown()
		n.Server.WaitForShutdown()
	}
}

// Restart stops the server and starts it again on the same port with the same store.
func (n *NATS) Restart() {
	n.t.Helper()
	n.Stop()
	n.start()
}

// Connect returns a client connection (closed at cleanup) and its JetStream context.
func (n *NATS) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return ConnectURL(t, n.URL())
}

// ConnectURL connects to the comma-separated servers in urls (closed at cleanup), reconnecting
// forever as the services do, and returns the connection and its JetStream context.
func ConnectURL(t testing.TB, urls string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("connect nats %s: %v", urls, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Publish publishes one task completion for customerID with the Nats-Msg-Id
// "evt_<customer>_<task_id>", failing the test if the stream does not store it.
func Publish(t testing.TB, pub *publish.Publisher, customerID string, task map[string]any) {
	t.Helper()
	PublishIn(t, pub, customerID, environment.Live, task)
}

// PublishIn publishes a completion of the customer's env environment; a test one's message id
// differs from the live one of the same task.
func PublishIn(t testing.TB, pub *publish.Publisher, customerID string, env environment.Env, task map[string]any) {
	t.Helper()
	raw, err := json.Marshal(task)
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("evt_%s_%s", customerID, task["task_id"])
	c := publish.Completion{CustomerID: customerID, Task: raw, MsgID: id}
	if env == environment.Test {
		c.Environment, c.MsgID = env, id+"_test"
	}
	if _, err := pub.Publish(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

// RedisURL is the Redis the tests use: $TEST_REDIS_URL, else the machine's 127.0.0.1:6379.
func RedisURL() string {
	if u := os.Getenv("TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// Redis connects to the test Redis and returns a key prefix unique to this test; the test's keys
// are deleted when it ends.
func Redis(t testing.TB) (redis.UniversalClient, string) {
	t.Helper()
	opt, err := redis.ParseURL(RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis at %s is not reachable (start it, or set TEST_REDIS_URL): %v", RedisURL(), err)
	}
	prefix := "test:" + strings.ToLower(rand.Text()[:10]) + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	return rdb, prefix
}

// Eventually waits for cond to hold, checking every 10ms, and fails the test after timeout.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// EventuallyProgressing is Eventually for work of many steps whose count progress reports
// (requests a receiver answered, attempts recorded): it fails when progress has stood still for
// stall, or after limit in all. A busy machine makes the steps come slower but they keep coming,
// so the wait lasts as long as the work does; a system that is stuck still fails within stall.
func EventuallyProgressing(t testing.TB, stall, limit time.Duration, progress func() int, cond func() bool, format string, args ...any) {
	t.Helper()
	start := time.Now()
	last, lastAt := progress(), start
	for {
		if cond() {
			return
		}
		now := time.Now()
		if p := progress(); p != last {
			last, lastAt = p, now
		}
		switch {
		case now.Sub(lastAt) > stall:
			t.Fatalf("condition not met, no progress for %s (at %d after %s): %s", stall, last,
				now.Sub(start).Round(time.Millisecond), fmt.Sprintf(format, args...))
		case now.Sub(start) > limit:
			t.Fatalf("condition not met within %s (progress %d): %s", limit, last, fmt.Sprintf(format, args...))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
