package main

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// allowedMetrics are the metric names of the worker's metrics contract.
// Histograms are listed by base name and may only be used through their
// _bucket, _sum and _count series. Copied here on purpose: the check must
// not depend on anything outside the repository.
var allowedMetrics = map[string]metricKind{
	"analysisfleet_jobs_admitted_total":           series,
	"analysisfleet_jobs_started_total":            series,
	"analysisfleet_jobs_finished_total":           series,
	"analysisfleet_jobs_inflight":                 series,
	"analysisfleet_job_duration_seconds":          histogram,
	"analysisfleet_tasks_finished_total":          series,
	"analysisfleet_intake_paused":                 series,
	"analysisfleet_dead_letters_total":            series,
	"analysisfleet_lease_renewals_total":          series,
	"analysisfleet_leases_held":                   series,
	"analysisfleet_leases_lost_total":             series,
	"analysisfleet_leases_claimed_total":          series,
	"analysisfleet_outbox_depth":                  series,
	"analysisfleet_vendor_calls_total":            series,
	"analysisfleet_vendor_call_duration_seconds":  histogram,
	"analysisfleet_http_requests_total":           series,
	"analysisfleet_http_request_duration_seconds": histogram,
	"analysisfleet_ratelimit_wait_seconds_total":  series,
	"analysisfleet_abort_latency_seconds":         histogram,
	// Consumer-group lag comes from a Kafka exporter, not from the workers.
	"kafka_consumergroup_lag": series,
}

// kpromPrefix: the contract admits every franz-go kprom metric under it.
const kpromPrefix = "analysisfleet_kafka_"

type metricKind int

const (
	series metricKind = iota
	histogram
)

// checkMetric reports whether name may be queried.
func checkMetric(name string) error {
	if strings.HasPrefix(name, kpromPrefix) {
		return nil
	}
	if k, ok := allowedMetrics[name]; ok {
		if k == histogram {
			return fmt.Errorf("%s is a histogram: use %s_bucket, _sum or _count", name, name)
		}
		return nil
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if k, known := allowedMetrics[base]; known && k == histogram {
				return nil
			}
		}
	}
	return fmt.Errorf("%s is not in the metrics contract", name)
}

// promqlFuncs are PromQL's functions and aggregation operators: an
// identifier followed by "(" (or an aggregation followed by by/without)
// must be one of them.
var promqlFuncs = strings.Fields(`
	sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
	abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
	clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month
	deg delta deriv double_exponential_smoothing exp floor histogram_avg histogram_count
	histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum
	holt_winters hour idelta increase irate label_join label_replace last_over_time ln log10 log2
	mad_over_time max_over_time min_over_time minute month pi predict_linear present_over_time
	quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label
	sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time
	timestamp vector year`)

// groupingKeywords may take a parenthesised list of label names.
var groupingKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

// bareKeywords are identifiers that are never metric names.
var bareKeywords = []string{"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}

// grafanaVar matches $var, ${var…}, $__interval and the old [[var]].
var grafanaVar = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]`)

// metricNames returns the metric names a PromQL expression (possibly with
// Grafana variables) selects. It is a lexer, not a parser: it drops strings,
// label matchers, ranges and comments, then takes every identifier that is
// not a function, keyword or grouping label. It fails on unbalanced
// brackets, unterminated strings and unknown functions, which catches the
// usual typos without pulling in the Prometheus module (hundreds of MB of
// dependencies).
func metricNames(expr string) ([]string, error) {
	t, err := blankOut(grafanaVar.ReplaceAllString(expr, "1"))
	if err != nil {
		return nil, err
	}
	var names []string
	for i := 0; i < len(t); {
		c := t[i]
		switch {
		case isDigit(c) || (c == '.' && i+1 < len(t) && isDigit(t[i+1])):
			// A number or a duration (offset 5m): skip it whole.
			for i < len(t) && (isIdent(t[i]) || t[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(t) && isIdent(t[j]) {
				j++
			}
			word, lower := t[i:j], strings.ToLower(t[i:j])
			k := j
			for k < len(t) && isBlank(t[k]) {
				k++
			}
			paren := k < len(t) && t[k] == '('
			next := nextWord(t[k:])
			switch {
			case slices.Contains(groupingKeywords, lower):
				if paren {
					j = k + closingParen(t[k:])
				}
			case slices.Contains(bareKeywords, lower):
			case paren || next == "by" || next == "without":
				if !slices.Contains(promqlFuncs, word) {
					return nil, fmt.Errorf("unknown function %q", word)
				}
			default:
				names = append(names, word)
			}
			i = j
		default:
			i++
		}
	}
	return names, nil
}

// blankOut replaces strings, label matchers {…}, ranges […] and comments
// with a blank, and checks that parentheses balance.
func blankOut(s string) (string, error) {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"', '\'', '`':
			j, err := skipString(s, i)
			if err != nil {
				return "", err
			}
			i = j
			b.WriteByte(' ')
		case '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
			b.WriteByte(' ')
		case '{', '[':
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			j := i + 1
			for ; j < len(s) && s[j] != closer; j++ {
				if s[j] == '"' || s[j] == '\'' || s[j] == '`' {
					end, err := skipString(s, j)
					if err != nil {
						return "", err
					}
					j = end
				}
			}
			if j >= len(s) {
				return "", fmt.Errorf("unclosed %q", c)
			}
			i = j
			b.WriteByte(' ')
		case '}', ']':
			return "", fmt.Errorf("unexpected %q", c)
		case '(':
			depth++
			b.WriteByte(c)
		case ')':
			depth--
			if depth < 0 {
				return "", errors.New("unbalanced )")
			}
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	if depth != 0 {
		return "", errors.New("unbalanced (")
	}
	return b.String(), nil
}

// skipString returns the index of the quote closing the string that starts
// at s[i].
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j, nil
		}
	}
	return 0, errors.New("unterminated string")
}

// checkExpr checks that expr lexes and selects only contract metrics.
func checkExpr(expr string) error {
	names, err := metricNames(expr)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return errors.New("selects no metric")
	}
	var errs []error
	for _, n := range names {
		if err := checkMetric(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// nextWord returns the identifier s starts with, lower-cased ("" if none).
func nextWord(s string) string {
	if strings.HasPrefix(s, "(") {
		return ""
	}
	i := 0
	for i < len(s) && isIdent(s[i]) {
		i++
	}
	return strings.ToLower(s[:i])
}

// closingParen returns the index just past the parenthesis that closes the
// one s starts with (blankOut has checked the balance).
func closingParen(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(s)
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}
func isIdent(c byte) bool { return isIdentStart(c) || isDigit(c) }
