package testenv

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/conn"
)

// The Redis shapes a service can be given in REDIS_URL; RedisOf starts or connects to each.
const (
	ShapeStandalone = "standalone"
	ShapeCluster    = "cluster"
	ShapeSentinel   = "sentinel"
)

// RedisShapes is every shape, for tables of tests.
var RedisShapes = []string{ShapeStandalone, ShapeCluster, ShapeSentinel}

// RedisTarget is one Redis a test runs against: the REDIS_URL the services get, a client of the
// test's own (closed at cleanup) and a key prefix unique to the test.
type RedisTarget struct {
	Shape  string
	URL    string
	Client redis.UniversalClient
	Prefix string
	// Cluster or Sentinel is set for those shapes, so a test can kill their nodes.
	Cluster  *RedisCluster
	Sentinel *RedisSentinel
}

// RedisOf gives the test a Redis of the shape asked for: the machine's (see Redis) for
// ShapeStandalone, a private Redis Cluster or Sentinel setup started from the redis-server binary
// for the others.
func RedisOf(t testing.TB, shape string) RedisTarget {
	t.Helper()
	switch shape {
	case ShapeStandalone:
		rdb, prefix := Redis(t)
		return RedisTarget{Shape: shape, URL: RedisURL(), Client: rdb, Prefix: prefix}
	case ShapeCluster:
		c := StartRedisCluster(t)
		return RedisTarget{Shape: shape, URL: c.URL(), Client: c.Client(t), Prefix: testPrefix(), Cluster: c}
	case ShapeSentinel:
		s := StartRedisSentinel(t)
		return RedisTarget{Shape: shape, URL: s.URL(), Client: s.Client(t), Prefix: testPrefix(), Sentinel: s}
	}
	t.Fatalf("unknown Redis shape %q", shape)
	return RedisTarget{}
}

func testPrefix() string { return "test:" + strings.ToLower(rand.Text()[:10]) + ":" }

// redisServer is the redis-server binary, or a fatal error that says how to get one.
func redisServer(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not on PATH: the Redis Cluster and Sentinel tests start their own servers "+
			"from it. Install Redis 7 (apt-get install redis-server, or run the tests with go tool task test, "+
			"which installs it): %v", err)
	}
	return bin
}

// RedisNode is one redis-server process started by a test.
type RedisNode struct {
	Addr    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// freePorts returns n loopback ports that were free a moment ago, all different, for Redis and
// NATS nodes that must know each other's ports before they start. They are drawn below the
// kernel's ephemeral range (32768 and up by default), from which outgoing connections take
// their local ports: a port picked there can be taken by some connection before the node binds
// it, and the node then fails to start.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	const low, high = 20000, 32000
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("no %d free loopback ports between %d and %d", n, low, high)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", low+mrand.IntN(high-low)))
		if err != nil {
			continue // taken
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startRedisNode runs redis-server with a config file made of lines (plus the port, a private
// working folder and no persistence); it is killed at cleanup, and its log shown if the test
// failed.
func startRedisNode(t testing.TB, name string, port int, sentinel bool, lines ...string) *RedisNode {
	t.Helper()
	bin := redisServer(t)
	dir := t.TempDir()
	cfg := append([]string{
		"port " + strconv.Itoa(port),
		"bind 127.0.0.1",
		"protected-mode no",
		"dir " + dir,
		"logfile \"\"",
	}, lines...)
	if !sentinel {
		// No persistence, and a replica's first sync starts at once (the default waits 5 s for
		// more replicas to share it).
		cfg = append(cfg, `save ""`, "appendonly no", "repl-diskless-sync-delay 0")
	}
	cfgPath := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(cfgPath, []byte(strings.Join(cfg, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{cfgPath}
	if sentinel {
		args = append(args, "--sentinel")
	}
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	n := &RedisNode{Addr: fmt.Sprintf("127.0.0.1:%d", port), logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logFile.Close(); close(n.done) }()
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				const max = 3 << 10
				if len(b) > max {
					b = b[len(b)-max:]
				}
				t.Logf("last output of redis %s (%s):\n%s", name, n.Addr, b)
			}
		}
	})
	return n
}

// Kill ends the node at once (SIGKILL) and waits for it; idempotent.
func (n *RedisNode) Kill() {
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

// Alive reports whether the process still runs.
func (n *RedisNode) Alive() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// info reads one INFO section of addr as key/value pairs.
func info(ctx context.Context, addr, section string) (map[string]string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer c.Close()
	raw, err := c.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	return parseInfo(raw), nil
}

func parseInfo(raw string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(raw, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// startRedisNodeOnFreePorts starts a node on nports ports drawn by freePorts: the first is its
// port, lines(ports) its configuration. A drawn port is free only until redis-server binds it:
// servers that other tests (of this package, of other packages, of other checkouts) start at the
// same time draw from the same range. A node that lost its port that way exits at once saying
// so, and is started again on other ports; when it returns, the node answers as itself.
func startRedisNodeOnFreePorts(t testing.TB, name string, nports int, sentinel bool, lines func(ports []int) []string) *RedisNode {
	t.Helper()
	const tries = 5
	for try := 1; ; try++ {
		ports := freePorts(t, nports)
		n := startRedisNode(t, name, ports[0], sentinel, lines(ports)...)
		if n.waitUp(t, 20*time.Second) {
			return n
		}
		if !n.lostPort() || try == tries {
			t.Fatalf("redis %s did not start on %s (try %d of %d)", name, n.Addr, try, tries)
		}
	}
}

// waitUp waits until the node answers as itself: INFO's process_id is its pid (a server that
// took its port answers PING too). It is false when the process ended first, and fails the test
// after timeout.
func (n *RedisNode) waitUp(t testing.TB, timeout time.Duration) bool {
	t.Helper()
	pid := strconv.Itoa(n.cmd.Process.Pid)
	up := false
	Eventually(t, timeout, func() bool {
		if !n.Alive() {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		m, err := info(ctx, n.Addr, "server")
		up = err == nil && m["process_id"] == pid
		return up
	}, "redis %s answers", n.Addr)
	return up
}

// lostPort tells whether the node exited because one of its ports was taken.
func (n *RedisNode) lostPort() bool {
	<-n.done
	b, err := os.ReadFile(n.logPath)
	return err == nil && strings.Contains(string(b), "Address already in use")
}

// RedisCluster is a Redis Cluster of three masters with one replica each, on loopback.
type RedisCluster struct {
	t     testing.TB
	Nodes []*RedisNode
}

// StartRedisCluster starts six redis-server processes in cluster mode, joins them with
// redis-cli --cluster create (three masters, one replica each) and waits until every node says
// cluster_state:ok and every replica is in sync. Node timeout is short (1.5 s), so a killed
// master is replaced within seconds.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli is not on PATH (it comes with redis-server: apt-get install redis-server): %v", err)
	}
	c := &RedisCluster{t: t}
	var addrs []string
	for i := range 6 {
		// Two ports each: clients', and the cluster bus's.
		n := startRedisNodeOnFreePorts(t, fmt.Sprintf("cluster-%d", i+1), 2, false, func(ports []int) []string {
			return []string{
				"cluster-enabled yes",
				"cluster-config-file nodes.conf",
				"cluster-port " + strconv.Itoa(ports[1]),
				"cluster-node-timeout 1500",
				// A replica may take over whatever its lag: the tests kill masters on purpose.
				"cluster-replica-validity-factor 0",
			}
		})
		c.Nodes = append(c.Nodes, n)
		addrs = append(addrs, n.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy(60 * time.Second)
	return c
}

// URL is the cluster's REDIS_URL.
func (c *RedisCluster) URL() string {
	var extra []string
	for _, n := range c.Nodes[1:] {
		extra = append(extra, "addr="+n.Addr)
	}
	return "redis-cluster://" + c.Nodes[0].Addr + "?" + strings.Join(extra, "&")
}

// Client connects to the cluster the way the services do (closed at cleanup).
func (c *RedisCluster) Client(t testing.TB) redis.UniversalClient {
	t.Helper()
	return client(t, c.URL())
}

func client(t testing.TB, url string) redis.UniversalClient {
	t.Helper()
	rdb, err := conn.Redis(url, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// Running is the nodes not killed.
func (c *RedisCluster) Running() []*RedisNode {
	var out []*RedisNode
	for _, n := range c.Nodes {
		if n.Alive() {
			out = append(out, n)
		}
	}
	return out
}

// WaitHealthy waits until every running node says cluster_state:ok and sees three masters that
// serve all slots, and every running replica is in sync with its master.
func (c *RedisCluster) WaitHealthy(timeout time.Duration) {
	c.t.Helper()
	var last string
	Eventually(c.t, timeout, func() bool {
		ok, why := c.healthy()
		last = why
		return ok
	}, "Redis Cluster healthy (last: %s)", lazy(func() string { return last }))
}

func (c *RedisCluster) healthy() (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, n := range c.Running() {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr, DialTimeout: time.Second, ReadTimeout: time.Second})
		raw, err := cl.ClusterInfo(ctx).Result()
		cl.Close()
		if err != nil {
			return false, fmt.Sprintf("%s: %v", n.Addr, err)
		}
		ci := parseInfo(raw)
		if ci["cluster_state"] != "ok" || ci["cluster_slots_ok"] != "16384" {
			return false, fmt.Sprintf("%s: cluster_state %s, slots ok %s", n.Addr, ci["cluster_state"], ci["cluster_slots_ok"])
		}
		repl, err := info(ctx, n.Addr, "replication")
		if err != nil {
			return false, fmt.Sprintf("%s: %v", n.Addr, err)
		}
		if repl["role"] == "slave" && repl["master_link_status"] != "up" {
			return false, fmt.Sprintf("replica %s: master link %s", n.Addr, repl["master_link_status"])
		}
	}
	return true, ""
}

// MasterOf is the node that serves key now.
func (c *RedisCluster) MasterOf(key string) *RedisNode {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range c.Running() {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr})
		//lint:ignore SA1019 CLUSTER SLOTS still answers on Redis 7 and names each slot range's master by the address the test compares.
		slots, err := cl.ClusterSlots(ctx).Result()
		keySlot, err2 := cl.ClusterKeySlot(ctx, key).Result()
		if err == nil && err2 == nil {
			slot := int(keySlot)
			cl.Close()
			for _, s := range slots {
				if slot >= int(s.Start) && slot <= int(s.End) && len(s.Nodes) > 0 {
					for _, m := range c.Nodes {
						if m.Addr == s.Nodes[0].Addr {
							return m
						}
					}
				}
			}
			continue
		}
		cl.Close()
	}
	c.t.Fatalf("no node serves %q", key)
	return nil
}

// RedisSentinel is a Sentinel-managed primary with one replica and three sentinels, on loopback.
type RedisSentinel struct {
	t         testing.TB
	Master    string // the name the sentinels monitor
	Data      []*RedisNode
	Sentinels []*RedisNode
}

// StartRedisSentinel starts a primary, a replica of it and three sentinels (quorum 2, down after
// 1 s), and waits until every sentinel names the primary, knows the replica and the two other
// sentinels, and the replica is in sync.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	s := &RedisSentinel{t: t, Master: "refonte"}
	none := func([]int) []string { return nil }
	primary := startRedisNodeOnFreePorts(t, "primary", 1, false, none)
	replica := startRedisNodeOnFreePorts(t, "replica", 1, false, func([]int) []string {
		return []string{"replicaof " + strings.Replace(primary.Addr, ":", " ", 1)}
	})
	s.Data = []*RedisNode{primary, replica}
	for i := range 3 {
		s.Sentinels = append(s.Sentinels, startRedisNodeOnFreePorts(t, fmt.Sprintf("sentinel-%d", i+1), 1, true, func([]int) []string {
			return []string{
				fmt.Sprintf("sentinel monitor %s %s 2", s.Master, strings.Replace(primary.Addr, ":", " ", 1)),
				fmt.Sprintf("sentinel down-after-milliseconds %s 1000", s.Master),
				fmt.Sprintf("sentinel failover-timeout %s 10000", s.Master),
				fmt.Sprintf("sentinel parallel-syncs %s 1", s.Master),
			}
		}))
	}
	s.WaitAgreed(60 * time.Second)
	return s
}

// URL is the setup's REDIS_URL.
func (s *RedisSentinel) URL() string {
	return fmt.Sprintf("redis-sentinel://%s?addr=%s&addr=%s&master=%s",
		s.Sentinels[0].Addr, s.Sentinels[1].Addr, s.Sentinels[2].Addr, s.Master)
}

// Client connects through the sentinels the way the services do (closed at cleanup).
func (s *RedisSentinel) Client(t testing.TB) redis.UniversalClient {
	t.Helper()
	return client(t, s.URL())
}

// Primary is the data node every running sentinel names as the primary now, if they agree and
// it answers as a primary; nil otherwise.
func (s *RedisSentinel) Primary() *RedisNode {
	addr, ok := s.agreed(false)
	if !ok {
		return nil
	}
	for _, n := range s.Data {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// agreed is the primary every running sentinel names, if they all name the same one and know
// the other running sentinels, and it is a running primary; withReplica also wants every other
// running data node to be its replica, in sync.
func (s *RedisSentinel) agreed(withReplica bool) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	addr, sentinels, replicas := "", 0, -1 // one running data node is the primary
	for _, sn := range s.Sentinels {
		if sn.Alive() {
			sentinels++
		}
	}
	for _, n := range s.Data {
		if n.Alive() {
			replicas++
		}
	}
	for _, sn := range s.Sentinels {
		if !sn.Alive() {
			continue
		}
		c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr, DialTimeout: time.Second, ReadTimeout: time.Second})
		hp, err := c.GetMasterAddrByName(ctx, s.Master).Result()
		m, err2 := c.Master(ctx, s.Master).Result()
		c.Close()
		if err != nil || err2 != nil || len(hp) != 2 {
			return "", false
		}
		a := net.JoinHostPort(hp[0], hp[1])
		if addr != "" && a != addr {
			return "", false
		}
		addr = a
		if m["num-other-sentinels"] != strconv.Itoa(sentinels-1) || strings.Contains(m["flags"], "down") {
			return "", false
		}
		// A sentinel learns the replicas from the primary's INFO, every 10 s: one that does not
		// know the replica yet has nobody to promote if the primary dies now.
		if withReplica && m["num-slaves"] != strconv.Itoa(replicas) {
			return "", false
		}
	}
	repl, err := info(ctx, addr, "replication")
	if err != nil || repl["role"] != "master" {
		return "", false
	}
	if !withReplica {
		return addr, true
	}
	for _, n := range s.Data {
		if n.Addr == addr || !n.Alive() {
			continue
		}
		r, err := info(ctx, n.Addr, "replication")
		if err != nil || r["role"] != "slave" || r["master_link_status"] != "up" {
			return "", false
		}
	}
	return addr, true
}

// WaitAgreed waits until the sentinels agree on a primary that has its replica in sync.
func (s *RedisSentinel) WaitAgreed(timeout time.Duration) *RedisNode {
	s.t.Helper()
	Eventually(s.t, timeout, func() bool { _, ok := s.agreed(true); return ok },
		"sentinels agree on a primary with its replica in sync")
	return s.Primary()
}

// lazy is a value printed when the message is formatted, not when it is passed.
type lazy func() string

func (l lazy) String() string { return l() }

// WaitReplicated waits until every running primary among nodes has at least one replica online
// and every replica has acknowledged all the primary has written so far: a test that kills a
// primary after this knows what the replica holds (a replica still resynchronising holds
// nothing yet, so it does not count).
func WaitReplicated(t testing.TB, nodes []*RedisNode) {
	t.Helper()
	ctx := context.Background()
	for _, n := range nodes {
		if !n.Alive() {
			continue
		}
		repl, err := info(ctx, n.Addr, "replication")
		if err != nil || repl["role"] != "master" {
			continue
		}
		Eventually(t, 30*time.Second, func() bool {
			repl, err := info(ctx, n.Addr, "replication")
			if err != nil {
				return false
			}
			target, _ := strconv.ParseInt(repl["master_repl_offset"], 10, 64)
			slaves, _ := strconv.Atoi(repl["connected_slaves"])
			if slaves == 0 {
				return false
			}
			for i := range slaves {
				// slave0:ip=…,port=…,state=online,offset=…,lag=…
				fields := strings.Split(repl[fmt.Sprintf("slave%d", i)], ",")
				if !slices.Contains(fields, "state=online") {
					return false
				}
				for _, f := range fields {
					if v, ok := strings.CutPrefix(f, "offset="); ok {
						if off, _ := strconv.ParseInt(v, 10, 64); off < target {
							return false
						}
					}
				}
			}
			return true
		}, "replicas of %s caught up", n.Addr)
	}
}
