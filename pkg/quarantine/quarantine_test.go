package quarantine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/quarantine"
)

var ctx = context.Background()

func TestQuery_pages_newest_first_by_reason_and_since(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := quarantine.NewStore(rdb, prefix, 0)
	var ids []string
	for i := range 10 {
		reason := "malformed_json"
		if i%3 == 0 {
			reason = "unknown_customer"
		}
		id, err := s.Add(ctx, quarantine.Event{Subject: "tasks.completed.c", Reason: reason, Detail: fmt.Sprint(i),
			ReceivedAt: time.Now(), Raw: []byte(fmt.Sprintf(`{"n":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}

	// Pages of two of unknown_customer (events 9, 6, 3, 0), newest first.
	var got []string
	q := quarantine.Query{Reason: "unknown_customer", Limit: 2}
	for range 5 {
		p, err := s.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Events {
			got = append(got, e.Detail)
		}
		if p.Next == "" {
			break
		}
		q.Before = p.Next
	}
	if fmt.Sprint(got) != "[9 6 3 0]" {
		t.Errorf("unknown_customer, pages of 2: %v", got)
	}

	p, err := s.Query(ctx, quarantine.Query{Limit: 100, Since: time.Now().Add(time.Hour)})
	if err != nil || len(p.Events) != 0 || p.Next != "" {
		t.Errorf("since an hour from now: %+v %v", p, err)
	}
	p, err = s.Query(ctx, quarantine.Query{Limit: 100})
	if err != nil || len(p.Events) != 10 || p.Events[0].ID != ids[9] || p.Next != "" {
		t.Errorf("all: %d events, first %s, next %q, %v", len(p.Events), p.Events[0].ID, p.Next, err)
	}
	if _, err := s.Query(ctx, quarantine.Query{Limit: 10, Before: "nope"}); err == nil {
		t.Error("a malformed cursor was accepted")
	}

	e, err := s.Get(ctx, ids[4])
	if err != nil || e.Detail != "4" || string(e.Raw) != `{"n":4}` {
		t.Errorf("get: %+v %v", e, err)
	}
	if err := s.Delete(ctx, ids[4]); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{ids[4], "1-1", "not an id"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, quarantine.ErrNotFound) {
			t.Errorf("get %q: %v, want ErrNotFound", id, err)
		}
		if err := s.Delete(ctx, id); !errors.Is(err, quarantine.ErrNotFound) {
			t.Errorf("delete %q: %v, want ErrNotFound", id, err)
		}
	}
	if n, err := s.Len(ctx); err != nil || n != 9 {
		t.Errorf("len = %d %v, want 9", n, err)
	}
}
