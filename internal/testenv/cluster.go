package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a JetStream cluster of in-process nats-servers on loopback: each node has its own
// client port, cluster port, server name and store, and routes to every other node.
type Cluster struct {
	t     testing.TB
	Nodes []*NATS
}

// StartCluster starts size nodes named n1, n2, … and waits until JetStream has a meta leader
// and every node is current, so streams can be created at once.
func StartCluster(t testing.TB, size int) *Cluster {
	t.Helper()
	if size < 1 {
		t.Fatalf("cluster size %d", size)
	}
	// Route ports must be known before any node starts; pick free ones, all different.
	ports := freePorts(t, size)
	c := &Cluster{t: t}
	for i := range size {
		var routes []string
		for j, p := range ports {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
		}
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			Cluster: server.ClusterOpts{
				Name: "refonte-test",
				Host: "127.0.0.1",
				Port: ports[i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
			NoLog:  true,
			NoSigs: true,
		}
		n := &NATS{t: t, opts: opts}
		n.start()
		t.Cleanup(n.Stop)
		c.Nodes = append(c.Nodes, n)
	}
	c.WaitReady(30 * time.Second)
	return c
}

// WaitReady waits until one running node is the JetStream meta leader and every running node is
// current with it.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	Eventually(c.t, timeout, func() bool {
		leader := false
		for _, n := range c.Running() {
			if !n.Server.JetStreamIsCurrent() {
				return false
			}
			leader = leader || n.Server.JetStreamIsLeader()
		}
		return leader
	}, "JetStream cluster has a meta leader and every node is current")
}

// Running is the nodes that have not been stopped.
func (c *Cluster) Running() []*NATS {
	var out []*NATS
	for _, n := range c.Nodes {
		if n.Server != nil && n.Server.Running() {
			out = append(out, n)
		}
	}
	return out
}

// URLs is every node's client URL, comma-separated, as NATS_URL takes them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port)
	}
	return strings.Join(urls, ",")
}

// Node returns the node with the given server name, or nil.
func (c *Cluster) Node(name string) *NATS {
	for _, n := range c.Nodes {
		if n.opts.ServerName == name {
			return n
		}
	}
	return nil
}

// Connect returns a client connection to the whole cluster (closed at cleanup) and its JetStream
// context; it reconnects to another node when its node goes away.
func (c *Cluster) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return ConnectURL(t, c.URLs())
}

// StreamLeader is the server name of the stream's current leader ("" while none is elected).
func StreamLeader(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil {
		return "", nil
	}
	return info.Cluster.Leader, nil
}

// NewStreamLeader waits up to a minute for the stream to elect a leader other than old and returns
// its name. Each question is short, so that one sent into the election does not hide its end.
func NewStreamLeader(t testing.TB, ctx context.Context, js jetstream.JetStream, stream, old string) string {
	t.Helper()
	var leader string
	Eventually(t, 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		leader, _ = StreamLeader(ctx, js, stream)
		return leader != "" && leader != old
	}, "a new stream leader is elected")
	return leader
}

// ConsumerLeader is the server name of the consumer's current leader ("" while none is elected).
func ConsumerLeader(ctx context.Context, js jetstream.JetStream, stream, consumer string) (string, error) {
	c, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return "", err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil {
		return "", nil
	}
	return info.Cluster.Leader, nil
}

// ProcessCluster is a JetStream cluster of nats-server child processes on loopback, for the
// faults an in-process server cannot show: a node killed with SIGKILL gets no chance to hand its
// leaderships over (an in-process Shutdown does).
type ProcessCluster struct {
	t     testing.TB
	names []string
	ports []int // client ports
	procs map[string]*exec.Cmd
	done  map[string]chan struct{}
}

var (
	natsServerOnce sync.Once
	natsServerBin  string
	natsServerErr  error
)

// natsServer builds the nats-server the module depends on, once per test binary.
func natsServer(t testing.TB) string {
	t.Helper()
	natsServerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "refonte-nats-server-")
		if err != nil {
			natsServerErr = err
			return
		}
		natsServerBin = filepath.Join(dir, "nats-server")
		cmd := exec.Command("go", "build", "-o", natsServerBin, "github.com/nats-io/nats-server/v2")
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			natsServerErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if natsServerErr != nil {
		t.Fatal(natsServerErr)
	}
	return natsServerBin
}

// StartProcessCluster starts size nats-server processes named p1, p2, … and waits until
// JetStream answers through every node.
func StartProcessCluster(t testing.TB, size int) *ProcessCluster {
	t.Helper()
	bin := natsServer(t)
	// All different, and out of the range outgoing connections take their ports from: drawn one
	// at a time in that range, a client port and a route port once came out the same and the
	// node could not start.
	ports := freePorts(t, 2*size)
	c := &ProcessCluster{t: t, procs: map[string]*exec.Cmd{}, done: map[string]chan struct{}{}}
	routePorts := ports[size:]
	for i := range size {
		c.names = append(c.names, fmt.Sprintf("p%d", i+1))
		c.ports = append(c.ports, ports[i])
	}
	for i, name := range c.names {
		c.startNode(bin, i, name, routePorts)
	}
	for i := range c.names {
		c.waitJetStream(i)
	}
	return c
}

// startNode starts node i, routed to every other node's route port; its output is shown when
// the test fails.
func (c *ProcessCluster) startNode(bin string, i int, name string, routePorts []int) {
	t := c.t
	t.Helper()
	var routes []string
	for j, p := range routePorts {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
		}
	}
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-n", name, "-a", "127.0.0.1", "-p", fmt.Sprint(c.ports[i]),
		"-js", "-sd", t.TempDir(), "--cluster_name", "refonte-test",
		"--cluster", fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i]), "--routes", strings.Join(routes, ","))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(done) }()
	c.procs[name], c.done[name] = cmd, done
	t.Cleanup(func() {
		c.Kill(name)
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				const max = 4 << 10
				if len(b) > max {
					b = b[len(b)-max:]
				}
				t.Logf("last output of nats-server %s:\n%s", name, b)
			}
		}
	})
}

// waitJetStream waits until JetStream answers through node i.
func (c *ProcessCluster) waitJetStream(i int) {
	t := c.t
	t.Helper()
	url := fmt.Sprintf("nats://127.0.0.1:%d", c.ports[i])
	Eventually(t, 60*time.Second, func() bool {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err != nil {
			return false
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err == nil
	}, "JetStream answers through %s", c.names[i])
}

// URLs is every node's client URL, comma-separated, as NATS_URL takes them.
func (c *ProcessCluster) URLs() string {
	urls := make([]string, len(c.ports))
	for i, p := range c.ports {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	return strings.Join(urls, ",")
}

// Connect returns a client connection to the whole cluster (closed at cleanup) and its JetStream
// context.
func (c *ProcessCluster) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return ConnectURL(t, c.URLs())
}

// Has reports whether name is one of the nodes.
func (c *ProcessCluster) Has(name string) bool { return c.procs[name] != nil }

// Kill ends the named node at once (kill -9) and waits for it; idempotent.
func (c *ProcessCluster) Kill(name string) {
	cmd := c.procs[name]
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-c.done[name]
}
