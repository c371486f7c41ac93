// Throwaway: what holding N messages of ~450 bytes costs nats-server.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func rss(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n * 1024
		}
	}
	return 0
}

func du(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func start(bin, dir string, port int) *exec.Cmd {
	cmd := exec.Command(bin, "-js", "-sd", dir, "-p", strconv.Itoa(port), "-a", "127.0.0.1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	return cmd
}

func waitReady(url string, deadline time.Duration) (jetstream.JetStream, *nats.Conn, time.Duration) {
	t0 := time.Now()
	for time.Since(t0) < deadline {
		nc, err := nats.Connect(url, nats.Timeout(time.Second))
		if err == nil {
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = js.Stream(ctx, "CALLBACKS")
			cancel()
			if err == nil {
				return js, nc, time.Since(t0)
			}
			nc.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	panic("not ready")
}

func main() {
	n := flag.Int("n", 2_500_000, "messages")
	size := flag.Int("size", 450, "bytes")
	bin := flag.String("bin", "/tmp/i20/ns", "nats-server")
	dir := flag.String("dir", "/tmp/i20/nsdata", "store")
	port := flag.Int("port", 14999, "port")
	flag.Parse()
	os.RemoveAll(*dir)
	url := fmt.Sprintf("nats://127.0.0.1:%d", *port)
	cmd := start(*bin, *dir, *port)
	time.Sleep(300 * time.Millisecond)
	nc, err := nats.Connect(url)
	if err != nil {
		panic(err)
	}
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "CALLBACKS", Subjects: []string{"tasks.completed.>", "callbacks.resend.>"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, MaxAge: 32 * 24 * time.Hour, Discard: jetstream.DiscardNew,
		Duplicates: 5 * time.Minute, AllowDirect: true, MaxBytes: -1})
	if err != nil {
		panic(err)
	}
	fmt.Printf("idle RSS %d MB\n", rss(cmd.Process.Pid)>>20)
	body := []byte(`{"customer_id":"cust_00","task":{"task_id":"XXXXXXXXXXXXXXXX","type":"categorization","status":"completed","pad":"` + strings.Repeat("a", *size-150) + `"}}`)
	t0 := time.Now()
	for i := 0; i < *n; i++ {
		m := nats.NewMsg(fmt.Sprintf("tasks.completed.cust_%02d", i%16))
		m.Data = body
		m.Header.Set("Nats-Msg-Id", fmt.Sprintf("evt_%012d", i))
		for {
			if _, err := js.PublishMsgAsync(m); err == nil {
				break
			}
			<-js.PublishAsyncComplete()
		}
		if i%500000 == 0 && i > 0 {
			fmt.Printf("%d published, %.0f/s, RSS %d MB\n", i, float64(i)/time.Since(t0).Seconds(), rss(cmd.Process.Pid)>>20)
		}
	}
	<-js.PublishAsyncComplete()
	el := time.Since(t0)
	st, _ := js.Stream(ctx, "CALLBACKS")
	info, _ := st.Info(ctx)
	fmt.Printf("published %d x %d B in %s (%.0f/s); stream %d msgs %d MB; RSS %d MB; disk %d MB\n", *n, len(body), el.Round(time.Second),
		float64(*n)/el.Seconds(), info.State.Msgs, info.State.Bytes>>20, rss(cmd.Process.Pid)>>20, du(*dir)>>20)
	// The workers' durable consumer, all acknowledged: its ack floor at the end.
	_, err = st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: info.State.LastSeq + 1, MaxAckPending: 1_000_000})
	if err != nil {
		panic(err)
	}
	directGets := func(label string) {
		var lat []time.Duration
		for i := 0; i < 2000; i++ {
			seq := uint64(rand.Int63n(int64(info.State.LastSeq))) + 1
			t := time.Now()
			if _, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject("")); err != nil {
				_ = err
			}
			lat = append(lat, time.Since(t))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		fmt.Printf("%s: direct get of random sequences: p50 %s p99 %s max %s\n", label, lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
	}
	directGets("warm")
	fmt.Printf("after gets RSS %d MB\n", rss(cmd.Process.Pid)>>20)
	nc.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	// Drop the page cache's view is not possible without root tools; restart as is.
	t1 := time.Now()
	cmd = start(*bin, *dir, *port)
	js, nc, ready := waitReady(url, 10*time.Minute)
	fmt.Printf("restart: ready (stream answers) after %s (process start to first stream info %s); RSS %d MB\n", ready.Round(time.Millisecond), time.Since(t1).Round(time.Millisecond), rss(cmd.Process.Pid)>>20)
	st, _ = js.Stream(ctx, "CALLBACKS")
	info, _ = st.Info(ctx)
	fmt.Printf("after restart: %d msgs\n", info.State.Msgs)
	directGets("after restart")
	time.Sleep(5 * time.Second)
	fmt.Printf("after restart + 5s RSS %d MB\n", rss(cmd.Process.Pid)>>20)
	nc.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}
