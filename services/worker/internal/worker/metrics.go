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
	deferred        *prometheus.CounterVec
	inFlight        prometheus.Gauge
	pullSize        prometheus.Histogram

	alerts       *prometheus.CounterVec
	transitions  *prometheus.CounterVec
	healthErrors prometheus.Counter

	heartbeats        prometheus.Counter
	heartbeatFailures prometheus.Counter
	reg               prometheus.Registerer
}

// Reasons a message is deferred without using an attempt.
const (
	deferHostQueue   = "host_queue_full"   // its host's local queue is full
	deferHostShare   = "host_share"        // taken out of a long queue to leave other hosts their share
	deferWindowBytes = "window_bytes_full" // the held window has no room for its payload
	deferPaused      = "endpoint_paused"   // its endpoint is paused
)

// NewMetrics registers the worker's series on reg (nil: a private registry, for tests).
// It is long because it is the list of the worker's series, each with its name and help, and
// a list reads best whole.
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
		deferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refonte_callback_deferred_total",
			Help: "Messages put back for later without using an attempt, by reason (host_queue_full, host_share, window_bytes_full, endpoint_paused).",
		}, []string{"reason"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "refonte_callback_in_flight",
			Help: "Deliveries in flight in this worker (claim, attempt and record).",
		}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refonte_worker_heartbeats_total",
			Help: "InProgress heartbeats sent to keep held messages from being redelivered.",
		}),
		heartbeatFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refonte_worker_heartbeat_failures_total",
			Help: "InProgress heartbeats that could not be sent (connection down); the next beat retries.",
		}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refonte_endpoint_alerts_total",
			Help: "Endpoint alert mails by kind (failing, recovered, paused) and result (sent, failed).",
		}, []string{"kind", "result"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refonte_endpoint_transitions_total",
			Help: "Endpoints that entered a state (failing: first failure after a success; healthy: first success after failures; paused: paused automatically), seen by this worker.",
		}, []string{"state"}),
		healthErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "refonte_endpoint_health_errors_total",
			Help: "Endpoint health updates that failed (the attempt's status was recorded regardless).",
		}),
		reg: reg,
		pullSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "refonte_worker_pull_messages",
			Help:    "Messages each pull request brought (each pull costs a subscription and a request on the server).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13), // 1 to 4,096, the most a pull asks for
		}),
	}
	reg.MustRegister(m.attempts, m.deliveries, m.attemptDuration, m.firstAttempt, m.toSuccess,
		m.rejected, m.deferred, m.inFlight, m.pullSize, m.heartbeats, m.heartbeatFailures,
		m.alerts, m.transitions, m.healthErrors)
	for _, r := range event.Reasons {
		m.rejected.WithLabelValues(string(r))
	}
	m.deferred.WithLabelValues(deferHostQueue)
	m.deferred.WithLabelValues(deferHostShare)
	m.deferred.WithLabelValues(deferWindowBytes)
	m.deferred.WithLabelValues(deferPaused)
	for _, k := range []alertKind{alertFailing, alertRecovered, alertPaused} {
		m.alerts.WithLabelValues(string(k), "sent")
		m.alerts.WithLabelValues(string(k), "failed")
	}
	for _, st := range []string{"failing", "healthy", "paused"} {
		m.transitions.WithLabelValues(st)
	}
	return m
}

// watch registers the scheduler's gauges, read at scrape time.
func (m *Metrics) watch(s *scheduler) {
	m.reg.MustRegister(&schedulerCollector{
		sched:     s,
		held:      prometheus.NewDesc("refonte_worker_held_messages", "Messages this worker holds: queued for their host or being delivered.", nil, nil),
		heldBytes: prometheus.NewDesc("refonte_worker_held_bytes", "Payload bytes of the messages this worker holds.", nil, nil),
		queued:    prometheus.NewDesc("refonte_worker_queued_messages", "Held messages waiting in their host's local queue for a delivery slot.", nil, nil),
		limits:    prometheus.NewDesc("refonte_worker_host_limit", "Adaptive concurrency limits of the endpoint hosts this worker knows (one observation per host).", nil, nil),
	})
}

// schedulerCollector reports the scheduler's state; the per-host limits go into one histogram,
// so the number of series does not grow with the number of customers' hosts.
type schedulerCollector struct {
	sched                           *scheduler
	held, heldBytes, queued, limits *prometheus.Desc
}

// hostLimitBuckets are the upper bounds of the host-limit histogram.
var hostLimitBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}

func (c *schedulerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.held
	ch <- c.heldBytes
	ch <- c.queued
	ch <- c.limits
}

func (c *schedulerCollector) Collect(ch chan<- prometheus.Metric) {
	held, queued, heldBytes, limits, _ := c.sched.snapshot(0)
	ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(held))
	ch <- prometheus.MustNewConstMetric(c.heldBytes, prometheus.GaugeValue, float64(heldBytes))
	ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(queued))
	buckets := make(map[float64]uint64, len(hostLimitBuckets))
	var sum float64
	for _, l := range limits {
		sum += float64(l)
		for _, b := range hostLimitBuckets {
			if float64(l) <= b {
				buckets[b]++
			}
		}
	}
	ch <- prometheus.MustNewConstHistogram(c.limits, uint64(len(limits)), sum, buckets)
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
