// Package demo shows the local stack working end to end, as a customer and an upstream service
// would see it: it creates a demo customer through the gateway's admin API, publishes three
// task completions with pkg/publish (one plain, one whose receiver fails twice, one email),
// follows them through the gateway's customer API until each callback has succeeded, and
// prints where to look next.
package demo

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/publish"
	"refonte.ai/callbacks/pkg/stream"
	"refonte.ai/callbacks/services/devstack/internal/keyfile"
	"refonte.ai/callbacks/services/devstack/internal/wait"
)

// Config is what the demo needs to know about the stack.
type Config struct {
	GatewayURL string
	AdminToken string
	NATSURL    string
	// Stream must match the workers' stream (NATS_STREAM etc.); the default layout otherwise.
	Stream     stream.Config
	CustomerID string
	// ReceiverURL is the demo customer's default callback URL: the sample receiver.
	ReceiverURL string
	// Email is the callback target of the email task; the workers send it to the mail catcher.
	Email          string
	KeysFile       string
	MailcatcherURL string
	LogDir         string
	// Timeout bounds the wait for the three callbacks.
	Timeout time.Duration
	Out     io.Writer
	HTTP    *http.Client
	Now     func() time.Time
}

func (c *Config) setDefaults() {
	if c.Stream.Name == "" {
		c.Stream = stream.DefaultConfig()
	}
	if c.CustomerID == "" {
		c.CustomerID = "demo"
	}
	if c.Email == "" {
		c.Email = "demo@example.com"
	}
	if c.Timeout <= 0 {
		c.Timeout = 60 * time.Second
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.GatewayURL = strings.TrimRight(c.GatewayURL, "/")
}

// Validate reports a Config the demo cannot run with.
func (c Config) Validate() error {
	switch {
	case c.GatewayURL == "":
		return errors.New("demo: the gateway URL is empty")
	case c.AdminToken == "":
		return errors.New("demo: ADMIN_TOKEN is empty: the gateway's admin API is needed to create the demo customer")
	case c.NATSURL == "":
		return errors.New("demo: NATS_URL is empty")
	case c.ReceiverURL == "":
		return errors.New("demo: the receiver URL is empty")
	case c.KeysFile == "":
		return errors.New("demo: the keys file path is empty")
	}
	return nil
}

// sample is one task the demo publishes.
type sample struct {
	label    string
	taskID   string
	callback string // empty: the customer's default callback URL
	result   string // final line once it is known
	done     bool
	ok       bool
}

// Run runs the demo. It returns an error if the stack is not usable or a callback did not
// succeed within the timeout; the summary of where to look is printed either way once the
// customer exists.
func Run(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	d := &runner{cfg: cfg}
	return d.run(ctx)
}

type runner struct {
	cfg  Config
	keys keyfile.Keys
}

func (d *runner) printf(format string, args ...any) { fmt.Fprintf(d.cfg.Out, format, args...) }

func (d *runner) run(ctx context.Context) error {
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := wait.Ready(waitCtx, d.cfg.GatewayURL+"/readyz")
	cancel()
	if err != nil {
		return fmt.Errorf("the gateway is not ready: %w", err)
	}

	if err := d.ensureCustomer(ctx); err != nil {
		return err
	}
	d.printf("demo: customer %q ready; its keys are in %s\n", d.keys.CustomerID, d.cfg.KeysFile)

	now := d.cfg.Now().UTC()
	stamp := fmt.Sprintf("%s%03d", now.Format("20060102-150405"), now.Nanosecond()/1e6)
	samples := []*sample{
		{label: "plain HTTP callback (customer's default URL)", taskID: "demo-ok-" + stamp},
		{label: "flaky receiver: two 503s, then 200", taskID: "demo-flaky-" + stamp, callback: d.cfg.ReceiverURL},
		{label: "email callback to " + d.cfg.Email, taskID: "demo-email-" + stamp, callback: d.cfg.Email},
	}
	if err := d.publish(ctx, samples); err != nil {
		return err
	}
	err = d.follow(ctx, samples)
	d.summary(samples)
	return err
}

// ensureCustomer creates the demo customer, or, if it exists from an earlier run, takes its
// keys from the keys file and checks them against the gateway.
func (d *runner) ensureCustomer(ctx context.Context) error {
	body, _ := json.Marshal(map[string]string{"customer_id": d.cfg.CustomerID, "default_callback_url": d.cfg.ReceiverURL})
	code, resp, err := d.do(ctx, http.MethodPost, "/admin/v1/customers", "Bearer "+d.cfg.AdminToken, body)
	if err != nil {
		return fmt.Errorf("create the demo customer: %w", err)
	}
	switch code {
	case http.StatusCreated:
		var c customer.CreatedAnswer
		if err := json.Unmarshal(resp, &c); err != nil || c.APIKey == "" || c.SigningSecret == "" || c.CallbackAuthKey == "" {
			return fmt.Errorf("create the demo customer: unexpected answer %s", excerpt(resp))
		}
		d.keys = keyfile.Keys{CustomerID: c.CustomerID, APIKey: c.APIKey, CallbackAuthKey: c.CallbackAuthKey,
			SigningSecret: c.SigningSecret, TestAPIKey: c.TestAPIKey, TestCallbackAuthKey: c.TestCallbackAuthKey,
			TestSigningSecret: c.TestSigningSecret, DefaultCallbackURL: c.DefaultCallbackURL}
		if err := keyfile.Write(d.cfg.KeysFile, d.keys); err != nil {
			return fmt.Errorf("write the demo keys: %w", err)
		}
		d.printf("demo: created customer %q through POST /admin/v1/customers\n", c.CustomerID)
		return nil
	case http.StatusConflict:
		k, err := keyfile.Read(d.cfg.KeysFile)
		if err != nil || k.CustomerID != d.cfg.CustomerID || k.APIKey == "" {
			return fmt.Errorf("customer %q already exists in this Redis but its keys are not in %s (%v): "+
				"run `go tool task clean` (it deletes the dev stack's Redis keys and .stack/) and then `go tool task up`",
				d.cfg.CustomerID, d.cfg.KeysFile, err)
		}
		d.keys = k
		code, resp, err := d.do(ctx, http.MethodGet, "/v1/profile", d.basic(), nil)
		if err != nil {
			return fmt.Errorf("read the demo customer's profile: %w", err)
		}
		if code != http.StatusOK {
			return fmt.Errorf("customer %q exists but the API key in %s is refused (%d %s): run `go tool task clean` and `go tool task up`",
				d.cfg.CustomerID, d.cfg.KeysFile, code, excerpt(resp))
		}
		var p struct {
			DefaultCallbackURL string `json:"default_callback_url"`
		}
		_ = json.Unmarshal(resp, &p)
		if p.DefaultCallbackURL != d.cfg.ReceiverURL {
			body, _ := json.Marshal(map[string]string{"default_callback_url": d.cfg.ReceiverURL})
			if code, resp, err := d.do(ctx, http.MethodPatch, "/v1/profile", d.basic(), body); err != nil || code != http.StatusOK {
				return fmt.Errorf("set the demo customer's default callback URL: %d %s %v", code, excerpt(resp), err)
			}
		}
		d.printf("demo: customer %q exists from an earlier run; reusing the keys in %s\n", d.cfg.CustomerID, d.cfg.KeysFile)
		return nil
	default:
		return fmt.Errorf("create the demo customer: POST /admin/v1/customers answered %d %s", code, excerpt(resp))
	}
}

func (d *runner) publish(ctx context.Context, samples []*sample) error {
	nc, err := nats.Connect(d.cfg.NATSURL, nats.Name("refonte-devstack-demo"), nats.Timeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", d.cfg.NATSURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	pub, err := publish.New(ctx, js, d.cfg.Stream)
	if err != nil {
		return err
	}
	now := d.cfg.Now().UTC()
	for _, s := range samples {
		task := map[string]any{
			"task_id":      s.taskID,
			"type":         "categorization",
			"status":       "completed",
			"instruction":  "Is this object red or blue?",
			"params":       map[string]any{"attachment_type": "text", "attachment": "tomato", "categories": []string{"red", "blue"}},
			"response":     map[string]any{"category": "red"},
			"metadata":     map[string]any{"source": "devstack demo", "case": s.label},
			"created_at":   now.Add(-2 * time.Minute).Format(time.RFC3339Nano),
			"completed_at": now.Format(time.RFC3339Nano),
		}
		if s.callback != "" {
			task["callback_url"] = s.callback
		}
		raw, err := json.Marshal(task)
		if err != nil {
			return fmt.Errorf("encode task %s: %w", s.taskID, err)
		}
		ack, err := pub.Publish(ctx, publish.Completion{CustomerID: d.keys.CustomerID, Task: raw})
		if err != nil {
			return fmt.Errorf("publish %s: %w", s.taskID, err)
		}
		d.printf("demo: published %-34s  %s (stream %s, seq %d)\n", s.taskID, s.label, ack.Stream, ack.Sequence)
	}
	return nil
}

// follow polls the gateway until every sample has callback_succeeded, one has failed for good,
// or the timeout passes.
func (d *runner) follow(ctx context.Context, samples []*sample) error {
	d.printf("demo: waiting up to %s for the three callbacks (GET /v1/task/{id} until callback_succeeded is true)\n", d.cfg.Timeout)
	start := d.cfg.Now()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	last := map[string]string{}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		pending := 0
		for _, s := range samples {
			if s.done {
				continue
			}
			line, done, ok := d.check(ctx, s)
			if line != "" && line != last[s.taskID] {
				d.printf("  %5.1fs  %-34s %s\n", d.cfg.Now().Sub(start).Seconds(), s.taskID, line)
				last[s.taskID] = line
			}
			if done {
				s.done, s.ok, s.result = true, ok, line
				continue
			}
			pending++
		}
		if pending == 0 {
			break
		}
		select {
		case <-ctx.Done():
			var late []string
			for _, s := range samples {
				if !s.done {
					late = append(late, s.taskID+" ("+last[s.taskID]+")")
				}
			}
			return fmt.Errorf("callbacks not delivered within %s: %s; the workers' logs (%s/worker*.log) say why",
				d.cfg.Timeout, strings.Join(late, "; "), d.cfg.LogDir)
		case <-tick.C:
		}
	}
	var failed []string
	for _, s := range samples {
		if !s.ok {
			failed = append(failed, s.taskID+": "+s.result)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d callback(s) failed: %s; the workers' logs (%s/worker*.log) say why",
			len(failed), strings.Join(failed, "; "), d.cfg.LogDir)
	}
	d.printf("demo: all three callbacks delivered in %.1fs\n", d.cfg.Now().Sub(start).Seconds())
	return nil
}

// check reads one task through the customer API and describes where its callback stands; an
// empty line means nothing new to report.
func (d *runner) check(ctx context.Context, s *sample) (line string, done, ok bool) {
	code, body, err := d.do(ctx, http.MethodGet, "/v1/task/"+url.PathEscape(s.taskID), d.basic(), nil)
	switch {
	case err != nil:
		return "gateway unreachable: " + err.Error(), false, false
	case code == http.StatusNotFound:
		return "published; not picked up by a worker yet", false, false
	case code != http.StatusOK:
		return fmt.Sprintf("GET /v1/task answered %d %s", code, excerpt(body)), false, false
	}
	var task struct {
		Succeeded *bool `json:"callback_succeeded"`
	}
	if err := json.Unmarshal(body, &task); err != nil {
		return "GET /v1/task answered unreadable JSON", false, false
	}
	var cb struct {
		State    string `json:"state"`
		Target   string `json:"target"`
		Attempts []struct {
			StatusCode int    `json:"status_code"`
			Error      string `json:"error"`
		} `json:"attempts"`
	}
	detail := ""
	if code, body, err := d.do(ctx, http.MethodGet, "/v1/task/"+url.PathEscape(s.taskID)+"/callback", d.basic(), nil); err == nil && code == http.StatusOK {
		if json.Unmarshal(body, &cb) == nil {
			detail = fmt.Sprintf("state=%s attempts=%d", cb.State, len(cb.Attempts))
			if n := len(cb.Attempts); n > 0 {
				if a := cb.Attempts[n-1]; a.Error != "" {
					detail += " (last: " + a.Error + ")"
				} else {
					detail += fmt.Sprintf(" (last: %d)", a.StatusCode)
				}
			}
		}
	}
	switch {
	case task.Succeeded == nil && (cb.State == "succeeded" || cb.State == "failed"):
		// The attempt log was read after the task and is one step ahead: report next round.
		return "", false, false
	case task.Succeeded == nil:
		return "delivering: " + detail, false, false
	case *task.Succeeded:
		return "callback_succeeded=true  " + detail, true, true
	default:
		return "callback_succeeded=false " + detail, true, false
	}
}

func (d *runner) summary(samples []*sample) {
	g := d.cfg.GatewayURL
	key := d.keys.APIKey
	first := samples[0].taskID
	for _, s := range samples {
		if strings.Contains(s.taskID, "flaky") {
			first = s.taskID
		}
	}
	d.printf(`
Where to look
  gateway         %[1]s   (health: %[1]s/readyz, metrics: %[1]s/metrics)
  dashboard       %[1]s/dashboard   (sign in with the demo API key)
  demo API key    %[2]s   (all demo keys: %[3]s; source it in a shell)
  read a task     curl -s -u '%[2]s:' %[1]s/v1/task/%[4]s
  read attempts   curl -s -u '%[2]s:' %[1]s/v1/task/%[4]s/callback
  resend          curl -s -u '%[2]s:' -X POST %[1]s/v1/task/%[4]s/send-callback
  receiver        %[5]s   (callbacks it answered, newest first)
  mail catcher    %[6]s   (stand-in for Mailpit; SMTP on the workers' SMTP_ADDR)
  logs            %[7]s/*.log   (follow them: go tool task logs)
  stop it all     go tool task down
`, g, key, d.cfg.KeysFile, first, receiverPage(d.cfg.ReceiverURL), d.cfg.MailcatcherURL, d.cfg.LogDir)
}

// receiverPage is the receiver's listing page: its root.
func receiverPage(callbackURL string) string {
	u, err := url.Parse(callbackURL)
	if err != nil {
		return callbackURL
	}
	u.Path, u.RawQuery = "/", ""
	return u.String()
}

// basic is the customer API's auth: the API key as the Basic username, an empty password.
func (d *runner) basic() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(d.keys.APIKey+":"))
}

func (d *runner) do(ctx context.Context, method, path, auth string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, d.cfg.GatewayURL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", auth)
	resp, err := d.cfg.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

func excerpt(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
