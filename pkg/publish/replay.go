package publish

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/stream"
	"refonte.ai/callbacks/pkg/tracing"
)

// ErrNotReplayable: the subject is not one the stream holds, so there is nowhere to replay to.
var ErrNotReplayable = errors.New("replay: the subject is not a completion or resend subject")

// Replayed says where a replay went.
type Replayed struct {
	Subject string
	// WebhookID is the callback's webhook-id; "" when the original carried no usable id and
	// is not a valid event either (the workers will refuse it again).
	WebhookID string
	Sequence  uint64
}

// Replay publishes an event that the workers refused (kept by pkg/quarantine) again, byte for
// byte, for the workers to decide anew, e.g. once its customer exists.
//
// A replay is the same completion event, not a new one: its callback keeps the webhook-id the
// original would have had (its Nats-Msg-Id, or without one the id derived from the event,
// event.DerivedWebhookID), so a receiver that also gets the event from a
// publisher's own retry deduplicates the two, and the task's status treats it as the same
// event. The original's Nats-Msg-Id is still in the stream's duplicate window for a while
// (the refused message was stored), and a worker takes a completion's webhook-id from that
// header, so a replay travels as a resend does: on callbacks.resend.<customer>, with the id in
// Refonte-Webhook-Id and a fresh Nats-Msg-Id. Other JetStream directives (Nats-*) of the
// original are dropped: an expected-sequence check made sense once, at the original publish.
func (p *Publisher) Replay(ctx context.Context, subject string, header map[string][]string, data []byte) (Replayed, error) {
	customerID, resend, ok := stream.ParseSubject(subject)
	if !ok {
		return Replayed{}, ErrNotReplayable
	}
	msg := nats.NewMsg(stream.ResendSubject(customerID))
	msg.Data = data
	for k, vs := range header {
		if strings.HasPrefix(strings.ToLower(k), "nats-") || strings.EqualFold(k, stream.HeaderWebhookID) {
			continue
		}
		for _, v := range vs {
			msg.Header.Add(k, v)
		}
	}
	id := nats.Header(header).Get(jetstream.MsgIDHeader)
	if resend {
		id = nats.Header(header).Get(stream.HeaderWebhookID)
	}
	if !event.ValidWebhookID(id) {
		// Missing, or one the worker would refuse again: the id derived from the event, as a
		// worker derives it for a completion published without one. An event that does not
		// decode gets none; the workers refuse it again and keep it with its reason.
		id = ""
		if ev, err := event.Decode(data); err == nil {
			id = event.DerivedWebhookID(ev.CustomerID, ev.Environment.String(), ev.TaskID, ev.CompletedAt())
		}
	}
	if id != "" {
		msg.Header.Set(stream.HeaderWebhookID, id)
	}
	msg.Header.Set(jetstream.MsgIDHeader, "replay_"+rand.Text())
	ctx, span := tracing.Tracer().Start(ctx, "publish "+stream.ResendPrefix+"*",
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("refonte.customer_id", customerID),
			attribute.String("refonte.webhook_id", id), attribute.Bool("refonte.replay", true)))
	defer span.End()
	tracing.InjectNATS(ctx, msg.Header)
	ack, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return Replayed{}, fmt.Errorf("replay: %w", err)
	}
	return Replayed{Subject: msg.Subject, WebhookID: id, Sequence: ack.Sequence}, nil
}
