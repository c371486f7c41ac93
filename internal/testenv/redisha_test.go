package testenv_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/internal/testenv"
)

// The cluster helper gives a working cluster: keys of different hash tags land on different
// masters, a script touching two keys of one tag runs, and a killed master is replaced by its
// replica with the data it had replicated.
func TestRedisCluster_serves_every_slot_and_replaces_a_killed_master(t *testing.T) {
	t.Parallel()
	c := testenv.StartRedisCluster(t)
	rdb := c.Client(t)
	ctx := context.Background()
	masters := map[string]bool{}
	for i := range 30 {
		key := fmt.Sprintf("k:{cust_%d}:a", i)
		if err := rdb.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("set %s: %v", key, err)
		}
		masters[c.MasterOf(key).Addr] = true
	}
	if len(masters) != 3 {
		t.Errorf("30 customers' keys are on %d masters, want 3", len(masters))
	}
	n, err := rdb.Eval(ctx, "redis.call('SET', KEYS[2], 'x'); return redis.call('EXISTS', KEYS[1], KEYS[2])",
		[]string{"k:{cust_1}:a", "k:{cust_1}:b"}).Int()
	if err != nil || n != 2 {
		t.Fatalf("two-key script on one hash tag: %d, %v", n, err)
	}
	testenv.WaitReplicated(t, c.Nodes)
	victim := c.MasterOf("k:{cust_1}:a")
	victim.Kill()
	// Within 30 s: the cluster replaces the master in a few seconds, and the client must notice
	// without waiting for a MOVED that a dead node never sends.
	testenv.Eventually(t, 30*time.Second, func() bool {
		v, err := rdb.Get(ctx, "k:{cust_1}:a").Result()
		return err == nil && v == "1"
	}, "the key is served again after its master was killed")
	if now := c.MasterOf("k:{cust_1}:a"); now == victim {
		t.Errorf("the killed master still serves the key")
	}
}

// The sentinel helper gives a primary the sentinels agree on; killing it makes them promote the
// replica, and a client through the sentinels writes again.
func TestRedisSentinel_promotes_the_replica_when_the_primary_is_killed(t *testing.T) {
	t.Parallel()
	s := testenv.StartRedisSentinel(t)
	rdb := s.Client(t)
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitReplicated(t, s.Data)
	old := s.Primary()
	old.Kill()
	testenv.Eventually(t, 60*time.Second, func() bool {
		p := s.Primary()
		return p != nil && p != old
	}, "the sentinels promote the replica")
	// No replica is left to be in sync with, so wait on the write itself.
	testenv.Eventually(t, 30*time.Second, func() bool {
		return rdb.Set(ctx, "k2", "after", 0).Err() == nil
	}, "a write through the sentinels succeeds on the new primary")
	if v, err := rdb.Get(ctx, "k").Result(); err != nil || v != "before" {
		t.Errorf("a write acknowledged by the replica before the kill: %q, %v", v, err)
	}
}

// What WAIT 1 costs a status write: the write alone, against the write and WAIT in one round
// trip (a pipeline on one connection, as a worker would send them), on a primary with one
// replica on this machine. Serial: one write at a time; parallel: 64 writers, each waiting for
// its own.
//
//	go test -run '^$' -bench RedisWrite ./internal/testenv/
func BenchmarkRedisWrite(b *testing.B) {
	s := testenv.StartRedisSentinel(b)
	primary := redis.NewClient(&redis.Options{Addr: s.Primary().Addr, PoolSize: 64})
	b.Cleanup(func() { primary.Close() })
	ctx := context.Background()
	write := func(pipe redis.Pipeliner, i int) {
		key := fmt.Sprintf("bench:{c%d}:task:%d", i%64, i)
		pipe.HSet(ctx, key, "state", "succeeded", "callback_succeeded", "1", "attempts", 1, "chain", i)
	}
	for _, wait := range []bool{false, true} {
		name := "alone"
		if wait {
			name = "with_WAIT_1"
		}
		run := func(i int) {
			pipe := primary.Pipeline()
			write(pipe, i)
			var acked *redis.Cmd
			if wait {
				acked = pipe.Do(ctx, "WAIT", 1, 1000)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			if wait && acked.Val().(int64) != 1 {
				b.Fatalf("WAIT: %v replicas", acked.Val())
			}
		}
		b.Run("serial/"+name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				run(i)
			}
		})
		b.Run("parallel64/"+name, func(b *testing.B) {
			b.SetParallelism(32) // 64 writers on 2 cores
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					run(int(n.Add(1)))
				}
			})
		})
	}
}
