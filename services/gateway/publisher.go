package main

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/stream"
)

// lazyPublisher lets the gateway serve (health, status reads) before JetStream is up: it attaches
// to the stream in the background (never changing its settings, which the workers own), and
// resends answer 503 until it has.
type lazyPublisher struct {
	p atomic.Pointer[publish.Publisher]
}

var errStreamNotReady = errors.New("the stream is not ready yet")

func startPublisher(ctx context.Context, js jetstream.JetStream, cfg stream.Config, log *zap.Logger) *lazyPublisher {
	l := &lazyPublisher{}
	go func() {
		for {
			p, err := publish.New(ctx, js, cfg)
			if err == nil {
				for _, d := range p.StreamDifferences() {
					log.Warn("the stream's settings differ from this gateway's; the workers own them, so the stream is left as it is",
						zap.String("stream", cfg.Name), zap.String("setting", d.Setting),
						zap.String("stream_has", d.Have), zap.String("configured", d.Want))
				}
				l.p.Store(p)
				return
			}
			log.Warn("waiting for JetStream", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return l
}

func (l *lazyPublisher) Resend(ctx context.Context, ev event.Event, webhookID, dedupID string) (uint64, error) {
	p := l.p.Load()
	if p == nil {
		return 0, errStreamNotReady
	}
	return p.Resend(ctx, ev, webhookID, dedupID)
}

func (l *lazyPublisher) Replay(ctx context.Context, subject string, header map[string][]string, data []byte) (publish.Replayed, error) {
	p := l.p.Load()
	if p == nil {
		return publish.Replayed{}, errStreamNotReady
	}
	return p.Replay(ctx, subject, header, data)
}

// Ready is a readiness check.
func (l *lazyPublisher) Ready(context.Context) error {
	if l.p.Load() == nil {
		return errStreamNotReady
	}
	return nil
}
