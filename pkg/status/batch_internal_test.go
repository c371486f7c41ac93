package status

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/environment"
)

// One script call carries several deliveries' operations; one that fails (here a task key that
// is not a string) answers its own error, and the operations before and after it are done.
func TestBatch_one_failing_operation_does_not_fail_the_others(t *testing.T) {
	ctx := context.Background()
	rdb, prefix := testenv.Redis(t)
	s := NewStore(rdb, prefix, time.Hour)
	if err := rdb.HSet(ctx, s.recordKeys("c1", environment.Live, "broken")[0], "not", "a string").Err(); err != nil {
		t.Fatal(err)
	}
	var calls []*call
	for i, task := range []string{"t1", "broken", "t2"} {
		d := Delivery{CustomerID: "c1", TaskID: task, WebhookID: "w" + task, Chain: uint64(i + 1)}
		args := []any{"begin", d.Chain, time.Now().UnixMilli(), 3600, d.WebhookID, "", d.CustomerID,
			d.TaskID, "https://x.example/", 21}
		calls = append(calls, &call{keys: s.recordKeys(d.CustomerID, environment.Live, d.TaskID), args: args, reply: make(chan callResult, 1)})
	}
	s.batch.exec(ctx, calls)
	for i, c := range calls {
		r := <-c.reply
		if i == 1 {
			if r.err == nil || !strings.Contains(r.err.Error(), "WRONGTYPE") {
				t.Errorf("the broken operation answered %v, %v; want its WRONGTYPE error", r.vals, r.err)
			}
			continue
		}
		if r.err != nil || len(r.vals) != 4 || Verdict(r.vals[0]) != Attempt || r.vals[1] != 1 {
			t.Errorf("operation %d answered %v, %v; want attempt 1", i, r.vals, r.err)
		}
	}
	for _, task := range []string{"t1", "t2"} {
		if rec, err := s.Get(ctx, "c1", environment.Live, task); err != nil || rec.Attempts != 1 {
			t.Errorf("%s: %+v, %v; want one attempt recorded", task, rec, err)
		}
	}
}

// On Redis Cluster a script may only touch one slot: calls are grouped by their keys' hash tag.
func TestBatch_groups_by_hash_tag_on_cluster(t *testing.T) {
	keys := func(c string) []string { return (&Store{prefix: "p:"}).recordKeys(c, environment.Live, "t") }
	batch := []*call{{keys: keys("a")}, {keys: keys("b")}, {keys: keys("a")}}
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { _ = cluster.Close() })
	groups := (&batcher{rdb: cluster}).group(batch)
	if len(groups) != 2 || len(groups[0]) != 2 || groups[0][1] != batch[2] || groups[1][0] != batch[1] {
		t.Errorf("cluster groups %v, want [a a] [b]", groups)
	}
	single := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = single.Close() })
	if groups := (&batcher{rdb: single}).group(batch); len(groups) != 1 || len(groups[0]) != 3 {
		t.Errorf("standalone groups %v, want one of 3", groups)
	}
	for key, want := range map[string]string{"p:{c1}:task:t": "c1", "p:{}:x": "p:{}:x", "plain": "plain", "a{b}{c}": "b"} {
		if got := hashTag(key); got != want {
			t.Errorf("hashTag(%q) = %q, want %q", key, got, want)
		}
	}
}
