package load

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Broker is the NATS server of a run: started in this process, started as a process of its own
// (so its CPU and memory are measured apart), or an existing one.
type Broker interface {
	URL() string
	// PID is the server's process id for CPU and RSS accounting; 0 when it is not measurable
	// apart from this process (in-process) or not ours (external).
	PID() int
	// Varz returns the server's resident memory (bytes) and CPU (percent); ok is false when the
	// server cannot be asked.
	Varz() (mem int64, cpu float64, ok bool)
	Close()
}

// StartInProcess runs nats-server with JetStream and file storage in dir, on a free loopback port.
func StartInProcess(dir string) (Broker, error) {
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  filepath.Join(dir, "jetstream"),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats server did not start")
	}
	return inProcess{s}, nil
}

type inProcess struct{ s *server.Server }

func (b inProcess) URL() string { return b.s.ClientURL() }
func (b inProcess) PID() int    { return 0 }
func (b inProcess) Varz() (int64, float64, bool) {
	v, err := b.s.Varz(&server.VarzOptions{})
	if err != nil {
		return 0, 0, false
	}
	return v.Mem, v.CPU, true
}
func (b inProcess) Close() {
	b.s.Shutdown()
	b.s.WaitForShutdown()
}

// StartProcess runs the nats-server binary bin with JetStream, file storage in dir and the
// monitoring endpoint on free loopback ports.
func StartProcess(ctx context.Context, bin, dir string) (Broker, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	mport, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "nats-server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-m", strconv.Itoa(mport),
		"-js", "-sd", filepath.Join(dir, "jetstream"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &natsProcess{proc: newProc("nats-server", cmd, logFile, logPath),
		url: fmt.Sprintf("nats://127.0.0.1:%d", port), monitor: fmt.Sprintf("http://127.0.0.1:%d", mport)}
	if err := waitHTTP(ctx, p.monitor+"/healthz", 15*time.Second, p.proc.done); err != nil {
		p.Close()
		return nil, fmt.Errorf("nats-server: %w (log: %s)", err, p.proc.tail())
	}
	return p, nil
}

type natsProcess struct {
	*proc
	url, monitor string
}

func (b *natsProcess) URL() string { return b.url }
func (b *natsProcess) PID() int    { return b.cmd.Process.Pid }
func (b *natsProcess) Varz() (int64, float64, bool) {
	var v struct {
		Mem int64   `json:"mem"`
		CPU float64 `json:"cpu"`
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(b.monitor + "/varz")
	if err != nil {
		return 0, 0, false
	}
	defer resp.Body.Close()
	if json.NewDecoder(resp.Body).Decode(&v) != nil {
		return 0, 0, false
	}
	return v.Mem, v.CPU, true
}
func (b *natsProcess) Close() { b.stop(10 * time.Second) }

// External is a server this run did not start.
type External string

func (e External) URL() string                  { return string(e) }
func (e External) PID() int                     { return 0 }
func (e External) Varz() (int64, float64, bool) { return 0, 0, false }
func (e External) Close()                       {}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP polls url until it answers 200, the process ends (done closes) or timeout passes.
func waitHTTP(ctx context.Context, url string, timeout time.Duration, done <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s", url, timeout)
		case <-done:
			return fmt.Errorf("process exited before %s was ready", url)
		case <-tick.C:
		}
	}
}
