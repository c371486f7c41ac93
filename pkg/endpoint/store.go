package endpoint

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/environment"
)

// State is how an endpoint stands.
type State string

const (
	Healthy State = "healthy"
	Failing State = "failing" // its last attempt failed
	Paused  State = "paused"  // callbacks to it are held until it is resumed
)

// ErrNotFound: the customer (the profile of that environment) does not exist.
var ErrNotFound = errors.New("customer not found")

//go:embed health.lua
var healthSource string

// Script records one attempt's effect on its endpoint's health (health.lua). It is exported for
// the status writer, which sends it in the same pipeline as the attempt's status.
var Script = redis.NewScript(healthSource)

// Store reads endpoint health and pauses and changes pauses. The workers write health through
// Call and the status writer.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewStore returns a Store whose keys start with prefix.
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix}
}

// keys are the environment's endpoints hash and profile hash. Both carry the customer's hash
// tag, so health.lua runs in the slot of the task status it is sent with. The profile key's form
// is pkg/customer's (a test holds the two together).
func (s *Store) keys(customerID string, env environment.Env) []string {
	tag := s.prefix + "{" + customerID + "}:" + env.KeyScope()
	return []string{tag + "endpoints", tag + "profile"}
}

// Policy is what the operator configured: when to alert and when to pause on the customer's
// behalf.
type Policy struct {
	// AlertAfter is the number of consecutive failed attempts that raises an alert; 0: none.
	AlertAfter int
	// AlertInterval is the least time between two alerts for one endpoint.
	AlertInterval time.Duration
	// AutoPauseAfter is how long uninterrupted failure lasts before an endpoint is paused, for
	// customers who opted in; 0: never.
	AutoPauseAfter time.Duration
	// Retention is how long an endpoint's health is kept after its last change.
	Retention time.Duration
}

// Observation is one attempt as its endpoint's health sees it.
type Observation struct {
	CustomerID string
	Env        environment.Env
	Endpoint   string
	OK         bool
	Error      string
	At         time.Time
}

// Call is Script's keys and arguments for o.
func (s *Store) Call(o Observation, p Policy) (keys []string, args []any) {
	ok := "0"
	if o.OK {
		ok = "1"
	}
	retention := p.Retention
	if retention <= 0 {
		retention = defaultRetention
	}
	return s.keys(o.CustomerID, o.Env), []any{o.Endpoint, ok, o.At.UnixMilli(), o.Error, p.AlertAfter,
		p.AlertInterval.Milliseconds(), p.AutoPauseAfter.Milliseconds(), int64(retention / time.Second)}
}

// defaultRetention applies when a Policy names none: a task status's.
const defaultRetention = 30 * 24 * time.Hour

// Alert is what an observation asks of the worker.
type Alert int

const (
	NoAlert   Alert = iota
	Failure         // send the alert: the endpoint reached the alert threshold
	Recovered       // send the recovered mail: the first success after an alert
)

// Verdict is Script's answer.
type Verdict struct {
	Alert        Alert
	Failures     int
	FailingSince time.Time
	// AutoPaused: this failure paused the endpoint (the customer opted in).
	AutoPaused bool
	// AlertEmail is where the alert goes, as the profile has it now.
	AlertEmail string
	LastError  string
	Transition Transition
}

// Transition is a change of an endpoint's state that an observation made.
type Transition int

const (
	NoTransition  Transition = iota
	BecameFailing            // its first failure after a success (or ever)
	BecameHealthy            // its first success after failures
)

// ParseVerdict reads Script's reply.
func ParseVerdict(reply any) (Verdict, error) {
	v, ok := reply.([]any)
	if !ok || len(v) != 7 {
		return Verdict{}, fmt.Errorf("endpoint health: unexpected reply %v", reply)
	}
	n := func(i int) int64 { x, _ := v[i].(int64); return x }
	str := func(i int) string { x, _ := v[i].(string); return x }
	out := Verdict{Alert: Alert(n(0)), Failures: int(n(1)), AutoPaused: n(3) == 1, AlertEmail: str(4), LastError: str(5), Transition: Transition(n(6))}
	if ms := n(2); ms > 0 {
		out.FailingSince = time.UnixMilli(ms).UTC()
	}
	return out, nil
}

// ReleaseAlert takes back an alert that could not be sent, so that the endpoint's next failure
// raises it again. alertedAt is the observation's time that raised it; a newer alert is kept.
func (s *Store) ReleaseAlert(ctx context.Context, customerID string, env environment.Env, ep string, alertedAt time.Time) error {
	err := releaseScript.Run(ctx, s.rdb, s.keys(customerID, env)[:1], ep, alertedAt.UnixMilli()).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("release endpoint alert: %w", err)
	}
	return nil
}

var releaseScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local f, pos = {}, 1
for i = 1, 6 do
  local bar = string.find(v, '|', pos, true)
  if not bar then return 0 end
  f[i] = string.sub(v, pos, bar - 1)
  pos = bar + 1
end
if f[5] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], f[1] .. '|' .. f[2] .. '|' .. f[3] .. '|' .. f[4] .. '|0|0|' .. string.sub(v, pos))
return 1`)

// Pause holds every callback to ep in env from now on, until Resume. Pausing a paused endpoint
// changes nothing.
func (s *Store) Pause(ctx context.Context, customerID string, env environment.Env, ep string, now time.Time) error {
	return s.change(ctx, customerID, env, "pause", ep, "manual:"+strconv.FormatInt(now.UnixMilli(), 10))
}

// Resume lets callbacks to ep flow again.
func (s *Store) Resume(ctx context.Context, customerID string, env environment.Env, ep string) error {
	return s.change(ctx, customerID, env, "resume", ep, "")
}

func (s *Store) change(ctx context.Context, customerID string, env environment.Env, op, ep, value string) error {
	keys := s.keys(customerID, env)
	n, err := pauseScript.Run(ctx, s.rdb, []string{keys[1], keys[0]}, op, "paused:"+ep, value, ep, time.Now().UnixMilli()).Int()
	if err != nil {
		return fmt.Errorf("%s endpoint: %w", op, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	// The pause itself is stored; the count for the metrics follows it (a lost mark only skews
	// the gauge until the next change).
	return s.MarkState(ctx, customerID, env, ep, Paused, op == "pause", time.Now())
}

// pauseScript changes a pause in the profile hash (KEYS[1]) and bumps the profile's version, so
// every worker's cached profile is reloaded at its next claim for the customer. A resume of a
// failing endpoint restarts its uninterrupted failure from now (in the endpoints hash, KEYS[2]):
// an automatic pause then waits its whole time again, instead of striking at the first failure
// after the customer resumed.
var pauseScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == 'pause' then
  if redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) == 1 then redis.call('HINCRBY', KEYS[1], 'version', 1) end
  return 1
end
if redis.call('HDEL', KEYS[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  local v = redis.call('HGET', KEYS[2], ARGV[4])
  local fails, since, rest = string.match(v or '', '^(%d+)|(%d+)|(.*)$')
  if fails and fails ~= '0' then
    redis.call('HSET', KEYS[2], ARGV[4], fails .. '|' .. ARGV[5] .. '|' .. rest)
  end
end
return 1`)

// Pause is how a paused endpoint came to be paused.
type Pause struct {
	At   time.Time
	Auto bool // paused by the workers after uninterrupted failure, not by the customer
}

// ParsePause reads a profile hash's "paused:<endpoint>" value.
func ParsePause(v string) (Pause, bool) {
	how, ms, found := strings.Cut(v, ":")
	at, err := strconv.ParseInt(ms, 10, 64)
	if !found || err != nil {
		return Pause{}, false
	}
	return Pause{At: time.UnixMilli(at).UTC(), Auto: how == "auto"}, true
}

// PausedField is the profile hash's field prefix of a pause.
const PausedField = "paused:"

// Health is one endpoint as GET /v1/endpoints shows it.
type Health struct {
	Endpoint            string     `json:"endpoint"`
	State               State      `json:"state"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	FailingSince        *time.Time `json:"failing_since"`
	LastSuccessAt       *time.Time `json:"last_success_at"`
	LastFailureAt       *time.Time `json:"last_failure_at"`
	LastError           string     `json:"last_error"`
	PausedAt            *time.Time `json:"paused_at"`
	// PausedBy is "customer" or "automatic" while paused.
	PausedBy string `json:"paused_by,omitempty"`
}

// List is every endpoint of the customer's environment that has health recorded or is paused,
// sorted by name.
func (s *Store) List(ctx context.Context, customerID string, env environment.Env) ([]Health, error) {
	keys := s.keys(customerID, env)
	pipe := s.rdb.Pipeline()
	hc := pipe.HGetAll(ctx, keys[0])
	pc := pipe.HGetAll(ctx, keys[1])
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("list endpoints: %w", err)
	}
	byName := map[string]*Health{}
	for ep, v := range hc.Val() {
		h := parseHealth(ep, v)
		byName[ep] = &h
	}
	for f, v := range pc.Val() {
		ep, ok := strings.CutPrefix(f, PausedField)
		if !ok {
			continue
		}
		p, ok := ParsePause(v)
		if !ok {
			continue
		}
		h := byName[ep]
		if h == nil {
			h = &Health{Endpoint: ep}
			byName[ep] = h
		}
		h.State, h.PausedAt, h.PausedBy = Paused, &p.At, "customer"
		if p.Auto {
			h.PausedBy = "automatic"
		}
	}
	out := make([]Health, 0, len(byName))
	for _, h := range byName {
		if h.State == "" {
			h.State = Healthy
			if h.ConsecutiveFailures > 0 {
				h.State = Failing
			}
		}
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Endpoint < out[j].Endpoint })
	return out, nil
}

func parseHealth(ep, v string) Health {
	parts := strings.SplitN(v, "|", 7)
	for len(parts) < 7 {
		parts = append(parts, "")
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(parts[i], 10, 64); return n }
	at := func(i int) *time.Time {
		if ms := num(i); ms > 0 {
			t := time.UnixMilli(ms).UTC()
			return &t
		}
		return nil
	}
	return Health{Endpoint: ep, ConsecutiveFailures: int(num(0)), FailingSince: at(1), LastSuccessAt: at(2),
		LastFailureAt: at(3), LastError: parts[6]}
}

// stateKey is the fleet-wide set of endpoints in a state (failing or paused), which the metrics
// count. It carries no customer hash tag, so it is written beside the customer's keys, never in
// their scripts: on a state change, off the delivery path.
func (s *Store) stateKey(st State) string { return s.prefix + "endpoints:" + string(st) }

func member(customerID string, env environment.Env, ep string) string {
	return customerID + " " + env.String() + " " + ep
}

// MarkState records that an endpoint entered (in) or left a state, for CountStates.
func (s *Store) MarkState(ctx context.Context, customerID string, env environment.Env, ep string, st State, in bool, at time.Time) error {
	var err error
	if in {
		err = s.rdb.ZAdd(ctx, s.stateKey(st), redis.Z{Score: float64(at.UnixMilli()), Member: member(customerID, env, ep)}).Err()
	} else {
		err = s.rdb.ZRem(ctx, s.stateKey(st), member(customerID, env, ep)).Err()
	}
	if err != nil {
		return fmt.Errorf("mark endpoint %s: %w", st, err)
	}
	return nil
}

// CountStates counts the fleet's failing and paused endpoints. A failing entry older than
// staleBefore is dropped first: its endpoint's health has expired since (nothing was sent to it
// for the retention), or the mark of its recovery was lost.
func (s *Store) CountStates(ctx context.Context, staleBefore time.Time) (map[State]int64, error) {
	pipe := s.rdb.Pipeline()
	pipe.ZRemRangeByScore(ctx, s.stateKey(Failing), "-inf", fmt.Sprint(staleBefore.UnixMilli()))
	failing := pipe.ZCard(ctx, s.stateKey(Failing))
	paused := pipe.ZCard(ctx, s.stateKey(Paused))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("count endpoint states: %w", err)
	}
	return map[State]int64{Failing: failing.Val(), Paused: paused.Val()}, nil
}
