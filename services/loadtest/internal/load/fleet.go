package load

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Build compiles the command pkg (./services/worker, ./services/gateway, the reference loop) of the
// repository at root into dir.
func Build(ctx context.Context, root, dir, pkg string) (string, error) {
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = root
	// The repository's go.work decides the build, whatever workspace this tool runs in.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOWORK=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}

// FindRepoRoot walks up from dir to the folder that holds go.work.
func FindRepoRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s: pass -repo or -worker-bin", dir)
		}
	}
}

// Worker is one worker process of the fleet.
type Worker struct {
	*proc
	MetricsAddr string
}

// PID is the process id.
func (w *Worker) PID() int { return w.cmd.Process.Pid }

// StartWorkers starts n worker processes with env (KEY=VALUE) plus their own METRICS_ADDR, and
// waits until each one is ready (its consumer exists, NATS and Redis answer).
func StartWorkers(ctx context.Context, bin, dir string, n int, env []string) ([]*Worker, error) {
	var ws []*Worker
	fail := func(err error) ([]*Worker, error) {
		StopWorkers(ws, 10*time.Second)
		return nil, err
	}
	for i := range n {
		port, err := freePort()
		if err != nil {
			return fail(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		p, err := spawn(fmt.Sprintf("worker-%d", i+1), bin, dir, append(env, "METRICS_ADDR="+addr))
		if err != nil {
			return fail(err)
		}
		ws = append(ws, &Worker{proc: p, MetricsAddr: addr})
	}
	for _, w := range ws {
		if err := waitHTTP(ctx, "http://"+w.MetricsAddr+"/readyz", 60*time.Second, w.done); err != nil {
			return fail(fmt.Errorf("%s: %w\n%s", w.name, err, w.tail()))
		}
	}
	return ws, nil
}

// StopWorkers sends SIGTERM to every worker, so they drain in parallel, and waits for them.
func StopWorkers(ws []*Worker, grace time.Duration) {
	for _, w := range ws {
		if !w.exited() {
			_ = w.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, w := range ws {
		w.stop(grace)
	}
}

// WorkerMetrics are the counters a run reads from the workers' /metrics.
type WorkerMetrics struct {
	AttemptsSucceeded float64 `json:"attempts_succeeded"`
	AttemptsFailed    float64 `json:"attempts_failed"`
	Deferred          float64 `json:"deferred_host_limit"`
	Rejected          float64 `json:"rejected_events"`
}

func (m *WorkerMetrics) add(o WorkerMetrics) {
	m.AttemptsSucceeded += o.AttemptsSucceeded
	m.AttemptsFailed += o.AttemptsFailed
	m.Deferred += o.Deferred
	m.Rejected += o.Rejected
}

func (m WorkerMetrics) minus(o WorkerMetrics) WorkerMetrics {
	return WorkerMetrics{
		AttemptsSucceeded: m.AttemptsSucceeded - o.AttemptsSucceeded,
		AttemptsFailed:    m.AttemptsFailed - o.AttemptsFailed,
		Deferred:          m.Deferred - o.Deferred,
		Rejected:          m.Rejected - o.Rejected,
	}
}

// Scrape reads the worker's counters.
func (w *Worker) Scrape() (WorkerMetrics, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + w.MetricsAddr + "/metrics")
	if err != nil {
		return WorkerMetrics{}, err
	}
	defer resp.Body.Close()
	var m WorkerMetrics
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name := line[:sp]
		switch {
		case strings.HasPrefix(name, "refonte_callback_attempts_total{") && strings.Contains(name, `result="succeeded"`):
			m.AttemptsSucceeded += v
		case strings.HasPrefix(name, "refonte_callback_attempts_total{"):
			m.AttemptsFailed += v
		case strings.HasPrefix(name, "refonte_callback_deferred_total"):
			m.Deferred += v // every reason
		case strings.HasPrefix(name, "refonte_events_rejected_total"):
			m.Rejected += v
		}
	}
	return m, sc.Err()
}

// ScrapeAll sums the counters of every worker.
func ScrapeAll(ws []*Worker) WorkerMetrics {
	var all WorkerMetrics
	for _, w := range ws {
		if m, err := w.Scrape(); err == nil {
			all.add(m)
		}
	}
	return all
}
