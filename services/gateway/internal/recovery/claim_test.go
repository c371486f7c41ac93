package recovery

import (
	"crypto/rand"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

// A task re-sent by a recovery that ran at the same time as another is not re-sent again by the
// other, even once the first has ended (its re-delivery put the task at the end of the other's
// window, where the other's walk meets it last). A recovery asked for after the first ended
// re-sends it.
func TestClaim_a_task_re_sent_by_an_overlapping_recovery_is_skipped_after_it_ends(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	s := NewStore(rdb, prefix, nil, time.Hour)
	ctx := t.Context()
	const cust, owner = "cust_a", "gw_test"
	env := environment.Live
	p := Params{Env: env, Since: time.Now().Add(-time.Hour), Until: time.Now(), State: StateAny}
	newID := func() string {
		id := "rcv_" + rand.Text()
		if err := s.create(ctx, cust, env, id, owner, p, time.Minute, 10); err != nil {
			t.Fatal(err)
		}
		return id
	}
	task := status.WindowEntry{TaskID: "t1", LastAttemptMS: time.Now().UnixMilli()}
	claim := func(id string) bool {
		t.Helper()
		ok, _, err := s.claim(ctx, cust, env, id, owner, task, time.Microsecond)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	finish := func(id string) {
		t.Helper()
		if _, err := s.owned(ctx, cust, env, id, owner, "finish", Done, ""); err != nil {
			t.Fatal(err)
		}
	}

	first := newID()
	second := newID() // asked for while first runs
	if !claim(first) {
		t.Fatal("first recovery could not claim a task nobody holds")
	}
	if claim(second) {
		t.Error("a task held by a running recovery was claimed by another")
	}
	finish(first)
	third := newID() // asked for once first ended; second keeps the claims alive
	if claim(second) {
		t.Error("a recovery re-sent a task that a recovery running beside it re-sent and then ended")
	}
	if !claim(third) {
		t.Error("a recovery asked for after the one that re-sent a task ended could not re-send it")
	}
	// The other way round: third, asked for after second, re-sent it while second ran.
	claimedLater := "t2"
	task = status.WindowEntry{TaskID: claimedLater, LastAttemptMS: task.LastAttemptMS}
	if !claim(third) {
		t.Fatal("third recovery could not claim a task nobody holds")
	}
	finish(third)
	if claim(second) {
		t.Error("a recovery re-sent a task that a later recovery, running beside it, re-sent and then ended")
	}
	if r, err := s.Get(ctx, cust, env, second); err != nil || r.Skipped != 3 {
		t.Errorf("second recovery: %+v, %v; want 3 skipped", r, err)
	}
}
