package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

// Runner runs this worker's jobs. It owns the in-flight capacity, the lease
// keeper, the takeover (claim) loop, the abort poller, the reconciler, and
// graceful drain. Intake (package consumer) admits jobs and hands them over
// with Launch. A Runner is safe for concurrent use.
type Runner struct {
	cfg    Config
	log    *zap.Logger
	store  *state.Store
	keeper *state.Keeper

	mu    sync.Mutex
	jobs  map[string]*jobRun
	used  int           // slots reserved or running
	room  chan struct{} // closed when a slot frees up
	epoch string

	drainCh   chan struct{}
	draining  atomic.Bool
	drainOnce sync.Once

	loopCtx    context.Context
	loopCancel context.CancelFunc
	loops      sync.WaitGroup
	jobsWG     sync.WaitGroup
	started    atomic.Bool
	stopOnce   sync.Once

	relMu   sync.Mutex
	relQ    []state.Lease
	relKick chan struct{}

	reconcileKick chan bool
	starting      map[string]chan struct{} // per task kind: StartConcurrency slots
}

// New returns a Runner for cfg.
func New(cfg Config) (*Runner, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	r := &Runner{
		cfg:           cfg,
		log:           cfg.Logger.Named("runner"),
		store:         cfg.Store,
		jobs:          map[string]*jobRun{},
		room:          make(chan struct{}),
		drainCh:       make(chan struct{}),
		relKick:       make(chan struct{}, 1),
		reconcileKick: make(chan bool, 1),
		starting:      map[string]chan struct{}{},
	}
	for _, kind := range []string{edr.KindCBCEventExport, edr.KindCBLRTriage, edr.KindCytomicOSQuery, edr.KindSophosXDR} {
		r.starting[kind] = make(chan struct{}, cfg.StartConcurrency)
	}
	for kind := range cfg.Drivers {
		if r.starting[kind] == nil {
			r.starting[kind] = make(chan struct{}, cfg.StartConcurrency)
		}
	}
	cfg.Store.OnQuarantine(func(keys []string) {
		r.log.Error("ledger keys of the wrong type were quarantined (renamed under quarantine:, listed by fleetctl status); the fleet goes on without them",
			zap.Strings("keys", keys))
		cfg.Observer.Quarantined(len(keys))
	})
	r.keeper = state.NewKeeper(cfg.Store, state.KeeperConfig{
		Worker:  cfg.WorkerID,
		OnLost:  r.onLeaseLost,
		OnEpoch: r.onEpoch,
		OnRenew: cfg.Observer.LeaseRenewed,
		Logger:  cfg.Logger,
	})
	return r, nil
}

// Keeper returns the lease keeper (for tests and metrics).
func (r *Runner) Keeper() *state.Keeper { return r.keeper }

// WorkerID returns the worker's ID.
func (r *Runner) WorkerID() string { return r.cfg.WorkerID }

// Start loads the ledger scripts and starts the background loops. The
// loops run until Drain or Stop.
func (r *Runner) Start(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("worker: runner already started")
	}
	if err := r.store.Load(ctx); err != nil {
		return err
	}
	epoch, err := r.store.Epoch(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.epoch = epoch
	r.mu.Unlock()
	r.keeper.SetEpoch(epoch)
	r.loopCtx, r.loopCancel = context.WithCancel(context.WithoutCancel(ctx))
	for _, loop := range []func(context.Context){r.keeper.Run, r.claimLoop, r.abortLoop, r.reconcileLoop, r.releaseLoop} {
		r.loops.Add(1)
		go func() {
			defer r.loops.Done()
			loop(r.loopCtx)
		}()
	}
	return nil
}

// TryAcquire reserves up to n job slots and returns how many it got. Each
// reserved slot is either used by Launch or returned with Unacquire.
// Nothing is granted while draining.
func (r *Runner) TryAcquire(n int) int {
	if r.draining.Load() || n <= 0 {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	got := min(n, r.cfg.MaxInflight-r.used)
	if got <= 0 {
		return 0
	}
	r.used += got
	return got
}

// Unacquire returns n reserved slots.
func (r *Runner) Unacquire(n int) {
	if n <= 0 {
		return
	}
	r.mu.Lock()
	r.used -= n
	close(r.room)
	r.room = make(chan struct{})
	r.mu.Unlock()
}

// Room returns a channel closed the next time a slot frees up.
func (r *Runner) Room() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.room
}

// Free returns the number of free slots.
func (r *Runner) Free() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(r.cfg.MaxInflight-r.used, 0)
}

// InFlight returns the number of jobs running on this worker.
func (r *Runner) InFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.jobs)
}

// Launch starts running a job this worker now holds the lease for, in a
// slot reserved with TryAcquire. sent is when the acquiring request was
// sent (the start of the lease's local validity).
func (r *Runner) Launch(l state.Lease, rec *state.Record, sent time.Time) {
	r.keeper.Add(l, sent)
	j := newJob(r, l, rec)
	r.mu.Lock()
	prev := r.jobs[l.ID]
	r.jobs[l.ID] = j
	r.mu.Unlock()
	r.jobsWG.Add(1)
	go func() {
		defer r.jobsWG.Done()
		if prev != nil {
			// This worker had lost the job and claimed it again: the old
			// run must be gone before the new one starts.
			prev.lose(errLeaseLost)
			<-prev.done
		}
		j.run()
		r.finished(j)
	}()
}

func (r *Runner) finished(j *jobRun) {
	r.keeper.Remove(j.lease.ID, j.lease.Token)
	r.mu.Lock()
	if r.jobs[j.lease.ID] == j {
		delete(r.jobs, j.lease.ID)
	}
	r.used--
	close(r.room)
	r.room = make(chan struct{})
	r.mu.Unlock()
	switch j.exit {
	case exitDrained:
		r.queueRelease(j.lease)
	case exitMissing:
		r.reseed(j)
	}
}

func (r *Runner) job(id string) *jobRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.jobs[id]
}

func (r *Runner) snapshot() []*jobRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*jobRun, 0, len(r.jobs))
	for _, j := range r.jobs {
		out = append(out, j)
	}
	return out
}

// onLeaseLost is the keeper's report: stop the job at once, no more writes.
func (r *Runner) onLeaseLost(id string, token int64, reason state.LossReason) {
	r.cfg.Observer.LeaseLost(string(reason))
	if j := r.job(id); j != nil && j.lease.Token == token {
		if reason == state.LostMissing || reason == state.LostCorrupt {
			// The record is gone (or was not a record): re-seed it from
			// what this worker holds in memory.
			j.lose(errLedgerLost)
		} else {
			j.lose(errLeaseLost)
		}
	}
}

// onEpoch: Redis came back without our data. Re-create the epoch, and
// reconcile with SampleDB once the workers had a moment to re-seed the jobs
// they hold in memory (their renewals report those as missing).
func (r *Runner) onEpoch(old, cur string) {
	r.log.Error("the ledger's epoch changed: Redis lost its data; re-seeding held jobs and reconciling with SampleDB",
		zap.String("old_epoch", old), zap.String("epoch", cur))
	go func() {
		ctx, cancel := context.WithTimeout(r.loopCtx, 10*time.Second)
		defer cancel()
		if e, err := r.store.Epoch(ctx); err == nil {
			r.keeper.SetEpoch(e)
			r.mu.Lock()
			r.epoch = e
			r.mu.Unlock()
		}
		select {
		case r.reconcileKick <- true:
		default:
		}
	}()
}

// reseed puts a job whose record vanished (Redis data loss) back in the
// ledger from what this worker knew, unowned, so it is claimed at once and
// resumed from its checkpoints instead of restarted.
func (r *Runner) reseed(j *jobRun) {
	kv := j.fieldsSnapshot()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Claimable only after a short grace: requests this worker sent for the
	// job just before dropping it may still be on their way.
	grace := min(r.store.LeaseTTL()/10, 2*time.Second)
	ok, err := r.store.AdoptAfter(ctx, j.lease.ID, grace, kv...)
	if err != nil {
		r.log.Warn("could not re-seed job after ledger loss; the reconciler will adopt it", zap.String("job_id", j.lease.ID), zap.Error(err))
		return
	}
	r.log.Info("re-seeded job after ledger loss", zap.String("job_id", j.lease.ID), zap.Bool("adopted", ok))
}

// claimLoop takes over expired leases while there is room.
func (r *Runner) claimLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.ClaimInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.drainCh:
			return
		case <-t.C:
			r.ClaimOnce(ctx)
		}
	}
}

// ClaimOnce claims up to the free capacity (at most 100) of expired leases.
func (r *Runner) ClaimOnce(ctx context.Context) int {
	n := r.TryAcquire(100)
	if n == 0 {
		return 0
	}
	got, sent, err := r.store.Claim(ctx, r.cfg.WorkerID, n)
	if err != nil {
		r.Unacquire(n)
		if ctx.Err() == nil {
			r.log.Warn("claim failed", zap.Error(err))
		}
		return 0
	}
	r.Unacquire(n - len(got))
	for _, c := range got {
		r.log.Info("took over job", zap.String("job_id", c.Lease.ID), zap.Int64("token", c.Lease.Token), zap.String("previous_source", c.Record.Source))
		r.Launch(c.Lease, c.Record, sent)
	}
	if len(got) > 0 {
		r.cfg.Observer.Claimed(len(got))
	}
	return len(got)
}

// abortLoop notices aborts requested in SampleDB: one paged list of active
// jobs per interval for this worker, whatever the number of jobs.
func (r *Runner) abortLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.AbortPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.PollAborts(ctx)
		}
	}
}

// PollAborts lists active jobs once and aborts the ones this worker runs
// whose abort was requested.
func (r *Runner) PollAborts(ctx context.Context) {
	if r.InFlight() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AbortPollInterval*4)
	defer cancel()
	err := r.cfg.SampleDB.ListJobs(ctx, sampledb.ListOptions{PageSize: 1000}, func(page []sampledb.Job) error {
		for _, sj := range page {
			if !sj.AbortRequested {
				continue
			}
			if j := r.job(sj.ID); j != nil {
				j.requestAbort("abort requested in SampleDB")
			}
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		r.log.Warn("abort poll failed", zap.Error(err))
	}
}

// reconcileLoop re-adopts jobs SampleDB shows executing that the ledger does
// not know (Redis lost them). One worker of the fleet does it per interval.
func (r *Runner) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		full, wait := false, time.Duration(0)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case full = <-r.reconcileKick:
			// Let workers re-seed what they hold in memory first.
			wait = r.store.LeaseTTL() / 2
		}
		for range 3 {
			if wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			n, err := r.Reconcile(ctx, full)
			var early *errEpochYoung
			switch {
			case errors.As(err, &early):
				wait = early.wait
				continue
			case err != nil && ctx.Err() == nil:
				r.log.Warn("reconcile failed", zap.Error(err))
			case n > 0:
				r.log.Warn("reconciler re-adopted jobs the ledger had lost", zap.Int("jobs", n), zap.Bool("full", full))
			}
			break
		}
	}
}

// errEpochYoung: the ledger lost its data less than a lease lifetime ago.
type errEpochYoung struct{ wait time.Duration }

func (e *errEpochYoung) Error() string {
	return fmt.Sprintf("the ledger lost its data less than a lease lifetime ago: adopting in %s", e.wait)
}

// Reconcile lists SampleDB's executing jobs (and, when full, the enqueued
// ones too — after Redis data loss their committed records are gone) and
// adopts every one the ledger does not know. It returns how many it adopted.
//
// It adopts nothing while the ledger's epoch is younger than LeaseTTL: a
// worker that held a job when Redis lost its data still believes in its
// lease, by its local clock, for up to LeaseTTL, and keeps working on the job
// until its next renewal tells it otherwise. Handing the job to another
// worker before then would let both act on it. The error says how long to
// wait.
func (r *Runner) Reconcile(ctx context.Context, full bool) (int, error) {
	ok, err := r.store.TryLock(ctx, "reconcile", r.cfg.WorkerID, r.cfg.ReconcileInterval/2)
	if err != nil || !ok {
		return 0, err
	}
	defer func() { _ = r.store.Unlock(context.WithoutCancel(ctx), "reconcile", r.cfg.WorkerID) }()
	_, age, err := r.store.EpochAge(ctx)
	if err != nil {
		return 0, err
	}
	if ttl := r.store.LeaseTTL(); age < ttl {
		return 0, &errEpochYoung{wait: ttl - age + ttl/10}
	}
	states := []string{sampledb.StateExecuting}
	if full {
		states = append(states, sampledb.StateEnqueued)
	}
	adopted := 0
	err = r.cfg.SampleDB.ListJobs(ctx, sampledb.ListOptions{States: states, PageSize: 1000}, func(page []sampledb.Job) error {
		ids := make([]string, len(page))
		for i, sj := range page {
			ids[i] = sj.ID
		}
		known, err := r.store.Known(ctx, ids)
		if err != nil {
			return err
		}
		for _, sj := range page {
			if known[sj.ID] || (sj.State == sampledb.StateEnqueued && !full) {
				continue
			}
			msg, err := json.Marshal(sj.Message())
			if err != nil {
				return err
			}
			kv := []string{state.FieldMsg, string(msg), state.FieldSource, "reconciler"}
			if sj.StartTimestamp > 0 {
				kv = append(kv, state.FieldCreated, itoa(sj.StartTimestamp))
			}
			did, err := r.store.Adopt(ctx, sj.ID, kv...)
			if err != nil {
				return err
			}
			if did {
				adopted++
			}
		}
		return nil
	})
	return adopted, err
}

func (r *Runner) queueRelease(l state.Lease) {
	r.relMu.Lock()
	r.relQ = append(r.relQ, l)
	r.relMu.Unlock()
	select {
	case r.relKick <- struct{}{}:
	default:
	}
}

// releaseLoop hands drained jobs' leases over in batches, at once.
func (r *Runner) releaseLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			r.flushReleases()
			return
		case <-r.relKick:
			r.flushReleases()
		}
	}
}

func (r *Runner) flushReleases() {
	r.relMu.Lock()
	q := r.relQ
	r.relQ = nil
	r.relMu.Unlock()
	if len(q) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := r.store.Release(ctx, r.cfg.WorkerID, q)
	if err != nil {
		r.log.Warn("could not hand leases over; they will expire after the TTL instead", zap.Int("leases", len(q)), zap.Error(err))
		return
	}
	r.log.Info("handed leases over", zap.Int("released", n))
}

// Drain stops taking work, lets every job reach a safe point (in-flight
// vendor calls finish and are checkpointed, for at most DrainTimeout), hands
// the leases over at once so other workers resume the jobs from their
// checkpoints, and stops the background loops. It does not cancel anything
// at the vendors.
func (r *Runner) Drain(ctx context.Context) {
	r.drainOnce.Do(func() {
		r.draining.Store(true)
		close(r.drainCh)
	})
	done := make(chan struct{})
	go func() {
		r.jobsWG.Wait()
		close(done)
	}()
	timer := time.NewTimer(r.cfg.DrainTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		r.log.Warn("drain timeout: interrupting jobs still in vendor calls", zap.Int("jobs", r.InFlight()))
		for _, j := range r.snapshot() {
			j.interrupt()
		}
		<-done
	case <-ctx.Done():
		for _, j := range r.snapshot() {
			j.interrupt()
		}
		<-done
	}
	r.Stop()
}

// Stop stops the background loops and every job at once, without handing
// leases over (they expire after the TTL, as after a crash). Safe to call
// more than once; Drain calls it last.
func (r *Runner) Stop() {
	r.stopOnce.Do(func() {
		for _, j := range r.snapshot() {
			j.lose(errStopped)
		}
		r.jobsWG.Wait()
		if r.loopCancel != nil {
			r.loopCancel()
		}
		r.loops.Wait()
	})
}

func itoa(v int64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
