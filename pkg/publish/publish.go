// Package publish is the small client that upstream services (and the gateway, for resends) use
// to put callbacks on the stream.
package publish

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/stream"
	"refonte.ai/callbacks/pkg/tracing"
)

// Publisher publishes task completions and resends.
type Publisher struct {
	js    jetstream.JetStream
	diffs []stream.Difference
}

// New attaches to the stream cfg names (creating it when it does not exist yet, never changing
// it: the workers own its settings) and returns a Publisher. StreamDifferences says how the
// stream differs from cfg.
func New(ctx context.Context, js jetstream.JetStream, cfg stream.Config) (*Publisher, error) {
	_, diffs, err := stream.Attach(ctx, js, cfg)
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	return &Publisher{js: js, diffs: diffs}, nil
}

// StreamDifferences lists the stream's settings that were not those of the configuration New
// was given when it attached; a service should warn about them.
func (p *Publisher) StreamDifferences() []stream.Difference { return p.diffs }

// Completion is one finished task.
type Completion struct {
	CustomerID string `json:"customer_id"`
	// Environment is the customer's environment the task belongs to; empty is live.
	Environment environment.Env `json:"environment,omitempty"`
	Task        json.RawMessage `json:"task"`
	// MsgID becomes Nats-Msg-Id and the callback's webhook-id. Empty: the id a worker derives
	// for an event without one (event.DerivedWebhookID: customer, environment, task_id,
	// completed_at), so that publishing the same completion twice (a retry after a timeout)
	// is dropped by the stream's duplicate window instead of sending a second callback.
	MsgID string `json:"-"`
}

// Publish validates the completion as a worker would and publishes it. It returns the stream's
// acknowledgement: once it returns nil, the completion is stored.
func (p *Publisher) Publish(ctx context.Context, c Completion) (*jetstream.PubAck, error) {
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	ev, err := event.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	if ev.CustomerID != c.CustomerID {
		return nil, errors.New("publish: customer id changed in encoding")
	}
	id := c.MsgID
	if id == "" {
		id = event.DerivedWebhookID(ev.CustomerID, ev.Environment.String(), ev.TaskID, ev.CompletedAt())
	}
	msg := nats.NewMsg(stream.CompletedSubject(c.CustomerID))
	msg.Data = raw
	msg.Header.Set(jetstream.MsgIDHeader, id)
	ctx, span := tracing.Tracer().Start(ctx, "publish "+stream.CompletedPrefix+"*",
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("refonte.customer_id", c.CustomerID),
			attribute.String("refonte.task_id", ev.TaskID), attribute.String("refonte.webhook_id", id)))
	defer span.End()
	tracing.InjectNATS(ctx, msg.Header)
	ack, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, fmt.Errorf("publish task %s: %w", ev.TaskID, err)
	}
	return ack, nil
}

// Resend puts an already-delivered (or failed, or retrying) callback back on the stream for a
// worker to deliver again, with the original webhook id. The returned sequence identifies the
// new delivery.
//
// dedupID names this resend for the stream's duplicate window: publishing again with the same
// one within the window (a retry after a publish whose answer was lost, though the stream had
// stored it) is dropped, and answers the first one's sequence. Empty gives a fresh one, so that
// repeated resends are each delivered.
func (p *Publisher) Resend(ctx context.Context, ev event.Event, webhookID, dedupID string) (uint64, error) {
	if dedupID == "" {
		dedupID = "resend_" + rand.Text()
	}
	msg := nats.NewMsg(stream.ResendSubject(ev.CustomerID))
	msg.Data = ev.Marshal()
	msg.Header.Set(stream.HeaderWebhookID, webhookID)
	msg.Header.Set(jetstream.MsgIDHeader, dedupID)
	ctx, span := tracing.Tracer().Start(ctx, "publish "+stream.ResendPrefix+"*",
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("refonte.customer_id", ev.CustomerID),
			attribute.String("refonte.task_id", ev.TaskID), attribute.String("refonte.webhook_id", webhookID)))
	defer span.End()
	tracing.InjectNATS(ctx, msg.Header)
	ack, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("resend: %w", err)
	}
	return ack.Sequence, nil
}
