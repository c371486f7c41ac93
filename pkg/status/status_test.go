package status_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

func newStore(t *testing.T) *status.Store {
	rdb, prefix := testenv.Redis(t)
	return status.NewStore(rdb, prefix, 48*time.Hour)
}

var ctx = context.Background()

func delivery(chain uint64) status.Delivery {
	return status.Delivery{CustomerID: "c1", TaskID: "t1", WebhookID: "evt_1",
		Chain: chain}
}

func begin(t *testing.T, s *status.Store, d status.Delivery, max int) status.Begun {
	t.Helper()
	b, err := s.Begin(ctx, d, "https://x.example/", max, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func finish(t *testing.T, s *status.Store, d status.Delivery, attempt int, o status.Outcome, next time.Time) bool {
	t.Helper()
	changed, err := s.Finish(ctx, d, "https://x.example/", o,
		&status.AttemptLog{Attempt: attempt, Delivery: 1, At: time.Now(), StatusCode: 500}, next, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return changed
}

func get(t *testing.T, s *status.Store) status.Record {
	t.Helper()
	r, err := s.Get(ctx, "c1", environment.Live, "t1")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestStatus_true_never_turns_false_from_an_older_attempt(t *testing.T) {
	s := newStore(t)
	d := delivery(1)
	if b := begin(t, s, d, 21); b.Verdict != status.Attempt || b.Attempt != 1 {
		t.Fatalf("first begin = %+v", b)
	}
	if r := get(t, s); r.Succeeded != nil || r.State != status.Pending {
		t.Fatalf("flag %v state %s while the first attempt runs; want absent, pending", r.Succeeded, r.State)
	}
	finish(t, s, d, 1, status.OutcomeRetry, time.Now())
	if b := begin(t, s, d, 21); b.Attempt != 2 {
		t.Fatalf("second begin = %+v", b)
	}
	finish(t, s, d, 2, status.OutcomeSucceeded, time.Time{})
	// A stale failure (of attempt 1, arriving late) and a late exhaustion change nothing.
	if finish(t, s, d, 1, status.OutcomeFailed, time.Time{}) {
		t.Error("a stale failure was applied")
	}
	r := get(t, s)
	if r.Succeeded == nil || !*r.Succeeded || r.State != status.Succeeded {
		t.Errorf("flag %v state %s; want true, succeeded", r.Succeeded, r.State)
	}
	if b := begin(t, s, d, 21); b.Verdict != status.Finished {
		t.Errorf("a redelivered message may attempt again: %+v", b)
	}
}

func TestStatus_newer_chain_supersedes_older(t *testing.T) {
	s := newStore(t)
	old := delivery(5)
	begin(t, s, old, 21)
	finish(t, s, old, 1, status.OutcomeFailed, time.Time{})
	if r := get(t, s); r.Succeeded == nil || *r.Succeeded {
		t.Fatal("the first delivery did not record false")
	}
	// A resend (chain 9) is queued; the flag keeps its last value until the resend's outcome.
	resend := delivery(9)
	if n, err := s.Queue(ctx, resend, time.Now()); err != nil || n != 2 {
		t.Fatalf("queue = %d, %v; want delivery 2", n, err)
	}
	if r := get(t, s); r.State != status.Pending || r.Attempts != 0 || r.Succeeded == nil {
		t.Errorf("after queue: %+v", r)
	}
	// The old chain's message, redelivered, must not start a competing retry chain.
	if b := begin(t, s, old, 21); b.Verdict != status.Superseded {
		t.Errorf("old chain begin = %+v, want superseded", b)
	}
	if finish(t, s, old, 2, status.OutcomeSucceeded, time.Time{}) {
		t.Error("an old chain's result changed the state")
	}
	b := begin(t, s, resend, 21)
	if b.Verdict != status.Attempt || b.Attempt != 1 || b.Delivery != 2 {
		t.Fatalf("resend begin = %+v", b)
	}
	finish(t, s, resend, 1, status.OutcomeSucceeded, time.Time{})
	r := get(t, s)
	if r.Succeeded == nil || !*r.Succeeded || r.Delivery != 2 {
		t.Errorf("after resend: flag %v delivery %d", r.Succeeded, r.Delivery)
	}
	if len(r.Log) != 3 {
		t.Errorf("log has %d entries, want 3 (the old chain's late result is kept)", len(r.Log))
	}
}

func TestStatus_queue_after_the_worker_began_is_harmless(t *testing.T) {
	s := newStore(t)
	d := delivery(7)
	begin(t, s, d, 21)
	if _, err := s.Queue(ctx, d, time.Now()); err != nil {
		t.Fatal(err)
	}
	if r := get(t, s); r.Attempts != 1 {
		t.Errorf("a late Queue of the same chain reset the attempt count to %d", r.Attempts)
	}
}

func TestStatus_interrupted_attempt_counts_and_is_logged(t *testing.T) {
	s := newStore(t)
	d := delivery(1)
	begin(t, s, d, 3)
	// The worker dies here; the message comes back.
	if b := begin(t, s, d, 3); b.Attempt != 2 {
		t.Fatalf("begin after a crash = %+v, want attempt 2", b)
	}
	r := get(t, s)
	if len(r.Log) != 1 || !strings.Contains(r.Log[0].Error, "interrupted") {
		t.Errorf("log = %+v, want the interrupted attempt", r.Log)
	}
	finish(t, s, d, 2, status.OutcomeRetry, time.Now())
	begin(t, s, d, 3) // attempt 3, the last; killed during it
	if b := begin(t, s, d, 3); b.Verdict != status.Exhausted {
		t.Fatalf("begin after the last attempt was interrupted = %+v, want exhausted", b)
	}
	r = get(t, s)
	if r.State != status.Failed || r.Succeeded == nil || *r.Succeeded {
		t.Errorf("state %s flag %v; want failed, false", r.State, r.Succeeded)
	}
}

func TestStatus_early_redelivery_waits_for_its_turn(t *testing.T) {
	s := newStore(t)
	d := delivery(1)
	begin(t, s, d, 21)
	finish(t, s, d, 1, status.OutcomeRetry, time.Now().Add(time.Hour))
	b := begin(t, s, d, 21)
	if b.Verdict != status.NotDue || b.Wait < 59*time.Minute {
		t.Errorf("begin before the retry is due = %+v, want not due for about an hour", b)
	}
	if r := get(t, s); r.Attempts != 1 || r.NextAttemptAt == nil {
		t.Errorf("an early redelivery used an attempt: %+v", r)
	}
}

func TestStatus_no_callback_and_new_event(t *testing.T) {
	s := newStore(t)
	d := delivery(1)
	begin(t, s, d, 21)
	finish(t, s, d, 1, status.OutcomeSucceeded, time.Time{})
	// A new completion event for the same task (another webhook id) starts afresh.
	next := delivery(2)
	next.WebhookID = "evt_2"
	if _, err := s.Finish(ctx, next, "", status.OutcomeNoCallback, nil, time.Time{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	r := get(t, s)
	if r.State != status.NoCallback || r.Succeeded != nil || r.WebhookID != "evt_2" {
		t.Errorf("state %s flag %v id %s; want no_callback, absent, evt_2", r.State, r.Succeeded, r.WebhookID)
	}
}

func TestStatus_keys_expire(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := status.NewStore(rdb, prefix, 25*time.Hour)
	d := delivery(1)
	begin(t, s, d, 21)
	finish(t, s, d, 1, status.OutcomeSucceeded, time.Time{})
	// The attempt log lives in the task's record, so these two keys are all a status leaves behind.
	for _, k := range []string{prefix + "{c1}:t:t1", prefix + "{c1}:index"} {
		ttl := rdb.TTL(ctx, k).Val()
		if ttl <= 24*time.Hour || ttl > 25*time.Hour {
			t.Errorf("%s TTL = %s, want the 25h retention", k, ttl)
		}
	}
	if r := get(t, s); len(r.Log) != 1 || r.Log[0].Attempt != 1 {
		t.Errorf("log %+v, want attempt 1", r.Log)
	}
}

// The log keeps the newest 200 entries, in order, and every reader sees the same ones.
func TestStatus_log_keeps_the_newest_entries(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := status.NewStore(rdb, prefix, time.Hour)
	d := delivery(1)
	const attempts = 205
	for i := 1; i <= attempts; i++ {
		begin(t, s, d, attempts+1)
		finish(t, s, d, i, status.OutcomeRetry, time.Now().Add(-time.Second))
	}
	r := get(t, s)
	if len(r.Log) != 200 || r.Log[0].Attempt != 6 || r.Log[199].Attempt != attempts {
		t.Fatalf("log holds %d entries, attempts %d..%d; want 200, 6..205", len(r.Log), r.Log[0].Attempt, r.Log[len(r.Log)-1].Attempt)
	}
	if n, err := rdb.StrLen(ctx, prefix+"{c1}:t:t1").Result(); err != nil || n > 200*40 {
		t.Errorf("the record holds %d bytes (%v): old log entries are not trimmed", n, err)
	}
	sum, err := s.Lookup(ctx, "c1", environment.Live, "t1")
	if err != nil || sum.Last == nil || sum.Last.Attempt != attempts {
		t.Errorf("lookup: last %+v, %v; want attempt %d", sum.Last, err, attempts)
	}
	rec, err := s.RecentAttempts(ctx, "c1", environment.Live, time.Now().Add(-time.Hour), 10, 3)
	if err != nil || len(rec.Attempts) != 3 || rec.Attempts[2].Attempt != attempts || rec.Complete {
		t.Errorf("recent: %+v, %v; want attempts 203..205, incomplete", rec, err)
	}
}

// Readers load their script again when Redis lost it (a restart, SCRIPT FLUSH). The cache is
// emptied on a Redis of the test's own: SCRIPT FLUSH is server-wide.
func TestStatus_log_is_read_after_redis_lost_its_scripts(t *testing.T) {
	rdb := testenv.PrivateRedis(t)
	s := status.NewStore(rdb, "test:", time.Hour)
	d := delivery(1)
	begin(t, s, d, 21)
	finish(t, s, d, 1, status.OutcomeSucceeded, time.Time{})
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	sum, err := s.Lookup(ctx, "c1", environment.Live, "t1")
	if err != nil || sum.Last == nil || sum.Last.Attempt != 1 {
		t.Errorf("lookup after SCRIPT FLUSH: last %+v, %v", sum.Last, err)
	}
}

// Two resends asked for back to back: the older one, superseded before it began, still makes its
// one attempt (each send-callback is one more delivery), but only the newer one retries.
func TestStatus_superseded_resend_gets_one_attempt(t *testing.T) {
	s := newStore(t)
	orig := delivery(1)
	begin(t, s, orig, 21)
	finish(t, s, orig, 1, status.OutcomeSucceeded, time.Time{})
	r1, r2 := delivery(10), delivery(11)
	if _, err := s.Queue(ctx, r1, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Queue(ctx, r2, time.Now()); err != nil {
		t.Fatal(err)
	}
	b := begin(t, s, r1, 21)
	if b.Verdict != status.OneShot || b.Delivery != 2 || b.Attempt != 1 {
		t.Fatalf("older resend begin = %+v, want one shot as delivery 2", b)
	}
	if b := begin(t, s, r1, 21); b.Verdict != status.Superseded {
		t.Errorf("older resend redelivered = %+v, want superseded (its one attempt is used)", b)
	}
	if finish(t, s, r1, 1, status.OutcomeFailed, time.Time{}) {
		t.Error("the superseded resend's outcome changed the state")
	}
	if b := begin(t, s, r2, 21); b.Verdict != status.Attempt || b.Delivery != 3 {
		t.Errorf("newer resend begin = %+v, want attempt of delivery 3", b)
	}
	// The original, parked and redelivered, had begun long ago: it is simply superseded.
	if b := begin(t, s, orig, 21); b.Verdict != status.Superseded {
		t.Errorf("original redelivered = %+v, want superseded", b)
	}
}

// Begin reports the version of the profile pkg/customer writes, under the same key.
func TestStatus_begin_reports_the_profile_version(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := status.NewStore(rdb, prefix, 48*time.Hour)
	customers := customer.NewStore(rdb, prefix)
	if _, err := customers.Create(ctx, "c1", ""); err != nil {
		t.Fatal(err)
	}
	testTask := delivery(1)
	testTask.Env = environment.Test
	if b := begin(t, s, delivery(1), 21); b.ProfileVersion != 1 {
		t.Fatalf("version %d, want 1", b.ProfileVersion)
	}
	p, err := customers.RotateCallbackAuthKey(ctx, "c1", environment.Live)
	if err != nil {
		t.Fatal(err)
	}
	if b := begin(t, s, delivery(1), 21); b.ProfileVersion != p.Version || p.Version != 2 {
		t.Errorf("after a rotation Begin reports %d, the profile has %d; want 2", b.ProfileVersion, p.Version)
	}
	// A test task reports its own environment's profile, which the live rotation left alone.
	if b := begin(t, s, testTask, 21); b.ProfileVersion != 1 {
		t.Errorf("a test task reports version %d, want the test profile's 1", b.ProfileVersion)
	}
	if _, err := customers.RotateSigningSecret(ctx, "c1", environment.Test); err != nil {
		t.Fatal(err)
	}
	if b := begin(t, s, testTask, 21); b.ProfileVersion != 2 {
		t.Errorf("after a test rotation a test task reports %d, want 2", b.ProfileVersion)
	}
}

// The same task id in the two environments is two tasks, each with its own status, log and
// index; a status written before environments existed (the same keys) reads as live.
func TestStatus_environments_are_apart(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := status.NewStore(rdb, prefix, 48*time.Hour)
	now := time.Now()
	live := delivery(1)
	test := delivery(2)
	test.Env = environment.Test
	test.WebhookID = "evt_test"
	for _, d := range []status.Delivery{live, test} {
		b := begin(t, s, d, 21)
		if b.Verdict != status.Attempt || b.Attempt != 1 {
			t.Fatalf("%s begin = %+v, want a first attempt", d.Env, b)
		}
	}
	entry := &status.AttemptLog{Attempt: 1, Delivery: 1, At: now, StatusCode: 200}
	if _, err := s.Finish(ctx, test, "http://test.example/", status.OutcomeSucceeded, entry, time.Time{}, now); err != nil {
		t.Fatal(err)
	}
	failed := &status.AttemptLog{Attempt: 1, Delivery: 1, At: now, StatusCode: 500}
	if _, err := s.Finish(ctx, live, "http://live.example/", status.OutcomeRetry, failed, now.Add(time.Minute), now); err != nil {
		t.Fatal(err)
	}
	rl, err := s.Get(ctx, "c1", environment.Live, "t1")
	if err != nil || rl.State != status.Retrying || rl.WebhookID != "evt_1" || rl.Succeeded != nil || rl.Log[0].StatusCode != 500 {
		t.Fatalf("live task %+v %v", rl, err)
	}
	rt, err := s.Get(ctx, "c1", environment.Test, "t1")
	if err != nil || rt.State != status.Succeeded || rt.WebhookID != "evt_test" || len(rt.Log) != 1 {
		t.Fatalf("test task %+v %v", rt, err)
	}
	for env, want := range map[environment.Env]status.State{environment.Live: status.Retrying, environment.Test: status.Succeeded} {
		page, err := s.List(ctx, "c1", env, status.ListQuery{Limit: 10})
		if err != nil || len(page.Items) != 1 || page.Items[0].State != want {
			t.Errorf("%s list = %+v, %v", env, page.Items, err)
		}
	}
	// The key form without an environment is the live one.
	if n, _ := rdb.Exists(ctx, prefix+"{c1}:t:t1").Result(); n != 1 {
		t.Error("a live task's status is not under the key it always had")
	}
	if n, _ := rdb.Exists(ctx, prefix+"{c1}:test:t:t1").Result(); n != 1 {
		t.Error("a test task's status is not under its environment's key")
	}
}
