package status

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// maxBatch bounds how many script calls go to Redis in one pipeline.
const maxBatch = 128

// batcher sends the script calls of concurrent deliveries to Redis in one pipeline, the way a
// database groups commits: the first caller to arrive writes its call and every call that queued
// meanwhile, then hands the next batch to one of the callers still waiting. A lone call goes out
// at once, so batching adds no latency; under load one round trip carries many calls, which cuts
// the client's and Redis's per-call cost (system calls, wake-ups). Each call is still atomic on
// its own, and the calls of one delivery stay in order because a delivery waits for each reply.
// No goroutine of its own: the callers do the work.
type batcher struct {
	rdb redis.UniversalClient

	mu       sync.Mutex
	pending  []*call
	flushing bool
}

type call struct {
	keys  []string
	args  []any
	reply chan callResult
	lead  chan struct{} // closed when this caller must write the next batch
}

type callResult struct {
	vals []int64
	err  error
}

func (b *batcher) do(ctx context.Context, keys []string, args []any) ([]int64, error) {
	c := &call{keys: keys, args: args, reply: make(chan callResult, 1), lead: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	if b.flushing {
		b.mu.Unlock()
		select {
		case r := <-c.reply:
			return r.vals, r.err
		case <-c.lead:
		}
	} else {
		b.flushing = true
		b.mu.Unlock()
	}
	// This caller writes a batch: everything queued so far, its own call included.
	b.mu.Lock()
	batch := b.pending
	if len(batch) > maxBatch {
		batch = batch[:maxBatch]
	}
	b.pending = b.pending[len(batch):]
	b.mu.Unlock()

	b.exec(context.WithoutCancel(ctx), batch)

	b.mu.Lock()
	if len(b.pending) > 0 {
		close(b.pending[0].lead) // flushing stays true: leadership passes on
	} else {
		b.flushing = false
	}
	b.mu.Unlock()
	r := <-c.reply
	return r.vals, r.err
}

func (b *batcher) exec(ctx context.Context, batch []*call) {
	if len(batch) == 1 {
		c := batch[0]
		vals, err := recordScript.Run(ctx, b.rdb, c.keys, c.args...).Int64Slice()
		c.reply <- callResult{vals, err}
		return
	}
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = recordScript.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for i, c := range batch {
		vals, err := cmds[i].Int64Slice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis lost its script cache (a restart or SCRIPT FLUSH): load it and run this one.
			vals, err = recordScript.Run(ctx, b.rdb, c.keys, c.args...).Int64Slice()
		}
		c.reply <- callResult{vals, err}
	}
}
