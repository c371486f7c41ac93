package status

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/environment"
)

// This file walks a window of a customer's time index oldest first, for bulk work such as the
// gateway's recovery of failed callbacks: the sorted set <prefix>{<customer>}:index that
// record.lua keeps (member the task id, score the time of its last recorded attempt, unix ms).

// WindowPos is a position in the index: the entry (score, task id) a walk last returned. A walk
// goes on strictly after it, in the index's ascending order (score, then task id), so a stored
// position resumes the walk where it stopped.
type WindowPos struct {
	ScoreMS int64
	TaskID  string
}

// WindowEntry is one task of the index.
type WindowEntry struct {
	TaskID        string
	LastAttemptMS int64
}

// Window returns up to limit tasks whose last attempt is within [fromMS, toMS], strictly after
// pos (a zero pos starts at fromMS), oldest first. An empty answer means the window is walked.
// A task that is attempted again moves to the end of the index: past toMS when the window ends
// before the attempt, so a walk never meets the same task twice for the same reason.
func (s *Store) Window(ctx context.Context, customerID string, env environment.Env, fromMS, toMS int64, pos WindowPos, limit int) ([]WindowEntry, error) {
	if limit < 1 {
		return nil, errors.New("status window: limit must be positive")
	}
	start := max(fromMS, pos.ScoreMS)
	if start > toMS {
		return nil, nil
	}
	index := s.indexKey(customerID, env)
	// Ties share a score and sort by task id; those at or before pos come first in the range,
	// so page past them.
	for offset := int64(0); ; offset += int64(limit) {
		zs, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
			Key: index, Start: strconv.FormatInt(start, 10), Stop: strconv.FormatInt(toMS, 10),
			ByScore: true, Offset: offset, Count: int64(limit),
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("status window: %w", err)
		}
		out := make([]WindowEntry, 0, len(zs))
		for _, z := range zs {
			id, _ := z.Member.(string)
			score := int64(z.Score)
			if score == pos.ScoreMS && id <= pos.TaskID {
				continue
			}
			out = append(out, WindowEntry{TaskID: id, LastAttemptMS: score})
		}
		if len(out) > 0 || len(zs) < limit {
			return out, nil
		}
	}
}

// Brief is the little of a task's status that bulk work filters on.
type Brief struct {
	Found bool
	State State
	// Chain is the stream sequence of the task's current delivery: a resend that put chain c
	// on the stream knows its delivery was superseded when Chain > c.
	Chain uint64
}

// Briefs reads the state and chain of many tasks in one round trip, in the order asked.
func (s *Store) Briefs(ctx context.Context, customerID string, env environment.Env, taskIDs []string) ([]Brief, error) {
	if len(taskIDs) == 0 {
		return nil, nil
	}
	out := make([]Brief, len(taskIDs))
	err := s.each(ctx, customerID, env, taskIDs, 1, func(i int, c *compact, old *legacy) {
		if c != nil {
			out[i] = Brief{Found: true, State: stateNames[c.State], Chain: uint64(c.Chain)}
			return
		}
		str := func(j int) string { v, _ := old.fields[j].(string); return v }
		if str(0) != customerID {
			return
		}
		out[i] = Brief{Found: true, State: State(str(2))}
		out[i].Chain, _ = strconv.ParseUint(str(8), 10, 64)
	})
	if err != nil {
		return nil, fmt.Errorf("status briefs: %w", err)
	}
	return out, nil
}
