package worker

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"refonte.ai/callbacks/internal/testenv"
)

// A message is kept alive from when its pull was sent, not from when the worker got round to
// it: one that waited behind the rest of a large pull is touched at the first beat due since
// the pull, before the server's AckWait (which started when it was sent) runs out.
func TestKeepalive_counts_from_the_pull(t *testing.T) {
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KA", Subjects: []string{"ka.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "KA", jetstream.ConsumerConfig{Durable: "ka", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "ka.one", []byte("x")); err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	msg := <-batch.Messages()
	if msg == nil {
		t.Fatal("no message fetched")
	}

	m := NewMetrics(prometheus.NewRegistry())
	k := newKeepalive(time.Second, zaptest.NewLogger(t), m)
	// Taken up now, 800 ms after its pull was sent (it waited behind thousands of others): the
	// beat due 200 ms after the pull has passed, so the next touch sends InProgress at once.
	takenAt := time.Now()
	k.hold(msg, takenAt.Add(-800*time.Millisecond))
	k.touch(takenAt)
	if got := testutil.ToFloat64(m.heartbeats); got != 1 {
		t.Fatalf("heartbeats after a touch 800 ms past the pull = %v, want 1: the message's AckWait was left to run out", got)
	}
	// Just touched: not again before a beat has passed.
	k.touch(takenAt.Add(100 * time.Millisecond))
	if got := testutil.ToFloat64(m.heartbeats); got != 1 {
		t.Fatalf("heartbeats = %v one tenth of a second after the last, want still 1", got)
	}
	k.forget(msg)
	k.touch(takenAt.Add(time.Second))
	if got := testutil.ToFloat64(m.heartbeats); got != 1 {
		t.Fatalf("heartbeats = %v after forget, want still 1: a settled message must not be touched", got)
	}
	if err := msg.Ack(); err != nil {
		t.Fatal(err)
	}
}
