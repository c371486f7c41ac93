// Package version says which build is running: the version stamped at build time with
// -ldflags "-X refonte.ai/callbacks/pkg/version.stamped=v1.2.3" (the Taskfile and the
// Dockerfiles do), or else what the Go toolchain recorded in the binary (module version, VCS
// revision). Services log it at start and export it as the build_info metric.
package version

import (
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// stamped is set by the linker; empty in a plain `go build` or `go test`.
var stamped string

// Info describes the running build.
type Info struct {
	Version   string // stamped version, else the main module's version ("(devel)" for a checkout)
	Revision  string // VCS revision, with "+dirty" when built from modified files; "" if unknown
	GoVersion string
}

var read = sync.OnceValue(func() Info {
	info := Info{Version: stamped, GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if info.Version == "" {
			info.Version = "unknown"
		}
		return info
	}
	if info.Version == "" {
		info.Version = bi.Main.Version
	}
	if info.Version == "" {
		info.Version = "(devel)"
	}
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && info.Revision != "" {
		info.Revision += "+dirty"
	}
	return info
})

// Get returns the running build's description.
func Get() Info { return read() }

// String is the version alone, as sent in User-Agent headers.
func String() string { return read().Version }

// Collector exports build_info{version, revision, goversion} = 1, the usual way to show
// which build a process runs on a dashboard.
func Collector() prometheus.Collector {
	info := Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "build_info",
		Help: "Always 1; its labels say which build the process runs.",
		ConstLabels: prometheus.Labels{
			"version": info.Version, "revision": info.Revision, "goversion": info.GoVersion,
		},
	})
	g.Set(1)
	return g
}
