package status

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// maxBatch bounds how many script calls go to Redis in one pipeline.
const maxBatch = 128

// batcher sends the script calls of concurrent deliveries to Redis in one pipeline, the way a
// database groups commits: whoever holds the writer token sends every call queued so far (its own
// included, unless an earlier writer already sent it) in one pipeline, answers each, and gives
// the token back. A caller waits for whichever comes first, its answer or the token, so a lone
// call goes out at once (batching adds no latency) and a queued call always has its own caller
// ready to send it. Under load one round trip carries many calls, which cuts the client's and
// Redis's per-call cost (system calls, wake-ups). Each call is still atomic on its own, and the
// calls of one delivery stay in order because a delivery waits for each reply. No goroutine of
// its own: the callers do the work.
type batcher struct {
	rdb redis.UniversalClient
	// writer is the token (capacity 1) that lets one caller at a time send a batch; it is taken
	// and given back within flush, so no goroutine ever owns another's turn.
	writer chan struct{}

	mu      sync.Mutex
	pending []*call
}

func newBatcher(rdb redis.UniversalClient) *batcher {
	return &batcher{rdb: rdb, writer: make(chan struct{}, 1)}
}

type call struct {
	keys  []string
	args  []any
	att   *Attached
	reply chan callResult // buffered: answering never blocks the writer
	// attReply is the attached call's reply, set by the writer before it answers the call.
	attReply callResult
}

// send answers the call, with its attached call's reply.
func (c *call) send(vals []int64, err error) {
	c.reply <- callResult{vals: vals, err: err, attached: c.attReply.attached, attErr: c.attReply.attErr}
}

type callResult struct {
	vals []int64
	err  error
	// attached and attErr are the attached call's reply.
	attached any
	attErr   error
}

// Attached is a script call that travels with a status write, in the same pipeline: it costs
// Redis a script call but no round trip of its own (endpoint health rides with each attempt's
// outcome). Its script takes a batch form like record.lua's ("batch", then each call's argument
// count and arguments; the same number of keys per call), so the attached calls of a batch go
// as one script call too.
type Attached struct {
	Script *redis.Script
	Keys   []string
	Args   []any
}

func (b *batcher) do(ctx context.Context, keys []string, args []any, att *Attached) (callResult, error) {
	c := &call{keys: keys, args: args, att: att, reply: make(chan callResult, 1)}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	b.mu.Unlock()
	for {
		select {
		case r := <-c.reply:
			return r, r.err
		case b.writer <- struct{}{}:
			// The batch may not hold this call (an earlier writer sent it, or more than
			// maxBatch were queued before it); the loop then waits again.
			b.flush(context.WithoutCancel(ctx))
		}
	}
}

// flush sends up to maxBatch queued calls and gives the writer token back. The caller must hold
// the token.
func (b *batcher) flush(ctx context.Context) {
	defer func() { <-b.writer }()
	b.mu.Lock()
	batch := b.pending[:min(len(b.pending), maxBatch)]
	b.pending = b.pending[len(batch):]
	b.mu.Unlock()
	if len(batch) > 0 {
		b.exec(ctx, batch)
	}
}

func (b *batcher) exec(ctx context.Context, batch []*call) {
	if len(batch) == 1 && batch[0].att == nil {
		c := batch[0]
		vals, err := recordScript.Run(ctx, b.rdb, c.keys, c.args...).Int64Slice()
		c.send(vals, err)
		return
	}
	// One script call per group, each carrying the operations of several deliveries (record.lua's
	// batch form): Redis's per-call cost (parsing, the script lookup, starting the interpreter)
	// is paid once per group instead of once per operation.
	groups := b.group(batch)
	pipe := b.rdb.Pipeline()
	type scriptCall struct {
		keys []string
		args []any
		cmd  *redis.Cmd
	}
	calls := make([]scriptCall, len(groups))
	attached := make([]attachedCall, 0, len(groups))
	for i, g := range groups {
		keys, args := batchArgs(g)
		calls[i] = scriptCall{keys: keys, args: args, cmd: recordScript.EvalSha(ctx, pipe, keys, args...)}
		attached = appendAttached(ctx, pipe, attached, g)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for _, a := range attached {
		a.answer(ctx, b.rdb)
	}
	for i, g := range groups {
		res, err := calls[i].cmd.Result()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis lost its script cache (a restart or SCRIPT FLUSH): load it and run this one.
			res, err = recordScript.Run(ctx, b.rdb, calls[i].keys, calls[i].args...).Result()
		}
		answer(g, res, err)
	}
}

// group splits a batch into the calls that may share one script call: all of them, except on
// Redis Cluster, where a script runs on one node with keys of one slot, so calls are grouped by
// their keys' hash tag (the customer).
func (b *batcher) group(batch []*call) [][]*call {
	if _, cluster := b.rdb.(*redis.ClusterClient); !cluster {
		return [][]*call{batch}
	}
	var groups [][]*call
	index := map[string]int{}
	for _, c := range batch {
		tag := hashTag(c.keys[0])
		i, ok := index[tag]
		if !ok {
			i = len(groups)
			index[tag] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], c)
	}
	return groups
}

// attachedCall is one script call carrying the attached calls of one group that share a script.
type attachedCall struct {
	script *redis.Script
	calls  []*call
	keys   []string
	args   []any
	cmd    *redis.Cmd
}

// appendAttached queues, in pipe, one script call per attached script of the group g.
func appendAttached(ctx context.Context, pipe redis.Pipeliner, out []attachedCall, g []*call) []attachedCall {
	first := len(out)
	for _, c := range g {
		if c.att == nil {
			continue
		}
		i := first
		for i < len(out) && out[i].script != c.att.Script {
			i++
		}
		if i == len(out) {
			out = append(out, attachedCall{script: c.att.Script})
		}
		out[i].calls = append(out[i].calls, c)
	}
	for i := first; i < len(out); i++ {
		a := &out[i]
		as := make([]*call, len(a.calls))
		for j, c := range a.calls {
			as[j] = &call{keys: c.att.Keys, args: c.att.Args}
		}
		a.keys, a.args = batchArgs(as)
		a.cmd = a.script.EvalSha(ctx, pipe, a.keys, a.args...)
	}
	return out
}

// answer stores each attached call's reply in its call, before the call itself is answered.
func (a attachedCall) answer(ctx context.Context, rdb redis.UniversalClient) {
	res, err := a.cmd.Result()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		res, err = a.script.Run(ctx, rdb, a.keys, a.args...).Result()
	}
	if len(a.calls) == 1 {
		a.calls[0].attReply = callResult{attached: res, attErr: err}
		return
	}
	replies, ok := res.([]any)
	if err == nil && (!ok || len(replies) != len(a.calls)) {
		err = fmt.Errorf("unexpected attached batch reply %T of %d calls", res, len(a.calls))
	}
	for i, c := range a.calls {
		if err != nil {
			c.attReply = callResult{attErr: err}
			continue
		}
		if e, isErr := replies[i].(error); isErr {
			c.attReply = callResult{attErr: e}
			continue
		}
		c.attReply = callResult{attached: replies[i]}
	}
}

// hashTag is the part of a key Redis Cluster hashes: the first {…} with something in it, or
// the whole key.
func hashTag(key string) string {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			return key[open+1 : open+1+end]
		}
	}
	return key
}

// batchArgs lays calls out as record.lua's batch form: three keys per call; "batch", then per
// call its argument count and its arguments. A single call goes as it is.
func batchArgs(calls []*call) ([]string, []any) {
	if len(calls) == 1 {
		return calls[0].keys, calls[0].args
	}
	keys := make([]string, 0, len(calls)*len(calls[0].keys))
	n := 1
	for _, c := range calls {
		n += 1 + len(c.args)
	}
	args := make([]any, 0, n)
	args = append(args, "batch")
	for _, c := range calls {
		keys = append(keys, c.keys...)
		args = append(args, len(c.args))
		args = append(args, c.args...)
	}
	return keys, args
}

// answer hands each call of a group its reply: for a batch, its element of the reply array
// (its values, or its own error); a failed script call fails them all.
func answer(g []*call, res any, err error) {
	if err != nil {
		for _, c := range g {
			c.send(nil, err)
		}
		return
	}
	if len(g) == 1 {
		vals, err := int64s(res)
		g[0].send(vals, err)
		return
	}
	replies, ok := res.([]any)
	if !ok || len(replies) != len(g) {
		err := fmt.Errorf("unexpected batch reply %T of %d calls", res, len(g))
		for _, c := range g {
			c.send(nil, err)
		}
		return
	}
	for i, c := range g {
		vals, err := int64s(replies[i])
		c.send(vals, err)
	}
}

func int64s(v any) ([]int64, error) {
	switch v := v.(type) {
	case error:
		return nil, v
	case []any:
		out := make([]int64, len(v))
		for i, x := range v {
			n, ok := x.(int64)
			if !ok {
				return nil, fmt.Errorf("unexpected reply element %T", x)
			}
			out[i] = n
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unexpected reply %T", v)
	}
}
