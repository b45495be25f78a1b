// Package metrics defines the fleet's Prometheus metrics and the small
// adapters that feed them at the boundaries: the runner's and intake's
// observers, an HTTP transport that counts every outgoing request, the rate
// limiter's wait hook, and franz-go's kprom plugin for the Kafka client.
// No label carries a job ID, a URL or a secret. The names are listed in the
// README.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

const ns = "analysisfleet"

// Metrics holds every collector. Its methods are safe for concurrent use.
type Metrics struct {
	reg prometheus.Registerer

	admitted      *prometheus.CounterVec
	started       *prometheus.CounterVec
	finished      *prometheus.CounterVec
	jobDuration   *prometheus.HistogramVec
	tasks         *prometheus.CounterVec
	paused        prometheus.Gauge
	deadLetters   *prometheus.CounterVec
	renewals      *prometheus.CounterVec
	leasesLost    *prometheus.CounterVec
	sessionsLost  *prometheus.CounterVec
	claimed       prometheus.Counter
	vendorCalls   *prometheus.CounterVec
	vendorLatency *prometheus.HistogramVec
	vendorStarts  *prometheus.CounterVec
	refusals      *prometheus.CounterVec
	quarantined   prometheus.Counter
	tenantReloads *prometheus.CounterVec
	httpRequests  *prometheus.CounterVec
	httpLatency   *prometheus.HistogramVec
	rateWait      *prometheus.CounterVec
	abortLatency  prometheus.Histogram
	kafka         *kprom.Metrics
}

// New registers the fleet's metrics with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{reg: reg}
	// Each metric is registered as it is made, in the fleet's namespace.
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	histogramVec := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: name, Help: help, Buckets: buckets}, labels)
		reg.MustRegister(h)
		return h
	}
	m.admitted = counterVec("jobs_admitted_total",
		"Intake admissions by outcome (running and finished are duplicate records dropped).", "outcome")
	m.started = counterVec("jobs_started_total",
		"Job runs started on this worker; resumed = taken over with checkpoints.", "resumed")
	m.finished = counterVec("jobs_finished_total",
		"Terminal states acknowledged by SampleDB.", "state")
	m.jobDuration = histogramVec("job_duration_seconds",
		"From first admission to the acknowledged terminal state.",
		[]float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800}, "state")
	m.tasks = counterVec("tasks_finished_total",
		"Tasks ended, by task kind and state.", "task", "state")
	m.paused = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "intake_paused",
		Help: "1 while fetching is paused because MAX_INFLIGHT jobs are running."})
	reg.MustRegister(m.paused)
	m.deadLetters = counterVec("dead_letters_total",
		"Bad records dead-lettered, by reason.", "reason")
	m.renewals = counterVec("lease_renewals_total",
		"Session renewal round trips (one per tick, whatever the number of jobs held).", "result")
	m.leasesLost = counterVec("leases_lost_total",
		"Leases this worker lost, by reason.", "reason")
	m.sessionsLost = counterVec("sessions_lost_total",
		"Times this worker lost its session (and every job it held), by reason: expired (no renewal reached Redis in time), missing (Redis lost its data).", "reason")
	m.claimed = counter("leases_claimed_total",
		"Expired or released leases taken over by this worker.")
	m.vendorCalls = counterVec("vendor_calls_total",
		"Driver calls made by the runner, by vendor, operation and result.", "vendor", "operation", "result")
	m.vendorLatency = histogramVec("vendor_call_duration_seconds",
		"Driver call latency.", prometheus.ExponentialBuckets(0.01, 2.5, 10), "vendor", "operation")
	m.vendorStarts = counterVec("vendor_operations_started_total",
		"Vendor operations begun for tasks, by how: first, reattached (an earlier start found at the vendor), again (the vendor surely had none), again_unverified (the vendor could not be searched: it may run twice).", "vendor", "how")
	m.refusals = counterVec("sampledb_refusals_total",
		"Terminal states SampleDB refused (412) for jobs it does not hold as terminal; the runner keeps retrying.", "state")
	m.quarantined = counter("ledger_keys_quarantined_total",
		"Ledger keys of the wrong type moved aside (quarantine) so one corrupt key cannot stop the fleet.")
	m.tenantReloads = counterVec("tenants_reloads_total",
		"Changes of TENANTS_FILE seen, by result (ok: applied; error: refused, the previous accounts kept).", "result")
	m.httpRequests = counterVec("http_requests_total",
		"Outgoing HTTP requests by service, method and status code (\"error\" when no response).", "service", "method", "code")
	m.httpLatency = histogramVec("http_request_duration_seconds",
		"Time to response headers.", prometheus.ExponentialBuckets(0.005, 2.5, 10), "service", "method")
	m.rateWait = counterVec("ratelimit_wait_seconds_total",
		"Time spent waiting for the fleet-wide rate limiter (incl. 429 cool-downs).", "vendor")
	m.abortLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "abort_latency_seconds",
		Help:    "From an abort being noticed to aborted acknowledged by SampleDB.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}})
	reg.MustRegister(m.abortLatency)
	m.kafka = kprom.NewMetrics(ns+"_kafka", kprom.Registerer(reg))
	// Known label values start at zero, so rates and alerts see them before
	// the first event.
	for _, r := range []string{"ok", "error"} {
		m.renewals.WithLabelValues(r)
	}
	for _, r := range []string{"stolen", "missing", "expired"} {
		m.leasesLost.WithLabelValues(r)
	}
	for _, r := range []string{"missing", "expired"} {
		m.sessionsLost.WithLabelValues(r)
	}
	for _, st := range []string{"success", "failed", "aborted", "timeout"} {
		m.finished.WithLabelValues(st)
	}
	return m
}

// Gauges registers the gauges read at scrape time: in-flight jobs, held
// leases, and the fleet's outbox depth (read from Redis with a short
// timeout).
func (m *Metrics) Gauges(inflight, held func() int, outbox func(context.Context) (int64, error)) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "jobs_inflight",
		Help: "Jobs running on this worker."}, func() float64 { return float64(inflight()) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "leases_held",
		Help: "Leases this worker holds."}, func() float64 { return float64(held()) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "outbox_depth",
		Help: "Jobs whose terminal state is decided but not yet acknowledged by SampleDB (fleet-wide)."},
		func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			n, err := outbox(ctx)
			if err != nil {
				return -1
			}
			return float64(n)
		}))
}

// Ready registers analysisfleet_ready: 1 while ready (Kafka and Redis
// reachable, not draining), evaluated at scrape time.
func (m *Metrics) Ready(ready func() bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "ready",
		Help: "1 while the worker is ready: Kafka and Redis answer and it is not draining."},
		func() float64 {
			if ready() {
				return 1
			}
			return 0
		}))
}

// KafkaHooks returns the franz-go client hooks (kprom).
func (m *Metrics) KafkaHooks() kgo.Opt { return kgo.WithHooks(m.kafka) }

// Worker observer (worker.Observer).

func (m *Metrics) JobStarted(resumed bool) {
	m.started.WithLabelValues(strconv.FormatBool(resumed)).Inc()
}
func (m *Metrics) JobFinished(state string, d time.Duration) {
	m.finished.WithLabelValues(state).Inc()
	m.jobDuration.WithLabelValues(state).Observe(d.Seconds())
}
func (m *Metrics) TaskFinished(kind, state string) { m.tasks.WithLabelValues(kind, state).Inc() }
func (m *Metrics) AbortNoticed(d time.Duration)    { m.abortLatency.Observe(d.Seconds()) }
func (m *Metrics) LeaseLost(reason string)         { m.leasesLost.WithLabelValues(reason).Inc() }
func (m *Metrics) SessionLost(reason string)       { m.sessionsLost.WithLabelValues(reason).Inc() }
func (m *Metrics) Claimed(n int)                   { m.claimed.Add(float64(n)) }
func (m *Metrics) LeaseRenewed(_ int, err error)   { m.renewals.WithLabelValues(result(err)).Inc() }
func (m *Metrics) VendorCall(vendor, op, res string, d time.Duration) {
	m.vendorCalls.WithLabelValues(vendor, op, res).Inc()
	m.vendorLatency.WithLabelValues(vendor, op).Observe(d.Seconds())
}

func (m *Metrics) VendorStarted(vendor, how string) {
	m.vendorStarts.WithLabelValues(vendor, how).Inc()
}

func (m *Metrics) DeliveryRefused(state string) { m.refusals.WithLabelValues(state).Inc() }

func (m *Metrics) Quarantined(n int) { m.quarantined.Add(float64(n)) }

// TenantsReloaded counts a reload of the tenants file (tenant.Reloader.Result).
func (m *Metrics) TenantsReloaded(err error) { m.tenantReloads.WithLabelValues(result(err)).Inc() }

// Intake observer (consumer.Observer).

func (m *Metrics) Admitted(outcome string, n int) {
	m.admitted.WithLabelValues(outcome).Add(float64(n))
}
func (m *Metrics) DeadLettered(reason string) { m.deadLetters.WithLabelValues(reason).Inc() }
func (m *Metrics) Paused(p bool) {
	if p {
		m.paused.Set(1)
	} else {
		m.paused.Set(0)
	}
}

// RateLimitWait returns the hook for state.RateLimiter.OnWait.
func (m *Metrics) RateLimitWait(vendor string) func(time.Duration) {
	c := m.rateWait.WithLabelValues(vendor)
	return func(d time.Duration) { c.Add(d.Seconds()) }
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// Transport wraps base (nil = httpc.NewTransport) so every request through
// it is counted under service. The lease guard does not depend on base: an
// httpc.Client checks it on the connection whatever transport it is given.
func (m *Metrics) Transport(service string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = httpc.NewTransport()
	}
	return &countingTransport{m: m, service: service, base: base}
}

type countingTransport struct {
	m       *Metrics
	service string
	base    http.RoundTripper
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.base.RoundTrip(r)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	t.m.httpRequests.WithLabelValues(t.service, r.Method, code).Inc()
	t.m.httpLatency.WithLabelValues(t.service, r.Method).Observe(time.Since(start).Seconds())
	return resp, err
}
