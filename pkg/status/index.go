package status

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/environment"
)

// This file reads a customer's time index (the sorted set <prefix>{<customer>}:index that
// record.lua keeps: member the task id, score the time of the task's last recorded attempt, in
// unix ms) for the dashboard: the list of recent callbacks and the attempts of the last hours.
// Every read is bounded, whatever the size of the index.

// Summary is one task's callback as a list shows it.
type Summary struct {
	TaskID    string
	State     State
	Target    string
	Succeeded *bool
	Attempts  int // attempts of the current delivery
	Delivery  int
	// LastAttemptAt is the index score: when the task's last attempt was recorded. Nil for a
	// task that has no recorded outcome yet (its first delivery is under way).
	LastAttemptAt *time.Time
	NextAttemptAt *time.Time
	// Last is the newest entry of the attempt log, if any.
	Last *AttemptLog
}

// Cursor is a position in the index: the entry (score, task id) a page ended with. The next
// page starts strictly after it, in the index's order (score descending, then task id
// descending), so entries added or moved to the top meanwhile neither repeat nor shift a page.
type Cursor struct {
	ScoreMS int64
	TaskID  string
}

// ListQuery selects a page of the index.
type ListQuery struct {
	// State keeps only callbacks in this state; "" keeps all.
	State State
	// After continues the listing after this entry; nil starts with the newest.
	After *Cursor
	// Limit is the most entries returned (1 to MaxListLimit).
	Limit int
	// MaxScan bounds the index entries examined per call (DefaultMaxScan when 0). A filtered
	// page may come back short, even empty, with a Next cursor: the caller goes on from there.
	MaxScan int
}

// Page is a ListQuery's answer.
type Page struct {
	Items []Summary
	// Next continues the listing; nil when the index holds nothing further.
	Next *Cursor
}

const (
	// MaxListLimit is the largest page.
	MaxListLimit = 100
	// DefaultMaxScan bounds the index entries one List call examines.
	DefaultMaxScan = 1000
)

// ErrBadQuery is returned for a query that makes no sense (a limit out of range).
var ErrBadQuery = errors.New("status: bad query")

func (s *Store) indexKey(customerID string, env environment.Env) string {
	return s.keys(customerID, env, "").index
}

// List returns the customer's callbacks, newest activity first.
func (s *Store) List(ctx context.Context, customerID string, env environment.Env, q ListQuery) (Page, error) {
	if q.Limit < 1 || q.Limit > MaxListLimit {
		return Page{}, fmt.Errorf("%w: limit %d, want 1 to %d", ErrBadQuery, q.Limit, MaxListLimit)
	}
	maxScan := q.MaxScan
	if maxScan <= 0 {
		maxScan = DefaultMaxScan
	}
	index := s.indexKey(customerID, env)
	pos := q.After
	var page Page
	scanned := 0
	for scanned < maxScan {
		batch := min(max(2*(q.Limit+1-len(page.Items)), 32), 256, maxScan-scanned)
		entries, exhausted, err := s.after(ctx, index, pos, batch)
		if err != nil {
			return Page{}, err
		}
		scanned += len(entries)
		sums, err := s.summaries(ctx, customerID, env, entries)
		if err != nil {
			return Page{}, err
		}
		for i, sum := range sums {
			pos = &Cursor{ScoreMS: int64(entries[i].Score), TaskID: entries[i].Member.(string)}
			if sum == nil || (q.State != "" && sum.State != q.State) {
				continue
			}
			if len(page.Items) == q.Limit {
				// One more than asked for: there is a next page, and it starts after the last
				// item returned.
				last := page.Items[len(page.Items)-1]
				page.Next = &Cursor{ScoreMS: last.LastAttemptAt.UnixMilli(), TaskID: last.TaskID}
				return page, nil
			}
			page.Items = append(page.Items, *sum)
		}
		if exhausted {
			return page, nil
		}
	}
	// The scan budget ran out before the page filled: the caller continues where it stopped.
	page.Next = pos
	return page, nil
}

// after returns up to n index entries strictly after pos (all of them from the top when pos is
// nil), and whether the index holds nothing beyond them.
func (s *Store) after(ctx context.Context, index string, pos *Cursor, n int) ([]redis.Z, bool, error) {
	start := "+inf"
	if pos != nil {
		start = strconv.FormatInt(pos.ScoreMS, 10)
	}
	// Entries that share pos's score and sort before or at it were returned already; they come
	// first in the range (ties sort by member, descending), so page past them.
	var out []redis.Z
	for offset := int64(0); ; {
		zs, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
			Key: index, Start: start, Stop: "-inf", ByScore: true, Rev: true,
			Offset: offset, Count: int64(n),
		}).Result()
		if err != nil {
			return nil, false, fmt.Errorf("status list: %w", err)
		}
		for _, z := range zs {
			member, _ := z.Member.(string)
			if pos != nil && int64(z.Score) == pos.ScoreMS && member >= pos.TaskID {
				continue
			}
			out = append(out, z)
		}
		if len(out) > 0 || len(zs) < n {
			return out, len(zs) < n, nil
		}
		offset += int64(len(zs)) // a whole batch of ties already seen
	}
}

// summaryFields are read from each task hash of the old form, in this order.
var summaryFields = []string{"customer_id", "task_id", "state", "target", "succeeded", "attempts",
	"delivery", "next_attempt_at", "chain"}

// summaries reads the entries' records in one round trip (and those still of the old form in a
// second). An entry whose record is gone (expired) or names another customer gives nil.
func (s *Store) summaries(ctx context.Context, customerID string, env environment.Env, entries []redis.Z) ([]*Summary, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	ids := make([]string, len(entries))
	for i, z := range entries {
		ids[i], _ = z.Member.(string)
	}
	out := make([]*Summary, len(entries))
	err := s.each(ctx, customerID, env, ids, 1, func(i int, c *compact, old *legacy) {
		score := time.UnixMilli(int64(entries[i].Score)).UTC()
		if c != nil {
			out[i] = c.summary(ids[i], &score)
		} else {
			out[i] = summaryOf(customerID, old.fields, old.last(), &score)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("status list: %w", err)
	}
	return out, nil
}

// legacy is what each reads of a task whose status is of the old form.
type legacy struct {
	fields []any
	logs   []string
}

func (l *legacy) last() string {
	if len(l.logs) == 0 {
		return ""
	}
	return l.logs[len(l.logs)-1]
}

// each reads the records of ids in one round trip and calls fn for each one found: with the
// record, or for a task still of the old form, its summary fields and newest logN log entries
// (read in a second round trip).
func (s *Store) each(ctx context.Context, customerID string, env environment.Env, ids []string, logN int, fn func(i int, c *compact, old *legacy)) error {
	pipe := s.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		gets[i] = pipe.Get(ctx, s.keys(customerID, env, id).record)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for _, g := range gets {
		if err := g.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	var missing []int
	for i, g := range gets {
		raw, err := g.Bytes()
		if err != nil {
			missing = append(missing, i)
			continue
		}
		c, err := decodeCompact(raw)
		if err != nil {
			continue // unreadable: shown as gone rather than failing the whole read
		}
		fn(i, &c, nil)
	}
	if len(missing) == 0 {
		return nil
	}
	pipe = s.rdb.Pipeline()
	fields := make([]*redis.SliceCmd, len(missing))
	logs := make([]*redis.Cmd, len(missing))
	for j, i := range missing {
		k := s.keys(customerID, env, ids[i])
		fields[j] = pipe.HMGet(ctx, k.legacy, summaryFields...)
		logs[j] = s.legacyLogs(ctx, pipe, k, logN)
	}
	if err := s.execScripts(ctx, pipe); err != nil {
		return err
	}
	for j, i := range missing {
		vals := fields[j].Val()
		if v, _ := vals[0].(string); v == "" {
			continue // no status at all
		}
		entries, _ := logs[j].StringSlice()
		fn(i, nil, &legacy{fields: vals, logs: entries})
	}
	return nil
}

func summaryOf(customerID string, vals []any, last string, lastAttemptAt *time.Time) *Summary {
	str := func(i int) string { v, _ := vals[i].(string); return v }
	if len(vals) != len(summaryFields) || str(0) != customerID || str(1) == "" {
		return nil
	}
	sum := &Summary{
		TaskID:        str(1),
		State:         State(str(2)),
		Target:        str(3),
		LastAttemptAt: lastAttemptAt,
		NextAttemptAt: msTime(str(7)),
	}
	switch str(4) {
	case "1":
		sum.Succeeded = ptr(true)
	case "0":
		sum.Succeeded = ptr(false)
	}
	sum.Attempts, _ = strconv.Atoi(str(5))
	sum.Delivery, _ = strconv.Atoi(str(6))
	if e, ok := decodeLegacyLog(last); ok {
		sum.Last = &e
	}
	return sum
}

// Lookup is one task's Summary, found by its id whether or not the index lists it yet.
func (s *Store) Lookup(ctx context.Context, customerID string, env environment.Env, taskID string) (Summary, error) {
	score, err := s.rdb.ZScore(ctx, s.indexKey(customerID, env), taskID).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Summary{}, fmt.Errorf("status lookup: %w", err)
	}
	var at *time.Time
	if err == nil {
		t := time.UnixMilli(int64(score)).UTC()
		at = &t
	}
	var sum *Summary
	err = s.each(ctx, customerID, env, []string{taskID}, 1, func(_ int, c *compact, old *legacy) {
		if c != nil {
			sum = c.summary(taskID, at)
		} else {
			sum = summaryOf(customerID, old.fields, old.last(), at)
		}
	})
	if err != nil {
		return Summary{}, fmt.Errorf("status lookup: %w", err)
	}
	if sum == nil {
		return Summary{}, ErrNotFound
	}
	return *sum, nil
}

// Recent is what RecentAttempts read.
type Recent struct {
	Attempts []AttemptLog
	// Tasks is how many tasks' logs were read.
	Tasks int
	// Complete is false when a bound cut the reading short: more tasks were active since then
	// than maxTasks, or a task made more than perTask attempts since then.
	Complete bool
}

// RecentAttempts returns the attempts made since then, read from the logs of the (at most
// maxTasks) tasks most recently active, the last perTask entries of each.
func (s *Store) RecentAttempts(ctx context.Context, customerID string, env environment.Env, since time.Time, maxTasks, perTask int) (Recent, error) {
	if maxTasks < 1 || perTask < 1 {
		return Recent{}, fmt.Errorf("%w: maxTasks %d perTask %d", ErrBadQuery, maxTasks, perTask)
	}
	sinceMS := since.UnixMilli()
	ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.indexKey(customerID, env), Start: "+inf", Stop: strconv.FormatInt(sinceMS, 10),
		ByScore: true, Rev: true, Count: int64(maxTasks) + 1,
	}).Result()
	if err != nil {
		return Recent{}, fmt.Errorf("status recent: %w", err)
	}
	r := Recent{Complete: len(ids) <= maxTasks}
	ids = ids[:min(len(ids), maxTasks)]
	r.Tasks = len(ids)
	const batch = 100
	for len(ids) > 0 {
		n := min(len(ids), batch)
		err := s.each(ctx, customerID, env, ids[:n], perTask, func(_ int, c *compact, old *legacy) {
			var entries []AttemptLog
			if c != nil {
				entries = c.entries(perTask)
			} else {
				for _, raw := range old.logs {
					if e, ok := decodeLegacyLog(raw); ok {
						entries = append(entries, e)
					}
				}
			}
			for j, e := range entries {
				if e.At.UnixMilli() < sinceMS {
					continue
				}
				if j == 0 && len(entries) == perTask {
					r.Complete = false // older entries of this task may fall in the window too
				}
				r.Attempts = append(r.Attempts, e)
			}
		})
		if err != nil {
			return Recent{}, fmt.Errorf("status recent: %w", err)
		}
		ids = ids[n:]
	}
	return r, nil
}

// execScripts runs a pipeline that reads logs with readlog.lua. When Redis lost the script (a
// restart, SCRIPT FLUSH), it loads it and runs the pipeline once more.
func (s *Store) execScripts(ctx context.Context, pipe redis.Pipeliner) error {
	cmds := pipe.Cmds()
	_, err := pipe.Exec(ctx)
	if err != nil && hasNoScript(cmds) {
		if err = readLogScript.Load(ctx, s.rdb).Err(); err != nil {
			return fmt.Errorf("load read-log script: %w", err)
		}
		for _, c := range cmds {
			_ = pipe.Process(ctx, c)
		}
		_, err = pipe.Exec(ctx)
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read attempt logs: %w", err)
	}
	return nil
}

func hasNoScript(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if c.Err() != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			return true
		}
	}
	return false
}
