package cbc_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cbc"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	simcbc "github.com/analysisfleet/analysisfleet/sim/cbc"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

// exact counts the simulator's requests with exactly this method and path.
func (b *bundle) exact(method, path string) int {
	n := 0
	for _, r := range b.sim.Kit().Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

// /progress without "message" (the SDK reads it as optional; its fixture
// for a completed job is {"num_total":18,"num_completed":18}) is not
// malformed: counters that are complete mean done, 0/0 lets the job object
// decide.
func TestProgressWithoutMessage(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, simcbc.Config{QueuedFor: 10 * time.Second, RunFor: 10 * time.Second, ReadyAfter: 5 * time.Second,
		Now: clk.Now, Message: simcbc.MessageNever}, func(c *cbc.Config) { c.Now = clk.Now })
	c := edrtest.Ctx(t)
	hit, err := b.drv.Start(c, edr.Target{SHA256: hitSHA}, edrtest.IntentAt("hit", clk.Now()))
	require.NoError(t, err)
	empty, err := b.drv.Start(c, edr.Target{SHA256: emptySHA}, edrtest.IntentAt("empty", clk.Now()))
	require.NoError(t, err)

	st, err := b.drv.Poll(c, hit)
	require.NoError(t, err, "an answer without message is not malformed")
	require.Equal(t, edr.Status{}, st, "0/0 while queued: the job object says CREATED")
	clk.Advance(15 * time.Second)
	st, err = b.drv.Poll(c, hit)
	require.NoError(t, err)
	require.Equal(t, edr.Status{Progress: "4/9"}, st)
	clk.Advance(5 * time.Second)
	st, err = b.drv.Poll(c, hit)
	require.NoError(t, err)
	require.Equal(t, edr.Status{Done: true, Progress: "9/9"}, st, "complete counters mean done")
	require.Equal(t, 1, b.exact("GET", jobsPath()+refID(t, hit)), "the job object was read only for the ambiguous 0/0")

	// An export that finds nothing says 0/0 from start to end: only the
	// job object can tell when it is done.
	st, err = b.drv.Poll(c, empty)
	require.NoError(t, err)
	require.False(t, st.Done)
	clk.Advance(5 * time.Second)
	st, err = b.drv.Poll(c, empty)
	require.NoError(t, err)
	require.Equal(t, edr.Status{Done: true, Progress: "COMPLETED"}, st)

	res, err := b.drv.Collect(c, hit)
	require.NoError(t, err)
	require.Equal(t, wantHit, res)
	res, err = b.drv.Collect(c, empty)
	require.NoError(t, err)
	require.Equal(t, edr.Result{}, res)
}

// A job that fails at the vendor says FAILED in its job object only (the
// documented progress messages have no failure spelling, and its progress
// freezes). Poll reads the job object once the progress has not changed
// for JobCheckAfter and fails the task with the vendor's reason.
func TestFailedJobFailsTheTaskWithItsReason(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, simcbc.Config{QueuedFor: 10 * time.Second, RunFor: time.Hour, Now: clk.Now, Message: simcbc.MessageAlways},
		func(c *cbc.Config) { c.Now = clk.Now })
	c := edrtest.Ctx(t)
	ref, err := b.drv.Start(c, edr.Target{SHA256: hitSHA}, edrtest.IntentAt("t", clk.Now()))
	require.NoError(t, err)
	jobPath := jobsPath() + refID(t, ref)
	clk.Advance(30 * time.Minute)
	st, err := b.drv.Poll(c, ref)
	require.NoError(t, err)
	require.Equal(t, "IN_PROGRESS 4/9", st.Progress)

	require.True(t, b.sim.FailWith(b.sim.Jobs()[0].ID, "Search request failed: the query timed out"))
	for range 3 { // the frozen answer, polled within JobCheckAfter
		clk.Advance(cbc.DefaultJobCheckAfter / 4)
		st, err = b.drv.Poll(c, ref)
		require.NoError(t, err)
		require.Equal(t, "IN_PROGRESS 4/9", st.Progress)
	}
	require.Zero(t, b.exact("GET", jobPath))
	clk.Advance(cbc.DefaultJobCheckAfter / 4)
	_, err = b.drv.Poll(c, ref)
	e := asEdrErr(t, err)
	require.False(t, e.Retryable, "%v", err)
	require.Equal(t, "FAILED", e.Code)
	require.Contains(t, err.Error(), "Search request failed: the query timed out")
	require.Equal(t, 1, b.exact("GET", jobPath))

	// Collect does not wait for output that never comes: /download's 404
	// is explained by the job object.
	_, err = b.drv.Collect(c, ref)
	e = asEdrErr(t, err)
	require.False(t, e.Retryable, "%v", err)
	require.Equal(t, "FAILED", e.Code)
	require.Contains(t, err.Error(), "the query timed out")
}

// While progress moves, the job object is not read; a job that stays
// QUEUED costs one job read per JobCheckAfter.
func TestJobObjectReadOnlyWhenStuck(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, simcbc.Config{QueuedFor: time.Hour, RunFor: time.Hour, Now: clk.Now, Message: simcbc.MessageAlways},
		func(c *cbc.Config) { c.Now = clk.Now })
	devices := make([]string, 50) // 150 rows over the hour: the counter moves every 24s
	for i := range devices {
		devices[i] = "host-" + strings.Repeat("x", i+1)
	}
	b.sim.SetHits(hitSHA, devices...)
	c := edrtest.Ctx(t)
	ref, err := b.drv.Start(c, edr.Target{SHA256: hitSHA}, edrtest.IntentAt("t", clk.Now()))
	require.NoError(t, err)
	jobPath := jobsPath() + refID(t, ref)
	for range 8 { // QUEUED for 4 minutes, polled every 30s
		st, err := b.drv.Poll(c, ref)
		require.NoError(t, err)
		require.Equal(t, "QUEUED", st.Progress)
		clk.Advance(30 * time.Second)
	}
	require.Equal(t, 3, b.exact("GET", jobPath), "at 1, 2 and 3 minutes")
	clk.Advance(time.Hour)
	before := b.exact("GET", jobPath)
	for range 8 { // IN_PROGRESS, counting, polled every 5 minutes
		st, err := b.drv.Poll(c, ref)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(st.Progress, "IN_PROGRESS"), st.Progress)
		clk.Advance(5 * time.Minute)
	}
	require.Equal(t, before, b.exact("GET", jobPath), "moving progress needs no job read")
}

// The start request depends on the intent alone: the same intent gives the
// same bytes whenever and wherever it is sent, time_range.start is
// Intent.At − Window to the millisecond, and intents a moment apart give
// different requests.
func TestStartRequestDerivedFromIntent(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, fast(), func(c *cbc.Config) { c.Now = clk.Now })
	in := edr.Intent{Key: "job-1/cbc.event_export/3.1", At: time.Date(2026, 2, 1, 10, 0, 0, 123_000_000, time.UTC).UnixMilli()}
	_, err := b.drv.Start(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, in)
	require.NoError(t, err)
	clk.Advance(17 * time.Minute) // another worker, later
	_, err = b.newDriverWith(t, func(c *cbc.Config) { c.Now = clk.Now }).Start(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, in)
	require.NoError(t, err)
	near := in
	near.At += 300
	_, err = b.drv.Start(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, near)
	require.NoError(t, err)

	var bodies [][]byte
	for _, r := range b.rec.Requests() {
		if r.Path == startPath() {
			bodies = append(bodies, r.Body)
		}
	}
	require.Len(t, bodies, 3)
	require.Equal(t, string(bodies[0]), string(bodies[1]), "same intent, byte-identical request")
	require.NotEqual(t, string(bodies[0]), string(bodies[2]))
	require.JSONEq(t, `{"query":{"query":"process_hash:`+hitSHA+`","time_range":{"start":"2026-01-02T10:00:00.123Z"},"rows":10000},
		"api_resource":"enriched_events","version":"v2"}`, string(bodies[0]))
	jobs := b.sim.Jobs()
	require.Len(t, jobs, 3)
	require.Equal(t, "2026-01-02T10:00:00.423Z", jobs[2].TimeStart)
}

// Find re-attaches to the export its intent started, from another worker,
// and to nothing else: not another intent's export of the same sample,
// not another sample's, not an export the vendor recorded more than
// FindSkew before the intent.
func TestFindMatchesItsIntentOnly(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, simcbc.Config{QueuedFor: time.Minute, RunFor: time.Minute, Now: clk.Now}, func(c *cbc.Config) { c.Now = clk.Now })
	c := edrtest.Ctx(t)
	in := edrtest.IntentAt("job-1", clk.Now())
	_, err := b.drv.Find(c, edr.Target{SHA256: hitSHA}, in)
	require.ErrorIs(t, err, edr.ErrNotStarted)
	ref, err := b.drv.Start(c, edr.Target{SHA256: hitSHA}, in)
	require.NoError(t, err)
	other, err := b.drv.Start(c, edr.Target{SHA256: emptySHA}, edrtest.IntentAt("job-2", clk.Now()))
	require.NoError(t, err)

	next := b.newDriver(t)
	got, err := next.Find(c, edr.Target{SHA256: hitSHA}, in)
	require.NoError(t, err)
	require.JSONEq(t, string(ref), string(got))
	got, err = next.Find(c, edr.Target{SHA256: emptySHA}, edr.Intent{Key: "job-2", At: in.At})
	require.NoError(t, err, "job-2 was decided at the same millisecond on this clock")
	require.JSONEq(t, string(other), string(got))

	for name, probe := range map[string]struct {
		sha string
		in  edr.Intent
	}{
		"another intent 1ms later":  {hitSHA, edr.Intent{Key: "job-3", At: in.At + 1}},
		"another sample":            {strings.Repeat("ab", 32), in},
		"another intent 1.5s later": {hitSHA, edr.Intent{Key: "job-4", At: in.At + 1500}},
	} {
		_, err := next.Find(c, edr.Target{SHA256: probe.sha}, probe.in)
		require.ErrorIs(t, err, edr.ErrNotStarted, name)
	}

	// The vendor's clock is behind the worker's: within FindSkew the export
	// is still found, beyond it not.
	late := setup(t, simcbc.Config{Now: clk.Now}, func(c *cbc.Config) { c.Now = clk.Now })
	for _, skew := range []time.Duration{4 * time.Minute, 6 * time.Minute} {
		in := edr.Intent{Key: "skew", At: clk.Now().Add(skew).UnixMilli()}
		_, err := late.drv.Start(c, edr.Target{SHA256: hitSHA}, in)
		require.NoError(t, err)
		_, err = late.drv.Find(c, edr.Target{SHA256: hitSHA}, in)
		if skew < edr.FindSkew {
			require.NoError(t, err)
		} else {
			require.ErrorIs(t, err, edr.ErrNotStarted)
		}
	}
	require.Zero(t, b.exact("POST", startPath())-2)
}

// A start re-sent before the list showed the first makes two exports for
// one intent: every worker picks the same, the oldest.
func TestFindTwoMatchesPicksTheOldest(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, simcbc.Config{Now: clk.Now}, func(c *cbc.Config) { c.Now = clk.Now })
	in := edrtest.IntentAt("job-1", clk.Now())
	first, err := b.drv.Start(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, in)
	require.NoError(t, err)
	clk.Advance(time.Second)
	_, err = b.drv.Start(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, in)
	require.NoError(t, err)
	for range 3 {
		got, err := b.newDriver(t).Find(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, in)
		require.NoError(t, err)
		require.JSONEq(t, string(first), string(got))
	}
}

// A paged list is read page by page (start/rows after a first request
// without parameters, as the SDK sends it), at most FindMaxPages.
func TestFindPagesThroughTheList(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, simcbc.Config{Now: clk.Now, ListPageSize: 2}, func(c *cbc.Config) { c.Now = clk.Now })
	c := edrtest.Ctx(t)
	for i := range 4 {
		_, err := b.drv.Start(c, edr.Target{SHA256: emptySHA}, edrtest.IntentAt("other-"+string(rune('a'+i)), clk.Now()))
		require.NoError(t, err)
		clk.Advance(time.Second)
	}
	in := edrtest.IntentAt("job-1", clk.Now())
	ref, err := b.drv.Start(c, edr.Target{SHA256: hitSHA}, in)
	require.NoError(t, err)

	got, err := b.drv.Find(c, edr.Target{SHA256: hitSHA}, in)
	require.NoError(t, err)
	require.JSONEq(t, string(ref), string(got))
	var lists []string
	for _, r := range b.rec.Requests() {
		if strings.HasSuffix(r.Path, "/jobs") {
			lists = append(lists, r.Path)
		}
	}
	require.Len(t, lists, 3)
	var queries []string
	for _, r := range b.sim.Kit().Requests() {
		if r.Path == "/jobs/v1/orgs/"+orgKey+"/jobs" {
			queries = append(queries, r.Query)
		}
	}
	require.Equal(t, []string{"", "rows=2&start=2", "rows=2&start=4"}, queries)

	capped := b.newDriverWith(t, func(c *cbc.Config) { c.FindMaxPages = 2 })
	_, err = capped.Find(c, edr.Target{SHA256: hitSHA}, in)
	e := asEdrErr(t, err)
	require.False(t, e.Retryable)
	require.NotErrorIs(t, err, edr.ErrNotStarted)
	require.Contains(t, err.Error(), "longer than 2 pages")
}

// Find's failures: throttling and server errors are retryable, a refused
// key is not, and neither is ever "not started".
func TestFindErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	listPath := "/jobs/v1/orgs/" + orgKey + "/jobs"
	for _, status := range []int{429, 503, 403} {
		remove := b.sim.Kit().Add(simhttp.Fault{Path: listPath, Method: "GET", Status: status, Count: 1})
		_, err := b.drv.Find(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, edr.Intent{Key: "k", At: time.Now().UnixMilli()})
		remove()
		e := asEdrErr(t, err)
		require.Equal(t, status != 403, e.Retryable, "%d: %v", status, err)
		require.False(t, errors.Is(err, edr.ErrNotStarted))
	}
	_, err := b.drv.Find(edrtest.Ctx(t), edr.Target{SHA256: "nope"}, edr.Intent{Key: "k", At: time.Now().UnixMilli()})
	require.ErrorIs(t, err, edr.ErrBadHash)
}
