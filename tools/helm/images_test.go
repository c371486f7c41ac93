package helm

import (
	"bytes"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
)

// The images the chart deploys build from their Dockerfiles and become ready under the chart's
// restrictions (read-only root filesystem, no capabilities, no privilege escalation, user 10001),
// against a real NATS and Redis. It needs a container engine; without one it says so and skips.
func TestImages_build_and_become_ready_as_the_chart_runs_them(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no docker client: the images are not built here (tools/compose checks the Dockerfiles statically)")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no container engine answers (docker info: %s): the images are not built here (tools/compose checks the Dockerfiles statically)",
			firstLine(out))
	}
	nats := testenv.StartNATS(t)
	_, prefix := testenv.Redis(t)
	for _, svc := range []struct{ name, addrVar string }{
		{"gateway", "GATEWAY_ADDR"},
		{"worker", "METRICS_ADDR"},
	} {
		t.Run(svc.name, func(t *testing.T) {
			tag := "refonte/callbacks-" + svc.name + ":chart-test"
			docker(t, "build", "-q", "-f", filepath.Join("services", svc.name, "Dockerfile"), "-t", tag, ".")
			addr := testenv.FreeAddr(t)
			id := strings.TrimSpace(docker(t, "run", "-d", "--network", "host",
				"--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", "10001:10001",
				"-e", "NATS_URL="+nats.URL(), "-e", "REDIS_URL="+testenv.RedisURL(), "-e", "REDIS_PREFIX="+prefix,
				"-e", svc.addrVar+"="+addr, tag))
			t.Cleanup(func() {
				if t.Failed() {
					logs, _ := exec.Command("docker", "logs", id).CombinedOutput()
					t.Logf("%s logs:\n%s", svc.name, logs)
				}
				_ = exec.Command("docker", "rm", "-f", id).Run()
			})
			client := &http.Client{Timeout: 2 * time.Second}
			testenv.Eventually(t, 2*time.Minute, func() bool {
				resp, err := client.Get("http://" + addr + "/readyz")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			}, "%s container ready on %s", svc.name, addr)
		})
	}
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Dir = repoRoot()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return line
}
