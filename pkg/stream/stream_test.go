package stream_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/stream"
)

func info(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	i, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return i.Config
}

func settings(diffs []stream.Difference) []string {
	var out []string
	for _, d := range diffs {
		out = append(out, d.Setting)
	}
	return out
}

// The owner's settings stay: a service attaching with other ones is told, and changes nothing.
func TestAttach_reports_differences_and_never_changes_the_stream(t *testing.T) {
	_, js := testenv.StartNATS(t).Connect(t)
	ctx := context.Background()
	owner := stream.DefaultConfig()
	owner.MaxAge = 96 * time.Hour
	if _, err := stream.Ensure(ctx, js, owner); err != nil {
		t.Fatal(err)
	}

	if _, diffs, err := stream.Attach(ctx, js, owner); err != nil || len(diffs) != 0 {
		t.Fatalf("attach with the owner's settings: %v, %v; want no difference", diffs, err)
	}
	other := stream.DefaultConfig() // 32 days
	other.Duplicates = time.Minute
	_, diffs, err := stream.Attach(ctx, js, other)
	if err != nil {
		t.Fatal(err)
	}
	if got := settings(diffs); !slices.Equal(got, []string{"max age", "duplicate window"}) {
		t.Errorf("differences %v, want max age and duplicate window", diffs)
	}
	if d := diffs[0]; d.Have != (96*time.Hour).String() || d.Want != stream.DefaultMaxAge.String() {
		t.Errorf("max age difference %+v", d)
	}
	if got := info(t, js, owner.Name); got.MaxAge != 96*time.Hour || got.Duplicates != owner.Duplicates {
		t.Errorf("the stream changed: max age %s, duplicates %s", got.MaxAge, got.Duplicates)
	}
}

// Publishers may start before any worker: the stream is created for them, and the owner's
// settings then win.
func TestAttach_creates_a_missing_stream_and_the_owner_then_applies_its_settings(t *testing.T) {
	_, js := testenv.StartNATS(t).Connect(t)
	ctx := context.Background()
	cfg := stream.DefaultConfig()
	if _, diffs, err := stream.Attach(ctx, js, cfg); err != nil || len(diffs) != 0 {
		t.Fatalf("attach to a missing stream: %v, %v", diffs, err)
	}
	if got := info(t, js, cfg.Name); got.MaxAge != cfg.MaxAge {
		t.Fatalf("created with max age %s, want %s", got.MaxAge, cfg.MaxAge)
	}
	owner := cfg
	owner.MaxAge = 120 * time.Hour
	if _, err := stream.Ensure(ctx, js, owner); err != nil {
		t.Fatal(err)
	}
	if _, diffs, err := stream.Attach(ctx, js, cfg); err != nil || len(diffs) != 1 {
		t.Fatalf("attach after the owner: %v, %v; want the max age difference", diffs, err)
	}
	if got := info(t, js, cfg.Name); got.MaxAge != owner.MaxAge {
		t.Errorf("max age %s after a publisher attached, want the owner's %s", got.MaxAge, owner.MaxAge)
	}
}

func TestAttach_refuses_an_invalid_configuration_and_reports_an_unreachable_server(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	bad := stream.DefaultConfig()
	bad.MaxAge = time.Hour
	if _, _, err := stream.Attach(context.Background(), js, bad); err == nil {
		t.Error("a 1h max age was accepted")
	}
	n.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _, err := stream.Attach(ctx, js, stream.DefaultConfig())
	if err == nil || errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("attach without a server: %v", err)
	}
}

// Workers start side by side: Ensure with the settings the stream already has does not update
// it (an update advisory would say so), and Ensure with other settings does.
func TestEnsure_updates_only_a_stream_whose_settings_differ(t *testing.T) {
	nc, js := testenv.StartNATS(t).Connect(t)
	ctx := context.Background()
	cfg := stream.DefaultConfig()
	if _, err := stream.Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	updates, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.STREAM.UPDATED." + cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	for range 3 {
		if _, err := stream.Ensure(ctx, js, cfg); err != nil {
			t.Fatal(err)
		}
	}
	changed := cfg
	changed.MaxAge = 96 * time.Hour
	if _, err := stream.Ensure(ctx, js, changed); err != nil {
		t.Fatal(err)
	}
	// The one update, for the changed settings, is the first advisory; none came before it.
	if _, err := updates.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no update advisory after Ensure with other settings: %v", err)
	}
	if got := info(t, js, cfg.Name).MaxAge; got != 96*time.Hour {
		t.Errorf("max age %s after Ensure, want 96h", got)
	}
	if n, _, _ := updates.Pending(); n != 0 {
		t.Errorf("%d more update advisories: Ensure updated a stream that already had its settings", n)
	}
}

// A stream made before events were read back from it gets direct gets from its owner, and a
// message is then read by its sequence; one that is gone answers ErrGone.
func TestOriginals_read_by_sequence_after_the_owner_allows_direct_gets(t *testing.T) {
	_, js := testenv.StartNATS(t).Connect(t)
	ctx := context.Background()
	cfg := stream.DefaultConfig()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: cfg.Name, Subjects: []string{stream.CompletedPrefix + ">", stream.ResendPrefix + ">"},
		Storage: jetstream.FileStorage, MaxAge: 72 * time.Hour, Duplicates: cfg.Duplicates, Discard: jetstream.DiscardNew}); err != nil {
		t.Fatal(err)
	}
	st, err := stream.Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c := info(t, js, cfg.Name); !c.AllowDirect || c.MaxAge != stream.DefaultMaxAge {
		t.Fatalf("after Ensure: direct get %v, max age %s", c.AllowDirect, c.MaxAge)
	}
	ack, err := js.Publish(ctx, stream.CompletedSubject("c1"), []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	o := stream.NewOriginals(js, cfg.Name)
	m, err := o.Get(ctx, ack.Sequence)
	if err != nil || string(m.Data) != `{"x":1}` || m.Subject != "tasks.completed.c1" {
		t.Fatalf("read back %+v, %v", m, err)
	}
	if err := st.DeleteMsg(ctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Get(ctx, ack.Sequence); !errors.Is(err, stream.ErrGone) {
		t.Errorf("a deleted message: %v, want ErrGone", err)
	}
	if _, err := o.Get(ctx, ack.Sequence+100); !errors.Is(err, stream.ErrGone) {
		t.Errorf("a sequence never written: %v, want ErrGone", err)
	}
}
