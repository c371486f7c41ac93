package load

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/signing"
)

func TestTracker_counts_losses_duplicates_and_retries(t *testing.T) {
	tr := NewTracker(200_000)
	base := time.Now().UnixNano()
	for seq := range int64(5) {
		tr.Published(seq, base)
	}
	tr.Published(chunkSize+1, base) // a second chunk
	tr.PublishFailed(4)
	tr.Arrived(0, base, base+int64(time.Millisecond), true)
	tr.Arrived(0, base, base+int64(2*time.Millisecond), true) // a duplicate
	tr.Arrived(1, base, base+int64(3*time.Millisecond), false)
	tr.Arrived(1, base, base+int64(10*time.Millisecond), true) // a retry that succeeded
	tr.Arrived(2, base, base+int64(5*time.Millisecond), false) // awaiting its retry
	tr.Arrived(chunkSize+1, base, base+int64(7*time.Millisecond), true)
	if tr.Arrived(300_000, base, base, true) {
		t.Error("an unknown seq was accepted")
	}
	// 3 never arrived: lost. 4 was refused by the stream: neither lost nor delivered.
	s := tr.Summarize(10, 0)
	want := Counts{Published: 6, PublishErrors: 1, Delivered: 3, Requests: 6, FailedAnswers: 2,
		Duplicates: 1, Foreign: 1, Lost: 1, AwaitingRetry: 1}
	if s.Counts != want {
		t.Errorf("counts\n got %+v\nwant %+v", s.Counts, want)
	}
	if len(s.LostSeqs) != 1 || s.LostSeqs[0] != 3 {
		t.Errorf("lost sample %v, want [3]", s.LostSeqs)
	}
	if s.Success.N != 3 || s.Success.Max != 10 || s.First.N != 4 {
		t.Errorf("latencies first %+v success %+v", s.First, s.Success)
	}
	if tr.Settled() {
		t.Error("settled with one callback lost and one awaiting retry")
	}
	if got := tr.Outstanding(); got != 1 {
		t.Errorf("outstanding %d, want 1 (seq 3)", got)
	}
}

func TestPercentiles_nearest_rank(t *testing.T) {
	var ns []int64
	for i := int64(1); i <= 100; i++ {
		ns = append(ns, i*int64(time.Millisecond))
	}
	p := percentiles(ns)
	if p.P50 != 50 || p.P90 != 90 || p.P99 != 99 || p.Max != 100 || p.N != 100 {
		t.Errorf("percentiles %+v", p)
	}
	if (percentiles(nil) != Percentiles{}) {
		t.Error("empty input gives figures")
	}
}

func TestBody_is_a_valid_event_with_its_publish_time(t *testing.T) {
	raw := Body("lt_run_0", taskID(42), 1234567890123, "http://127.0.0.1:1/callback", "xx")
	var ev struct {
		CustomerID string `json:"customer_id"`
		Task       struct {
			TaskID        string         `json:"task_id"`
			Status        string         `json:"status"`
			CallbackURL   string         `json:"callback_url"`
			PublishedAtNs int64          `json:"published_at_ns"`
			Metadata      map[string]any `json:"metadata"`
		} `json:"task"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	if ev.CustomerID != "lt_run_0" || ev.Task.TaskID != "lt_42" || ev.Task.Status != "completed" ||
		ev.Task.PublishedAtNs != 1234567890123 || ev.Task.Metadata["pad"] != "xx" {
		t.Errorf("decoded %+v", ev)
	}
	if _, err := event.Decode(raw); err != nil {
		t.Errorf("the worker would refuse it: %v", err)
	}
	if got := publishedAt(raw, 0); got != 1234567890123 {
		t.Errorf("publishedAt = %d", got)
	}
	if got := publishedAt([]byte(`{"task":{}}`), 7); got != 7 {
		t.Errorf("publishedAt without the field = %d, want the fallback", got)
	}
}

func TestParseSeq(t *testing.T) {
	for id, want := range map[string]int64{"lt-abc-0": 0, "lt-abc-123": 123, "lt-abc-": -1, "lt-xyz-1": -1,
		"lt-abc-1x": -1, "lt-abc--1": -1} {
		got, ok := parseSeq(id, "lt-abc-")
		if (want < 0 && ok) || (want >= 0 && (!ok || got != want)) {
			t.Errorf("parseSeq(%q) = %d, %v; want %d", id, got, ok, want)
		}
	}
}

// The receiver records what it answers, and its checks accept a correctly signed callback and
// catch a badly signed one.
func TestReceiver_records_and_checks(t *testing.T) {
	secret := signing.NewSecret()
	tr := NewTracker(100)
	rc, err := NewReceiver(tr, "lt-r-", Behaviour{FailStatus: 500}, 2, []Customer{{ID: "c", AuthKey: "cbk_1",
		SigningSecret: secret}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if len(rc.URLs()) != 2 || rc.URLs()[0] == rc.URLs()[1] {
		t.Fatalf("urls %v", rc.URLs())
	}
	key, _ := signing.ParseSecret(secret)
	post := func(seq int64, sig string) int {
		body := []byte(`{"task":{"task_id":"` + taskID(seq) + `","published_at_ns":` +
			strconv.FormatInt(time.Now().UnixNano(), 10) + `},"task_id":"` + taskID(seq) + `","status":"completed"}`)
		id := "lt-r-" + strconv.FormatInt(seq, 10)
		ts := time.Now().Unix()
		if sig == "" {
			sig = signing.Sign(id, ts, body, key)
		}
		req, _ := http.NewRequest(http.MethodPost, rc.URLs()[seq%2], bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "Refonte-Callbacks/test")
		req.Header.Set("refonte-ai--callback-auth", "cbk_1")
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		req.Header.Set("webhook-signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tr.Published(0, time.Now().UnixNano())
	tr.Published(1, time.Now().UnixNano())
	if code := post(0, ""); code != 200 {
		t.Errorf("status %d", code)
	}
	if code := post(1, "v1,AAAA"); code != 200 {
		t.Errorf("status %d", code)
	}
	checked, bad, samples := rc.Checks()
	if checked != 2 || bad != 1 || len(samples) != 1 || !strings.Contains(samples[0], "signature") {
		t.Errorf("checks %d, bad %d, %v; want 2, 1 (a signature problem)", checked, bad, samples)
	}
	if s := tr.Summarize(0, 0); s.Delivered != 2 || s.Lost != 0 {
		t.Errorf("tracker %+v", s.Counts)
	}
}

func TestConfig_refuses_unbounded_runs(t *testing.T) {
	c := Defaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c.Duration, c.Count = 0, 0
	if c.Validate() == nil {
		t.Error("a run without -duration or -count was accepted")
	}
	c = Defaults()
	c.Receiver.Fail, c.Receiver.Slow = 0.7, 0.5
	if c.Validate() == nil {
		t.Error("shares over 1 were accepted")
	}
}

// A soak's report shows the workers' RSS once a minute and at the end; short runs show none.
func TestRSSByMinute(t *testing.T) {
	var tl []Sample
	for sec := 0.0; sec <= 150; sec += 10 {
		tl = append(tl, Sample{T: sec, WorkerRSS: []int64{int64(40+sec/10) << 20, 50 << 20}})
	}
	if got, want := rssByMinute(tl), " 60s 46/50 120s 52/50 150s 55/50"; got != want {
		t.Errorf("rssByMinute = %q, want %q", got, want)
	}
	if got := rssByMinute(tl[:5]); got != "" {
		t.Errorf("a 40-second run gave %q, want nothing", got)
	}
}
