package main_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/stream"
)

func get(t *testing.T, url string, auth func(*http.Request)) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != nil {
		auth(req)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func TestGatewayProcess_serves_the_API_and_stops_cleanly_on_SIGTERM(t *testing.T) {
	t.Parallel()
	bin := testenv.Build(t, "services/gateway")
	ns := testenv.StartNATS(t)
	_, prefix := testenv.Redis(t)
	addr := testenv.FreeAddr(t)
	token := "admin_" + rand.Text()
	p := testenv.Start(t, bin, map[string]string{
		"GATEWAY_ADDR": addr, "NATS_URL": ns.URL(), "REDIS_URL": testenv.RedisURL(),
		"REDIS_PREFIX": prefix, "ADMIN_TOKEN": token,
	})
	base := "http://" + addr
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, _ := get(t, base+"/readyz", nil)
		return code == http.StatusOK
	}, "/readyz answers 200")

	req, _ := http.NewRequest("POST", base+"/admin/v1/customers", strings.NewReader(`{"customer_id":"cust_a"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		APIKey        string `json:"api_key"`
		SigningSecret string `json:"signing_secret"`
	}
	err = json.NewDecoder(res.Body).Decode(&created)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated || err != nil {
		t.Fatalf("create customer: %d %v", res.StatusCode, err)
	}
	if code, body := get(t, base+"/v1/profile", func(r *http.Request) { r.SetBasicAuth(created.APIKey, "") }); code != http.StatusOK {
		t.Fatalf("GET /v1/profile: %d %s", code, body)
	}
	if code, body := get(t, base+"/metrics", nil); code != http.StatusOK || !regexp.MustCompile(`(?m)^build_info\{.*version="[^"]+".*\} 1$`).Match(body) {
		t.Errorf("GET /metrics: %d, no build_info line with a version:\n%.2000s", code, body)
	}

	p.Signal(syscall.SIGTERM)
	if err, exited := p.Wait(15 * time.Second); !exited || err != nil {
		t.Fatalf("gateway did not exit cleanly on SIGTERM: exited=%v err=%v", exited, err)
	}
	logs, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`"msg":"starting".*"version":"[^"]+"`).Match(logs) {
		t.Errorf("no start line with the version in the log:\n%s", logs)
	}
	if !strings.Contains(string(logs), "gateway stopped") {
		t.Errorf("no shutdown line in the log:\n%s", logs)
	}
	for _, secret := range []string{token, created.APIKey, created.SigningSecret} {
		if strings.Contains(string(logs), secret) {
			t.Errorf("the process log contains a secret (%.12s…)", secret)
		}
	}
}

func TestGatewayProcess_is_live_but_not_ready_without_NATS(t *testing.T) {
	t.Parallel()
	bin := testenv.Build(t, "services/gateway")
	_, prefix := testenv.Redis(t)
	addr := testenv.FreeAddr(t)
	testenv.Start(t, bin, map[string]string{
		"GATEWAY_ADDR": addr, "NATS_URL": "nats://" + testenv.FreeAddr(t), "REDIS_URL": testenv.RedisURL(),
		"REDIS_PREFIX": prefix,
	})
	base := "http://" + addr
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, _ := get(t, base+"/healthz", nil)
		return code == http.StatusOK
	}, "/healthz answers 200 while NATS is down")
	code, body := get(t, base+"/readyz", nil)
	var checks map[string]string
	_ = json.Unmarshal(body, &checks)
	if code != http.StatusServiceUnavailable || checks["nats"] == "ok" || checks["stream"] == "ok" || checks["redis"] != "ok" {
		t.Errorf("/readyz without NATS: %d %s", code, body)
	}
}

func TestGatewayProcess_refuses_a_bad_configuration(t *testing.T) {
	t.Parallel()
	bin := testenv.Build(t, "services/gateway")
	p := testenv.Start(t, bin, map[string]string{"ADMIN_TOKEN": "short", "SEND_CALLBACK_BURST": "lots"})
	err, exited := p.Wait(10 * time.Second)
	if !exited || err == nil {
		t.Fatalf("gateway with a bad configuration: exited=%v err=%v, want a failed exit", exited, err)
	}
	logs, _ := os.ReadFile(p.LogPath)
	if !strings.Contains(string(logs), "SEND_CALLBACK_BURST") {
		t.Errorf("the error does not name the bad variable:\n%s", logs)
	}
}

// The workers own the stream's settings: a gateway configured otherwise warns and leaves them.
func TestGatewayProcess_warns_about_other_stream_settings_and_keeps_them(t *testing.T) {
	t.Parallel()
	bin := testenv.Build(t, "services/gateway")
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	owner := stream.DefaultConfig()
	owner.MaxAge = 96 * time.Hour
	if _, err := stream.Ensure(context.Background(), js, owner); err != nil {
		t.Fatal(err)
	}
	_, prefix := testenv.Redis(t)
	addr := testenv.FreeAddr(t)
	p := testenv.Start(t, bin, map[string]string{
		"GATEWAY_ADDR": addr, "NATS_URL": ns.URL(), "REDIS_URL": testenv.RedisURL(),
		"REDIS_PREFIX": prefix, "NATS_STREAM_MAX_AGE": "72h",
	})
	testenv.Eventually(t, 10*time.Second, func() bool {
		code, _ := get(t, "http://"+addr+"/readyz", nil)
		return code == http.StatusOK
	}, "/readyz answers 200 once the gateway found the stream")
	logs, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`"setting":"max age","stream_has":"96h0m0s","configured":"72h0m0s"`).Match(logs) {
		t.Errorf("no warning about the max age in the log:\n%s", logs)
	}
	st, err := js.Stream(context.Background(), owner.Name)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(context.Background()); err != nil || info.Config.MaxAge != owner.MaxAge {
		t.Errorf("stream max age after the gateway started: %v, %v; want the owner's 96h", info.Config.MaxAge, err)
	}
}
