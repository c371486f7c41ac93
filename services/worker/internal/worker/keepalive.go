package worker

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// keepalive tells JetStream, with InProgress, that every message this worker holds is still being
// worked on: while it waits in a host's queue, during its attempt, and while its outcome is
// written and that write retried. Each InProgress restarts the message's AckWait on the server,
// so a slow endpoint or a slow Redis never makes the server hand the message to another worker,
// which would POST it a second time. A worker that dies stops beating, and its messages come
// back after AckWait as before.
//
// InProgress is fire-and-forget (no reply is awaited; one can be lost unseen), so a message is
// touched every beat — a fifth of AckWait — and two or three beats can go missing before its
// AckWait runs out. Beats for a message stop when it is settled: forget runs under the same lock
// as the beats, so no InProgress ever follows the message's Ack, Nak or Term.
type keepalive struct {
	beat    time.Duration
	log     *zap.Logger
	metrics *Metrics

	mu   sync.Mutex
	held map[jetstream.Msg]time.Time // when the server last heard of each message
}

func newKeepalive(ackWait time.Duration, log *zap.Logger, m *Metrics) *keepalive {
	return &keepalive{beat: ackWait / 5, log: log, metrics: m, held: make(map[jetstream.Msg]time.Time)}
}

// hold starts keeping msg alive; the server delivered it no earlier than since.
func (k *keepalive) hold(msg jetstream.Msg, since time.Time) {
	k.mu.Lock()
	k.held[msg] = since
	k.mu.Unlock()
}

// forget stops keeping msg alive; call it before acknowledging msg.
func (k *keepalive) forget(msg jetstream.Msg) {
	k.mu.Lock()
	delete(k.held, msg)
	k.mu.Unlock()
}

// run beats until ctx ends. It is the worker's last goroutine to stop: messages still held
// during a shutdown's grace period are kept alive too.
func (k *keepalive) run(ctx context.Context) {
	t := time.NewTicker(k.beat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			k.touch(now)
		}
	}
}

// touch sends InProgress for every message the server has not heard of for a beat or more.
func (k *keepalive) touch(now time.Time) {
	due := now.Add(-k.beat * 9 / 10) // the ticker's own jitter must not skip a message for a beat
	k.mu.Lock()
	defer k.mu.Unlock()
	failed := 0
	for msg, last := range k.held {
		if last.After(due) {
			continue
		}
		if err := msg.InProgress(); err != nil {
			failed++
			continue // the next beat tries again; Begin in Redis guards a redelivery
		}
		k.held[msg] = now
		k.metrics.heartbeats.Inc()
	}
	if failed > 0 {
		k.metrics.heartbeatFailures.Add(float64(failed))
		k.log.Warn("keeping held messages alive failed", zap.Int("messages", failed))
	}
}
