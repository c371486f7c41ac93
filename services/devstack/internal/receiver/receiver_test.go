package receiver_test

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/services/devstack/internal/keyfile"
	"refonte.ai/callbacks/services/devstack/internal/receiver"
)

func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

type fixture struct {
	keys keyfile.Keys
	srv  *httptest.Server
	r    *receiver.Receiver
}

func start(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{keys: keyfile.Keys{CallbackAuthKey: "cbk_live", SigningSecret: newSecret(),
		TestCallbackAuthKey: "cbk_test", TestSigningSecret: newSecret()}}
	r, err := receiver.New(receiver.Config{
		Keys:          func() (keyfile.Keys, error) { return f.keys, nil },
		FlakyFailures: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	f.srv = httptest.NewServer(r.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

// post sends a callback signed with secret and the given auth key; it returns the answer code.
func (f *fixture) post(t *testing.T, webhookID, taskID, authKey, secret string) int {
	t.Helper()
	body := `{"task":{"task_id":"` + taskID + `","status":"completed"},"response":{},"task_id":"` + taskID + `","status":"completed"}`
	now := time.Now()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign(webhookID, now, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/callbacks", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(receiver.AuthHeader, authKey)
	req.Header.Set("webhook-id", webhookID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestReceiver_accepts_a_signed_callback(t *testing.T) {
	f := start(t)
	if code := f.post(t, "evt_1", "task-1", f.keys.CallbackAuthKey, f.keys.SigningSecret); code != 200 {
		t.Fatalf("code %d, want 200", code)
	}
	got := f.r.Received()
	if len(got) != 1 || got[0].TaskID != "task-1" || got[0].WebhookID != "evt_1" || got[0].Attempt != 1 {
		t.Fatalf("received %+v", got)
	}
}

// A test callback is checked against the test keys: accepted with the test key and the test
// signature, refused with the test key and the live signature.
func TestReceiver_checks_each_environment_with_its_own_secret(t *testing.T) {
	f := start(t)
	if code := f.post(t, "evt_t", "task-t", f.keys.TestCallbackAuthKey, f.keys.TestSigningSecret); code != 200 {
		t.Fatalf("test callback: code %d, want 200", code)
	}
	if got := f.r.Received(); len(got) != 1 || got[0].Environment != "test" {
		t.Fatalf("received %+v, want one test callback", got)
	}
	if code := f.post(t, "evt_x", "task-x", f.keys.TestCallbackAuthKey, f.keys.SigningSecret); code != 401 {
		t.Fatalf("test auth key with the live signature: code %d, want 401", code)
	}
	if code := f.post(t, "evt_y", "task-y", f.keys.CallbackAuthKey, f.keys.TestSigningSecret); code != 401 {
		t.Fatalf("live auth key with the test signature: code %d, want 401", code)
	}
}

func TestReceiver_refuses_a_wrong_auth_key(t *testing.T) {
	f := start(t)
	if code := f.post(t, "evt_1", "task-1", "cbk_wrong", f.keys.SigningSecret); code != 401 {
		t.Fatalf("code %d, want 401", code)
	}
}

func TestReceiver_refuses_a_wrong_signature(t *testing.T) {
	f := start(t)
	if code := f.post(t, "evt_1", "task-1", f.keys.CallbackAuthKey, newSecret()); code != 401 {
		t.Fatalf("code %d, want 401", code)
	}
}

func TestReceiver_flaky_task_fails_twice_per_webhook_id(t *testing.T) {
	f := start(t)
	var codes []int
	for range 3 {
		codes = append(codes, f.post(t, "evt_flaky", "demo-flaky-1", f.keys.CallbackAuthKey, f.keys.SigningSecret))
	}
	if codes[0] != 503 || codes[1] != 503 || codes[2] != 200 {
		t.Fatalf("codes %v, want [503 503 200]", codes)
	}
	// Another completion of a flaky task starts its own count.
	if code := f.post(t, "evt_flaky2", "demo-flaky-2", f.keys.CallbackAuthKey, f.keys.SigningSecret); code != 503 {
		t.Fatalf("new webhook-id: code %d, want 503", code)
	}
}

func TestReceiver_without_keys_answers_503(t *testing.T) {
	r, err := receiver.New(receiver.Config{Keys: func() (keyfile.Keys, error) {
		return keyfile.Read(t.TempDir() + "/missing.env")
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/callbacks", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("code %d, want 503", resp.StatusCode)
	}
}
