package status

import (
	"context"
	"encoding/json"
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
	return s.keys(customerID, env, "")[2]
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

// summaryFields are read from each task hash, in this order.
var summaryFields = []string{"customer_id", "task_id", "state", "target", "succeeded", "attempts",
	"delivery", "next_attempt_at"}

// summaries reads the entries' task hashes and last log lines in one round trip. An entry whose
// hash is gone (expired) or names another customer gives nil.
func (s *Store) summaries(ctx context.Context, customerID string, env environment.Env, entries []redis.Z) ([]*Summary, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	fields := make([]*redis.SliceCmd, len(entries))
	lasts := make([]*redis.Cmd, len(entries))
	for i, z := range entries {
		keys := s.keys(customerID, env, z.Member.(string))
		fields[i] = pipe.HMGet(ctx, keys[0], summaryFields...)
		lasts[i] = s.lastLogs(ctx, pipe, keys, 1)
	}
	if err := s.execScripts(ctx, pipe); err != nil {
		return nil, fmt.Errorf("status list: %w", err)
	}
	out := make([]*Summary, len(entries))
	for i, z := range entries {
		score := time.UnixMilli(int64(z.Score)).UTC()
		out[i] = summaryOf(customerID, fields[i].Val(), newest(lasts[i]), &score)
	}
	return out, nil
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
	if e, ok := decodeLog(last); ok {
		sum.Last = &e
	}
	return sum
}

// Lookup is one task's Summary, found by its id whether or not the index lists it yet.
func (s *Store) Lookup(ctx context.Context, customerID string, env environment.Env, taskID string) (Summary, error) {
	keys := s.keys(customerID, env, taskID)
	pipe := s.rdb.Pipeline()
	fields := pipe.HMGet(ctx, keys[0], summaryFields...)
	last := s.lastLogs(ctx, pipe, keys, 1)
	score := pipe.ZScore(ctx, keys[2], taskID)
	if err := s.execScripts(ctx, pipe); err != nil {
		return Summary{}, fmt.Errorf("status lookup: %w", err)
	}
	var at *time.Time
	if sc, err := score.Result(); err == nil {
		t := time.UnixMilli(int64(sc)).UTC()
		at = &t
	}
	sum := summaryOf(customerID, fields.Val(), newest(last), at)
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
		pipe := s.rdb.Pipeline()
		logs := make([]*redis.Cmd, n)
		for i, id := range ids[:n] {
			logs[i] = s.lastLogs(ctx, pipe, s.keys(customerID, env, id), perTask)
		}
		if err := s.execScripts(ctx, pipe); err != nil {
			return Recent{}, fmt.Errorf("status recent: %w", err)
		}
		for _, l := range logs {
			entries, _ := l.StringSlice()
			for j, raw := range entries {
				e, ok := decodeLog(raw)
				if !ok || e.At.UnixMilli() < sinceMS {
					continue
				}
				if j == 0 && len(entries) == perTask {
					r.Complete = false // older entries of this task may fall in the window too
				}
				r.Attempts = append(r.Attempts, e)
			}
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

// newest is the last entry a lastLogs(…, 1) read, "" for none.
func newest(c *redis.Cmd) string {
	entries, _ := c.StringSlice()
	if len(entries) == 0 {
		return ""
	}
	return entries[len(entries)-1]
}

func decodeLog(raw string) (AttemptLog, bool) {
	if raw == "" {
		return AttemptLog{}, false
	}
	var e storedLog
	if json.Unmarshal([]byte(raw), &e) != nil {
		return AttemptLog{}, false
	}
	return AttemptLog{
		Attempt: e.Attempt, Delivery: e.Delivery, At: time.UnixMilli(e.AtMS).UTC(),
		StatusCode: e.StatusCode, Error: e.Error, DurationMS: e.DurationMS,
		ResponseExcerpt: e.ResponseExcerpt,
	}, true
}
