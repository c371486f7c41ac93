package status_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

// finishedAt records one attempt of a task that ended with o at the given time.
func finishedAt(t *testing.T, s *status.Store, c, id string, at time.Time, o status.Outcome, code int) {
	t.Helper()
	d := status.Delivery{CustomerID: c, TaskID: id, WebhookID: "evt_" + id, Chain: 1}
	b, err := s.Begin(ctx, d, "https://x.example/", 21, at)
	if err != nil {
		t.Fatal(err)
	}
	e := &status.AttemptLog{Attempt: b.Attempt, Delivery: b.Delivery, At: at, StatusCode: code}
	if _, err := s.Finish(ctx, d, "https://x.example/", o, e, time.Time{}, at); err != nil {
		t.Fatal(err)
	}
}

// walk reads the whole window page by page, as a recovery does.
func walk(t *testing.T, s *status.Store, c string, from, to time.Time, limit int) []string {
	t.Helper()
	var out []string
	var pos status.WindowPos
	for range 100 {
		page, err := s.Window(ctx, c, environment.Live, from.UnixMilli(), to.UnixMilli(), pos, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return out
		}
		for _, e := range page {
			out = append(out, e.TaskID)
		}
		last := page[len(page)-1]
		pos = status.WindowPos{ScoreMS: last.LastAttemptMS, TaskID: last.TaskID}
	}
	t.Fatal("the walk does not end")
	return nil
}

func TestWindow_walks_oldest_first_within_the_bounds_through_ties(t *testing.T) {
	s := newStore(t)
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	finishedAt(t, s, "c1", "before", base.Add(-time.Millisecond), status.OutcomeFailed, 500)
	// Seven tasks share one millisecond: pages of two must walk through them all.
	for i := range 7 {
		finishedAt(t, s, "c1", fmt.Sprintf("tie_%d", i), base, status.OutcomeFailed, 500)
	}
	finishedAt(t, s, "c1", "later", base.Add(time.Second), status.OutcomeSucceeded, 200)
	finishedAt(t, s, "c1", "after", base.Add(2*time.Second+time.Millisecond), status.OutcomeFailed, 500)
	finishedAt(t, s, "c2", "other", base.Add(time.Second), status.OutcomeFailed, 500)

	want := []string{"tie_0", "tie_1", "tie_2", "tie_3", "tie_4", "tie_5", "tie_6", "later"}
	for _, limit := range []int{1, 2, 3, 100} {
		if got := walk(t, s, "c1", base, base.Add(2*time.Second), limit); !slices.Equal(got, want) {
			t.Errorf("pages of %d: %v, want %v", limit, got, want)
		}
	}
	if got := walk(t, s, "c2", base, base.Add(2*time.Second), 10); !slices.Equal(got, []string{"other"}) {
		t.Errorf("c2: %v", got)
	}

	briefs, err := s.Briefs(ctx, "c1", environment.Live, []string{"tie_0", "later", "missing"})
	if err != nil {
		t.Fatal(err)
	}
	if !briefs[0].Found || briefs[0].State != status.Failed || briefs[0].Chain != 1 ||
		!briefs[1].Found || briefs[1].State != status.Succeeded || briefs[2].Found {
		t.Errorf("briefs = %+v", briefs)
	}
	// Another customer's task of the same id is not found under c1.
	if b, _ := s.Briefs(ctx, "c2", environment.Live, []string{"later"}); b[0].Found {
		t.Errorf("c2 sees c1's task: %+v", b)
	}
}
