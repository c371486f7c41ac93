package quarantine

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// ErrNotFound: no kept event has that id (never kept, trimmed by the cap, or deleted).
var ErrNotFound = errors.New("invalid event not found")

// MaxLimit is the largest page Query returns.
const MaxLimit = 500

var idPattern = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// ValidID reports whether id has the form of a kept event's id (the Redis stream entry id,
// "<unix ms>-<n>"), so a malformed one never reaches Redis.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Query selects a page of kept events, newest first.
type Query struct {
	// Since keeps events kept at or after it; zero keeps all.
	Since time.Time
	// Reason keeps events refused for this reason; "" keeps all.
	Reason string
	// Before continues a listing: only events older than this id (a Page's Next).
	Before string
	// Limit is the most events returned, 1 to MaxLimit.
	Limit int
}

// Page is a Query's answer.
type Page struct {
	Events []Event
	// Next continues the listing (as Query.Before); "" when nothing older matches.
	Next string
}

// scanBudget bounds the entries one Query examines: a reason filter that matches rarely gives a
// short page with a Next cursor rather than a walk over the whole store.
const scanBudget = 5000

// Query lists kept events, newest first. A page may hold fewer than Limit events, even none,
// and still have a Next: the scan budget ran out first.
func (s *Store) Query(ctx context.Context, q Query) (Page, error) {
	if q.Limit < 1 || q.Limit > MaxLimit {
		return Page{}, fmt.Errorf("invalid events: limit %d, want 1 to %d", q.Limit, MaxLimit)
	}
	if q.Before != "" && !ValidID(q.Before) {
		return Page{}, fmt.Errorf("invalid events: cursor %q is not an event id", q.Before)
	}
	end := "+"
	if q.Before != "" {
		end = "(" + q.Before
	}
	start := "-"
	if !q.Since.IsZero() {
		start = strconv.FormatInt(max(q.Since.UnixMilli(), 0), 10)
	}
	var page Page
	for examined := 0; examined < scanBudget; {
		batch := int64(min(max(q.Limit+1-len(page.Events), 64), 500, scanBudget-examined))
		msgs, err := s.rdb.XRevRangeN(ctx, s.key, end, start, batch).Result()
		if err != nil {
			return Page{}, fmt.Errorf("list invalid events: %w", err)
		}
		for _, m := range msgs {
			examined++
			e := fromValues(m.ID, m.Values)
			if q.Reason != "" && e.Reason != q.Reason {
				end = "(" + m.ID
				continue
			}
			if len(page.Events) == q.Limit {
				// One more matches: there is a next page, and it starts after the last event
				// returned.
				page.Next = page.Events[len(page.Events)-1].ID
				return page, nil
			}
			page.Events = append(page.Events, e)
			end = "(" + m.ID
		}
		if int64(len(msgs)) < batch {
			return page, nil
		}
	}
	page.Next = end[1:]
	return page, nil
}

// Get returns one kept event.
func (s *Store) Get(ctx context.Context, id string) (Event, error) {
	if !ValidID(id) {
		return Event{}, ErrNotFound
	}
	msgs, err := s.rdb.XRangeN(ctx, s.key, id, id, 1).Result()
	if err != nil {
		return Event{}, fmt.Errorf("get invalid event: %w", err)
	}
	if len(msgs) == 0 {
		return Event{}, ErrNotFound
	}
	return fromValues(msgs[0].ID, msgs[0].Values), nil
}

// Delete drops one kept event.
func (s *Store) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return ErrNotFound
	}
	n, err := s.rdb.XDel(ctx, s.key, id).Result()
	if err != nil {
		return fmt.Errorf("delete invalid event: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// Len is the number of kept events.
func (s *Store) Len(ctx context.Context) (int64, error) {
	n, err := s.rdb.XLen(ctx, s.key).Result()
	if err != nil {
		return 0, fmt.Errorf("count invalid events: %w", err)
	}
	return n, nil
}

// TrimBefore drops events kept before t (approximately: whole internal nodes of the stream, so
// a few older ones may stay a little longer). The size cap bounds the store; this bounds the age.
func (s *Store) TrimBefore(ctx context.Context, t time.Time) error {
	if err := s.rdb.XTrimMinIDApprox(ctx, s.key, strconv.FormatInt(t.UnixMilli(), 10), 0).Err(); err != nil {
		return fmt.Errorf("trim invalid events: %w", err)
	}
	return nil
}
