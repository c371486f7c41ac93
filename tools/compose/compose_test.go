// Package compose checks docker-compose.yml where no Docker engine runs: the file must load with
// the Compose specification's own loader, reference only files that exist, pin every image and
// give every long-running service a health check; each Dockerfile must name pinned base images.
package compose

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// pinned: a tag with a version number (not "latest"), or a digest.
var pinned = regexp.MustCompile(`^[^:@\s]+(:[^:@\s]*\d+\.\d+[^:@\s]*|@sha256:[0-9a-f]{64})$`)

func TestCompose_file_loads_and_references_only_what_exists(t *testing.T) {
	root := repoRoot()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithOsEnv, cli.WithName("refonte-callbacks"))
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	want := []string{"nats1", "nats2", "nats3", "redis", "gateway", "worker", "receiver", "mailpit"}
	for _, name := range want {
		if _, ok := project.Services[name]; !ok {
			t.Errorf("service %s is missing", name)
		}
	}
	for name, svc := range project.Services {
		if svc.Build != nil {
			df := filepath.Join(svc.Build.Context, svc.Build.Dockerfile)
			if _, err := os.Stat(df); err != nil {
				t.Errorf("%s: Dockerfile %s does not exist", name, df)
			}
		}
		if svc.Build == nil && !pinned.MatchString(svc.Image) {
			t.Errorf("%s: image %q is not pinned to a version", name, svc.Image)
		}
		longRunning := svc.Restart != "no"
		if longRunning && (svc.HealthCheck == nil || len(svc.HealthCheck.Test) == 0) {
			t.Errorf("%s: no health check", name)
		}
		for _, v := range svc.Volumes {
			if v.Type == "bind" {
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("%s: bind mount %s does not exist", name, v.Source)
				}
			}
		}
	}
	if w := project.Services["worker"]; w.Deploy == nil || w.Deploy.Replicas == nil || *w.Deploy.Replicas < 2 {
		t.Error("the worker should run several replicas")
	}
}

func TestDockerfiles_pin_their_base_images_and_drop_root(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(repoRoot(), "services", "*", "Dockerfile"))
	if len(files) < 2 {
		t.Fatalf("found %d Dockerfiles", len(files))
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		froms, user := 0, false
		for _, line := range strings.Split(string(raw), "\n") {
			fields := strings.Fields(line)
			if len(fields) >= 2 && strings.EqualFold(fields[0], "FROM") {
				froms++
				if !pinned.MatchString(fields[1]) {
					t.Errorf("%s: base image %q is not pinned", f, fields[1])
				}
			}
			if len(fields) >= 2 && strings.EqualFold(fields[0], "USER") && fields[1] != "root" && fields[1] != "0" {
				user = true
			}
		}
		if froms < 2 {
			t.Errorf("%s: not a multi-stage build", f)
		}
		if !user {
			t.Errorf("%s: the image runs as root", f)
		}
	}
}

// Every series the Grafana dashboard plots is one the services define (a renamed metric would
// otherwise leave an empty panel that nobody notices until an incident).
func TestGrafana_dashboard_plots_only_metrics_that_exist(t *testing.T) {
	root := repoRoot()
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "refonte-callbacks.json"))
	if err != nil {
		t.Fatal(err)
	}
	var source strings.Builder
	_ = filepath.WalkDir(filepath.Join(root, "services"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			b, _ := os.ReadFile(p)
			source.Write(b)
		}
		return nil
	})
	names := regexp.MustCompile(`refonte_[a-z_]+`).FindAllString(string(raw), -1)
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in the dashboard", len(names))
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_count"), "_sum")
		if !strings.Contains(source.String(), `"`+base+`"`) {
			t.Errorf("dashboard plots %s, which no service defines", n)
		}
	}
}
