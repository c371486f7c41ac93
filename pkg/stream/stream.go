// Package stream owns the JetStream layout that every service shares: the stream that holds task
// completions and resends, the durable consumer the workers pull from, and the subjects.
package stream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// CompletedPrefix starts the subject of every task completion: tasks.completed.<customer_id>.
	CompletedPrefix = "tasks.completed."
	// ResendPrefix starts the subject of every resend: callbacks.resend.<customer_id>. Resends
	// live on their own subject so that other subscribers of tasks.completed.> never mistake one
	// for a new completion.
	ResendPrefix = "callbacks.resend."
	// ProfileChanged is a core NATS subject (not in the stream) on which the gateway announces
	// that a customer's profile changed; the payload is the customer id. Workers drop their
	// cached copy.
	ProfileChanged = "callbacks.profile.changed"

	// HeaderWebhookID carries, on a resend, the webhook-id of the original completion.
	HeaderWebhookID = "Refonte-Webhook-Id"
)

// CompletedSubject is the subject a customer's task completions are published on.
func CompletedSubject(customerID string) string { return CompletedPrefix + customerID }

// ResendSubject is the subject a customer's resends are published on.
func ResendSubject(customerID string) string { return ResendPrefix + customerID }

// ParseSubject returns the customer id a subject names and whether it is a resend.
func ParseSubject(subject string) (customerID string, resend bool, ok bool) {
	if c, found := strings.CutPrefix(subject, CompletedPrefix); found {
		return c, false, !strings.Contains(c, ".")
	}
	if c, found := strings.CutPrefix(subject, ResendPrefix); found {
		return c, true, !strings.Contains(c, ".")
	}
	return "", false, false
}

// Config describes the stream.
type Config struct {
	Name     string
	Replicas int
	// MaxAge must comfortably exceed the retry schedule (21h33m40s plus jitter plus time spent
	// waiting for a worker): a message that ages out while parked for a retry is a lost callback.
	// The stream is also where a task's event is kept for reading back (Redis keeps only its
	// sequence), so MaxAge should cover the status retention plus the retry schedule: a status
	// outlives its message otherwise, and its task then answers "past retention".
	MaxAge time.Duration
	// Duplicates is the window in which a re-published Nats-Msg-Id is dropped.
	Duplicates time.Duration
	// MaxBytes caps the stream's storage; -1 for none. When it is reached, new publishes are
	// refused (DiscardNew) rather than old, possibly pending, callbacks dropped.
	MaxBytes int64
}

// DefaultMaxAge keeps each message for the default status retention (30 days) plus two days: the
// retry schedule of its delivery (21.5 hours) and a margin.
const DefaultMaxAge = 32 * 24 * time.Hour

// DefaultConfig is the production layout.
func DefaultConfig() Config {
	return Config{Name: "CALLBACKS", Replicas: 1, MaxAge: DefaultMaxAge, Duplicates: 5 * time.Minute, MaxBytes: -1}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Name == "" || strings.ContainsAny(c.Name, ".*> \t"):
		return fmt.Errorf("stream name %q is not valid", c.Name)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("stream replicas %d: want 1 to 5", c.Replicas)
	case c.MaxAge < 25*time.Hour:
		return fmt.Errorf("stream max age %s: want at least 25h, or parked retries would be dropped", c.MaxAge)
	case c.Duplicates <= 0 || c.Duplicates > c.MaxAge:
		return fmt.Errorf("duplicate window %s: want a positive duration under the max age", c.Duplicates)
	}
	return nil
}

// jetStreamConfig is the stream cfg describes, as JetStream takes it.
func jetStreamConfig(cfg Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "Refonte task completions and callback resends",
		Subjects:    []string{CompletedPrefix + ">", ResendPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cfg.MaxBytes,
		Discard:     jetstream.DiscardNew,
		Duplicates:  cfg.Duplicates,
		// Readers fetch a task's event by its sequence (Originals): a direct get is answered by
		// any replica without going through the stream leader's API.
		AllowDirect: true,
	}
}

// Ensure creates the stream, or updates it to cfg. Only the stream's owner calls it — the
// workers, at start — so that services started with different settings never resize the stream
// back and forth; every other service uses Attach.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// A stream that already has these settings is left as it is: workers start side by side, and
	// an update racing another worker's consumer creation is both needless churn and a data race
	// inside nats-server (its file store's config, seen under the race detector).
	if st, err := js.Stream(ctx, cfg.Name); err == nil && len(Compare(st.CachedInfo().Config, cfg)) == 0 {
		return st, nil
	}
	st, err := js.CreateOrUpdateStream(ctx, jetStreamConfig(cfg))
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return st, nil
}

// Attach finds the stream for a service that does not own it (a publisher, the gateway). An
// existing stream is never changed: its settings that differ from cfg are returned for the
// caller to warn about. A missing stream is created with cfg, so publishers may start before
// the workers, which then apply their own settings.
func Attach(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, []Difference, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	st, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, jetStreamConfig(cfg))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, cfg.Name) // created meanwhile by someone else
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("attach to stream %s: %w", cfg.Name, err)
	}
	return st, Compare(st.CachedInfo().Config, cfg), nil
}

// Difference is one setting of the stream that is not what a service was configured with.
type Difference struct {
	Setting string
	Want    string // what the service's configuration says
	Have    string // what the stream has
}

func (d Difference) String() string {
	return fmt.Sprintf("%s is %s, configured %s", d.Setting, d.Have, d.Want)
}

// Compare lists the settings of have that differ from the stream cfg describes.
func Compare(have jetstream.StreamConfig, cfg Config) []Difference {
	want := jetStreamConfig(cfg)
	var diffs []Difference
	check := func(setting string, w, h any) {
		if ws, hs := fmt.Sprint(w), fmt.Sprint(h); ws != hs {
			diffs = append(diffs, Difference{Setting: setting, Want: ws, Have: hs})
		}
	}
	check("subjects", want.Subjects, have.Subjects)
	check("replicas", want.Replicas, have.Replicas)
	check("max age", want.MaxAge, have.MaxAge)
	check("max bytes", want.MaxBytes, have.MaxBytes)
	check("duplicate window", want.Duplicates, have.Duplicates)
	check("discard policy", want.Discard, have.Discard)
	check("retention", want.Retention, have.Retention)
	check("storage", want.Storage, have.Storage)
	check("direct get", want.AllowDirect, have.AllowDirect)
	return diffs
}

// ConsumerConfig describes the workers' shared durable consumer.
type ConsumerConfig struct {
	Durable string
	// AckWait is how long the server waits for an acknowledgement or a heartbeat (workers send
	// InProgress while they hold a message) before it hands the message to another worker.
	AckWait time.Duration
	// MaxAckPending must exceed the number of callbacks parked for a retry at any time: a message
	// waiting out a NakWithDelay still counts against it (nats-server #6093), and at the limit
	// the server stops handing out fresh messages. Workers bound their own concurrency instead.
	MaxAckPending int
	Replicas      int
}

// DefaultMaxAckPending leaves room for a million parked retries (about 1.2 GB of server memory).
const DefaultMaxAckPending = 1_000_000

// EnsureConsumer creates or updates the durable pull consumer.
func EnsureConsumer(ctx context.Context, st jetstream.Stream, cc ConsumerConfig) (jetstream.Consumer, error) {
	if cc.Durable == "" || cc.AckWait <= 0 || cc.MaxAckPending <= 0 {
		return nil, fmt.Errorf("consumer config %+v is incomplete", cc)
	}
	c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       cc.Durable,
		Description:   "Refonte callback delivery workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cc.AckWait,
		MaxDeliver:    -1, // attempts are counted in Redis, where a crash cannot lose them
		MaxAckPending: cc.MaxAckPending,
		MaxWaiting:    512,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      cc.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", cc.Durable, err)
	}
	return c, nil
}
