package conn_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/conn"
)

func TestRedis_url_forms(t *testing.T) {
	c, err := conn.Redis("redis://127.0.0.1:6379/3", 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if cl, ok := c.(*redis.Client); !ok || cl.Options().DB != 3 || cl.Options().PoolSize != 10 ||
		cl.Options().ReadTimeout != 2*time.Second {
		t.Errorf("standalone URL gave %T (want db 3, pool 10, 2s timeouts)", c)
	}
	c, err = conn.Redis("redis-cluster://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if cl, ok := c.(*redis.ClusterClient); !ok || len(cl.Options().Addrs) != 3 {
		t.Errorf("cluster URL gave %T", c)
	}
	c, err = conn.Redis("redis-sentinel://127.0.0.1:26379?addr=127.0.0.1:26380&master=primary&db=1", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if cl, ok := c.(*redis.Client); !ok || cl.Options().DB != 1 {
		t.Errorf("sentinel URL gave %T (want a failover client on db 1)", c)
	}
	if _, err := conn.Redis("redis-sentinel://127.0.0.1:26379", 0); err == nil {
		t.Error("a sentinel URL without a master name was accepted")
	}
	if _, err := conn.Redis("http://127.0.0.1:6379", 0); err == nil {
		t.Error("a URL of another scheme was accepted")
	}
}

// A standalone URL gives a client that reaches that Redis.
func TestRedis_standalone_client_reaches_the_server(t *testing.T) {
	c, err := conn.Redis(testenv.RedisURL(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Errorf("ping through the client: %v", err)
	}
}
