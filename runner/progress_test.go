package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/state"
)

// progressDriver's operations report a progress line on each of polls
// polls (a new one each time when moving), then are done.
type progressDriver struct {
	fakeDriver
	polls  int32
	moving bool
	n      atomic.Int32
}

func (d *progressDriver) Poll(context.Context, edr.Ref) (edr.Status, error) {
	n := d.n.Add(1)
	if n >= d.polls {
		return edr.Status{Done: true}, nil
	}
	p := "0/100 rows"
	if d.moving {
		p = fmt.Sprintf("%d/100 rows", n)
	}
	return edr.Status{Progress: p}, nil
}

// TestProgressAloneIsNotWrittenEveryPoll: an export whose progress line
// changes with every poll costs the ledger no more writes than one whose
// line stands still (within progressEvery): the line is for people and
// nothing resumes from it, and at 100,000 exports a write per poll was
// most of the ledger's traffic.
func TestProgressAloneIsNotWrittenEveryPoll(t *testing.T) {
	t.Parallel()
	writes := func(moving bool, id string) int64 {
		d := &progressDriver{fakeDriver: fakeDriver{kind: edr.KindCBCEventExport}, polls: 20, moving: moving}
		w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
		evals := &testutil.RedisCounter{}
		w.store.Redis().AddHook(evals)
		m := jobMsg(nil)
		m.JobID = id
		j := w.run(m)
		require.Equal(t, exitDone, j.exit)
		require.EqualValues(t, 20, d.n.Load(), "every poll made")
		return evals.Scripts.Load()
	}
	still := writes(false, "42345678-1234-1234-1234-123456789abc")
	moving := writes(true, "52345678-1234-1234-1234-123456789abc")
	require.Equal(t, still, moving, "19 new progress lines cost no more ledger scripts than none")
}

// TestProgressWritesAreBoundedPerWorker: however many tasks have a new
// progress line, a worker writes at most progressLines of them a second
// (as many at once), so what waiting costs the ledger does not grow with N.
func TestProgressWritesAreBoundedPerWorker(t *testing.T) {
	t.Parallel()
	var b progressBudget
	t0 := time.Unix(1000, 0)
	took := 0
	for range 1000 { // a thousand tasks' lines at once
		if b.take(t0) {
			took++
		}
	}
	require.Equal(t, progressLines, took, "a full bucket, then nothing")
	took = 0
	for i := range 10000 { // ten thousand more over ten seconds
		if b.take(t0.Add(time.Duration(i+1) * time.Millisecond)) {
			took++
		}
	}
	require.InDelta(t, 10*progressLines, took, 1, "the rate over ten seconds")
	require.False(t, b.take(t0.Add(5*time.Second)), "an earlier time adds nothing")
}

// TestPollWaitIsSpreadWithinItsBounds: polls of operations started
// together spread out, never sooner than a vendor asked and never later
// than our own interval.
func TestPollWaitIsSpreadWithinItsBounds(t *testing.T) {
	t.Parallel()
	const d = 10 * time.Second
	for _, vendorNamed := range []bool{false, true} {
		lo, hi := d*4/5, d
		if vendorNamed {
			lo, hi = d, d*11/10
		}
		seen := map[time.Duration]bool{}
		for range 1000 {
			w := pollWait(d, vendorNamed)
			require.GreaterOrEqual(t, w, lo)
			require.LessOrEqual(t, w, hi)
			seen[w] = true
		}
		require.Greater(t, len(seen), 900, "a thousand operations polled at a thousand different times, nearly")
	}
	require.Equal(t, time.Duration(0), pollWait(0, false), "no delay stays none")
}

// TestProgressLinesGoToTheSessionsHashAndGoWithTheJob: a poll whose only
// news is its progress line puts it in the session's lines hash, written
// by one runOnce for the whole worker; the job's end deletes it.
func TestProgressLinesGoToTheSessionsHashAndGoWithTheJob(t *testing.T) {
	t.Parallel()
	d := &progressDriver{fakeDriver: fakeDriver{kind: edr.KindCBCEventExport}, polls: 4, moving: true}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	m := jobMsg(nil)
	m.JobID = "62345678-1234-1234-1234-123456789abc"
	j := w.run(m)
	require.Equal(t, exitDone, j.exit)
	ctx := testutil.Context(t, 10*time.Second)
	require.Equal(t, 1, w.runner.lines.runOnce(ctx), "the first line; the next ones came within progressEvery")

	key := "{" + w.store.Namespace() + "}:lines:" + w.runner.Session().ID
	field := state.LineField(m.JobID, edr.KindCBCEventExport)
	raw, err := w.store.Redis().HGet(ctx, key, field).Result()
	require.NoError(t, err)
	require.JSONEq(t, `{"progress":"1/100 rows","polls":1,"nextPoll":`+nextPollOf(t, raw)+`}`, raw)

	w.runner.lines.jobEnded(j)
	require.Equal(t, 0, w.runner.lines.runOnce(ctx))
	n, err := w.store.Redis().HExists(ctx, key, field).Result()
	require.NoError(t, err)
	require.False(t, n, "the job's end deletes its line")
}

// nextPollOf returns the nextPoll of a stored line, which the test
// cannot know (the poll's spread), after checking it is a time.
func nextPollOf(t *testing.T, raw string) string {
	t.Helper()
	var l state.ProgressLine
	require.NoError(t, json.Unmarshal([]byte(raw), &l))
	require.Positive(t, l.NextPoll)
	return fmt.Sprint(l.NextPoll)
}
