// Package helm checks the Kubernetes chart (deploy/helm/refonte-callbacks) where no cluster runs:
// helm's own linter and renderer (the helm v3 library, pinned in this module's go.mod) run on the
// default values and on the production example, every rendered object must decode strictly into
// its Kubernetes API type, and the workers' settings are checked against the worker's own
// configuration loading (services/worker/internal/configdump), not against a copy of its defaults.
package helm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const (
	release   = "callbacks"
	namespace = "callbacks"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func chartDir() string { return filepath.Join(repoRoot(), "deploy", "helm", "refonte-callbacks") }

// valueSets are the values files a release is installed with: none (the chart's defaults) and
// the production example.
var valueSets = map[string][]string{
	"default":    nil,
	"production": {"values-production.yaml"},
}

// userValues merges values files and --set style overrides the way helm's -f and --set do.
func userValues(t *testing.T, files []string, sets ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for _, f := range files {
		raw, err := os.ReadFile(filepath.Join(chartDir(), f))
		if err != nil {
			t.Fatal(err)
		}
		m, err := chartutil.ReadValues(raw)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vals = mergeMaps(vals, m)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, vals); err != nil {
			t.Fatalf("--set %s: %v", s, err)
		}
	}
	return vals
}

// mergeMaps merges b into a, recursing into maps, as helm merges -f files.
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bv, ok := v.(map[string]any); ok {
			if av, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(av, bv)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// render is `helm template`: the user's values are coalesced with the chart's, validated against
// values.schema.json, and every template is rendered. The error is the schema's or a template's.
func render(t *testing.T, vals map[string]any) (map[string]string, error) {
	t.Helper()
	chrt, err := loader.LoadDir(chartDir())
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	top, err := chartutil.ToRenderValuesWithSchemaValidation(chrt, vals,
		chartutil.ReleaseOptions{Name: release, Namespace: namespace, Revision: 1, IsInstall: true},
		chartutil.DefaultCapabilities, false)
	if err != nil {
		return nil, err
	}
	return engine.Render(chrt, top)
}

// manifests holds the rendered objects, decoded into their API types.
type manifests struct {
	notes          string
	configMaps     map[string]*corev1.ConfigMap
	secrets        map[string]*corev1.Secret
	services       map[string]*corev1.Service
	deployments    map[string]*appsv1.Deployment
	pdbs           map[string]*policyv1.PodDisruptionBudget
	hpas           map[string]*autoscalingv2.HorizontalPodAutoscaler
	ingresses      map[string]*networkingv1.Ingress
	scaledObjects  map[string]*scaledObject
	serviceMonitor map[string]*monitoringv1.ServiceMonitor
	accounts       map[string]*corev1.ServiceAccount
	kinds          []string
}

// scaledObject is the part of KEDA's ScaledObject (keda.sh/v1alpha1) the chart writes. KEDA's Go
// module brings every scaler's client library, far too much to build for one type, so the test
// decodes strictly into these fields, named as KEDA's API names them.
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		Triggers        []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

// decodeStrict decodes one object into its typed form: unknown or duplicate fields are errors.
func decodeStrict[T any](doc []byte, into map[string]*T, name string) error {
	obj := new(T)
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return err
	}
	if _, dup := into[name]; dup {
		return fmt.Errorf("two objects named %s", name)
	}
	into[name] = obj
	return nil
}

func decode(t *testing.T, rendered map[string]string) *manifests {
	t.Helper()
	m := &manifests{
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		services: map[string]*corev1.Service{}, deployments: map[string]*appsv1.Deployment{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		ingresses: map[string]*networkingv1.Ingress{}, scaledObjects: map[string]*scaledObject{},
		serviceMonitor: map[string]*monitoringv1.ServiceMonitor{}, accounts: map[string]*corev1.ServiceAccount{},
	}
	files := make([]string, 0, len(rendered))
	for f := range rendered {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, file := range files {
		content := rendered[file]
		if strings.HasSuffix(file, "NOTES.txt") {
			m.notes = content
			continue
		}
		if !strings.HasSuffix(file, ".yaml") {
			continue
		}
		for _, doc := range strings.Split(content, "\n---") {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatalf("%s: not YAML: %v\n%s", file, err, doc)
			}
			name := head.Metadata.Name
			for _, msg := range validation.IsDNS1123Subdomain(name) {
				t.Errorf("%s: %s %q: %s", file, head.Kind, name, msg)
			}
			gvk := head.APIVersion + "/" + head.Kind
			var err error
			switch gvk {
			case "v1/ConfigMap":
				err = decodeStrict([]byte(doc), m.configMaps, name)
			case "v1/Secret":
				err = decodeStrict([]byte(doc), m.secrets, name)
			case "v1/Service":
				err = decodeStrict([]byte(doc), m.services, name)
			case "v1/ServiceAccount":
				err = decodeStrict([]byte(doc), m.accounts, name)
			case "apps/v1/Deployment":
				err = decodeStrict([]byte(doc), m.deployments, name)
			case "policy/v1/PodDisruptionBudget":
				err = decodeStrict([]byte(doc), m.pdbs, name)
			case "autoscaling/v2/HorizontalPodAutoscaler":
				err = decodeStrict([]byte(doc), m.hpas, name)
			case "networking.k8s.io/v1/Ingress":
				err = decodeStrict([]byte(doc), m.ingresses, name)
			case "keda.sh/v1alpha1/ScaledObject":
				err = decodeStrict([]byte(doc), m.scaledObjects, name)
			case "monitoring.coreos.com/v1/ServiceMonitor":
				err = decodeStrict([]byte(doc), m.serviceMonitor, name)
			default:
				err = errors.New("a kind this test does not know; add its API type")
			}
			if err != nil {
				t.Errorf("%s: %s %s does not decode strictly: %v", file, gvk, name, err)
			}
			m.kinds = append(m.kinds, head.Kind)
		}
	}
	sort.Strings(m.kinds)
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func renderSet(t *testing.T, set string, sets ...string) *manifests {
	t.Helper()
	rendered, err := render(t, userValues(t, valueSets[set], sets...))
	if err != nil {
		t.Fatalf("%s values do not render: %v", set, err)
	}
	return decode(t, rendered)
}

func TestChart_passes_helm_lint(t *testing.T) {
	for name, files := range valueSets {
		t.Run(name, func(t *testing.T) {
			result := lint.AllWithKubeVersion(chartDir(), userValues(t, files), namespace, nil)
			for _, msg := range result.Messages {
				// INFO only suggests (an icon); warnings and errors fail, as `helm lint --strict` does.
				if msg.Severity >= support.WarningSev {
					t.Error(msg.Error())
				}
			}
		})
	}
}

func TestChart_renders_the_expected_objects(t *testing.T) {
	want := map[string][]string{
		"default": {"ConfigMap", "ConfigMap", "Deployment", "Deployment", "HorizontalPodAutoscaler",
			"PodDisruptionBudget", "PodDisruptionBudget", "Secret", "Service", "Service", "ServiceAccount"},
		// An existing Secret and KEDA instead of the chart's Secret and the HPA.
		"production": {"ConfigMap", "ConfigMap", "Deployment", "Deployment", "Ingress",
			"PodDisruptionBudget", "PodDisruptionBudget", "ScaledObject", "Service", "Service",
			"ServiceAccount", "ServiceMonitor"},
	}
	for name := range valueSets {
		t.Run(name, func(t *testing.T) {
			m := renderSet(t, name)
			if !slices.Equal(m.kinds, want[name]) {
				t.Errorf("rendered kinds\n got %v\nwant %v", m.kinds, want[name])
			}
		})
	}
}

func deployment(t *testing.T, m *manifests, component string) (*appsv1.Deployment, corev1.Container) {
	t.Helper()
	d := m.deployments[release+"-refonte-callbacks-"+component]
	if d == nil {
		t.Fatalf("no %s Deployment among %v", component, keys(m.deployments))
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%s: want one container", component)
	}
	return d, d.Spec.Template.Spec.Containers[0]
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestPods_probe_health_and_run_locked_down(t *testing.T) {
	for name := range valueSets {
		m := renderSet(t, name)
		for _, component := range []string{"gateway", "worker"} {
			t.Run(name+"/"+component, func(t *testing.T) {
				d, c := deployment(t, m, component)
				port := map[string]string{"gateway": "http", "worker": "metrics"}[component]
				for probe, wantPath := range map[string]string{"liveness": "/healthz", "readiness": "/readyz"} {
					p := map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe}[probe]
					if p == nil || p.HTTPGet == nil {
						t.Fatalf("no HTTP %s probe", probe)
					}
					if p.HTTPGet.Path != wantPath || p.HTTPGet.Port.String() != port {
						t.Errorf("%s probe: %s on port %s, want %s on %s", probe, p.HTTPGet.Path, p.HTTPGet.Port.String(), wantPath, port)
					}
				}
				if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == port }) {
					t.Errorf("the probes' port %q is not declared", port)
				}

				pod := d.Spec.Template.Spec.SecurityContext
				if pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot || pod.RunAsUser == nil || *pod.RunAsUser == 0 {
					t.Errorf("pod security context does not force a non-root user: %+v", pod)
				}
				sc := c.SecurityContext
				switch {
				case sc == nil:
					t.Fatal("no container security context")
				case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
					t.Error("root filesystem is writable")
				case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
					t.Error("privilege escalation is allowed")
				case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
					t.Errorf("capabilities are not all dropped: %+v", sc.Capabilities)
				case sc.Privileged != nil && *sc.Privileged:
					t.Error("privileged container")
				}
				if d.Spec.Template.Spec.AutomountServiceAccountToken == nil || *d.Spec.Template.Spec.AutomountServiceAccountToken {
					t.Error("the pod mounts a Kubernetes API token it never uses")
				}
				for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					if q, ok := c.Resources.Requests[res]; !ok || q.IsZero() {
						t.Errorf("no %s request", res)
					}
				}
				if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.Cmp(c.Resources.Requests[corev1.ResourceMemory]) < 0 {
					t.Errorf("memory limit %v is missing or below the request", q.String())
				}
			})
		}
	}
}

// workerEnv is the environment a worker container starts with: its ConfigMap, and placeholders
// for the variables it takes from the Secret.
func workerEnv(t *testing.T, m *manifests) map[string]string {
	t.Helper()
	_, c := deployment(t, m, "worker")
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			t.Fatalf("worker envFrom %+v: only ConfigMaps expected", from)
		}
		cm := m.configMaps[from.ConfigMapRef.Name]
		if cm == nil {
			t.Fatalf("worker reads ConfigMap %s, which the chart does not create", from.ConfigMapRef.Name)
		}
		for k, v := range cm.Data {
			env[k] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = map[string]string{
				"NATS_URL":  "nats://nats.example:4222",
				"REDIS_URL": "redis://redis.example:6379/0",
			}[e.Name]
		default:
			env[e.Name] = e.Value
		}
	}
	return env
}

// workerSettings is the worker's own reading of an environment (services/worker/internal/configdump).
type workerSettings struct {
	Stream                 string  `json:"stream"`
	StreamReplicas         int     `json:"stream_replicas"`
	Consumer               string  `json:"consumer"`
	MetricsAddr            string  `json:"metrics_addr"`
	CallbackTimeoutSeconds float64 `json:"callback_timeout_seconds"`
	ShutdownGraceSeconds   float64 `json:"shutdown_grace_seconds"`
}

// configdump is the worker's configuration loader as a program, built once per test run.
var configdump struct {
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "refonte-helm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	configdump.path = filepath.Join(dir, "configdump")
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// goEnv is the part of the test's environment the go command and the program need; nothing
// else leaks into the configuration under test.
func goEnv() []string {
	var out []string
	for _, k := range []string{"PATH", "HOME", "GOPATH", "GOCACHE", "GOMODCACHE", "GOFLAGS", "GOPROXY", "GOTOOLCHAIN", "GOWORK", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// loadWorkerConfig runs the worker's configuration loading on env and nothing else.
func loadWorkerConfig(t *testing.T, env map[string]string) workerSettings {
	t.Helper()
	configdump.once.Do(func() {
		build := exec.Command("go", "build", "-o", configdump.path, "./services/worker/internal/configdump")
		build.Dir = repoRoot()
		build.Env = goEnv()
		if out, err := build.CombinedOutput(); err != nil {
			configdump.err = fmt.Errorf("build the worker's configdump: %v\n%s", err, out)
		}
	})
	if configdump.err != nil {
		t.Fatal(configdump.err)
	}
	cmd := exec.Command(configdump.path)
	cmd.Env = []string{}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the worker refuses this environment: %v\n%s", err, stderr.String())
	}
	var s workerSettings
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("configdump output %q: %v", out, err)
	}
	return s
}

func TestWorker_config_is_valid_and_matches_the_worker_defaults(t *testing.T) {
	// With no variable set, the worker's own defaults: the chart's default names must be these,
	// so a fleet moved onto the chart keeps its stream and its consumer (and their backlog).
	defaults := loadWorkerConfig(t, nil)
	m := renderSet(t, "default")
	env := workerEnv(t, m)
	got := loadWorkerConfig(t, env)
	if got.Stream != defaults.Stream || got.Consumer != defaults.Consumer {
		t.Errorf("the chart's worker uses stream %q, consumer %q; the worker's defaults are %q, %q",
			got.Stream, got.Consumer, defaults.Stream, defaults.Consumer)
	}
	// The chart sets SHUTDOWN_GRACE itself (the pod's grace period is derived from it); by
	// default it must be what the worker would choose for the chart's callback timeout.
	delete(env, "SHUTDOWN_GRACE")
	if derived := loadWorkerConfig(t, env); got.ShutdownGraceSeconds != derived.ShutdownGraceSeconds {
		t.Errorf("the chart's default SHUTDOWN_GRACE is %vs; the worker's default for this configuration is %vs",
			got.ShutdownGraceSeconds, derived.ShutdownGraceSeconds)
	}
	if !strings.HasPrefix(got.MetricsAddr, "0.0.0.0:") {
		t.Errorf("worker metrics on %s: the kubelet's probes could not reach them", got.MetricsAddr)
	}
}

func TestWorker_grace_period_outlasts_its_shutdown_grace(t *testing.T) {
	for name := range valueSets {
		t.Run(name, func(t *testing.T) {
			m := renderSet(t, name)
			d, _ := deployment(t, m, "worker")
			s := loadWorkerConfig(t, workerEnv(t, m))
			period := d.Spec.Template.Spec.TerminationGracePeriodSeconds
			if period == nil {
				t.Fatal("no terminationGracePeriodSeconds: Kubernetes' 30s would apply")
			}
			if float64(*period) <= s.ShutdownGraceSeconds {
				t.Errorf("terminationGracePeriodSeconds %d does not exceed the worker's shutdown grace %vs: Kubernetes would kill workers still handing back callbacks",
					*period, s.ShutdownGraceSeconds)
			}
			if s.ShutdownGraceSeconds < s.CallbackTimeoutSeconds {
				t.Errorf("shutdown grace %vs is shorter than one attempt (%vs)", s.ShutdownGraceSeconds, s.CallbackTimeoutSeconds)
			}
		})
	}
}

func TestWorker_disruption_budget_covers_the_workers(t *testing.T) {
	for name := range valueSets {
		t.Run(name, func(t *testing.T) {
			m := renderSet(t, name)
			d, _ := deployment(t, m, "worker")
			pdb := m.pdbs[d.Name]
			if pdb == nil {
				t.Fatalf("no PodDisruptionBudget for the workers among %v", keys(m.pdbs))
			}
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
				t.Errorf("maxUnavailable %v, want 1", pdb.Spec.MaxUnavailable)
			}
			sel := pdb.Spec.Selector
			if sel == nil || len(sel.MatchLabels) == 0 {
				t.Fatal("the budget selects nothing")
			}
			for k, v := range sel.MatchLabels {
				if d.Spec.Template.Labels[k] != v {
					t.Errorf("the budget selects %s=%s, which the worker pods do not carry", k, v)
				}
			}
			if d.Spec.Template.Labels["app.kubernetes.io/component"] != "worker" || sel.MatchLabels["app.kubernetes.io/component"] != "worker" {
				t.Error("the budget is not limited to the workers")
			}
		})
	}
}

func TestKEDA_trigger_reads_the_workers_real_consumer(t *testing.T) {
	cases := map[string][]string{
		"production": nil,
		// Renamed stream and consumer: the trigger must follow the workers.
		"renamed": {"nats.stream=CB_EU", "nats.consumer=eu-workers"},
	}
	for name, sets := range cases {
		t.Run(name, func(t *testing.T) {
			m := renderSet(t, "production", sets...)
			d, _ := deployment(t, m, "worker")
			so := m.scaledObjects[d.Name]
			if so == nil {
				t.Fatalf("no ScaledObject among %v", keys(m.scaledObjects))
			}
			if so.Spec.ScaleTargetRef.Name != d.Name {
				t.Errorf("ScaledObject scales %q, not the worker Deployment %q", so.Spec.ScaleTargetRef.Name, d.Name)
			}
			if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "nats-jetstream" {
				t.Fatalf("triggers %+v: want one nats-jetstream trigger", so.Spec.Triggers)
			}
			meta := so.Spec.Triggers[0].Metadata
			real := loadWorkerConfig(t, workerEnv(t, m))
			if meta["stream"] != real.Stream || meta["consumer"] != real.Consumer {
				t.Errorf("trigger watches stream %q consumer %q; the workers use %q, %q",
					meta["stream"], meta["consumer"], real.Stream, real.Consumer)
			}
			for _, k := range []string{"natsServerMonitoringEndpoint", "account", "lagThreshold"} {
				if meta[k] == "" {
					t.Errorf("trigger metadata %s is empty", k)
				}
			}
			if so.Spec.MinReplicaCount == nil || so.Spec.MaxReplicaCount == nil || *so.Spec.MinReplicaCount < 1 || *so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount {
				t.Errorf("replica bounds %v..%v", so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount)
			}
			if d.Spec.Replicas != nil {
				t.Error("the Deployment sets replicas while KEDA scales it: every upgrade would reset the scale")
			}
			if len(m.hpas) != 0 {
				t.Error("an HPA renders next to KEDA's own")
			}
		})
	}
}

func TestHPA_scales_the_workers_on_CPU_without_KEDA(t *testing.T) {
	m := renderSet(t, "default", "worker.autoscaling.minReplicas=3", "worker.autoscaling.maxReplicas=12")
	d, _ := deployment(t, m, "worker")
	hpa := m.hpas[d.Name]
	if hpa == nil {
		t.Fatal("no HPA for the workers")
	}
	if hpa.Spec.ScaleTargetRef.Name != d.Name || hpa.Spec.ScaleTargetRef.Kind != "Deployment" {
		t.Errorf("HPA scales %+v", hpa.Spec.ScaleTargetRef)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != 3 || hpa.Spec.MaxReplicas != 12 {
		t.Errorf("HPA bounds %v..%d, want 3..12", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	if len(hpa.Spec.Metrics) != 1 || hpa.Spec.Metrics[0].Resource == nil || hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
		t.Errorf("HPA metrics %+v: want CPU", hpa.Spec.Metrics)
	}
	if len(m.scaledObjects) != 0 {
		t.Error("a ScaledObject renders while KEDA is off")
	}

	fixed := renderSet(t, "default", "worker.autoscaling.hpa.enabled=false", "worker.replicaCount=4")
	d, _ = deployment(t, fixed, "worker")
	if len(fixed.hpas) != 0 || d.Spec.Replicas == nil || *d.Spec.Replicas != 4 {
		t.Errorf("with no autoscaler: %d HPAs, replicas %v; want none and 4", len(fixed.hpas), d.Spec.Replicas)
	}
}

func TestCredentials_come_from_a_Secret_never_the_ConfigMap(t *testing.T) {
	credentials := []string{"ADMIN_TOKEN", "NATS_URL", "REDIS_URL", "SMTP_USERNAME", "SMTP_PASSWORD"}
	cases := map[string]struct {
		set        string
		sets       []string
		wantSecret string
	}{
		"chart secret": {set: "default", sets: []string{"secrets.adminToken=0123456789abcdef0123", "secrets.smtpPassword=pw"},
			wantSecret: release + "-refonte-callbacks"},
		"existing secret": {set: "production", wantSecret: "refonte-callbacks-credentials"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			m := renderSet(t, tc.set, tc.sets...)
			for _, cm := range m.configMaps {
				for _, k := range credentials {
					if _, ok := cm.Data[k]; ok {
						t.Errorf("ConfigMap %s holds %s", cm.Name, k)
					}
				}
			}
			if s := m.secrets[tc.wantSecret]; tc.set == "default" {
				if s == nil {
					t.Fatalf("no Secret %s", tc.wantSecret)
				}
				if s.StringData["ADMIN_TOKEN"] != "0123456789abcdef0123" || s.StringData["SMTP_PASSWORD"] != "pw" || s.StringData["NATS_URL"] == "" {
					t.Errorf("Secret data %v", keys(s.StringData))
				}
				if _, ok := s.StringData["SMTP_USERNAME"]; ok {
					t.Error("an empty SMTP_USERNAME is written to the Secret")
				}
			} else if len(m.secrets) != 0 {
				t.Errorf("with an existing Secret the chart still creates %v", keys(m.secrets))
			}
			for _, component := range []string{"gateway", "worker"} {
				_, c := deployment(t, m, component)
				for _, e := range c.Env {
					if slices.Contains(credentials, e.Name) {
						if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != tc.wantSecret {
							t.Errorf("%s: %s does not come from Secret %s", component, e.Name, tc.wantSecret)
						}
					}
				}
			}
		})
	}
}

func TestNotes_say_how_to_create_a_customer_and_where_the_dashboard_is(t *testing.T) {
	for name := range valueSets {
		t.Run(name, func(t *testing.T) {
			notes := renderSet(t, name).notes
			for _, want := range []string{"POST", "/admin/v1/customers", "Authorization: Bearer", "/dashboard"} {
				if !strings.Contains(notes, want) {
					t.Errorf("NOTES.txt does not mention %q:\n%s", want, notes)
				}
			}
		})
	}
}

func TestSchema_rejects_bad_values(t *testing.T) {
	cases := []struct {
		name string
		set  []string
		want string // where the error points (a JSON pointer) or what it names
	}{
		{"replicas not a number", []string{"gateway.replicaCount=many"}, "/gateway/replicaCount"},
		{"zero replicas", []string{"gateway.replicaCount=0"}, "/gateway/replicaCount"},
		{"unknown top-level key", []string{"wroker.replicaCount=2"}, "wroker"},
		{"unknown worker key", []string{"worker.terminationGracePeriod=60"}, "terminationGracePeriod"},
		{"short admin token", []string{"secrets.adminToken=short"}, "/secrets/adminToken"},
		{"credential in the ConfigMap", []string{"config.ADMIN_TOKEN=0123456789abcdef0123"}, "/config/ADMIN_TOKEN"},
		{"chart-managed setting overridden", []string{"worker.config.NATS_CONSUMER=other"}, "/worker/config/NATS_CONSUMER"},
		{"shutdown grace overridden", []string{"config.SHUTDOWN_GRACE=5s"}, "/config/SHUTDOWN_GRACE"},
		{"lowercase variable name", []string{"config.log_level=info"}, "log_level"},
		{"bad duration", []string{"config.CALLBACK_TIMEOUT=thirty"}, "/config/CALLBACK_TIMEOUT"},
		{"retry schedule of 3 delays", []string{"config.CALLBACK_RETRY_SCHEDULE=10s\\,1m\\,5m"}, "/config/CALLBACK_RETRY_SCHEDULE"},
		{"bad log format", []string{"config.LOG_FORMAT=xml"}, "/config/LOG_FORMAT"},
		{"stream name with a dot", []string{"nats.stream=CALL.BACKS"}, "/nats/stream"},
		{"empty consumer", []string{"nats.consumer="}, "/nats/consumer"},
		{"stream replicas out of range", []string{"nats.streamReplicas=7"}, "/nats/streamReplicas"},
		{"NATS URL without a scheme", []string{"nats.url=nats.example:4222"}, "/nats/url"},
		{"Redis URL of another scheme", []string{"redis.url=http://redis:6379"}, "/redis/url"},
		{"no NATS URL and no existing Secret", []string{"nats.url="}, "/nats/url"},
		{"root user", []string{"podSecurityContext.runAsNonRoot=false"}, "/podSecurityContext/runAsNonRoot"},
		{"no seccomp profile", []string{"podSecurityContext.seccompProfile.type=Unconfined"}, "/podSecurityContext/seccompProfile/type"},
		{"writable root filesystem", []string{"securityContext.readOnlyRootFilesystem=false"}, "/securityContext/readOnlyRootFilesystem"},
		{"privilege escalation", []string{"securityContext.allowPrivilegeEscalation=true"}, "/securityContext/allowPrivilegeEscalation"},
		{"capabilities kept", []string{"securityContext.capabilities.drop={NET_RAW}"}, "/securityContext/capabilities/drop"},
		{"KEDA endpoint without port", []string{"worker.autoscaling.keda.natsServerMonitoringEndpoint=nats"}, "/worker/autoscaling/keda/natsServerMonitoringEndpoint"},
		{"zero lag threshold", []string{"worker.autoscaling.keda.lagThreshold=0"}, "/worker/autoscaling/keda/lagThreshold"},
		{"CPU target over 100", []string{"worker.autoscaling.hpa.targetCPUUtilizationPercentage=150"}, "/worker/autoscaling/hpa/targetCPUUtilizationPercentage"},
		{"bad PDB percentage", []string{"worker.podDisruptionBudget.maxUnavailable=150%"}, "/worker/podDisruptionBudget/maxUnavailable"},
		{"bad memory quantity", []string{"worker.resources.requests.memory=lots"}, "/worker/resources/requests/memory"},
		{"no CPU request", []string{"worker.resources.requests.cpu=null"}, "'cpu'"},
		{"bad image pull policy", []string{"image.pullPolicy=Sometimes"}, "/image/pullPolicy"},
		{"port out of range", []string{"gateway.port=70000"}, "/gateway/port"},
		{"ingress without host", []string{"gateway.ingress.enabled=true", "gateway.ingress.host=null"}, "'host'"},
		{"secret values beside an existing Secret", []string{"secrets.existingSecret=creds", "secrets.adminToken=0123456789abcdef0123"}, "/secrets/adminToken"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, userValues(t, nil, tc.set...))
			if err == nil {
				t.Fatalf("values %v accepted", tc.set)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("the error does not point at %s: %v", tc.want, err)
			}
		})
	}
}

func TestTemplates_refuse_inconsistent_values(t *testing.T) {
	cases := []struct {
		name string
		set  []string
		want string
	}{
		{"grace period not above the shutdown grace", []string{"worker.shutdownGraceSeconds=60", "worker.terminationGracePeriodSeconds=60"}, "terminationGracePeriodSeconds must exceed"},
		{"min replicas above max", []string{"worker.autoscaling.minReplicas=5", "worker.autoscaling.maxReplicas=3"}, "minReplicas must not exceed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, userValues(t, nil, tc.set...))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("values %v: error %v, want one saying %q", tc.set, err, tc.want)
			}
		})
	}
}
