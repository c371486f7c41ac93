// Command configdump loads a worker's configuration from the environment exactly as the worker
// does, and prints the settings a deployment has to agree with as JSON; an invalid environment
// exits 1 with the worker's own error. The Helm chart's tests run it on the environment the chart
// renders (tools/helm), so the chart is checked against the worker's real defaults and rules
// rather than against a copy of them.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/services/worker/internal/worker"
)

// Settings is what a deployment of the worker depends on.
type Settings struct {
	Stream                 string  `json:"stream"`
	StreamReplicas         int     `json:"stream_replicas"`
	Consumer               string  `json:"consumer"`
	MetricsAddr            string  `json:"metrics_addr"`
	CallbackTimeoutSeconds float64 `json:"callback_timeout_seconds"`
	ShutdownGraceSeconds   float64 `json:"shutdown_grace_seconds"`
	Concurrency            int     `json:"concurrency"`
}

func main() {
	cfg, err := worker.LoadConfig(env.New())
	if err != nil {
		fmt.Fprintf(os.Stderr, "configdump: %v\n", err)
		os.Exit(1)
	}
	out := Settings{
		Stream:                 cfg.Stream.Name,
		StreamReplicas:         cfg.Stream.Replicas,
		Consumer:               cfg.Consumer,
		MetricsAddr:            cfg.MetricsAddr,
		CallbackTimeoutSeconds: cfg.Timeout.Seconds(),
		ShutdownGraceSeconds:   cfg.ShutdownGrace.Seconds(),
		Concurrency:            cfg.Concurrency,
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "configdump: %v\n", err)
		os.Exit(1)
	}
}
