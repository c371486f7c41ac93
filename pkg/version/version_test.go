package version_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"refonte.ai/callbacks/pkg/version"
)

func TestCollector_exports_build_info_with_the_running_version(t *testing.T) {
	info := version.Get()
	if info.Version == "" || !strings.HasPrefix(info.GoVersion, "go") {
		t.Fatalf("Get() = %+v: want a version and the Go version", info)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(version.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != 1 || families[0].GetName() != "build_info" || len(families[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v, want one build_info", families)
	}
	m := families[0].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if m.GetGauge().GetValue() != 1 || labels["version"] != info.Version || labels["goversion"] != info.GoVersion ||
		labels["revision"] != info.Revision {
		t.Errorf("build_info %v = %v, want the labels of %+v and 1", labels, m.GetGauge().GetValue(), info)
	}
}
