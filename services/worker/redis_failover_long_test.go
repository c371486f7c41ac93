//go:build chaos

package main_test

import (
	"testing"

	"refonte.ai/callbacks/internal/testenv"
)

// The long versions of redis_failover_test.go:
//
//	go test -tags chaos ./services/worker/ -run TestChaos_long_redis -v -timeout 30m

func TestChaos_long_redis_sentinel_primary_SIGKILL_5k(t *testing.T) {
	redisFailover(t, testenv.ShapeSentinel, 5_000)
}

func TestChaos_long_redis_cluster_master_SIGKILL_5k(t *testing.T) {
	redisFailover(t, testenv.ShapeCluster, 5_000)
}
