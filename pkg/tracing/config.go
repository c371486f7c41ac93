package tracing

// Config says whether spans are exported: they are when an OTLP endpoint is set. The exporter
// reads its other settings (headers, protocol, timeout) from the standard OTEL_* variables.
type Config struct {
	Endpoint       string // OTEL_EXPORTER_OTLP_ENDPOINT
	TracesEndpoint string // OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
}

// Enabled reports whether an endpoint is configured.
func (c Config) Enabled() bool { return c.Endpoint != "" || c.TracesEndpoint != "" }
