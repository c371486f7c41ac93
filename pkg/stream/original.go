package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"refonte.ai/callbacks/pkg/event"
)

// ErrGone: the message is no longer in the stream (past its max age, or deleted), so the task
// it carried can no longer be read or resent.
var ErrGone = errors.New("the task's event is past the stream's retention")

// Originals reads back the messages that carried deliveries, by their stream sequence: the
// stream is where a task's event is kept, and the status in Redis records only the sequence.
type Originals struct {
	js   jetstream.JetStream
	name string

	mu sync.Mutex
	st jetstream.Stream
	at time.Time // when st was looked up
}

// refreshStream is how long a looked-up stream handle is used: its cached configuration says
// whether direct gets are allowed, which the stream's owner may turn on meanwhile.
const refreshStream = time.Minute

func (o *Originals) stream(ctx context.Context) (jetstream.Stream, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.st != nil && time.Since(o.at) < refreshStream {
		return o.st, nil
	}
	st, err := o.js.Stream(ctx, o.name)
	if err != nil {
		return nil, err
	}
	o.st, o.at = st, time.Now()
	return st, nil
}

// NewOriginals reads from the stream called name.
func NewOriginals(js jetstream.JetStream, name string) *Originals {
	return &Originals{js: js, name: name}
}

// Original is one message read back: its subject, headers and data.
type Original struct {
	Sequence uint64
	Subject  string
	Header   nats.Header
	Data     []byte
}

// Get reads the message at seq, with a direct get (answered by any replica) when the stream
// allows it. A message that is gone answers ErrGone.
func (o *Originals) Get(ctx context.Context, seq uint64) (Original, error) {
	if seq == 0 {
		return Original{}, ErrGone
	}
	st, err := o.stream(ctx)
	if err != nil {
		return Original{}, fmt.Errorf("read stream message %d: %w", seq, err)
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Original{}, ErrGone
	}
	if err != nil {
		return Original{}, fmt.Errorf("read stream message %d: %w", seq, err)
	}
	return Original{Sequence: seq, Subject: m.Subject, Header: m.Header, Data: m.Data}, nil
}

// WebhookID is the webhook-id of the completion a message carries: the publisher's Nats-Msg-Id
// for a completion, the original's id (carried in a header) for a resend, and for either without
// one, the id derived from the event (event.DerivedWebhookID), so that a copy published again
// gets the same one; the environment is part of it, so a test and a live completion of one task
// never share an id.
func WebhookID(subject string, h nats.Header, ev event.Event) string {
	_, resend, _ := ParseSubject(subject)
	id := h.Get(jetstream.MsgIDHeader)
	if resend {
		id = h.Get(HeaderWebhookID)
	}
	if id == "" {
		id = event.DerivedWebhookID(ev.CustomerID, ev.Environment.String(), ev.TaskID, ev.CompletedAt())
	}
	return id
}
