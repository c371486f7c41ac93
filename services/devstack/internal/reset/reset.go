// Package reset keeps the local stack's Redis keys consistent with its JetStream store: task
// status refers to stream sequences, and the demo customer's keys live in the stack's folder, so
// keys left by another stack (another checkout, or this one before `task clean`) are stale.
package reset

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/conn"
)

// OwnerKey (after the prefix) names the stack that wrote the keys under the prefix.
const OwnerKey = "devstack:owner"

// Redis deletes every key that starts with prefix in the Redis at url and returns how many it
// deleted. prefix must not be empty: a reset never flushes a whole database.
func Redis(ctx context.Context, url, prefix string) (int, error) {
	rdb, err := open(url, prefix)
	if err != nil {
		return 0, fmt.Errorf("reset: %w", err)
	}
	defer rdb.Close()
	return deleteAll(ctx, rdb, prefix)
}

// Claim makes the keys under prefix belong to the stack named owner: if another stack (or none)
// wrote them, they are deleted and owner is recorded. It returns how many keys it deleted and
// whether it had to.
func Claim(ctx context.Context, url, prefix, owner string) (int, bool, error) {
	if owner == "" {
		return 0, false, errors.New("reset: empty owner")
	}
	rdb, err := open(url, prefix)
	if err != nil {
		return 0, false, fmt.Errorf("reset: %w", err)
	}
	defer rdb.Close()
	cur, err := rdb.Get(ctx, prefix+OwnerKey).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, false, fmt.Errorf("reset: %w", err)
	}
	if cur == owner {
		return 0, false, nil
	}
	n, err := deleteAll(ctx, rdb, prefix)
	if err != nil {
		return n, true, err
	}
	if err := rdb.Set(ctx, prefix+OwnerKey, owner, 0).Err(); err != nil {
		return n, true, fmt.Errorf("reset: %w", err)
	}
	return n, true, nil
}

func open(url, prefix string) (redis.UniversalClient, error) {
	if prefix == "" {
		return nil, errors.New("reset: refusing an empty key prefix")
	}
	return conn.Redis(url, 2)
}

func deleteAll(ctx context.Context, rdb redis.UniversalClient, prefix string) (int, error) {
	n := 0
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		d, err := rdb.Unlink(ctx, batch...).Result()
		n += int(d)
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			if err := flush(); err != nil {
				return n, fmt.Errorf("reset: %w", err)
			}
		}
	}
	if err := iter.Err(); err != nil {
		return n, fmt.Errorf("reset: scan %s*: %w", prefix, err)
	}
	if err := flush(); err != nil {
		return n, fmt.Errorf("reset: %w", err)
	}
	return n, nil
}
