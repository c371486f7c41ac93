// Command streamcost measures what holding many task events costs nats-server: it starts the
// given nats-server binary as a process of its own with file storage, lays out a stream as the
// workers do (limits retention, a month's MaxAge, direct gets), publishes -n messages of -size
// bytes with a Nats-Msg-Id each, and reports disk, RSS (after publishing, idle, after random
// direct gets), and the time a restart takes before the stream answers again.
//
//	go build -o /tmp/nats-server github.com/nats-io/nats-server/v2
//	go run ./services/loadtest/streamcost -bin /tmp/nats-server -n 2500000
//
// The duplicate window is short (-dup, 2s): at a million callbacks a day the real 5-minute
// window holds a few thousand ids, while a fast publish of millions would keep them all in it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	n := flag.Int("n", 2_500_000, "messages to publish")
	size := flag.Int("size", 450, "bytes per message")
	bin := flag.String("bin", "", "nats-server executable (required)")
	dir := flag.String("dir", "", "store directory (default: a temporary one, removed at the end)")
	port := flag.Int("port", 0, "port (default: a free one)")
	dup := flag.Duration("dup", 2*time.Second, "the stream's duplicate window")
	gets := flag.Int("gets", 500, "random direct gets after publishing and after the restart")
	idle := flag.Duration("idle", 35*time.Second, "how long to wait before an idle RSS reading")
	crash := flag.Bool("crash", false, "end the first server with SIGKILL, as a crash would, instead of SIGTERM")
	flag.Parse()
	if err := run(*bin, *dir, *port, *n, *size, *gets, *dup, *idle, *crash); err != nil {
		fmt.Fprintln(os.Stderr, "streamcost:", err)
		os.Exit(1)
	}
}

func run(bin, dir string, port, n, size, gets int, dup, idle time.Duration, crash bool) error {
	if bin == "" {
		return errors.New("-bin: a nats-server executable is required")
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "streamcost")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	if port == 0 {
		port = 14000 + rand.IntN(1000)
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	srv, err := start(bin, dir, port)
	if err != nil {
		return err
	}
	defer stop(srv)
	js, nc, _, err := ready(url, time.Minute, false)
	if err != nil {
		return err
	}
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CALLBACKS", Subjects: []string{"tasks.completed.>", "callbacks.resend.>"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, MaxAge: 32 * 24 * time.Hour, Discard: jetstream.DiscardNew,
		Duplicates: dup, AllowDirect: true, MaxBytes: -1})
	if err != nil {
		return err
	}
	fmt.Printf("idle, empty: RSS %d MB\n", rss(srv)>>20)
	body := []byte(`{"customer_id":"cust_00","task":{"task_id":"t","type":"categorization","status":"completed","pad":"` +
		strings.Repeat("a", max(size-110, 0)) + `"}}`)
	t0 := time.Now()
	for i := range n {
		m := nats.NewMsg(fmt.Sprintf("tasks.completed.cust_%02d", i%16))
		m.Data = body
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("evt_%012d", i))
		for {
			if _, err := js.PublishMsgAsync(m); err == nil {
				break
			}
			<-js.PublishAsyncComplete()
		}
		if i > 0 && i%500_000 == 0 {
			fmt.Printf("%d published, %.0f/s, RSS %d MB\n", i, float64(i)/time.Since(t0).Seconds(), rss(srv)>>20)
		}
	}
	<-js.PublishAsyncComplete()
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("published %d messages of %d bytes in %s; stream %d messages, %d MB; RSS %d MB; disk %d MB (%d bytes per message)\n",
		n, len(body), time.Since(t0).Round(time.Second), info.State.Msgs, info.State.Bytes>>20, rss(srv)>>20, du(dir)>>20, du(dir)/int64(max(n, 1)))
	// The workers' durable consumer with everything acknowledged: its ack floor at the end.
	if _, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "callback-workers", AckPolicy: jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: info.State.LastSeq + 1, MaxAckPending: 1_000_000}); err != nil {
		return err
	}
	time.Sleep(idle)
	fmt.Printf("after %s idle: RSS %d MB\n", idle, rss(srv)>>20)
	directGets(ctx, st, info.State.LastSeq, gets, "after publishing")
	fmt.Printf("after the gets: RSS %d MB\n", rss(srv)>>20)
	time.Sleep(idle)
	fmt.Printf("after the gets and %s idle: RSS %d MB\n", idle, rss(srv)>>20)
	nc.Close()
	if crash {
		_ = srv.Process.Kill()
		_ = srv.Wait()
		fmt.Println("killed (SIGKILL)")
	}
	stop(srv)

	t1 := time.Now()
	if srv, err = start(bin, dir, port); err != nil {
		return err
	}
	defer stop(srv)
	js, nc, _, err = ready(url, 30*time.Minute, true)
	if err != nil {
		return err
	}
	defer nc.Close()
	fmt.Printf("restart: the stream answers after %s; RSS %d MB\n", time.Since(t1).Round(time.Millisecond), rss(srv)>>20)
	time.Sleep(idle)
	fmt.Printf("restart + %s idle: RSS %d MB\n", idle, rss(srv)>>20)
	if st, err = js.Stream(ctx, "CALLBACKS"); err != nil {
		return err
	}
	directGets(ctx, st, info.State.LastSeq, gets, "after the restart")
	fmt.Printf("after the gets: RSS %d MB\n", rss(srv)>>20)
	return nil
}

func directGets(ctx context.Context, st jetstream.Stream, last uint64, n int, label string) {
	if n < 1 || last == 0 {
		return
	}
	lat := make([]time.Duration, 0, n)
	for range n {
		seq := rand.Uint64N(last) + 1
		t := time.Now()
		_, _ = st.GetMsg(ctx, seq)
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	fmt.Printf("%s: %d direct gets of random sequences: p50 %s, p99 %s, max %s\n", label, n, lat[n/2], lat[n*99/100], lat[n-1])
}

func start(bin, dir string, port int) (*exec.Cmd, error) {
	cmd := exec.Command(bin, "-js", "-sd", dir, "-p", strconv.Itoa(port), "-a", "127.0.0.1")
	cmd.Stderr = os.Stderr
	return cmd, cmd.Start()
}

func stop(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
}

// ready connects and, with stream, waits until the stream answers (after a restart, once the
// server has restored it).
func ready(url string, within time.Duration, stream bool) (jetstream.JetStream, *nats.Conn, time.Duration, error) {
	t0 := time.Now()
	for time.Since(t0) < within {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err == nil {
			js, err := jetstream.New(nc)
			if err == nil && !stream {
				return js, nc, time.Since(t0), nil
			}
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err = js.Stream(ctx, "CALLBACKS")
				cancel()
				if err == nil {
					return js, nc, time.Since(t0), nil
				}
			}
			nc.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, nil, 0, fmt.Errorf("%s did not answer within %s", url, within)
}

func rss(cmd *exec.Cmd) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	for l := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func du(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
