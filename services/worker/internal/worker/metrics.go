package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"refonte.ai/callbacks/pkg/delivery"
	"refonte.ai/callbacks/pkg/environment"
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
	pullSize        prometheus.Histogram
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
			Help: "Delivery attempts by transport, result (succeeded, failed) and environment (live, test).",
		}, []string{"transport", "result", "environment"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refonte_callback_deliveries_total",
			Help: "Deliveries that reached a final state, by transport, result (succeeded, exhausted, gave_up, no_callback) and environment (live, test).",
		}, []string{"transport", "result", "environment"}),
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
		pullSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "refonte_worker_pull_messages",
			Help:    "Messages each pull request brought (each pull costs a subscription and a request on the server).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
	}
	reg.MustRegister(m.attempts, m.deliveries, m.attemptDuration, m.firstAttempt, m.toSuccess,
		m.rejected, m.deferred, m.inFlight, m.pullSize)
	for _, r := range event.Reasons {
		m.rejected.WithLabelValues(string(r))
	}
	return m
}

func (m *Metrics) observeAttempt(transport string, env environment.Env, res delivery.Result, outcome status.Outcome, meta *jetstream.MsgMetadata, begun status.Begun) {
	result := "failed"
	if res.OK() {
		result = "succeeded"
	}
	m.attempts.WithLabelValues(transport, result, env.String()).Inc()
	m.attemptDuration.WithLabelValues(transport).Observe(res.Duration.Seconds())
	sincePublish := time.Since(meta.Timestamp).Seconds()
	if begun.Attempt == 1 {
		m.firstAttempt.Observe(sincePublish)
	}
	switch outcome {
	case status.OutcomeSucceeded:
		m.toSuccess.Observe(sincePublish)
		m.deliveries.WithLabelValues(transport, "succeeded", env.String()).Inc()
	case status.OutcomeFailed:
		if res.Permanent {
			m.deliveries.WithLabelValues(transport, "gave_up", env.String()).Inc()
		} else {
			m.deliveries.WithLabelValues(transport, "exhausted", env.String()).Inc()
		}
	}
}

// ConsumerCollector reports the shared consumer's backlog at scrape time: messages not yet
// delivered (pending) and delivered but not yet acknowledged — mostly retries parked on a
// NakWithDelay (ack pending), the figure to watch against NATS_MAX_ACK_PENDING.
type ConsumerCollector struct {
	consumer   jetstream.Consumer
	pending    *prometheus.Desc
	ackPending *prometheus.Desc
	redeliver  *prometheus.Desc
	ceiling    *prometheus.Desc
}

// NewConsumerCollector builds the collector; register it next to NewMetrics.
func NewConsumerCollector(c jetstream.Consumer) *ConsumerCollector {
	return &ConsumerCollector{
		consumer:   c,
		pending:    prometheus.NewDesc("refonte_consumer_pending_messages", "Messages in the stream not yet delivered to any worker.", nil, nil),
		ackPending: prometheus.NewDesc("refonte_consumer_ack_pending_messages", "Messages delivered and not yet acknowledged: in flight plus retries parked on a delay.", nil, nil),
		redeliver:  prometheus.NewDesc("refonte_consumer_redelivered_messages", "Messages delivered more than once and still unacknowledged.", nil, nil),
		ceiling:    prometheus.NewDesc("refonte_consumer_max_ack_pending", "The consumer's MaxAckPending: at this many unacknowledged messages fresh deliveries stop.", nil, nil),
	}
}

func (c *ConsumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPending
	ch <- c.redeliver
	ch <- c.ceiling
}

func (c *ConsumerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := c.consumer.Info(ctx)
	if err != nil {
		return // the scrape shows the series missing, which is itself the alert
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending))
	ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending))
	ch <- prometheus.MustNewConstMetric(c.redeliver, prometheus.GaugeValue, float64(info.NumRedelivered))
	ch <- prometheus.MustNewConstMetric(c.ceiling, prometheus.GaugeValue, float64(info.Config.MaxAckPending))
}
