package api

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// SharedLimits keeps per-customer rate limits in Redis, so every gateway takes from the same
// bucket: behind a balancer, N gateways allow a customer the limit once, not N times.
type SharedLimits struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewSharedLimits keeps buckets under prefix.
func NewSharedLimits(rdb redis.UniversalClient, prefix string) *SharedLimits {
	return &SharedLimits{rdb: rdb, prefix: prefix}
}

// gcra is the generic cell rate algorithm: the bucket is one number, the time at which it would
// be full again (its "theoretical arrival time"). A request is allowed when taking one more
// interval keeps that time within burst intervals of now. Time is Redis's own, so gateways with
// skewed clocks agree. The key lives no longer than the bucket takes to fill up.
//
// KEYS[1] the bucket; ARGV[1] the interval between two tokens, µs; ARGV[2] the burst.
// Reply: {1, 0} allowed, or {0, µs until a token is free}.
var gcra = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + interval
local allowed_at = nxt - burst * interval
if allowed_at > now then return {0, allowed_at - now} end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.floor((nxt - now) / 1000) + 1)
return {1, 0}
`)

// sharedBucket is one limit (send-callback, say) over every customer.
type sharedBucket struct {
	limits   *SharedLimits
	name     string
	interval time.Duration
	burst    int
}

func (l *SharedLimits) bucket(name string, perMinute, burst int) *sharedBucket {
	return &sharedBucket{limits: l, name: name, interval: time.Minute / time.Duration(perMinute), burst: burst}
}

// allow takes a token of the customer's bucket, or says how long until one is free. The key
// carries the customer's hash tag like every other key of the customer.
func (b *sharedBucket) allow(ctx context.Context, customerID string) (bool, time.Duration, error) {
	key := b.limits.prefix + "{" + customerID + "}:limit:" + b.name
	res, err := gcra.Run(ctx, b.limits.rdb, []string{key}, b.interval.Microseconds(), b.burst).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("rate limit %s: %w", b.name, err)
	}
	if len(res) != 2 {
		return false, 0, fmt.Errorf("rate limit %s: unexpected reply %v", b.name, res)
	}
	return res[0] == 1, time.Duration(res[1]) * time.Microsecond, nil
}

// bucketLimiter is what send-callback takes its tokens from: a sharedBucket, or the process's
// own limiter when the gateway has no SharedLimits.
type bucketLimiter interface {
	allow(ctx context.Context, customerID string) (ok bool, retryAfter time.Duration, err error)
}

// localBucket adapts the in-process limiter.
type localBucket struct {
	l   *limiter
	now func() time.Time
}

func (b localBucket) allow(_ context.Context, customerID string) (bool, time.Duration, error) {
	ok, wait := b.l.allow(customerID, b.now())
	return ok, wait, nil
}
