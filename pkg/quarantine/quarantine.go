// Package quarantine keeps the events that workers refused, with the reason, in a capped Redis
// stream (docs/events.md, "Invalid events"), so an operator can see what was refused and why, and
// replay it once fixed. The API calls them "invalid events"; the Redis key keeps its first name
// (prefix+"invalid") so that events kept before the package was renamed stay readable.
package quarantine

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// MaxRaw caps the bytes of an event that are kept in Redis. A larger event is kept truncated;
// its whole bytes stay in the stream at Sequence for the stream's retention, where a replay
// reads them.
const MaxRaw = 64 << 10

// Event is one refused message.
type Event struct {
	ID         string              `json:"id"`
	Subject    string              `json:"subject"`
	Reason     string              `json:"reason"`
	Detail     string              `json:"detail"`
	ReceivedAt time.Time           `json:"received_at"`
	Headers    map[string][]string `json:"headers,omitempty"`
	Raw        []byte              `json:"raw"`
	Truncated  bool                `json:"truncated"`
	// Sequence is the refused message's stream sequence (0: unknown).
	Sequence uint64 `json:"stream_sequence,omitempty"`
}

// Store is the capped store of refused events.
type Store struct {
	rdb    redis.UniversalClient
	key    string
	maxLen int64
}

// NewStore keeps at most maxLen events under prefix+"invalid".
func NewStore(rdb redis.UniversalClient, prefix string, maxLen int64) *Store {
	if maxLen <= 0 {
		maxLen = 100_000
	}
	return &Store{rdb: rdb, key: prefix + "invalid", maxLen: maxLen}
}

// Add keeps one refused event.
func (s *Store) Add(ctx context.Context, e Event) (string, error) {
	truncated := len(e.Raw) > MaxRaw
	if truncated {
		e.Raw = e.Raw[:MaxRaw]
	}
	headers, _ := json.Marshal(e.Headers)
	id, err := s.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: s.key,
		MaxLen: s.maxLen,
		Approx: true,
		Values: []any{
			"subject", e.Subject, "reason", e.Reason, "detail", e.Detail,
			"received_at_ms", e.ReceivedAt.UnixMilli(), "headers", headers,
			"raw", e.Raw, "truncated", strconv.FormatBool(truncated), "seq", e.Sequence,
		},
	}).Result()
	if err != nil {
		return "", fmt.Errorf("keep invalid event: %w", err)
	}
	return id, nil
}

// List returns up to count events, newest first.
func (s *Store) List(ctx context.Context, count int64) ([]Event, error) {
	msgs, err := s.rdb.XRevRangeN(ctx, s.key, "+", "-", count).Result()
	if err != nil {
		return nil, fmt.Errorf("list invalid events: %w", err)
	}
	out := make([]Event, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, fromValues(m.ID, m.Values))
	}
	return out, nil
}

func fromValues(id string, v map[string]any) Event {
	str := func(k string) string { s, _ := v[k].(string); return s }
	e := Event{ID: id, Subject: str("subject"), Reason: str("reason"), Detail: str("detail"),
		Raw: []byte(str("raw")), Truncated: str("truncated") == "true"}
	e.Sequence, _ = strconv.ParseUint(str("seq"), 10, 64)
	if ms, err := strconv.ParseInt(str("received_at_ms"), 10, 64); err == nil {
		e.ReceivedAt = time.UnixMilli(ms).UTC()
	}
	_ = json.Unmarshal([]byte(str("headers")), &e.Headers)
	return e
}
