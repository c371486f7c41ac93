package status_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

// attemptAt records one finished attempt of task id of customer c, at the given time.
func attemptAt(t *testing.T, s *status.Store, c, id string, at time.Time, o status.Outcome, code int) {
	t.Helper()
	attemptOf(t, s, 1, c, id, at, o, code)
}

// attemptOf records the attempt as part of delivery chain (a higher chain is a resend).
func attemptOf(t *testing.T, s *status.Store, chain uint64, c, id string, at time.Time, o status.Outcome, code int) {
	t.Helper()
	d := status.Delivery{CustomerID: c, TaskID: id, WebhookID: "evt_" + id, Chain: chain}
	b, err := s.Begin(ctx, d, "https://x.example/"+id, 21, at)
	if err != nil {
		t.Fatal(err)
	}
	var next time.Time
	if o == status.OutcomeRetry {
		next = at.Add(time.Minute)
	}
	e := &status.AttemptLog{Attempt: b.Attempt, Delivery: b.Delivery, At: at, StatusCode: code, DurationMS: int64(code)}
	if o != status.OutcomeSucceeded {
		e.Error = fmt.Sprintf("HTTP %d", code)
	}
	if _, err := s.Finish(ctx, d, "https://x.example/"+id, o, e, next, at); err != nil {
		t.Fatal(err)
	}
}

func ids(p status.Page) []string {
	var out []string
	for _, it := range p.Items {
		out = append(out, it.TaskID)
	}
	return out
}

func list(t *testing.T, s *status.Store, c string, q status.ListQuery) status.Page {
	t.Helper()
	p, err := s.List(ctx, c, environment.Live, q)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestIndex_lists_newest_first_with_stable_pages_across_ties(t *testing.T) {
	s := newStore(t)
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	// t00..t09 one millisecond apart, then five tasks sharing one millisecond.
	var want []string
	for i := range 10 {
		attemptAt(t, s, "c1", fmt.Sprintf("t%02d", i), base.Add(time.Duration(i)*time.Millisecond), status.OutcomeSucceeded, 200)
	}
	for _, id := range []string{"tie_a", "tie_b", "tie_c", "tie_d", "tie_e"} {
		attemptAt(t, s, "c1", id, base.Add(time.Second), status.OutcomeSucceeded, 200)
	}
	want = []string{"tie_e", "tie_d", "tie_c", "tie_b", "tie_a"}
	for i := 9; i >= 0; i-- {
		want = append(want, fmt.Sprintf("t%02d", i))
	}
	attemptAt(t, s, "other", "t99", base.Add(2*time.Second), status.OutcomeSucceeded, 200)

	var got []string
	q := status.ListQuery{Limit: 3}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		p := list(t, s, "c1", q)
		got = append(got, ids(p)...)
		if p.Next == nil {
			break
		}
		if len(p.Items) != 3 {
			t.Errorf("page %d has %d items with a next page", pages, len(p.Items))
		}
		q.After = p.Next
	}
	if !slices.Equal(got, want) {
		t.Errorf("listing = %v\nwant      %v", got, want)
	}

	// A task that moves to the top meanwhile is not shown twice, and nothing is skipped.
	p1 := list(t, s, "c1", status.ListQuery{Limit: 4})
	attemptOf(t, s, 2, "c1", "t00", base.Add(3*time.Second), status.OutcomeSucceeded, 200) // a resend
	if p := list(t, s, "c1", status.ListQuery{Limit: 1}); !slices.Equal(ids(p), []string{"t00"}) {
		t.Fatalf("after a resend the top is %v, want t00", ids(p))
	}
	p2 := list(t, s, "c1", status.ListQuery{Limit: 100, After: p1.Next})
	rest := append(ids(p1), ids(p2)...)
	if len(rest) != 14 || slices.Contains(rest, "t00") {
		t.Errorf("listing across a move = %v", rest)
	}
}

func TestIndex_filters_by_state_within_a_scan_budget(t *testing.T) {
	s := newStore(t)
	base := time.Now().Add(-time.Hour)
	for i := range 30 {
		o, code := status.OutcomeSucceeded, 200
		if i%10 == 0 {
			o, code = status.OutcomeFailed, 500
		}
		attemptAt(t, s, "c1", fmt.Sprintf("t%02d", i), base.Add(time.Duration(i)*time.Second), o, code)
	}
	attemptAt(t, s, "c1", "retry", base.Add(-time.Minute), status.OutcomeRetry, 503)

	p := list(t, s, "c1", status.ListQuery{State: status.Failed, Limit: 10})
	if got := ids(p); !slices.Equal(got, []string{"t20", "t10", "t00"}) || p.Next != nil {
		t.Errorf("failed = %v next %v", got, p.Next)
	}
	f := p.Items[0]
	if f.State != status.Failed || f.Succeeded == nil || *f.Succeeded || f.Attempts != 1 || f.Delivery != 1 ||
		f.Target != "https://x.example/t20" || f.Last == nil || f.Last.StatusCode != 500 || f.LastAttemptAt == nil {
		t.Errorf("summary = %+v (last %+v)", f, f.Last)
	}
	if p := list(t, s, "c1", status.ListQuery{State: status.Retrying, Limit: 10}); !slices.Equal(ids(p), []string{"retry"}) ||
		p.Items[0].NextAttemptAt == nil {
		t.Errorf("retrying = %v", ids(p))
	}

	// With a scan budget of 8 entries, a page may come back short: the cursor goes on.
	var got []string
	q := status.ListQuery{State: status.Failed, Limit: 10, MaxScan: 8}
	calls := 0
	for {
		calls++
		p := list(t, s, "c1", q)
		got = append(got, ids(p)...)
		if p.Next == nil {
			break
		}
		q.After = p.Next
	}
	if !slices.Equal(got, []string{"t20", "t10", "t00"}) || calls < 4 {
		t.Errorf("budgeted listing = %v in %d calls", got, calls)
	}

	if _, err := s.List(ctx, "c1", environment.Live, status.ListQuery{Limit: 0}); !errors.Is(err, status.ErrBadQuery) {
		t.Errorf("limit 0: %v", err)
	}
	if _, err := s.List(ctx, "c1", environment.Live, status.ListQuery{Limit: status.MaxListLimit + 1}); !errors.Is(err, status.ErrBadQuery) {
		t.Errorf("limit too large: %v", err)
	}
}

func TestIndex_lookup_finds_a_task_before_the_index_lists_it(t *testing.T) {
	s := newStore(t)
	d := status.Delivery{CustomerID: "c1", TaskID: "t1", WebhookID: "evt_1", Chain: 1}
	if _, err := s.Begin(ctx, d, "https://x.example/", 21, time.Now()); err != nil {
		t.Fatal(err)
	}
	sum, err := s.Lookup(ctx, "c1", environment.Live, "t1")
	if err != nil || sum.State != status.Pending || sum.LastAttemptAt != nil || sum.Last != nil {
		t.Errorf("lookup = %+v, %v", sum, err)
	}
	if _, err := s.Lookup(ctx, "c2", environment.Live, "t1"); !errors.Is(err, status.ErrNotFound) {
		t.Errorf("another customer's lookup: %v", err)
	}
	if p := list(t, s, "c1", status.ListQuery{Limit: 10}); len(p.Items) != 0 {
		t.Errorf("listed before any outcome: %v", ids(p))
	}
}

func TestIndex_recent_attempts_are_bounded(t *testing.T) {
	s := newStore(t)
	now := time.Now()
	attemptAt(t, s, "c1", "old", now.Add(-30*time.Hour), status.OutcomeSucceeded, 200)
	for i := range 5 {
		attemptAt(t, s, "c1", fmt.Sprintf("t%d", i), now.Add(-time.Duration(i)*time.Hour), status.OutcomeRetry, 500)
	}
	attemptAt(t, s, "c1", "t0", now.Add(2*time.Minute), status.OutcomeSucceeded, 200)

	r, err := s.RecentAttempts(ctx, "c1", environment.Live, now.Add(-24*time.Hour), 100, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Attempts) != 6 || r.Tasks != 5 || !r.Complete {
		t.Errorf("recent = %d attempts of %d tasks, complete %v; want 6 of 5, complete", len(r.Attempts), r.Tasks, r.Complete)
	}
	r, _ = s.RecentAttempts(ctx, "c1", environment.Live, now.Add(-24*time.Hour), 2, 10)
	if r.Tasks != 2 || r.Complete {
		t.Errorf("bounded to 2 tasks: %d tasks, complete %v", r.Tasks, r.Complete)
	}
	r, _ = s.RecentAttempts(ctx, "c1", environment.Live, now.Add(-24*time.Hour), 100, 1)
	if len(r.Attempts) != 5 || r.Complete {
		t.Errorf("bounded to 1 attempt per task: %d attempts, complete %v", len(r.Attempts), r.Complete)
	}
}
