package worker

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"refonte.ai/callbacks/pkg/delivery"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/status"
)

// Metrics are the worker's Prometheus series.
type Metrics struct {
	attempts        *prometheus.CounterVec
	deliveries      *prometheus.CounterVec
	attemptDuration *prometheus.HistogramVec
	firstAttempt    prometheus.Histogram
	toSuccess       prometheus.Histogram
	rejected        *prometheus.CounterVec
	deferred        prometheus.Counter
	inFlight        prometheus.Gauge
}

// NewMetrics registers the worker's series on reg (nil: a private registry, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	latency := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400}
	m := &Metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refonte_callback_attempts_total",
			Help: "Delivery attempts by transport and result (succeeded, failed).",
		}, []string{"transport", "result"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refonte_callback_deliveries_total",
			Help: "Deliveries that reached a final state, by transport and result (succeeded, exhausted, gave_up, no_callback).",
		}, []string{"transport", "result"}),
		attemptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "refonte_callback_attempt_duration_seconds",
			Help:    "Duration of one delivery attempt, by transport.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"transport"}),
		firstAttempt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "refonte_callback_publish_to_first_attempt_seconds",
			Help:    "Time from a completion's publication to the end of its first attempt.",
			Buckets: latency,
		}),
		toSuccess: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "refonte_callback_publish_to_success_seconds",
			Help:    "Time from a completion's (or resend's) publication to its successful attempt.",
			Buckets: latency,
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refonte_events_rejected_total",
			Help: "Events refused as invalid, by reason.",
		}, []string{"reason"}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refonte_callback_deferred_total",
			Help: "Messages put back for a moment because their host had its share of delivery slots (no attempt used).",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "refonte_callback_in_flight",
			Help: "Messages being processed by this worker.",
		}),
	}
	reg.MustRegister(m.attempts, m.deliveries, m.attemptDuration, m.firstAttempt, m.toSuccess,
		m.rejected, m.deferred, m.inFlight)
	for _, r := range event.Reasons {
		m.rejected.WithLabelValues(string(r))
	}
	return m
}

func (m *Metrics) observeAttempt(transport string, res delivery.Result, outcome status.Outcome, meta *jetstream.MsgMetadata, begun status.Begun) {
	result := "failed"
	if res.OK() {
		result = "succeeded"
	}
	m.attempts.WithLabelValues(transport, result).Inc()
	m.attemptDuration.WithLabelValues(transport).Observe(res.Duration.Seconds())
	sincePublish := time.Since(meta.Timestamp).Seconds()
	if begun.Attempt == 1 {
		m.firstAttempt.Observe(sincePublish)
	}
	switch outcome {
	case status.OutcomeSucceeded:
		m.toSuccess.Observe(sincePublish)
		m.deliveries.WithLabelValues(transport, "succeeded").Inc()
	case status.OutcomeFailed:
		if res.Permanent {
			m.deliveries.WithLabelValues(transport, "gave_up").Inc()
		} else {
			m.deliveries.WithLabelValues(transport, "exhausted").Inc()
		}
	}
}
