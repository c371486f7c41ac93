package status_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/status"
)

// BenchmarkBeginFinish is the status write of one successful delivery: Begin claims attempt 1,
// Finish records its success, each one Lua script call on the real Redis. "sequential" is one
// delivery after another (two round trips each); "parallel" keeps 64 in flight, as a busy
// worker does. redis-cpu-µs/op is the Redis server's CPU per delivery, read from INFO cpu: the
// server may be shared, so it is an upper bound.
func BenchmarkBeginFinish(b *testing.B) {
	for _, bc := range []struct {
		name     string
		parallel bool
	}{{"sequential", false}, {"parallel", true}} {
		b.Run(bc.name, func(b *testing.B) {
			rdb, prefix := testenv.Redis(b)
			s := status.NewStore(rdb, prefix, 48*time.Hour)
			ctx := context.Background()
			if err := s.Load(ctx); err != nil {
				b.Fatal(err)
			}
			var seq atomic.Int64
			one := func() {
				n := seq.Add(1)
				d := status.Delivery{CustomerID: "cust_bench", TaskID: "t" + strconv.FormatInt(n, 10),
					WebhookID: "evt_" + strconv.FormatInt(n, 10), Chain: uint64(n)}
				now := time.Now()
				begun, err := s.Begin(ctx, d, "http://www.example.com/callback", 21, now)
				if err != nil || begun.Verdict != status.Attempt {
					b.Errorf("begin: %+v, %v", begun, err)
					return
				}
				entry := &status.AttemptLog{Attempt: begun.Attempt, Delivery: begun.Delivery, At: now,
					StatusCode: 200, DurationMS: 1}
				if _, err := s.Finish(ctx, d, "http://www.example.com/callback", status.OutcomeSucceeded,
					entry, time.Time{}, time.Now()); err != nil {
					b.Errorf("finish: %v", err)
				}
			}
			cpu0 := redisCPU(b, rdb)
			b.ReportAllocs()
			b.ResetTimer()
			if bc.parallel {
				b.SetParallelism(32) // 64 goroutines on 2 cores
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						one()
					}
				})
			} else {
				for b.Loop() {
					one()
				}
			}
			b.StopTimer()
			b.ReportMetric((redisCPU(b, rdb)-cpu0)*1e6/float64(b.N), "redis-cpu-µs/op")
		})
	}
}

// redisCPU is the Redis server's user+system CPU seconds.
func redisCPU(b *testing.B, rdb redis.UniversalClient) float64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return total
}
