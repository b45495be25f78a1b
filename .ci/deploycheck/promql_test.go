package main

import (
	"slices"
	"testing"
)

func TestMetricNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`sum by (state) (rate(analysisfleet_jobs_finished_total{namespace=~"$namespace"}[$__rate_interval]))`,
			[]string{"analysisfleet_jobs_finished_total"}},
		{`sum(rate(x_total[5m])) by (job, le)`, []string{"x_total"}},
		{`histogram_quantile(0.99, sum without (pod) (rate(a_bucket{l="}{[]("}[30m:1m])))`, []string{"a_bucket"}},
		{"a / on(namespace) group_left(pod)\n b offset 5m", []string{"a", "b"}},
		{`(min by (ns) (a) == 1) unless on () (sum(delta(b[15m])) <= 0)`, []string{"a", "b"}},
		{`absent(a{job="x"}) or (sum(rate(b[5m])) == bool 0) # a comment with c_total`, []string{"a", "b"}},
		{`label_replace(a, "dst", "$1", "src", "(.*)") and ignoring(x) c`, []string{"a", "c"}},
		{`topk(5, a) * 1e3 + .5`, []string{"a"}},
		{`count(a{l='it\'s'}) > Inf`, []string{"a"}},
	} {
		got, err := metricNames(tc.expr)
		if err != nil {
			t.Errorf("metricNames(%q): %v", tc.expr, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

func TestMetricNamesRejectsBrokenExpressions(t *testing.T) {
	t.Parallel()
	for _, expr := range []string{
		`sum(rate(a[5m])`,
		`sum(rate(a[5m]))))`,
		`rate(a{job="x"[5m])`,
		`a{job="x}`,
		`rat(a[5m])`,
		`summ by (x) (a)`,
		`a}`,
	} {
		if _, err := metricNames(expr); err == nil {
			t.Errorf("metricNames(%q) accepted a broken expression", expr)
		}
	}
}

func TestCheckExpr(t *testing.T) {
	t.Parallel()
	for expr, ok := range map[string]bool{
		`sum(rate(analysisfleet_jobs_finished_total[5m]))`:                                            true,
		`histogram_quantile(0.5, sum by (le) (rate(analysisfleet_abort_latency_seconds_bucket[5m])))`: true,
		`rate(analysisfleet_abort_latency_seconds_sum[5m])`:                                           true,
		`rate(analysisfleet_kafka_read_bytes_total[5m])`:                                              true,
		`sum(kafka_consumergroup_lag{consumergroup="g"})`:                                             true,
		`rate(analysisfleet_abort_latency_seconds[5m])`:                                               false, // histogram base name
		`rate(analysisfleet_jobs_finished_total_bucket[5m])`:                                          false, // not a histogram
		`rate(analysisfleet_jobs_done_total[5m])`:                                                     false, // not in the contract
		`up == 0`:        false,
		`vector(1)`:      false, // selects nothing
		`sum(rate(a[5m]`: false,
	} {
		if err := checkExpr(expr); (err == nil) != ok {
			t.Errorf("checkExpr(%q) = %v, want ok=%v", expr, err, ok)
		}
	}
}
