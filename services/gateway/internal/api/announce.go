package api

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"refonte.ai/callbacks/pkg/stream"
)

// NATSAnnouncer announces profile changes on stream.ProfileChanged.
type NATSAnnouncer struct{ Conn *nats.Conn }

// ProfileChanged publishes the customer id and waits until the server has it, so a callback
// published after the API answered finds the workers' caches already dropped.
func (n NATSAnnouncer) ProfileChanged(ctx context.Context, customerID string) error {
	if err := n.Conn.Publish(stream.ProfileChanged, []byte(customerID)); err != nil {
		return fmt.Errorf("announce profile change: %w", err)
	}
	if err := n.Conn.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("announce profile change: %w", err)
	}
	return nil
}
