package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/results"
)

func summaryRecord(t *testing.T, partition int32, s results.Summary) *kgo.Record {
	b, err := json.Marshal(s)
	require.NoError(t, err)
	return &kgo.Record{Topic: results.DefaultTopic, Partition: partition, Key: []byte(s.JobID), Value: b}
}

// TestResultsReadsTheResultTopic: the newest summaries, newest first,
// across partitions; one job's; records that are not summaries counted,
// not shown.
func TestResultsReadsTheResultTopic(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	_, err := w.adm.CreateTopic(ctx(t), 2, 1, nil, results.DefaultTopic)
	require.NoError(t, err)
	w.produce(
		summaryRecord(t, 0, results.Summary{JobID: "job-1", State: "success", Worker: "w1", Finished: 1767225600000,
			Tasks: []results.TaskSummary{{Kind: edr.KindCBCEventExport, State: "success", Result: &edr.Result{Rows: 4, Hosts: []string{"ws-1"}}}}}),
		summaryRecord(t, 1, results.Summary{JobID: "job-2", State: "failed", Reason: "cbc: 403", Worker: "w2", Finished: 1767225660000}),
		&kgo.Record{Topic: results.DefaultTopic, Partition: 1, Value: []byte("not json")},
		summaryRecord(t, 0, results.Summary{JobID: "job-3", State: "aborted", Worker: "w1", Finished: 1767225720000}),
	)
	out := w.ok("results").stdout
	t.Logf("fleetctl results:\n%s", out)
	require.Regexp(t, `(?s)job-3\s+aborted.*job-2\s+failed: cbc: 403.*job-1\s+success\s+w1\s+cbc\.event_export=success\s+4\s+ws-1\s+0\n`, out)
	require.Contains(t, out, "3 summaries shown from Sample.Analysis.Result (4 records read, 1 not summaries)")

	out = w.ok("results", "--last", "1").stdout
	require.Contains(t, out, "job-3")
	require.NotContains(t, out, "job-2")

	var rep resultsReport
	require.NoError(t, json.Unmarshal([]byte(w.ok("results", "--job", "job-2", "-o", "json").stdout), &rep))
	require.Len(t, rep.Results, 1)
	require.Equal(t, "cbc: 403", rep.Results[0].Reason)

	r := w.run("", "results", "--last", "0")
	require.Equal(t, 2, r.code, "%s", r)
	w.env["KAFKA_RESULT_TOPIC"] = "No.Such.Topic"
	r = w.run("", "results")
	require.Equal(t, 1, r.code)
	require.Equal(t, "fleetctl: the result topic No.Such.Topic does not exist\n", r.stderr)
	w.env["KAFKA_RESULT_TOPIC"] = ""
	r = w.run("", "results")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "KAFKA_RESULT_TOPIC")
}
