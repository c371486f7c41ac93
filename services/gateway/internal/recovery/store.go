// Package recovery re-sends, in the background, every callback of a customer whose last
// attempt falls in a time window and whose state matches: the bulk form of send-callback, for
// the day after a customer's endpoint was down.
//
// A recovery walks the customer's time index (pkg/status) oldest first and re-sends each
// matching task through the gateway's resend path, paced per customer. Its record lives in
// Redis, so any gateway answers for it, and a recovery whose gateway stops or dies is resumed
// by the next gateway that looks (see Manager).
package recovery

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
)

// What a recovery re-sends, by the task's state.
const (
	StateFailed    = "failed"
	StateSucceeded = "succeeded"
	StateAny       = "any"
)

// Where a recovery stands.
const (
	// Running: walking the window and re-sending.
	Running = "running"
	// Delivering: every matching callback is queued; some re-deliveries have no final
	// outcome yet.
	Delivering = "delivering"
	// Done: every re-delivery reached a final state (or was superseded by a newer delivery).
	Done = "done"
	// Aborted: the recovery could not go on (the customer no longer exists); Error says why.
	Aborted = "aborted"
	// Cancelled: the customer cancelled it; re-sends already queued still go out.
	Cancelled = "cancelled"
)

// Params is what a customer asks for: tasks whose last attempt is in [Since, Until] and whose
// state matches State.
type Params struct {
	// Env is the environment whose tasks the recovery walks and re-sends: the API key's.
	Env          environment.Env
	Since, Until time.Time
	State        string
}

// Recovery is a recovery's record.
type Recovery struct {
	ID         string
	CustomerID string
	Status     string
	Params
	// Matched counts the tasks of the window whose state matched, as the walk met them.
	Matched int64
	// Queued counts the re-sends put on the stream.
	Queued int64
	// Skipped counts matched tasks not re-sent: another recovery of the customer that ran
	// beside this one re-sent them, or they have no usable target any more.
	Skipped int64
	// Done counts re-deliveries that reached a final state, or that a newer delivery of the
	// task superseded; Succeeded and Failed count those that ended succeeded or failed.
	Done, Succeeded, Failed int64
	CreatedAt               time.Time
	UpdatedAt               time.Time
	FinishedAt              *time.Time
	Error                   string

	pos      status.WindowPos
	scanDone bool
}

// ErrNotFound: no such recovery for this customer (never made, expired, or another's).
var ErrNotFound = errors.New("recovery not found")

// ErrFinished: the recovery ended (done or aborted) before it could be cancelled.
var ErrFinished = errors.New("recovery already finished")

// TooManyError: the customer already has as many active recoveries as allowed.
type TooManyError struct{ Active int }

func (e *TooManyError) Error() string {
	return fmt.Sprintf("%d recoveries of this customer are already running", e.Active)
}

var idPattern = regexp.MustCompile(`^rcv_[A-Z2-7]{26}$`)

// ValidID reports whether id could name a recovery, so a malformed one never reaches Redis.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Index is the part of the status store a recovery reads (*status.Store).
type Index interface {
	Window(ctx context.Context, customerID string, env environment.Env, fromMS, toMS int64, pos status.WindowPos, limit int) ([]status.WindowEntry, error)
	Briefs(ctx context.Context, customerID string, env environment.Env, taskIDs []string) ([]status.Brief, error)
}

//go:embed recovery.lua
var scriptSource string

var script = redis.NewScript(scriptSource)

// Store keeps recovery records in Redis, beside the status they walk.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	index  Index
	keep   time.Duration
}

// NewStore keeps records under prefix for keep after their last change; index is the status
// store the recoveries walk.
func NewStore(rdb redis.UniversalClient, prefix string, index Index, keep time.Duration) *Store {
	return &Store{rdb: rdb, prefix: prefix, index: index, keep: keep}
}

// keys share the customer's {hash tag} with its task status, so one script can touch them all
// in Redis Cluster too.
func (s *Store) keys(customerID string, env environment.Env, id string) []string {
	tag := s.prefix + "{" + customerID + "}:" + env.KeyScope()
	return []string{tag + "recovery:" + id, tag + "recoveries", tag + "recovering", tag + "recover-pace",
		tag + "recovery:" + id + ":pending"}
}

// registry lists every recovery that has not ended, across customers, scored by when its
// lease runs out: where a gateway looks for recoveries to resume. It is a hint; the lease in
// the record decides.
func (s *Store) registry() string { return s.prefix + "recoveries" }

// member names a recovery in the registry: "customer/id" for a live one (the form it always had),
// "customer/test:id" for a test one.
func member(customerID string, env environment.Env, id string) string {
	return customerID + "/" + env.KeyScope() + id
}

// parseMember reads member back.
func parseMember(mem string) (customerID string, env environment.Env, id string, ok bool) {
	customerID, id, ok = strings.Cut(mem, "/")
	env = environment.Live
	if rest, isTest := strings.CutPrefix(id, environment.Test.KeyScope()); isTest {
		env, id = environment.Test, rest
	}
	return customerID, env, id, ok
}

// run calls one op of the script; the reply is {verdict, value}.
func (s *Store) run(ctx context.Context, customerID string, env environment.Env, id, owner, op string, args ...any) (int64, int64, error) {
	argv := append([]any{op, id, owner, int64(s.keep / time.Second)}, args...)
	res, err := script.Run(ctx, s.rdb, s.keys(customerID, env, id), argv...).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("recovery %s: %w", op, err)
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("recovery %s: unexpected reply %v", op, res)
	}
	return res[0], res[1], nil
}

// Get reads a recovery of the customer.
func (s *Store) Get(ctx context.Context, customerID string, env environment.Env, id string) (Recovery, error) {
	if !ValidID(id) {
		return Recovery{}, ErrNotFound
	}
	m, err := s.rdb.HGetAll(ctx, s.keys(customerID, env, id)[0]).Result()
	if err != nil {
		return Recovery{}, fmt.Errorf("recovery get: %w", err)
	}
	if m["customer_id"] != customerID || m["status"] == "" {
		return Recovery{}, ErrNotFound
	}
	num := func(k string) int64 { n, _ := strconv.ParseInt(m[k], 10, 64); return n }
	at := func(k string) time.Time { return time.UnixMilli(num(k)).UTC() }
	r := Recovery{
		ID: id, CustomerID: customerID, Status: m["status"],
		Params:  Params{Env: env, Since: at("since_ms"), Until: at("until_ms"), State: m["state"]},
		Matched: num("matched"), Queued: num("queued"), Skipped: num("skipped"),
		Done: num("done"), Succeeded: num("succeeded"), Failed: num("failed"),
		CreatedAt: at("created_ms"), UpdatedAt: at("updated_ms"), Error: m["error"],
		pos:      status.WindowPos{ScoreMS: num("cursor_ms"), TaskID: m["cursor_task"]},
		scanDone: m["scan_done"] == "1",
	}
	if num("finished_ms") > 0 {
		t := at("finished_ms")
		r.FinishedAt = &t
	}
	return r, nil
}

// create writes a new recovery owned by owner, unless the customer has maxActive already.
func (s *Store) create(ctx context.Context, customerID string, env environment.Env, id, owner string, p Params, lease time.Duration, maxActive int) error {
	v, n, err := s.run(ctx, customerID, env, id, owner, "create", lease.Milliseconds(), maxActive,
		"id", id, "customer_id", customerID, "since_ms", p.Since.UnixMilli(), "until_ms", p.Until.UnixMilli(),
		"state", p.State, "matched", 0, "queued", 0, "skipped", 0, "done", 0, "succeeded", 0, "failed", 0)
	if err != nil {
		return err
	}
	if v == 0 {
		return &TooManyError{Active: int(n)}
	}
	return nil
}

// own takes the recovery over if its lease ran out, or renews the lease if owner holds it.
type ownership int

const (
	owned ownership = iota
	heldByAnother
	gone  // no record any more
	ended // done or aborted
)

func (s *Store) own(ctx context.Context, customerID string, env environment.Env, id, owner string, lease time.Duration) (ownership, time.Time, error) {
	v, until, err := s.run(ctx, customerID, env, id, owner, "own", lease.Milliseconds())
	if err != nil {
		return 0, time.Time{}, err
	}
	switch v {
	case 1:
		return owned, time.UnixMilli(until), nil
	case 0:
		return heldByAnother, time.UnixMilli(until), nil
	case -1:
		return gone, time.Time{}, nil
	default:
		return ended, time.Time{}, nil
	}
}

// errLost: another gateway owns the recovery now; this one must stop touching it.
var errLost = errors.New("recovery: lease lost to another gateway")

// owned runs an op that only the owner may run.
func (s *Store) owned(ctx context.Context, customerID string, env environment.Env, id, owner, op string, args ...any) (int64, error) {
	v, n, err := s.run(ctx, customerID, env, id, owner, op, args...)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, errLost
	}
	return n, nil
}

// claim marks the task as re-sent by this recovery and reserves the customer's next send slot,
// unless another recovery of the customer that ran beside this one (even one that ended since)
// re-sent it (claimed false, counted skipped).
func (s *Store) claim(ctx context.Context, customerID string, env environment.Env, id, owner string, e status.WindowEntry, interval time.Duration) (claimed bool, wait time.Duration, err error) {
	v, us, err := s.run(ctx, customerID, env, id, owner, "claim", e.TaskID, e.LastAttemptMS, interval.Microseconds())
	if err != nil {
		return false, 0, err
	}
	if v < 0 {
		return false, 0, errLost
	}
	return v == 1, time.Duration(us) * time.Microsecond, nil
}

// cancel marks the recovery cancelled, whoever runs it: its runner's next step fails and it
// stops.
func (s *Store) cancel(ctx context.Context, customerID string, env environment.Env, id string) error {
	if !ValidID(id) {
		return ErrNotFound
	}
	v, _, err := s.run(ctx, customerID, env, id, "", "cancel")
	switch {
	case err != nil:
		return err
	case v < 0:
		return ErrNotFound
	case v == 0:
		return ErrFinished
	}
	return nil
}
