package endpoint_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/endpoint"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/status"
	"refonte.ai/callbacks/pkg/target"
)

var ctx = context.Background()

func TestParse_gives_scheme_host_and_port_or_a_mail_domain(t *testing.T) {
	for in, want := range map[string]string{
		"https://Example.COM":               "https://example.com:443",
		"https://example.com/hook?x=1#y":    "https://example.com:443",
		"https://example.com:443":           "https://example.com:443",
		"http://example.com":                "http://example.com:80",
		"HTTP://example.com:8080/a":         "http://example.com:8080",
		"https://user:pw@example.com:9/":    "https://example.com:9",
		"http://[::1]:8080/x":               "http://[::1]:8080",
		"a@Mail.Example":                    "mail.example",
		"mailto:a@mail.example":             "mail.example",
		"mail.example":                      "mail.example",
		"MAIL.example":                      "mail.example",
		"https://127.0.0.1:42001/callbacks": "https://127.0.0.1:42001",
	} {
		got, err := endpoint.Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "ftp://example.com", "https://", "a b", "exa_mple.com", "-a.example", "a..b",
		"https://example.com\r\nX: y", "Bob <a@b.example>", string(make([]byte, 400))} {
		if got, err := endpoint.Parse(in); !errors.Is(err, endpoint.ErrInvalid) {
			t.Errorf("Parse(%q) = %q, %v; want ErrInvalid", in, got, err)
		}
	}
}

// The worker names an endpoint from the target it delivers to; the customer names it in the API.
// Both must agree.
func TestOf_agrees_with_Parse(t *testing.T) {
	for _, raw := range []string{"https://Example.com/hook", "http://example.com:8080/x", "mailto:A@b.example", "a@b.example"} {
		tg, err := target.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := endpoint.Parse(raw)
		if err != nil || endpoint.Of(tg) != parsed {
			t.Errorf("%q: Of = %q, Parse = %q (%v)", raw, endpoint.Of(tg), parsed, err)
		}
	}
}

type fixture struct {
	store     *endpoint.Store
	statuses  *status.Store
	customers *customer.Store
	policy    endpoint.Policy
}

func newFixture(t *testing.T) fixture {
	rdb, prefix := testenv.Redis(t)
	f := fixture{store: endpoint.NewStore(rdb, prefix), statuses: status.NewStore(rdb, prefix, time.Hour),
		customers: customer.NewStore(rdb, prefix),
		policy:    endpoint.Policy{AlertAfter: 5, AlertInterval: time.Hour, Retention: time.Hour}}
	if _, err := f.customers.Create(ctx, "c1", ""); err != nil {
		t.Fatal(err)
	}
	to := "ops@b.example"
	if _, err := f.customers.SetAlerts(ctx, "c1", environment.Live, &to, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

// observe records one attempt's outcome the way the worker does: attached to its status write.
func (f fixture) observe(t *testing.T, task string, chain uint64, ok bool, at time.Time) endpoint.Verdict {
	t.Helper()
	d := status.Delivery{CustomerID: "c1", TaskID: task, WebhookID: "w" + task, Chain: chain}
	b, err := f.statuses.Begin(ctx, d, "https://x.example/", 100, at)
	if err != nil {
		t.Fatal(err)
	}
	o := endpoint.Observation{CustomerID: "c1", Env: environment.Live, Endpoint: "https://x.example:443", OK: ok, At: at}
	outcome := status.OutcomeSucceeded
	if !ok {
		o.Error, outcome = "HTTP 503", status.OutcomeRetry
	}
	keys, args := f.store.Call(o, f.policy)
	_, reply, err := f.statuses.FinishAttached(ctx, d, "https://x.example/", outcome,
		&status.AttemptLog{Attempt: b.Attempt, At: at}, at.Add(time.Second), at, &status.Attached{Script: endpoint.Script, Keys: keys, Args: args})
	if err != nil || reply.Err != nil {
		t.Fatal(err, reply.Err)
	}
	v, err := endpoint.ParseVerdict(reply.Val)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Many workers' attempts at once share pipelines and batched script calls: however they
// interleave, exactly one of them raises the alert.
func TestHealth_concurrent_failures_raise_exactly_one_alert(t *testing.T) {
	f := newFixture(t)
	const tasks, each = 40, 5
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		alerts int
	)
	now := time.Now()
	for i := range tasks {
		wg.Go(func() {
			for range each {
				if v := f.observe(t, fmt.Sprintf("t%d", i), uint64(i+1), false, now); v.Alert == endpoint.Failure {
					mu.Lock()
					alerts++
					mu.Unlock()
					if v.Failures != f.policy.AlertAfter || v.AlertEmail != "ops@b.example" || v.LastError != "HTTP 503" {
						t.Errorf("alert verdict %+v; want it raised at failure %d for ops@b.example", v, f.policy.AlertAfter)
					}
				}
			}
		})
	}
	wg.Wait()
	if alerts != 1 {
		t.Fatalf("%d alerts raised, want 1", alerts)
	}
	list, err := f.store.List(ctx, "c1", environment.Live)
	if err != nil || len(list) != 1 || list[0].State != endpoint.Failing || list[0].ConsecutiveFailures != tasks*each {
		t.Fatalf("list %+v, %v; want one failing endpoint with %d failures", list, err, tasks*each)
	}
	// Within the interval, more failures raise nothing; after it, one reminder.
	if v := f.observe(t, "late", 1000, false, now.Add(time.Minute)); v.Alert != endpoint.NoAlert {
		t.Errorf("a failure within the interval raised %v", v.Alert)
	}
	if v := f.observe(t, "later", 1001, false, now.Add(2*time.Hour)); v.Alert != endpoint.Failure {
		t.Errorf("a failure after the interval raised %v, want a reminder", v.Alert)
	}
	// The first success recovers it once.
	if v := f.observe(t, "ok1", 2000, true, now.Add(3*time.Hour)); v.Alert != endpoint.Recovered || v.Transition != endpoint.BecameHealthy {
		t.Errorf("the first success gave %+v, want the recovery", v)
	}
	if v := f.observe(t, "ok2", 2001, true, now.Add(4*time.Hour)); v.Alert != endpoint.NoAlert {
		t.Errorf("a second success raised %v", v.Alert)
	}
}

func TestHealth_a_released_alert_is_raised_by_the_next_failure(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	var raised time.Time
	for i := range 5 {
		at := now.Add(time.Duration(i) * time.Millisecond)
		if v := f.observe(t, "t1", 1, false, at); v.Alert == endpoint.Failure {
			raised = at
		}
	}
	if raised.IsZero() {
		t.Fatal("no alert at the fifth failure")
	}
	if err := f.store.ReleaseAlert(ctx, "c1", environment.Live, "https://x.example:443", raised); err != nil {
		t.Fatal(err)
	}
	if v := f.observe(t, "t1", 1, false, now.Add(time.Second)); v.Alert != endpoint.Failure {
		t.Errorf("the failure after a release raised %v, want the alert again", v.Alert)
	}
}

func TestPause_shows_in_the_profile_and_the_list_and_resume_clears_it(t *testing.T) {
	f := newFixture(t)
	ep := "https://x.example:443"
	before, _ := f.customers.Get(ctx, "c1", environment.Live)
	at := time.UnixMilli(time.Now().UnixMilli()).UTC()
	if err := f.store.Pause(ctx, "c1", environment.Live, ep, at); err != nil {
		t.Fatal(err)
	}
	p, _ := f.customers.Get(ctx, "c1", environment.Live)
	if pause, ok := p.Paused[ep]; !ok || !pause.At.Equal(at) || pause.Auto || p.Version <= before.Version {
		t.Fatalf("profile paused %+v, version %d (was %d); want the pause and a new version", p.Paused, p.Version, before.Version)
	}
	if test, _ := f.customers.Get(ctx, "c1", environment.Test); len(test.Paused) != 0 {
		t.Errorf("the test environment has pauses %v; want none", test.Paused)
	}
	list, _ := f.store.List(ctx, "c1", environment.Live)
	if len(list) != 1 || list[0].State != endpoint.Paused || list[0].PausedBy != "customer" {
		t.Fatalf("list %+v; want the paused endpoint", list)
	}
	if err := f.store.Resume(ctx, "c1", environment.Live, ep); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.customers.Get(ctx, "c1", environment.Live); len(p.Paused) != 0 {
		t.Errorf("still paused after resume: %v", p.Paused)
	}
	if list, _ := f.store.List(ctx, "c1", environment.Live); len(list) != 0 {
		t.Errorf("list %+v after resume; want nothing (no health recorded)", list)
	}
	if err := f.store.Pause(ctx, "nobody", environment.Live, ep, at); !errors.Is(err, endpoint.ErrNotFound) {
		t.Errorf("pausing for an unknown customer: %v, want ErrNotFound", err)
	}
}

// After a resume, an automatic pause waits its whole time of uninterrupted failure again.
func TestResume_restarts_the_uninterrupted_failure(t *testing.T) {
	f := newFixture(t)
	on := true
	if _, err := f.customers.SetAlerts(ctx, "c1", environment.Live, nil, &on); err != nil {
		t.Fatal(err)
	}
	f.policy.AutoPauseAfter = time.Hour
	start := time.Now().Add(-3 * time.Hour)
	f.observe(t, "t1", 1, false, start)
	if v := f.observe(t, "t1", 1, false, start.Add(2*time.Hour)); !v.AutoPaused {
		t.Fatalf("two hours of failure: %+v, want the endpoint paused", v)
	}
	if err := f.store.Resume(ctx, "c1", environment.Live, "https://x.example:443"); err != nil {
		t.Fatal(err)
	}
	if v := f.observe(t, "t1", 1, false, time.Now().Add(time.Minute)); v.AutoPaused || v.Failures != 3 {
		t.Errorf("the first failure after the resume: %+v; want no pause, the failures still counted", v)
	}
	if v := f.observe(t, "t1", 1, false, time.Now().Add(2*time.Hour)); !v.AutoPaused {
		t.Errorf("an hour of failure after the resume: %+v, want the endpoint paused again", v)
	}
}
