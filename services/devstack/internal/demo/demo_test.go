package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/services/devstack/internal/demo"
	"refonte.ai/callbacks/services/devstack/internal/keyfile"
)

// fakeGateway plays the gateway API (docs/api.md) just enough for the demo: it creates the customer and reports
// every task as delivered (or failed, for ids containing failWith).
type fakeGateway struct {
	t        *testing.T
	failWith string
	mu       sync.Mutex
	tasks    []string
}

func (g *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/readyz":
		w.WriteHeader(200)
	case r.Method == "POST" && r.URL.Path == "/admin/v1/customers":
		if r.Header.Get("Authorization") != "Bearer admin-token-for-tests" {
			g.t.Errorf("admin auth %q", r.Header.Get("Authorization"))
			w.WriteHeader(401)
			return
		}
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		w.WriteHeader(201)
		_ = json.NewEncoder(w).Encode(map[string]string{"customer_id": in["customer_id"], "api_key": "rk_test",
			"callback_auth_key": "cbk_test", "signing_secret": "whsec_dGVzdA==", "default_callback_url": in["default_callback_url"]})
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/v1/task/"):
		if u, p, ok := r.BasicAuth(); !ok || u != "rk_test" || p != "" {
			g.t.Errorf("customer auth %q %q %v", u, p, ok)
			w.WriteHeader(401)
			return
		}
		id, sub, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/task/"), "/")
		g.mu.Lock()
		g.tasks = append(g.tasks, id)
		g.mu.Unlock()
		ok := !strings.Contains(id, g.failWith) || g.failWith == ""
		if sub == "callback" {
			state, code, errText := "succeeded", 200, ""
			if !ok {
				state, code, errText = "failed", 500, "HTTP 500"
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"state": state,
				"attempts": []map[string]any{{"status_code": code, "error": errText}}})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"task_id": id, "callback_succeeded": ok})
	default:
		w.WriteHeader(404)
	}
}

func run(t *testing.T, failWith string) (string, *bytes.Buffer, *testenv.NATS, error) {
	t.Helper()
	n := testenv.StartNATS(t)
	gw := httptest.NewServer(&fakeGateway{t: t, failWith: failWith})
	defer gw.Close()
	keys := filepath.Join(t.TempDir(), "demo.env")
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := demo.Run(ctx, demo.Config{
		GatewayURL: gw.URL, AdminToken: "admin-token-for-tests", NATSURL: n.URL(),
		ReceiverURL: "http://127.0.0.1:1/callbacks", KeysFile: keys, Timeout: 10 * time.Second, Out: &out,
	})
	return keys, &out, n, err
}

func TestDemo_creates_the_customer_publishes_three_tasks_and_sees_them_delivered(t *testing.T) {
	keys, out, n, err := run(t, "")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	_, js := n.Connect(t)
	st, err := js.Stream(context.Background(), "CALLBACKS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter("tasks.completed.demo"))
	if err != nil || info.State.Msgs != 3 || info.State.Subjects["tasks.completed.demo"] != 3 {
		t.Fatalf("stream: %v, %+v; want 3 messages on tasks.completed.demo", err, info.State)
	}
	k, err := keyfile.Read(keys)
	if err != nil || k.APIKey != "rk_test" || k.SigningSecret != "whsec_dGVzdA==" || k.CallbackAuthKey != "cbk_test" {
		t.Fatalf("keys file: %+v %v", k, err)
	}
	for _, want := range []string{"published demo-ok-", "published demo-flaky-", "published demo-email-",
		"all three callbacks delivered", "curl -s -u 'rk_test:'", "/send-callback"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestDemo_reports_a_failed_callback(t *testing.T) {
	_, out, _, err := run(t, "email")
	if err == nil || !strings.Contains(err.Error(), "demo-email-") {
		t.Fatalf("err %v, want the failed email task named\n%s", err, out)
	}
}
