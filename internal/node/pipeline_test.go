package node_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

func TestFiveHundredJobsThroughOneWorker(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	f.startWorker("w1")
	const n = 500
	var ids []string
	var osl, svg []job.Message
	for i := range n {
		m := newJob([]string{"win", "linux", "osx"}[i%3])
		ids = append(ids, m.JobID)
		if i%2 == 0 {
			osl = append(osl, m)
		} else {
			svg = append(svg, m)
		}
	}
	f.submit(testutil.TopicOSL, osl...)
	f.submit(testutil.TopicSVG, svg...)
	f.waitTerminal(ids, 2*time.Minute)

	for _, id := range ids {
		f.requireExactlyOneTerminal(id, sampledb.StateSuccess)
		j, _ := f.stack.SampleDB.Job(id)
		require.Equal(t, 1, f.stack.CBC.Starts(j.Submission.Sample.ID), "one CBC export per job")
		tasks := f.stack.SampleDB.Tasks(id)
		require.Len(t, tasks, 1)
		require.Equal(t, sampledb.TaskSuccess, tasks[0].State)
	}
	require.Equal(t, n, f.stack.CBC.TotalStarts())
	require.Eventually(t, func() bool { return f.lag() == 0 }, 30*time.Second, 50*time.Millisecond,
		"every offset committed (kadm lag 0)")
}

func TestDuplicateRecordAndJobOnBothTopicsRunOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	f.startWorker("w1")
	dup := newJob("win")
	both := newJob("linux")
	f.submit(testutil.TopicOSL, dup, dup) // the same record delivered twice
	f.submit(testutil.TopicOSL, both)
	f.submit(testutil.TopicSVG, both) // the same job ID seen on both topics
	ids := []string{dup.JobID, both.JobID}
	f.waitTerminal(ids, time.Minute)
	// A late redelivery after the job finished is dropped too (tombstone).
	f.submit(testutil.TopicSVG, dup)
	later := newJob("win")
	f.submit(testutil.TopicSVG, later)
	f.waitTerminal([]string{later.JobID}, time.Minute)
	for _, m := range []job.Message{dup, both} {
		f.requireExactlyOneTerminal(m.JobID, sampledb.StateSuccess)
		require.Equal(t, 1, f.stack.CBC.Starts(m.Submission.Sample.ID), "one run for job %s", m.JobID)
		require.Len(t, f.stack.SampleDB.Tasks(m.JobID), 1)
	}
	require.Eventually(t, func() bool { return f.lag() == 0 }, 30*time.Second, 50*time.Millisecond)
}

func TestBadRecordsAreDeadLetteredAndNeverReachAVendor(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	f.startWorker("w1")
	good := newJob("win")
	goodJSON, _ := json.Marshal(good)
	mutate := func(fn func(m map[string]any)) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(goodJSON, &m))
		fn(m)
		b, _ := json.Marshal(m)
		return b
	}
	cases := []struct {
		value  []byte
		reason string
	}{
		{[]byte(`{"jobID": "12345678-1234-1234-1234-123456789abc", "submission": `), job.ReasonNotJSON},
		{[]byte(`not json at all`), job.ReasonNotJSON},
		{mutate(func(m map[string]any) { delete(m, "jobID") }), job.ReasonMissingJobID},
		{mutate(func(m map[string]any) { m["jobID"] = "job-42" }), job.ReasonInvalidJobID},
		{mutate(func(m map[string]any) {
			m["submission"].(map[string]any)["sample"] = map[string]any{"id": "x' OR 1=1--"}
			m["classification"].(map[string]any)["sample"] = "x' OR 1=1--"
		}), job.ReasonInvalidHash},
		{append(append([]byte(`{"jobID":"`+good.JobID+`","pad":"`), []byte(strings.Repeat("A", intake.DefaultMaxMessageBytes))...), `"}`...), job.ReasonOversized},
		{mutate(func(m map[string]any) { m["jobID"] = 12345 }), job.ReasonWrongType},
		{mutate(func(m map[string]any) { m["submission"].(map[string]any)["metaData"] = []any{"a"} }), job.ReasonWrongType},
	}
	var recs []*kgo.Record
	for _, c := range cases {
		recs = append(recs, &kgo.Record{Topic: testutil.TopicOSL, Partition: 0, Value: c.value})
	}
	f.produce(recs...)
	// The worker keeps going: a good job after the bad ones succeeds.
	f.submit(testutil.TopicOSL, good)
	f.waitTerminal([]string{good.JobID}, time.Minute)
	f.requireExactlyOneTerminal(good.JobID, sampledb.StateSuccess)

	letters := f.dlq(len(cases))
	require.Len(t, letters, len(cases))
	got := map[string]int{}
	for _, r := range letters {
		got[testutil.Header(r, intake.HeaderReason)]++
		require.Equal(t, testutil.TopicOSL, testutil.Header(r, intake.HeaderSourceTopic))
		require.NotEmpty(t, testutil.Header(r, intake.HeaderSourcePartition))
		require.NotEmpty(t, testutil.Header(r, intake.HeaderSourceOffset))
		require.NotEmpty(t, testutil.Header(r, intake.HeaderError))
	}
	want := map[string]int{}
	for _, c := range cases {
		want[c.reason]++
	}
	require.Equal(t, want, got)
	require.Equal(t, 1, f.stack.CBC.TotalStarts(), "only the good job reached a vendor")
	require.Eventually(t, func() bool { return f.lag() == 0 }, 30*time.Second, 50*time.Millisecond,
		"bad records are committed too")
}

func TestAbortWhileExecutingAndBeforeAdmission(t *testing.T) {
	t.Parallel()
	slow := simstack.TestTiming
	slow.CBCRun = time.Hour // the export never finishes by itself
	f := newFleet(t, fleetOpts{timing: slow})

	// Aborted before any worker saw it: never reaches a vendor.
	early := newJob("win")
	f.stack.SampleDB.CreateJob(early)
	_, ok := f.stack.SampleDB.Abort(early.JobID)
	require.True(t, ok)
	f.submit(testutil.TopicOSL, early)

	running := newJob("win")
	f.submit(testutil.TopicOSL, running)
	f.startWorker("w1")
	require.Eventually(t, func() bool { return f.stack.CBC.Starts(running.Submission.Sample.ID) == 1 },
		30*time.Second, 10*time.Millisecond, "the export is in flight")
	_, ok = f.stack.SampleDB.Abort(running.JobID)
	require.True(t, ok)
	f.waitTerminal([]string{early.JobID, running.JobID}, 30*time.Second)

	f.requireExactlyOneTerminal(running.JobID, sampledb.StateAborted)
	tasks := f.stack.SampleDB.Tasks(running.JobID)
	require.Len(t, tasks, 1)
	require.Equal(t, sampledb.TaskCancelled, tasks[0].State, "open tasks end cancelled")

	f.requireExactlyOneTerminal(early.JobID, sampledb.StateAborted)
	require.Zero(t, f.stack.CBC.Starts(early.Submission.Sample.ID), "an abort before start never reaches a vendor")
	require.Empty(t, f.stack.SampleDB.Tasks(early.JobID))
}

func TestJobTimeoutWhileVendorStillRunning(t *testing.T) {
	t.Parallel()
	slow := simstack.TestTiming
	slow.CBCRun = time.Hour
	f := newFleet(t, fleetOpts{timing: slow, jobTimeout: 1500 * time.Millisecond})
	f.startWorker("w1")
	m := newJob("linux")
	f.submit(testutil.TopicSVG, m)
	f.waitTerminal([]string{m.JobID}, 30*time.Second)
	f.requireExactlyOneTerminal(m.JobID, sampledb.StateTimeout)
	tasks := f.stack.SampleDB.Tasks(m.JobID)
	require.Len(t, tasks, 1)
	require.Equal(t, sampledb.TaskTimeout, tasks[0].State)
	require.Equal(t, 1, f.stack.CBC.Starts(m.Submission.Sample.ID))
}

func TestSampleDBUnavailableMidRun(t *testing.T) {
	t.Parallel()
	f := newFleet(t, fleetOpts{})
	f.startWorker("w1")
	msgs, ids := newJobs(60, "win", nil)
	first, second := msgs[:30], msgs[30:]
	f.submit(testutil.TopicOSL, first...)
	// SampleDB answers 503 for a few seconds while jobs are in flight.
	f.stack.SampleDB.Kit().Add(simhttp.Fault{Name: "outage", Status: 503, For: 3 * time.Second})
	f.submit(testutil.TopicSVG, second...)
	f.waitTerminal(ids, 2*time.Minute)
	for _, id := range ids {
		f.requireExactlyOneTerminal(id, sampledb.StateSuccess)
	}
	require.Positive(t, countRequests(f.stack.SampleDB.Kit(), func(r simhttp.Request) bool { return r.Status == 503 }), "the outage was hit")
}

// countRequests counts the requests k served that match.
func countRequests(k *simhttp.Kit, match func(simhttp.Request) bool) int {
	n := 0
	for _, r := range k.Requests() {
		if match(r) {
			n++
		}
	}
	return n
}

// A vendor that drips its answer a byte at a time cannot hold a job past its
// deadline: the job times out at JOB_TIMEOUT, not when the (much longer)
// request timeout would cut the read.
func TestTricklingVendorCannotHoldAJobPastItsDeadline(t *testing.T) {
	t.Parallel()
	slow := simstack.TestTiming
	slow.CBCRun = time.Hour
	f := newFleet(t, fleetOpts{timing: slow, jobTimeout: 1500 * time.Millisecond, requestTimeout: 10 * time.Minute})
	f.stack.CBC.Kit().Add(simhttp.Fault{Name: "drip", Path: "/jobs/v1/orgs/", Method: "GET", Trickle: time.Second})
	f.startWorker("w1")
	m := newJob("linux")
	f.submit(testutil.TopicOSL, m)
	f.waitTerminal([]string{m.JobID}, time.Minute)
	f.requireExactlyOneTerminal(m.JobID, sampledb.StateTimeout)
	require.Positive(t, countRequests(f.stack.CBC.Kit(), func(r simhttp.Request) bool { return r.Faulted == "drip" }), "the progress answer was trickling")
}

// TestCancelsGoFirstWhenTheVendorBudgetIsShort: with Sophos at its default
// fleet limit (1.5 requests/s) and far more polls wanted than that, every
// aborted job's Sophos run is cancelled at once: cancels wait behind no
// poll, at the scheduler nor at the limiter.
func TestCancelsGoFirstWhenTheVendorBudgetIsShort(t *testing.T) {
	t.Parallel()
	slow := simstack.TestTiming
	slow.SophosRun = time.Hour // the queries never finish by themselves
	// Five cancels take 3.3s of the budget between them; one that has to
	// queue with the polls of 12 jobs for it does not get through in 6s.
	f := newFleet(t, fleetOpts{timing: slow, vendors: []string{edr.KindSophosXDR}, rate: 1.5, cancelTimeout: 6 * time.Second})
	jobs, _ := newJobs(12, "win", nil)
	f.submit(testutil.TopicOSL, jobs...)
	f.startWorker("w1")
	require.Eventually(t, func() bool { return len(f.stack.Sophos.Runs()) == len(jobs) },
		60*time.Second, 20*time.Millisecond, "every query runs")
	// Polls now want far more than the budget: each job polls every 20ms.
	aborted := map[string]bool{}
	var ids []string
	for _, j := range jobs[:5] {
		_, ok := f.stack.SampleDB.Abort(j.JobID)
		require.True(t, ok)
		aborted[j.Classification.Sample] = true
		ids = append(ids, j.JobID)
	}
	f.waitTerminal(ids, 30*time.Second)
	for _, id := range ids {
		f.requireExactlyOneTerminal(id, sampledb.StateAborted)
	}
	cancelled := 0
	for _, r := range f.stack.Sophos.Runs() {
		if aborted[r.SHA256] {
			require.True(t, r.Cancelled, "the aborted job's run %s is cancelled at Sophos", r.ID)
			cancelled++
		} else {
			require.False(t, r.Cancelled, "a running job's run is left alone")
		}
	}
	require.Equal(t, 5, cancelled)
	for _, id := range ids {
		for _, task := range f.stack.SampleDB.Tasks(id) {
			require.Equal(t, sampledb.TaskCancelled, task.State)
		}
	}
}
