package status_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

// writeOldForm writes a status the way the store wrote it before records were compact: a hash of
// long-named fields holding the task itself, two attempts of delivery 1 (the second in flight),
// one log entry in the hash and an older one in the list that held logs before that.
func writeOldForm(t *testing.T, rdb redis.UniversalClient, s string, prefix string, chain uint64, nextMS int64) {
	t.Helper()
	now := time.Now().Add(-time.Minute).UnixMilli()
	hash := prefix + "{c1}:task:t1"
	e1 := fmt.Sprintf(`{"attempt":1,"delivery":1,"at_ms":%d,"status_code":503,"error":"HTTP 503","duration_ms":4,"response_excerpt":"busy"}`, now-1000)
	e2 := fmt.Sprintf(`{"attempt":2,"delivery":1,"at_ms":%d,"status_code":500,"error":"HTTP 500","duration_ms":7}`, now)
	c := strconv.FormatUint(chain, 10)
	err := rdb.HSet(ctx, hash,
		"chain", c, "delivery", "1", "attempts", "3", "state", s, "webhook_id", "evt_old",
		"customer_id", "c1", "task_id", "t1", "queued_at", now, "updated_at", now,
		"task", `{"task_id":"t1","status":"completed","response":{"n":1}}`, "target", "https://x.example/old",
		"inflight", "3", "next_attempt_at", nextMS, "last_attempt_at", now, "logn", "1", "l:1", e2, "d:"+c, "b:1",
	).Err()
	if err == nil {
		err = rdb.RPush(ctx, prefix+"{c1}:attempts:t1", e1).Err()
	}
	if err == nil {
		err = rdb.ZAdd(ctx, prefix+"{c1}:index", redis.Z{Score: float64(now), Member: "t1"}).Err()
	}
	if err != nil {
		t.Fatal(err)
	}
	rdb.Expire(ctx, hash, time.Hour)
}

// A status written in the old form is read as it is until it expires; the first change to it
// carries its state and log over into the compact record, and the task it held stays readable.
func TestStatus_old_form_is_read_and_carried_over(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := status.NewStore(rdb, prefix, time.Hour)
	writeOldForm(t, rdb, "retrying", prefix, 7, time.Now().Add(-time.Second).UnixMilli())

	r := get(t, s)
	if r.State != status.Retrying || r.Attempts != 3 || r.Chain != 7 || r.WebhookID != "evt_old" ||
		r.Target != "https://x.example/old" || !strings.Contains(string(r.Task), `"n":1`) {
		t.Fatalf("old-form status read as %+v", r)
	}
	if got := attempts(r.Log); !slices.Equal(got, []int{1, 2}) || r.Log[0].ResponseExcerpt != "busy" {
		t.Fatalf("old-form log %+v, want the list's entry then the hash's", r.Log)
	}
	page, err := s.List(ctx, "c1", environment.Live, status.ListQuery{Limit: 10})
	if err != nil || len(page.Items) != 1 || page.Items[0].State != status.Retrying || page.Items[0].Last.Attempt != 2 {
		t.Fatalf("old-form status listed as %+v, %v", page.Items, err)
	}
	briefs, err := s.Briefs(ctx, "c1", environment.Live, []string{"t1"})
	if err != nil || !briefs[0].Found || briefs[0].Chain != 7 {
		t.Fatalf("old-form brief %+v, %v", briefs, err)
	}

	// The worker that held attempt 3 died; the redelivered message carries the same chain.
	d := status.Delivery{CustomerID: "c1", TaskID: "t1", WebhookID: "evt_old", Chain: 7}
	b := begin(t, s, d, 4)
	if b.Verdict != status.Attempt || b.Attempt != 4 || b.Delivery != 1 {
		t.Fatalf("begin on an old-form status: %+v, want attempt 4 of delivery 1", b)
	}
	if b := begin(t, s, d, 4); b.Verdict != status.Exhausted {
		t.Fatalf("a fifth begin with at most 4 attempts: %+v, want exhausted", b)
	}
	r = get(t, s)
	if r.State != status.Failed || r.Succeeded == nil || *r.Succeeded || r.Chain != 7 {
		t.Fatalf("carried-over status %+v", r)
	}
	if got := attempts(r.Log); !slices.Equal(got, []int{1, 2, 3, 4}) || r.Log[0].ResponseExcerpt != "busy" ||
		!strings.HasPrefix(r.Log[2].Error, "interrupted") {
		t.Errorf("carried-over log %+v, want 1 and 2 kept, 3 and 4 interrupted", r.Log)
	}
	if n, _ := rdb.Exists(ctx, prefix+"{c1}:t:t1").Result(); n != 1 {
		t.Error("no compact record after the first change")
	}
	if !strings.Contains(string(r.Task), `"n":1`) {
		t.Errorf("the task the old hash holds is no longer read: %q", r.Task)
	}
}

// A superseded resend queued in the old form, never begun, still gets its one attempt.
func TestStatus_old_form_queued_resend_keeps_its_attempt(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := status.NewStore(rdb, prefix, time.Hour)
	writeOldForm(t, rdb, "retrying", prefix, 9, time.Now().Add(time.Hour).UnixMilli())
	if err := rdb.HSet(ctx, prefix+"{c1}:task:t1", "d:8", "q:2").Err(); err != nil {
		t.Fatal(err)
	}
	b := begin(t, s, status.Delivery{CustomerID: "c1", TaskID: "t1", WebhookID: "evt_old", Chain: 8}, 21)
	if b.Verdict != status.OneShot || b.Delivery != 2 {
		t.Fatalf("the queued resend began as %+v, want its one attempt as delivery 2", b)
	}
	if b := begin(t, s, status.Delivery{CustomerID: "c1", TaskID: "t1", WebhookID: "evt_old", Chain: 8}, 21); b.Verdict != status.Superseded {
		t.Fatalf("its redelivery began as %+v, want superseded", b)
	}
}

// A delivered task costs one small record: no task in it, numbers as numbers, short names.
// Measured on a Redis with the default configuration; the load tool measures the whole cost.
func TestStatus_record_of_a_delivered_task_is_small(t *testing.T) {
	rdb := testenv.PrivateRedis(t)
	s := status.NewStore(rdb, "p:", 30*24*time.Hour)
	d := status.Delivery{CustomerID: "cust_0001", TaskID: "576c41bf13e36b0600b02b34", WebhookID: "evt_3f2a9c1e7b5d4a60",
		Chain: 123456789}
	if _, err := s.Begin(ctx, d, "https://hooks.example.com/refonte", 21, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(ctx, d, "https://hooks.example.com/refonte", status.OutcomeSucceeded,
		&status.AttemptLog{Attempt: 1, Delivery: 1, At: time.Now(), StatusCode: 200, DurationMS: 12}, time.Time{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	key := "p:{cust_0001}:t:576c41bf13e36b0600b02b34"
	raw, err := rdb.Get(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	usage, err := rdb.MemoryUsage(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("record of a delivered task: %d bytes of JSON, MEMORY USAGE %d: %s", len(raw), usage, raw)
	if len(raw) > 200 || usage > 320 {
		t.Errorf("record of a delivered task: %d bytes, %d bytes of Redis memory; want at most 200 and 320: %s", len(raw), usage, raw)
	}
	r, err := s.Get(ctx, "cust_0001", environment.Live, d.TaskID)
	if err != nil || r.State != status.Succeeded || r.Chain != d.Chain || len(r.Log) != 1 || r.Log[0].StatusCode != 200 ||
		r.Log[0].DurationMS != 12 || r.Target != "https://hooks.example.com/refonte" || r.WebhookID != d.WebhookID {
		t.Errorf("read back as %+v, %v", r, err)
	}
}

// Only the newest attempts keep their whole error and their response excerpt.
func TestStatus_older_log_entries_are_compacted(t *testing.T) {
	s := newStore(t)
	d := delivery(1)
	long := strings.Repeat("e", 300)
	for i := 1; i <= 8; i++ {
		begin(t, s, d, 21)
		if _, err := s.Finish(ctx, d, "https://x.example/", status.OutcomeRetry, &status.AttemptLog{Attempt: i, Delivery: 1,
			At: time.Now(), StatusCode: 500, Error: long, ResponseExcerpt: "excerpt " + strconv.Itoa(i)},
			time.Now().Add(-time.Second), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	r := get(t, s)
	if len(r.Log) != 8 {
		t.Fatalf("log %d entries, want 8", len(r.Log))
	}
	for i, e := range r.Log {
		full := i >= 3 // the newest five
		if full != (e.Error == long) || full != (e.ResponseExcerpt == "excerpt "+strconv.Itoa(i+1)) {
			t.Errorf("entry %d: error %d bytes, excerpt %q", i+1, len(e.Error), e.ResponseExcerpt)
		}
		if !full && (len(e.Error) != 60 || e.StatusCode != 500 || e.Attempt != i+1) {
			t.Errorf("older entry %d: %+v, want its status and 60 bytes of its error", i+1, e)
		}
	}
}

func attempts(log []status.AttemptLog) []int {
	var out []int
	for _, e := range log {
		out = append(out, e.Attempt)
	}
	return out
}
