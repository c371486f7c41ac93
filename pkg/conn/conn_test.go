package conn_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/conn"
)

func TestRedis_url_forms(t *testing.T) {
	c, err := conn.Redis("redis://127.0.0.1:6379/3", 10)
	if err != nil {
		t.Fatal(err)
	}
	if cl, ok := c.(*redis.Client); !ok || cl.Options().DB != 3 {
		t.Errorf("standalone URL gave %T", c)
	}
	c, err = conn.Redis("redis-cluster://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002", 0)
	if err != nil {
		t.Fatal(err)
	}
	if cl, ok := c.(*redis.ClusterClient); !ok || len(cl.Options().Addrs) != 3 {
		t.Errorf("cluster URL gave %T", c)
	}
	c, err = conn.Redis("redis-sentinel://127.0.0.1:26379?addr=127.0.0.1:26380&master=primary&db=1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*redis.Client); !ok {
		t.Errorf("sentinel URL gave %T", c)
	}
	if _, err := conn.Redis("redis-sentinel://127.0.0.1:26379", 0); err == nil {
		t.Error("a sentinel URL without a master name was accepted")
	}
	for _, cl := range []string{"redis://127.0.0.1:6379/0"} {
		c, _ := conn.Redis(cl, 0)
		c.Close()
	}
}
