package load

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"refonte.ai/callbacks/pkg/stream"
)

// Publisher puts task completions on the stream the way a busy upstream service would: async
// JetStream publishes, each with its own Nats-Msg-Id, a bounded window of unacknowledged ones.
type Publisher struct {
	js      jetstream.JetStream
	tracker *Tracker
	// customers and targets are picked by seq: customer seq%len, target seq%len.
	customers []string
	targets   []string
	idPrefix  string
	taskPre   string
	pad       string
}

// Measured task ids are "lt_<seq>", parked ones "ltp_<seq>"; they are unique within a run, and
// each run has customers of its own.
func taskID(seq int64) string { return "lt_" + strconv.FormatInt(seq, 10) }

// NewPublisher returns a publisher on nc. Acknowledgement failures are counted in t by seq,
// which is read back from the message id.
func NewPublisher(nc *nats.Conn, t *Tracker, idPrefix string, customers, targets []string, padBytes int) (*Publisher, error) {
	p := &Publisher{tracker: t, customers: customers, targets: targets, idPrefix: idPrefix,
		taskPre: "lt_", pad: strings.Repeat("x", padBytes)}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, _ error) {
			if seq, ok := parseSeq(m.Header.Get(jetstream.MsgIDHeader), idPrefix); ok {
				t.PublishFailed(seq)
			}
		}))
	if err != nil {
		return nil, err
	}
	p.js = js
	return p, nil
}

// EnsureStream creates the workers' stream if they have not yet.
func (p *Publisher) EnsureStream(ctx context.Context) error {
	_, _, err := stream.Attach(ctx, p.js, stream.DefaultConfig())
	return err
}

// Body is a task completion published at pubNs: the contract's example task with its own id,
// target and publish time.
func Body(customerID, taskID string, pubNs int64, target, pad string) []byte {
	b := make([]byte, 0, 512+len(pad))
	b = append(b, `{"customer_id":"`...)
	b = append(b, customerID...)
	b = append(b, `","task":{"task_id":"`...)
	b = append(b, taskID...)
	b = append(b, `","type":"categorization","status":"completed","instruction":"Is this object red or blue?",`...)
	b = append(b, `"params":{"attachment_type":"text","attachment":"tomato","categories":["red","blue"]},`...)
	b = append(b, `"response":{"category":"red"},"metadata":{`...)
	if pad != "" {
		b = append(b, `"pad":"`...)
		b = append(b, pad...)
		b = append(b, '"')
	}
	b = append(b, `},"callback_url":"`...)
	b = append(b, target...)
	b = append(b, `","created_at":"2016-06-23T20:08:31.573Z","completed_at":"2016-06-23T21:54:44.904Z",`...)
	b = append(b, `"published_at_ns":`...)
	b = strconv.AppendInt(b, pubNs, 10)
	return append(b, `}}`...)
}

// publish sends callback seq; it retries while the client's window is full.
func (p *Publisher) publish(ctx context.Context, seq int64, idPrefix string, track bool) error {
	cust := p.customers[seq%int64(len(p.customers))]
	now := time.Now().UnixNano()
	msg := nats.NewMsg(stream.CompletedSubject(cust))
	msg.Data = Body(cust, p.taskPre+strconv.FormatInt(seq, 10), now, p.targets[seq%int64(len(p.targets))], p.pad)
	msg.Header.Set(jetstream.MsgIDHeader, idPrefix+strconv.FormatInt(seq, 10))
	if track {
		p.tracker.Published(seq, now)
	}
	for {
		_, err := p.js.PublishMsgAsync(msg)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			if track {
				p.tracker.PublishFailed(seq)
			}
			return fmt.Errorf("publish callback %d: %w", seq, err)
		}
		// The window is full: wait for acknowledgements. The same Nats-Msg-Id makes a repeat
		// harmless.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.js.PublishAsyncComplete():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Pace says how fast to publish.
type Pace struct {
	Rate     float64       // callbacks per second; 0: as fast as the backlog bound allows
	Duration time.Duration // stop after this long (0: no time limit)
	Count    int64         // stop after this many (0: no count limit)
	// Backlog bounds, at Rate 0, the callbacks published but not yet seen by the receiver, so
	// "as fast as possible" measures the fleet and not a growing queue.
	Backlog int64
}

// Run publishes the tracked load until the pace says stop or ctx ends, and returns how many it
// published and when it started and stopped.
func (p *Publisher) Run(ctx context.Context, pace Pace) (n int64, start, end time.Time, err error) {
	start = time.Now()
	limit := pace.Count
	if limit <= 0 || limit > int64(p.tracker.Max()) {
		limit = int64(p.tracker.Max())
	}
	var deadline time.Time
	if pace.Duration > 0 {
		deadline = start.Add(pace.Duration)
	}
	for n < limit {
		if ctx.Err() != nil {
			return n, start, time.Now(), ctx.Err()
		}
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			break
		}
		var due int64
		if pace.Rate > 0 {
			due = int64(pace.Rate*now.Sub(start).Seconds()) + 1 - n
		} else {
			due = pace.Backlog - p.tracker.Outstanding()
		}
		if due <= 0 {
			if pace.Rate > 0 {
				next := start.Add(time.Duration(float64(n) / pace.Rate * float64(time.Second)))
				time.Sleep(max(time.Until(next), 50*time.Microsecond))
			} else {
				time.Sleep(200 * time.Microsecond)
			}
			continue
		}
		due = min(due, limit-n, 256)
		for range due {
			if err := p.publish(ctx, n, p.idPrefix, true); err != nil {
				return n, start, time.Now(), err
			}
			n++
		}
	}
	return n, start, time.Now(), nil
}

// Flush waits until every async publish has been acknowledged, or timeout.
func (p *Publisher) Flush(ctx context.Context, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.js.PublishAsyncComplete():
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	return false
}

// PublishParked publishes n untracked callbacks to dead targets, keeping at most window of them
// ahead of the dead endpoint's count of first attempts.
func (p *Publisher) PublishParked(ctx context.Context, n int64, idPrefix string, dead []string, hits func() int64, window int64) error {
	parked := &Publisher{js: p.js, tracker: p.tracker, customers: p.customers, targets: dead,
		taskPre: "ltp_", pad: p.pad}
	for i := int64(0); i < n; {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if i-hits() >= window {
			time.Sleep(time.Millisecond)
			continue
		}
		if err := parked.publish(ctx, i, idPrefix, false); err != nil {
			return err
		}
		i++
	}
	return nil
}
