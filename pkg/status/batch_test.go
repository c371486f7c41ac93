package status_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

// Many deliveries at once: their script calls share pipelines, and each still gets its own,
// correct answer — also right after Redis lost its script cache. The cache is emptied on a Redis
// of the test's own: SCRIPT FLUSH is server-wide.
func TestStatus_concurrent_calls_are_batched_correctly(t *testing.T) {
	rdb := testenv.PrivateRedis(t)
	s := status.NewStore(rdb, "test:", 48*time.Hour)
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := status.Delivery{CustomerID: "c1", TaskID: fmt.Sprintf("t%d", i), WebhookID: "w",
				Chain: uint64(i + 1)}
			for attempt := 1; attempt <= 3; attempt++ {
				b, err := s.Begin(ctx, d, "https://x.example/", 21, time.Now())
				if err != nil || b.Verdict != status.Attempt || b.Attempt != attempt {
					errs <- fmt.Errorf("task %d attempt %d: begin %+v %v", i, attempt, b, err)
					return
				}
				outcome := status.OutcomeRetry
				if attempt == 3 {
					outcome = status.OutcomeSucceeded
				}
				if _, err := s.Finish(ctx, d, "https://x.example/", outcome,
					&status.AttemptLog{Attempt: attempt, Delivery: 1, At: time.Now()}, time.Now(), time.Now()); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range n {
		r, err := s.Get(ctx, "c1", environment.Live, fmt.Sprintf("t%d", i))
		if err != nil || r.Succeeded == nil || !*r.Succeeded || r.Attempts != 3 || len(r.Log) != 3 {
			t.Fatalf("task %d: %+v %v", i, r, err)
		}
	}
}
