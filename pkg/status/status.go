// Package status records the delivery state of each task's callback in Redis (docs/api.md):
// callback_succeeded, the state, the attempt count, the next attempt time, a per-attempt log and
// the original task, so the gateway can show it and resend it. All writes go through one Lua
// script (record.lua), which makes each change atomic and refuses stale or out-of-order ones.
package status

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/environment"
)

// State is where a task's callback stands.
type State string

const (
	Pending    State = "pending"
	Retrying   State = "retrying"
	Succeeded  State = "succeeded"
	Failed     State = "failed"
	NoCallback State = "no_callback"
)

// ErrNotFound: no status is recorded for that task (never seen, expired, or another customer's).
var ErrNotFound = errors.New("task not found")

// DefaultRetention is how long a task's status and attempt log are kept.
const DefaultRetention = 30 * 24 * time.Hour

//go:embed record.lua
var recordSource string

var recordScript = redis.NewScript(recordSource)

//go:embed readlog.lua
var readLogSource string

var readLogScript = redis.NewScript(readLogSource)

// Store reads and writes task status.
type Store struct {
	rdb       redis.UniversalClient
	prefix    string
	retention time.Duration
	batch     *batcher
}

// NewStore returns a Store with keys under prefix, kept for retention.
func NewStore(rdb redis.UniversalClient, prefix string, retention time.Duration) *Store {
	if retention <= 0 {
		retention = DefaultRetention
	}
	return &Store{rdb: rdb, prefix: prefix, retention: retention, batch: newBatcher(rdb)}
}

// Load makes sure Redis has the script cached, so the first delivery does not pay for it.
func (s *Store) Load(ctx context.Context) error {
	if err := recordScript.Load(ctx, s.rdb).Err(); err != nil {
		return fmt.Errorf("load status script: %w", err)
	}
	return readLogScript.Load(ctx, s.rdb).Err()
}

// keys are the keys one task's status touches in one environment: its record, the hash and list
// that held its status and attempt log in the old form (read until they expire, never written),
// the environment's index and profile. They share the {customer_id} hash tag, so they live in
// one Redis Cluster slot with the customer's profiles, whose version Begin reports (the profile
// key's form is pkg/customer's; a test holds the two together). A test task's keys carry the
// environment (environment.Env.KeyScope); a live task's keep the form they had before test
// environments existed, so a status written then is read as live.
func (s *Store) keys(customerID string, env environment.Env, taskID string) taskKeys {
	tag := s.prefix + "{" + customerID + "}:" + env.KeyScope()
	return taskKeys{record: tag + "t:" + taskID, legacy: tag + "task:" + taskID, legacyLog: tag + "attempts:" + taskID,
		index: tag + "index", profile: tag + "profile"}
}

type taskKeys struct{ record, legacy, legacyLog, index, profile string }

// recordKeys are the keys record.lua is given: record, index, profile (it finds the old-form
// hash beside the record by itself).
func (s *Store) recordKeys(customerID string, env environment.Env, taskID string) []string {
	k := s.keys(customerID, env, taskID)
	return []string{k.record, k.index, k.profile}
}

// legacyLogs reads the newest n entries of an old-form task's attempt log (oldest first) in pipe.
func (s *Store) legacyLogs(ctx context.Context, pipe redis.Pipeliner, k taskKeys, n int) *redis.Cmd {
	return readLogScript.EvalSha(ctx, pipe, []string{k.legacy, k.legacyLog}, n)
}

// Delivery identifies one delivery of a task's callback: the original, or a resend.
type Delivery struct {
	CustomerID string
	// Env is the environment the task belongs to; the same task id in the other environment
	// is another task.
	Env       environment.Env
	TaskID    string
	WebhookID string
	// Chain is the stream sequence of the message that carries this delivery; a higher chain
	// supersedes a lower one. The task itself stays in that message: Redis keeps only the
	// sequence (Record.Chain), and readers fetch the task from the stream by it.
	Chain uint64
}

// Verdict is what Begin decided.
type Verdict int

const (
	// Attempt: go ahead with attempt number Begun.Attempt.
	Attempt Verdict = iota
	// Superseded: a newer delivery of the task exists; this message has nothing left to do.
	Superseded
	// Finished: this delivery already reached a final state (a redelivered message).
	Finished
	// Exhausted: every attempt was already begun; the delivery has been recorded as failed.
	Exhausted
	// NotDue: the next attempt is not due yet; Begun.Wait says how long until it is.
	NotDue
	// OneShot: a resend superseded by a newer one before it began. It makes one attempt of its
	// own, logged under its delivery number, and never retries or changes the state.
	OneShot
)

// Begun is Begin's answer.
type Begun struct {
	Verdict  Verdict
	Attempt  int // 1-based attempt number within the delivery
	Delivery int // 1 for the original delivery, 2 for the first resend, …
	Wait     time.Duration
	// ProfileVersion is the customer profile's version as Redis has it now: a worker whose
	// cached profile is older reloads it, so a rotated key is used from the next attempt on.
	ProfileVersion int64
}

func (s *Store) run(ctx context.Context, op string, d Delivery, now time.Time, extra ...any) ([]int64, error) {
	r, err := s.runAttached(ctx, op, d, now, nil, extra...)
	return r.vals, err
}

// runAttached runs one operation and, in the same round trip, att.
func (s *Store) runAttached(ctx context.Context, op string, d Delivery, now time.Time, att *Attached, extra ...any) (callResult, error) {
	args := make([]any, 0, 8+len(extra))
	args = append(args, op, d.Chain, now.UnixMilli(), int64(s.retention/time.Second),
		d.WebhookID, "", d.CustomerID, d.TaskID)
	args = append(args, extra...)
	res, err := s.batch.do(ctx, s.recordKeys(d.CustomerID, d.Env, d.TaskID), args, att)
	if err != nil {
		return res, fmt.Errorf("status %s: %w", op, err)
	}
	if len(res.vals) != 4 {
		return res, fmt.Errorf("status %s: unexpected reply %v", op, res.vals)
	}
	return res, nil
}

// Begin claims the next attempt of a delivery. An attempt that was begun but never finished (its
// worker died) is logged as interrupted and counts: no delivery gets more than maxAttempts.
func (s *Store) Begin(ctx context.Context, d Delivery, target string, maxAttempts int, now time.Time) (Begun, error) {
	res, err := s.run(ctx, "begin", d, now, target, maxAttempts)
	if err != nil {
		return Begun{}, err
	}
	b := Begun{Verdict: Verdict(res[0]), Delivery: int(res[2]), ProfileVersion: res[3]}
	if b.Verdict == NotDue {
		b.Wait = time.Duration(res[1]) * time.Millisecond
	} else {
		b.Attempt = int(res[1])
	}
	return b, nil
}

// Outcome is how an attempt, or a delivery that needs none, ended.
type Outcome string

const (
	OutcomeSucceeded  Outcome = "succeeded"
	OutcomeRetry      Outcome = "retry"
	OutcomeFailed     Outcome = "failed"
	OutcomeNoCallback Outcome = "no_callback"
)

// AttemptLog is one entry of a task's attempt log.
type AttemptLog struct {
	Attempt         int       `json:"attempt"`
	Delivery        int       `json:"delivery"`
	At              time.Time `json:"at"`
	StatusCode      int       `json:"status_code,omitempty"`
	Error           string    `json:"error,omitempty"`
	DurationMS      int64     `json:"duration_ms"`
	ResponseExcerpt string    `json:"response_excerpt,omitempty"`
}

// Finish records the outcome of an attempt (entry is its log line; nil for no_callback) and, for
// a retry, when the next attempt is due. It reports whether the outcome changed the state: false
// when the delivery was superseded or had already finished.
func (s *Store) Finish(ctx context.Context, d Delivery, target string, outcome Outcome, entry *AttemptLog, next time.Time, now time.Time) (bool, error) {
	changed, _, err := s.FinishAttached(ctx, d, target, outcome, entry, next, now, nil)
	return changed, err
}

// AttachedReply is what an attached call answered: its reply, or its own error.
type AttachedReply struct {
	Val any
	Err error
}

// FinishAttached is Finish with att sent in the same round trip; it returns att's reply as
// well. att failing never fails the status write: its error is in the AttachedReply.
func (s *Store) FinishAttached(ctx context.Context, d Delivery, target string, outcome Outcome, entry *AttemptLog, next time.Time, now time.Time, att *Attached) (bool, AttachedReply, error) {
	var logLine []byte
	attempt := 0
	if entry != nil {
		attempt = entry.Attempt
		var err error
		if logLine, err = encodeLog(*entry); err != nil {
			return false, AttachedReply{}, err
		}
	}
	var nextMS int64
	if !next.IsZero() {
		nextMS = next.UnixMilli()
	}
	res, err := s.runAttached(ctx, "finish", d, now, att, target, attempt, string(outcome), logLine, nextMS)
	if err != nil {
		return false, AttachedReply{}, err
	}
	reply := AttachedReply{Val: res.attached, Err: res.attErr}
	if reply.Err != nil {
		reply.Err = fmt.Errorf("attached call: %w", reply.Err)
	}
	return res.vals[0] == 0, reply, nil
}

// Queue records that a new delivery (a resend) with a higher chain has been put on the stream.
// It returns the delivery's number. Queue and a worker's Begin may run in either order.
func (s *Store) Queue(ctx context.Context, d Delivery, now time.Time) (int, error) {
	res, err := s.run(ctx, "queue", d, now)
	if err != nil {
		return 0, err
	}
	return int(res[2]), nil
}

// Record is a task's status as the gateway shows it.
type Record struct {
	CustomerID string `json:"customer_id"`
	TaskID     string `json:"task_id"`
	WebhookID  string `json:"webhook_id"`
	// Task is the task object kept with a status of the old form only; a status of the current
	// form keeps none: the task is in the stream message at Chain.
	Task          json.RawMessage `json:"task,omitempty"`
	Target        string          `json:"target"`
	State         State           `json:"state"`
	Succeeded     *bool           `json:"callback_succeeded"`
	Attempts      int             `json:"attempt_count"`
	Delivery      int             `json:"delivery"`
	NextAttemptAt *time.Time      `json:"next_attempt_at"`
	LastAttemptAt *time.Time      `json:"last_attempt_at"`
	Chain         uint64          `json:"-"`
	Log           []AttemptLog    `json:"attempts"`
}

// Get reads one task's status and attempt log in env, in the current form or else the old one.
func (s *Store) Get(ctx context.Context, customerID string, env environment.Env, taskID string) (Record, error) {
	k := s.keys(customerID, env, taskID)
	pipe := s.rdb.Pipeline()
	cur := pipe.Get(ctx, k.record)
	h := pipe.HGetAll(ctx, k.legacy)
	l := pipe.LRange(ctx, k.legacyLog, 0, -1)
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for _, c := range []redis.Cmder{cur, h, l} {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return Record{}, fmt.Errorf("status get: %w", err)
		}
	}
	if raw, err := cur.Bytes(); err == nil {
		c, err := decodeCompact(raw)
		if err != nil {
			return Record{}, fmt.Errorf("status get %s: %w", taskID, err)
		}
		r := c.record(customerID, taskID, maxLog)
		// A task that moved to the current form while its old hash lives on: that hash may
		// still hold the task, for a delivery whose message is gone from the stream.
		if m := h.Val(); m["task"] != "" && m["webhook_id"] == r.WebhookID {
			r.Task = json.RawMessage(m["task"])
		}
		return r, nil
	}
	m := h.Val()
	if len(m) == 0 {
		return Record{}, ErrNotFound
	}
	return legacyRecord(m, l.Val()), nil
}

// legacyRecord reads a status of the old form: a hash of long-named fields holding the task, its
// attempt log in fields "l:<n>" (or, older still, in a list of its own: raw).
func legacyRecord(m map[string]string, raw []string) Record {
	r := Record{
		CustomerID: m["customer_id"],
		TaskID:     m["task_id"],
		WebhookID:  m["webhook_id"],
		Task:       json.RawMessage(m["task"]),
		Target:     m["target"],
		State:      State(m["state"]),
	}
	r.Attempts, _ = strconv.Atoi(m["attempts"])
	r.Delivery, _ = strconv.Atoi(m["delivery"])
	r.Chain, _ = strconv.ParseUint(m["chain"], 10, 64)
	switch m["succeeded"] {
	case "1":
		r.Succeeded = ptr(true)
	case "0":
		r.Succeeded = ptr(false)
	}
	r.NextAttemptAt = msTime(m["next_attempt_at"])
	r.LastAttemptAt = msTime(m["last_attempt_at"])
	if last, _ := strconv.Atoi(m["logn"]); last > 0 {
		for i := max(1, last-maxLog+1); i <= last; i++ {
			if e, ok := m["l:"+strconv.Itoa(i)]; ok {
				raw = append(raw, e)
			}
		}
	}
	for _, e := range raw {
		if entry, ok := decodeLegacyLog(e); ok {
			r.Log = append(r.Log, entry)
		}
	}
	return r
}

// maxLog is how many entries a task's attempt log keeps (record.lua's maxlog).
const maxLog = 200

func msTime(s string) *time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms == 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

func ptr[T any](v T) *T { return &v }
