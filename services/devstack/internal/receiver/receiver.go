// Package receiver is the sample customer endpoint of the local stack. It checks every callback
// the way a careful customer would (the refonte-ai--callback-auth header, then the Standard
// Webhooks signature with the official Go library), logs it, and answers 200 — except for tasks
// whose id contains "flaky", which get 503 on their first attempts so the retry path shows.
package receiver

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/services/devstack/internal/keyfile"
)

// AuthHeader carries the customer's Live Callback Auth Key (docs/receiving.md).
const AuthHeader = "refonte-ai--callback-auth"

// MaxBody bounds a callback body the receiver reads: a callback carries its task and, once more,
// the task's response, so an event at the default EVENT_MAX_BYTES (1 MiB) makes a body of up to
// about 2 MiB.
const MaxBody = 4 << 20

// keep is how many callbacks the listing page remembers.
const keep = 500

// Config configures a Receiver.
type Config struct {
	// Keys returns the customer's keys. It is called for every callback, so the receiver can
	// start before the demo customer exists and picks the keys up once they are written.
	Keys func() (keyfile.Keys, error)
	// FlakyFailures is how many times a callback whose task_id contains "flaky" is answered 503
	// (counted per webhook-id) before it is accepted.
	FlakyFailures int
	Log           *slog.Logger
	Now           func() time.Time
}

func (c *Config) setDefaults() {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports a Config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Keys == nil:
		return errors.New("receiver: Keys is nil")
	case c.FlakyFailures < 0:
		return errors.New("receiver: FlakyFailures is negative")
	}
	return nil
}

// Callback is one request the receiver answered.
type Callback struct {
	At        time.Time `json:"at"`
	WebhookID string    `json:"webhook_id"`
	TaskID    string    `json:"task_id"`
	Status    string    `json:"status"`
	// Environment is whose credentials the callback carried: live or test.
	Environment string `json:"environment"`
	// Attempt counts the verified requests seen for this webhook-id, this one included.
	Attempt int    `json:"attempt"`
	Code    int    `json:"code"`
	Note    string `json:"note"`
}

// Receiver is the sample endpoint.
type Receiver struct {
	cfg Config

	mu       sync.Mutex
	attempts map[string]int
	received []Callback
}

// New returns a Receiver.
func New(cfg Config) (*Receiver, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Receiver{cfg: cfg, attempts: map[string]int{}}, nil
}

// Handler serves POST (any path) for callbacks, GET / for a plain-text list of what arrived,
// GET /callbacks.json for the same as JSON, and GET /healthz.
func (r *Receiver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /callbacks.json", r.listJSON)
	mux.HandleFunc("GET /{$}", r.listText)
	mux.HandleFunc("POST /", r.callback)
	return mux
}

// Received returns the callbacks answered so far, oldest first.
func (r *Receiver) Received() []Callback {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Callback(nil), r.received...)
}

func (r *Receiver) callback(w http.ResponseWriter, req *http.Request) {
	cb := Callback{At: r.cfg.Now().UTC(), WebhookID: req.Header.Get(standardwebhooks.HeaderWebhookID)}
	code, note := r.check(req, &cb)
	cb.Code, cb.Note = code, note
	r.record(cb)
	level := slog.LevelInfo
	if code >= 300 {
		level = slog.LevelWarn
	}
	r.cfg.Log.Log(req.Context(), level, "callback",
		"code", code, "task_id", cb.TaskID, "status", cb.Status, "environment", cb.Environment, "webhook_id", cb.WebhookID,
		"attempt_seen", cb.Attempt, "note", note)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"received": code < 300, "note": note})
}

// check verifies one callback and decides the answer. It fills cb with what it learns.
func (r *Receiver) check(req *http.Request, cb *Callback) (int, string) {
	body, err := io.ReadAll(io.LimitReader(req.Body, MaxBody+1))
	if err != nil {
		return http.StatusBadRequest, "reading the body: " + err.Error()
	}
	if len(body) > MaxBody {
		return http.StatusRequestEntityTooLarge, "body over 1 MiB"
	}
	keys, err := r.cfg.Keys()
	if err != nil {
		// No keys yet: refuse, so the platform retries once the demo has written them.
		return http.StatusServiceUnavailable, "no customer keys yet: " + err.Error()
	}
	// The auth key says which environment the callback claims; the signature must then verify
	// with that environment's secret, never the other's.
	auth := []byte(req.Header.Get(AuthHeader))
	secret := ""
	switch {
	case subtle.ConstantTimeCompare(auth, []byte(keys.CallbackAuthKey)) == 1:
		cb.Environment, secret = "live", keys.SigningSecret
	case keys.TestCallbackAuthKey != "" && subtle.ConstantTimeCompare(auth, []byte(keys.TestCallbackAuthKey)) == 1:
		cb.Environment, secret = "test", keys.TestSigningSecret
	default:
		return http.StatusUnauthorized, "wrong or missing " + AuthHeader + " header"
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return http.StatusInternalServerError, "the signing secret is unusable: " + err.Error()
	}
	if err := wh.Verify(body, req.Header); err != nil {
		return http.StatusUnauthorized, "signature: " + err.Error()
	}
	var payload struct {
		TaskID string `json:"task_id"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(body, &payload); err != nil {
		return http.StatusBadRequest, "body is not the callback JSON: " + err.Error()
	}
	cb.TaskID, cb.Status = payload.TaskID, payload.Status

	r.mu.Lock()
	r.attempts[cb.WebhookID]++
	cb.Attempt = r.attempts[cb.WebhookID]
	r.mu.Unlock()

	if strings.Contains(cb.TaskID, "flaky") && cb.Attempt <= r.cfg.FlakyFailures {
		return http.StatusServiceUnavailable, fmt.Sprintf("verified; flaky task: failing attempt %d of %d on purpose", cb.Attempt, r.cfg.FlakyFailures)
	}
	return http.StatusOK, "verified: " + cb.Environment + " auth header and signature match"
}

func (r *Receiver) record(cb Callback) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received = append(r.received, cb)
	if len(r.received) > keep {
		r.received = append([]Callback(nil), r.received[len(r.received)-keep:]...)
	}
}

func (r *Receiver) listText(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	cbs := r.Received()
	fmt.Fprintf(w, "Sample receiver: %d callback request(s), newest first.\n\n", len(cbs))
	for i := len(cbs) - 1; i >= 0; i-- {
		c := cbs[i]
		fmt.Fprintf(w, "%s  %d  task=%s status=%s environment=%s webhook-id=%s attempt=%d  %s\n",
			c.At.Format(time.RFC3339), c.Code, c.TaskID, c.Status, c.Environment, c.WebhookID, c.Attempt, c.Note)
	}
}

func (r *Receiver) listJSON(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(r.Received())
}
