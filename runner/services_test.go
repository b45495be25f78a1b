package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

// Each service of the Runner is tested through its runOnce, the body its
// loop ticks: no timing, one pass at a time.

func TestSlots(t *testing.T) {
	t.Parallel()
	s := newSlots(3)
	require.Equal(t, 2, s.tryAcquire(2))
	require.Equal(t, 1, s.tryAcquire(5), "only what is left")
	require.Zero(t, s.tryAcquire(1))
	room := s.roomChan()
	s.release(2)
	<-room // a slot freed: whoever waits for room is woken
	require.Equal(t, 2, s.free())
	j := &jobRun{lease: state.Lease{ID: "job-1", Token: 7}}
	require.Nil(t, s.put(j))
	require.Same(t, j, s.get("job-1"))
	require.Equal(t, 1, s.running())
	again := &jobRun{lease: state.Lease{ID: "job-1", Token: 9}}
	require.Same(t, j, s.put(again), "a run replaced by a later claim of the same job")
	s.done(j) // the old run ends: the new one stays registered
	require.Same(t, again, s.get("job-1"))
	s.shutDown()
	require.Zero(t, s.tryAcquire(1), "nothing is granted while draining")
}

// waitRun waits for a run of job id on w's runner to end (it may have
// ended already) and returns it, the runner's bookkeeping for it done.
func waitRun(t *testing.T, w *jobWorld, id string) *jobRun {
	t.Helper()
	return <-w.endedChan(id)
}

func TestClaimerTakesOverReleasedJobs(t *testing.T) {
	t.Parallel()
	d := &fakeDriver{kind: edr.KindCBCEventExport}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	w.sim.CreateJob(jobMsg(nil))
	b, err := json.Marshal(jobMsg(nil))
	require.NoError(t, err)
	dead, _, err := w.store.OpenSession(ctx(t), "dead-worker")
	require.NoError(t, err)
	res, _, err := w.store.Admit(ctx(t), dead, []state.AdmitRequest{{ID: jtJob, Msg: b, Source: "test"}})
	require.NoError(t, err)
	require.Equal(t, state.Admitted, res[0].Outcome)
	require.Zero(t, w.runner.claimer.runOnce(ctx(t)), "a live lease is not claimed")

	_, err = w.store.Release(ctx(t), dead, []state.Lease{res[0].Lease})
	require.NoError(t, err)
	require.Equal(t, 1, w.runner.claimer.runOnce(ctx(t)))
	j := waitRun(t, w, jtJob)
	require.Equal(t, exitDone, j.exit)
	require.Greater(t, j.lease.Token, res[0].Lease.Token, "a takeover fences the previous owner")
	require.Equal(t, sampledb.StateSuccess, w.tombstone(jtJob))
	require.Equal(t, w.runner.cfg.MaxInflight, w.runner.Free(), "the slot is given back")
}

// blockingDriver's operations never finish until released.
type blockingDriver struct {
	fakeDriver
	once    sync.Once
	polling chan struct{} // closed at the first poll
}

func (d *blockingDriver) Poll(ctx context.Context, _ edr.Ref) (edr.Status, error) {
	d.once.Do(func() { close(d.polling) })
	return edr.Status{NextPoll: time.Hour}, nil
}

func TestAbortPollerAbortsRequestedJobs(t *testing.T) {
	t.Parallel()
	d := &blockingDriver{fakeDriver: fakeDriver{kind: edr.KindCBCEventExport}, polling: make(chan struct{})}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	w.launch(jobMsg(nil))
	<-d.polling // the job is executing at the vendor
	scripts := &testutil.RedisCounter{}
	w.store.Redis().AddHook(scripts)
	require.Zero(t, w.runner.aborts.runOnce(ctx(t)), "nothing requested yet")
	listing := scripts.Scripts.Load() // the fleet lock's
	require.Equal(t, 1, w.count("GET", "/sampledb/v2/job"), "one listing")
	require.Equal(t, -1, w.runner.aborts.runOnce(ctx(t)), "within the interval the fleet lists once")
	require.Equal(t, 1, w.count("GET", "/sampledb/v2/job"))
	_, ok := w.sim.Abort(jtJob)
	require.True(t, ok)
	w.unlock("aborts")
	require.Equal(t, 1, w.runner.aborts.runOnce(ctx(t)), "noted in the ledger and mailed to the holder")
	w.unlock("aborts")
	before := scripts.Scripts.Load()
	require.Zero(t, w.runner.aborts.runOnce(ctx(t)), "noted once")
	require.Equal(t, listing, scripts.Scripts.Load()-before, "a listing meeting an abort it noted a moment ago does not note it again")
	// The mailbox tells the job.
	require.NoError(t, w.runner.keeper.ReadMailOnce(ctx(t)))
	j := waitRun(t, w, jtJob)
	require.Equal(t, exitDone, j.exit)
	require.Equal(t, sampledb.StateAborted, w.tombstone(jtJob))
}

func TestReconcilerAdoptsWhatTheLedgerLost(t *testing.T) {
	t.Parallel()
	w := newJobWorld(t, cbcOnly(), []edr.Driver{&fakeDriver{kind: edr.KindCBCEventExport}}, nil)
	lost := jobMsg(nil)
	w.sim.CreateJob(lost)
	_, err := w.runner.cfg.SampleDB.UpdateJob(ctx(t), lost.JobID, sampledb.StateExecuting) // it ran; Redis lost it
	require.NoError(t, err)
	queued := jobMsg(nil)
	queued.JobID = "22345678-1234-1234-1234-123456789abc"
	w.sim.CreateJob(queued)

	// A young ledger (just created: Redis came back empty) adopts nothing.
	_, err = w.runner.reconciler.runOnce(ctx(t), false)
	var young *errEpochYoung
	require.ErrorAs(t, err, &young)

	w.ageEpoch(time.Hour)
	n, err := w.runner.reconciler.runOnce(ctx(t), false)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the executing job the ledger does not know")
	rec, err := w.store.Get(ctx(t), lost.JobID)
	require.NoError(t, err)
	require.NotNil(t, rec)
	require.Equal(t, "reconciler", rec.Source)
	var adopted job.Message
	require.NoError(t, json.Unmarshal(rec.Msg, &adopted))
	require.Equal(t, lost.Submission, adopted.Submission, "the listing is brief; the job's own GET brings its submission")

	n, err = w.runner.reconciler.runOnce(ctx(t), true)
	require.NoError(t, err)
	require.Equal(t, 1, n, "a full pass takes the enqueued one too, not the one already known")
	n, err = w.runner.reconciler.runOnce(ctx(t), true)
	require.NoError(t, err)
	require.Zero(t, n, "idempotent")
}

func TestReconcilerPeriodicPassChecksNewJobsAndAShardOfTheRest(t *testing.T) {
	t.Parallel()
	rc := &reconciler{every: time.Minute}
	require.EqualValues(t, 60, rc.sweepShards(), "an hour's sweep at a 1-minute interval")
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	require.True(t, rc.checks(sampledb.Job{ID: "a", StartTimestamp: now.Add(-2 * time.Minute).UnixMilli()}, now), "went executing within two intervals")
	require.True(t, rc.checks(sampledb.Job{ID: "a"}, now), "SampleDB does not say when: always")

	// Of the older jobs, each pass takes a shard, and one sweep of passes
	// takes every job exactly once.
	seen := map[string]int{}
	most := 0
	for p := range 60 {
		at := now.Add(time.Duration(p) * time.Minute)
		n := 0
		for i := range 600 {
			sj := sampledb.Job{ID: fmt.Sprintf("job-%d", i), StartTimestamp: now.Add(-24 * time.Hour).UnixMilli()}
			if rc.checks(sj, at) {
				seen[sj.ID]++
				n++
			}
		}
		most = max(most, n)
	}
	require.Len(t, seen, 600)
	for id, n := range seen {
		require.Equal(t, 1, n, id)
	}
	require.Less(t, most, 60, "a pass asks about a share, not all 600")

	long := &reconciler{every: 2 * time.Hour}
	require.EqualValues(t, 1, long.sweepShards(), "an interval longer than the sweep checks every job every pass")
}

func TestReconcilerAdoptsOlderLostJobsWithinOneSweep(t *testing.T) {
	t.Parallel()
	w := newJobWorld(t, cbcOnly(), []edr.Driver{&fakeDriver{kind: edr.KindCBCEventExport}}, nil)
	const lost = 40
	for i := range lost {
		m := jobMsg(nil)
		m.JobID = fmt.Sprintf("32345678-1234-1234-1234-1234567890%02d", i)
		w.sim.CreateJob(m)
		_, err := w.runner.cfg.SampleDB.UpdateJob(ctx(t), m.JobID, sampledb.StateExecuting) // it ran; Redis lost it
		require.NoError(t, err)
	}
	w.ageEpoch(time.Hour)
	rc := w.runner.reconciler
	start := time.Now().Add(3 * time.Hour) // every job went executing long before
	total := 0
	for p := range int(rc.sweepShards()) {
		rc.now = func() time.Time { return start.Add(time.Duration(p) * rc.every) }
		n, err := rc.runOnce(ctx(t), false)
		require.NoError(t, err)
		require.Less(t, n, lost, "pass %d asked about a shard only", p)
		total += n
	}
	require.Equal(t, lost, total, "one sweep adopts every lost job")
}

func TestReleaserHandsLeasesOverInOneTrip(t *testing.T) {
	t.Parallel()
	w := newJobWorld(t, cbcOnly(), nil, nil)
	var leases []state.Lease
	for i := range 3 {
		id := fmt.Sprintf("12345678-1234-1234-1234-12345678900%d", i)
		l, _ := w.admit(id, []byte(`{}`))
		leases = append(leases, l)
	}
	require.Zero(t, w.runner.releaser.runOnce(), "nothing queued")
	for _, l := range leases {
		w.runner.releaser.queue(w.runner.Session(), l)
	}
	require.Equal(t, 3, w.runner.releaser.runOnce())
	other, _, err := w.store.OpenSession(ctx(t), "other")
	require.NoError(t, err)
	got, _, err := w.store.Claim(ctx(t), other, 10)
	require.NoError(t, err)
	require.Len(t, got, 3, "released leases are claimable at once")
}

// launch admits msg and runs it on the runner, in the background.
func (w *jobWorld) launch(msg job.Message) {
	w.t.Helper()
	w.sim.CreateJob(msg)
	b, err := json.Marshal(msg)
	require.NoError(w.t, err)
	require.Equal(w.t, 1, w.runner.TryAcquire(1))
	l, rec := w.admit(msg.JobID, b)
	w.runner.Launch(w.runner.Session(), l, rec)
}

// unlock drops a fleet lock, as its expiry would.
func (w *jobWorld) unlock(name string) {
	w.t.Helper()
	require.NoError(w.t, w.store.Redis().Del(ctx(w.t), "{"+w.store.Namespace()+"}:lock:"+name).Err())
}

// ageEpoch makes the ledger's epoch look d old (as if Redis had kept its
// data for that long).
func (w *jobWorld) ageEpoch(d time.Duration) {
	w.t.Helper()
	_, err := w.store.Epoch(ctx(w.t))
	require.NoError(w.t, err)
	key := "{" + w.store.Namespace() + "}:epoch:at"
	require.NoError(w.t, w.store.Redis().Set(ctx(w.t), key, strconv.FormatInt(time.Now().Add(-d).UnixMilli(), 10), 0).Err())
}

func ctx(t *testing.T) context.Context { return testutil.Context(t, 30*time.Second) }

// TestRetryHelper: the one retry loop stops as its policy says, and the
// job's own stop always wins.
func TestRetryHelper(t *testing.T) {
	t.Parallel()
	w := newJobWorld(t, cbcOnly(), nil, nil)
	l, rec := w.admit(jtJob, []byte(`{}`))
	require.True(t, w.runner.keeper.Add(w.runner.Session(), l))
	j := newJobRun(w.runner, w.runner.Session(), l, rec)
	boom, final := errors.New("transient"), errors.New("permanent")

	calls := 0
	err := j.do(retry{ctx: j.ctx, again: permanentIf(final)}, func(context.Context) error {
		calls++
		if calls < 3 {
			return boom
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, calls, "retried until it succeeded")

	err = j.do(retry{ctx: j.ctx, again: permanentIf(final)}, func(context.Context) error { return final })
	require.ErrorIs(t, err, final, "a permanent failure is returned at once")

	err = j.do(retry{ctx: j.ctx, deadline: time.Now()}, func(context.Context) error { return boom })
	require.ErrorIs(t, err, errTaskTimeout, "a wait past the deadline is a timeout")

	j.stopTasks()
	err = j.do(retry{ctx: j.ctx, halt: true}, func(context.Context) error { t.Fatal("called after halt"); return nil })
	require.ErrorIs(t, err, errHalted)

	var waited []time.Duration
	calls = 0
	err = j.do(retry{ctx: j.ctx, waiting: func(_ error, d time.Duration) time.Duration { waited = append(waited, d); return 0 }},
		func(context.Context) error {
			if calls++; calls == 1 {
				return boom
			}
			return nil
		})
	require.NoError(t, err)
	require.Len(t, waited, 1, "told of each retry")

	j.lose(errLeaseLost)
	err = j.do(retry{ctx: j.ctx, guard: true}, func(context.Context) error { t.Fatal("called without a lease"); return nil })
	require.ErrorIs(t, err, errLeaseLost, "the job's stop wins")
}

// TestReconcilerPassIsBoundedHoweverManyJobsRun: with more older jobs than
// an hour's sweep can check at maxOlderChecks a pass, the sweep takes more
// hours instead of more checks a pass, and still checks every job once.
func TestReconcilerPassIsBoundedHoweverManyJobsRun(t *testing.T) {
	t.Parallel()
	rc := &reconciler{every: 10 * time.Minute} // six passes an hour
	const older = 15_000
	rc.older.Store(older)
	require.EqualValues(t, 18, rc.shards(), "three hours' sweep at 15,000 older jobs")
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	jobs := make([]sampledb.Job, older)
	for i := range jobs {
		jobs[i] = sampledb.Job{ID: fmt.Sprintf("job-%d", i), StartTimestamp: now.Add(-24 * time.Hour).UnixMilli()}
	}
	seen := make([]int, older)
	most := 0
	for p := range int(rc.shards()) {
		at := now.Add(time.Duration(p) * rc.every)
		n := 0
		for i, sj := range jobs {
			if rc.checks(sj, at) {
				seen[i]++
				n++
			}
		}
		most = max(most, n)
	}
	for i, n := range seen {
		require.Equal(t, 1, n, "job-%d is checked once a sweep", i)
	}
	require.Less(t, most, maxOlderChecks*6/5, "a pass checks about maxOlderChecks, not 15,000/6")

	rc.older.Store(5_000)
	require.EqualValues(t, 6, rc.shards(), "fewer jobs: an hour's sweep, as before")
}
