package node_test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	dto "github.com/prometheus/client_model/go"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

func sumWhere(f *dto.MetricFamily, labels map[string]string) float64 {
	total := 0.0
	for _, m := range f.GetMetric() {
		ok := true
		for k, v := range labels {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			ok = ok && found
		}
		if ok {
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return total
}

var uuidLike = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-`)

func TestMetricsAndHealthEndpoints(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{vendors: allVendors, rate: 500})
	w := f.startWorker("w1")
	var ids []string
	for range 6 {
		m := windowsJobWithSensor()
		ids = append(ids, m.JobID)
		f.submit(testutil.TopicOSL, m)
	}
	f.produce(&kgo.Record{Topic: testutil.TopicSVG, Value: []byte("not json")})
	f.waitTerminal(ids, time.Minute)

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + w.HTTPAddr() + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
	}
	// The HTTP surface is read-only: GET and HEAD, nothing else.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Head("http://" + w.HTTPAddr() + path)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "HEAD %s", path)
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
			req, err := http.NewRequest(method, "http://"+w.HTTPAddr()+path, strings.NewReader("x"))
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "%s %s", method, path)
		}
	}

	var fams map[string]*dto.MetricFamily
	require.Eventually(t, func() bool {
		fams = scrape(t, w.HTTPAddr())
		fin := fams["analysisfleet_jobs_finished_total"]
		dl := fams["analysisfleet_dead_letters_total"]
		return fin != nil && sumWhere(fin, map[string]string{"state": sampledb.StateSuccess}) == float64(len(ids)) &&
			dl != nil && sumWhere(dl, map[string]string{"reason": "not_json"}) == 1
	}, 10*time.Second, 50*time.Millisecond, "finished and dead-letter counters")

	for _, name := range []string{
		"analysisfleet_jobs_admitted_total", "analysisfleet_jobs_started_total", "analysisfleet_jobs_inflight",
		"analysisfleet_job_duration_seconds", "analysisfleet_tasks_finished_total", "analysisfleet_intake_paused",
		"analysisfleet_lease_renewals_total", "analysisfleet_leases_held", "analysisfleet_outbox_depth",
		"analysisfleet_vendor_calls_total", "analysisfleet_vendor_call_duration_seconds",
		"analysisfleet_http_requests_total", "analysisfleet_http_request_duration_seconds",
		"analysisfleet_ratelimit_wait_seconds_total",
	} {
		require.Contains(t, fams, name)
	}
	kafka := 0
	for name := range fams {
		if strings.HasPrefix(name, "analysisfleet_kafka_") {
			kafka++
		}
	}
	require.Positive(t, kafka, "franz-go client metrics (kprom)")
	require.Equal(t, float64(4*len(ids)), sumWhere(fams["analysisfleet_tasks_finished_total"], map[string]string{"state": "success"}))
	for _, vendor := range []string{"cbc", "cblr", "cytomic", "sophos"} {
		require.Positive(t, sumWhere(fams["analysisfleet_vendor_calls_total"], map[string]string{"vendor": vendor, "operation": "start", "result": "ok"}), vendor)
		require.Positive(t, sumWhere(fams["analysisfleet_http_requests_total"], map[string]string{"service": vendor}), vendor)
	}
	require.Positive(t, sumWhere(fams["analysisfleet_http_requests_total"], map[string]string{"service": "sampledb", "method": "PUT", "code": "200"}))
	require.Positive(t, sumWhere(fams["analysisfleet_http_requests_total"], map[string]string{"service": "download"}), "pre-signed downloads are counted")
	require.Positive(t, sumWhere(fams["analysisfleet_lease_renewals_total"], map[string]string{"result": "ok"})+
		sumWhere(fams["analysisfleet_jobs_admitted_total"], map[string]string{"outcome": "admitted"}))

	// No secret anywhere in the exposition.
	resp, err := http.Get("http://" + w.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, secret := range []string{simstack.AnalyzerKey, simstack.CBCAPISecret, simstack.CBLRToken,
		simstack.CytomicPassword, simstack.SophosClientSecret} {
		require.NotContains(t, string(raw), secret)
	}
	require.Contains(t, string(raw), "analysisfleet_ready 1")

	// No label carries a job ID (or anything that looks like one).
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				require.False(t, uuidLike.MatchString(lp.GetValue()), "%s{%s=%q} carries an ID", name, lp.GetName(), lp.GetValue())
			}
		}
	}
}
