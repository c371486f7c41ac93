package load

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// sampler records the timeline and the NATS server's peak memory.
type sampler struct {
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	line  []Sample
	peak  int64
}

func startSampler(every time.Duration, t *Tracker, ws []*Worker, b Broker) *sampler {
	s := &sampler{stopc: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-s.stopc:
				return
			case <-tick.C:
			}
			smp := Sample{T: time.Since(start).Seconds(), Published: t.published.Load(),
				Delivered: t.delivered.Load(), Outstanding: t.Outstanding()}
			for _, w := range ws {
				rss, _ := memory(w.PID())
				smp.WorkerRSS = append(smp.WorkerRSS, rss)
			}
			smp.NATSMem, _, _ = b.Varz()
			s.mu.Lock()
			s.line = append(s.line, smp)
			s.peak = max(s.peak, smp.NATSMem)
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *sampler) stop() ([]Sample, int64) {
	close(s.stopc)
	<-s.done
	return s.line, s.peak
}

// meter reads the CPU time of every process of the run.
type meter struct {
	workers []*Worker
	gateway *Gateway // nil when the run has none
	readers bool     // this process also reads statuses through the gateway
	broker  Broker
	rdb     *redis.Client
}

type cpuSnap struct {
	workers   []float64
	gateway   float64
	nats      float64
	self      float64
	redisCPU  float64
	redisMem  int64
	redisRSS  int64
	redisPeak int64
	redisPID  int
	redisVer  string
	machine   float64
}

func newMeter(ws []*Worker, g *Gateway, b Broker, rdb *redis.Client) *meter {
	return &meter{workers: ws, gateway: g, broker: b, rdb: rdb}
}

// pids are the processes of the run other than this one: workers, gateway, nats-server, Redis.
func (m *meter) pids(ctx context.Context) []int {
	var pids []int
	for _, w := range m.workers {
		pids = append(pids, w.PID())
	}
	if m.gateway != nil {
		pids = append(pids, m.gateway.PID())
	}
	if pid := m.broker.PID(); pid > 0 {
		pids = append(pids, pid)
	}
	if s := m.snapshot(ctx); s.redisPID > 0 {
		pids = append(pids, s.redisPID)
	}
	return pids
}

// perfRecorder runs `perf record` on a set of processes.
type perfRecorder struct {
	cmd  *exec.Cmd
	pids []int
	once sync.Once
}

func startPerf(path string, pids []int) (*perfRecorder, error) {
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
	}
	cmd := exec.Command("perf", "record", "-e", "cpu-clock", "-F", "499", "-g", "-p", strings.Join(list, ","),
		"-o", path)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	return &perfRecorder{cmd: cmd, pids: pids}, nil
}

// stop ends the recording; perf writes its file on SIGINT.
func (p *perfRecorder) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		_ = p.cmd.Wait()
	})
}

func (m *meter) snapshot(ctx context.Context) cpuSnap {
	var s cpuSnap
	for _, w := range m.workers {
		c, _ := cpuSeconds(w.PID())
		s.workers = append(s.workers, c)
	}
	if m.gateway != nil {
		s.gateway, _ = cpuSeconds(m.gateway.PID())
	}
	if pid := m.broker.PID(); pid > 0 {
		s.nats, _ = cpuSeconds(pid)
	}
	s.self = selfCPU()
	s.machine = machineBusy()
	info, err := m.rdb.Info(ctx, "cpu", "memory", "server").Result()
	if err == nil {
		kv := map[string]string{}
		for _, line := range strings.Split(info, "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				kv[k] = v
			}
		}
		us, _ := strconv.ParseFloat(kv["used_cpu_user"], 64)
		sy, _ := strconv.ParseFloat(kv["used_cpu_sys"], 64)
		s.redisCPU = us + sy
		s.redisMem, _ = strconv.ParseInt(kv["used_memory"], 10, 64)
		s.redisRSS, _ = strconv.ParseInt(kv["used_memory_rss"], 10, 64)
		s.redisPID, _ = strconv.Atoi(kv["process_id"])
		s.redisVer = kv["redis_version"]
		if s.redisPID > 0 {
			_, s.redisPeak = memory(s.redisPID)
		}
	}
	return s
}

// costs turns two snapshots into each process's cost, plus the fleet's total and the rest of the
// machine (other users of a shared machine: noise to keep in mind).
func (m *meter) costs(a, b cpuSnap, delivered int64, wall time.Duration) ([]ProcessCost, RedisCost, []ProcessCost) {
	cost := func(name string, pid int, cpu float64, includes string) ProcessCost {
		pc := ProcessCost{Name: name, PID: pid, CPUSeconds: cpu, Includes: includes}
		if delivered > 0 {
			pc.CPUPer1000 = cpu / float64(delivered) * 1000
		}
		pc.CPUUtil = cpu / wall.Seconds()
		return pc
	}
	var (
		out     []ProcessCost
		workers float64
		ours    float64
	)
	for i, w := range m.workers {
		pc := cost(w.name, w.PID(), b.workers[i]-a.workers[i], "")
		pc.EndRSS, pc.PeakRSS = memory(w.PID())
		out = append(out, pc)
		workers += pc.CPUSeconds
	}
	ours = workers
	includes := "workers, "
	if m.gateway != nil {
		pc := cost("gateway", m.gateway.PID(), b.gateway-a.gateway, "")
		pc.EndRSS, pc.PeakRSS = memory(m.gateway.PID())
		out = append(out, pc)
		ours += pc.CPUSeconds
		includes += "gateway, "
	}
	selfIncludes := "publisher, receiver"
	if m.readers {
		selfIncludes += ", status readers"
	}
	if pid := m.broker.PID(); pid > 0 {
		pc := cost("nats-server", pid, b.nats-a.nats, "")
		pc.EndRSS, pc.PeakRSS = memory(pid)
		out = append(out, pc)
		ours += pc.CPUSeconds
	} else if _, ok := m.broker.(inProcess); ok {
		selfIncludes += ", in-process NATS server"
	}
	self := cost("loadtest", os.Getpid(), b.self-a.self, selfIncludes)
	self.EndRSS, self.PeakRSS = memory(0)
	out = append(out, self)
	ours += self.CPUSeconds
	rc := RedisCost{ProcessCost: cost("redis", b.redisPID, b.redisCPU-a.redisCPU,
		"shared server: CPU of every client in the window; peak RSS is the server's lifetime peak")}
	rc.EndRSS, rc.PeakRSS = b.redisRSS, b.redisPeak
	rc.UsedMemoryDelta = b.redisMem - a.redisMem
	rc.Version = b.redisVer
	ours += rc.CPUSeconds
	machine := b.machine - a.machine
	totals := []ProcessCost{
		cost("workers (all)", 0, workers, ""),
		cost("everything of the run", 0, ours, includes+"NATS, Redis, publisher, receiver"),
		cost("rest of the machine", 0, max(machine-ours, 0), "other users of the machine during the run (noise)"),
	}
	return out, rc, totals
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				m.MemTotal = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

// commit is the checked-out commit of the repository at root (read only; no index refresh).
func commit(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
