package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/stream"
)

// SetupConsumer ensures the stream and the shared durable consumer, waiting for JetStream if it
// is not up yet: workers may start before the broker.
func SetupConsumer(ctx context.Context, js jetstream.JetStream, cfg Config, log *zap.Logger) (jetstream.Consumer, error) {
	for {
		st, err := stream.Ensure(ctx, js, cfg.Stream)
		if err == nil {
			var c jetstream.Consumer
			c, err = stream.EnsureConsumer(ctx, st, stream.ConsumerConfig{
				Durable: cfg.Consumer, AckWait: cfg.AckWait, MaxAckPending: cfg.MaxAckPending,
				Replicas: cfg.Stream.Replicas,
			})
			if err == nil {
				return c, nil
			}
		}
		log.Warn("waiting for JetStream", zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
