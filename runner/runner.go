package runner

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/startstop"
	"github.com/analysisfleet/analysisfleet/state"
)

// Runner runs this worker's jobs. It is composed of services, each a loop
// with Start/Stop and a runOnce its tests call directly:
//
//   - slots: the in-flight capacity and the running jobs (slots.go)
//   - sched: the steps of every job on a small pool of goroutines, by
//     priority, in lanes per vendor account (sched.go)
//   - the lease keeper: the worker's session, one renewal round trip per
//     tick whatever the number of jobs held, on a connection of its own,
//     and the session's mailbox (jobs taken away, aborts) on another
//     (state.Keeper)
//   - claimer: takes over expired and released leases (claimer.go)
//   - abortPoller: notices aborts requested in SampleDB (abortpoller.go)
//   - reconciler: re-adopts jobs the ledger lost (reconciler.go)
//   - releaser: hands drained jobs' leases over (releaser.go)
//   - lines: writes the tasks' progress lines, a batch a second (lines.go)
//
// and runs each job (executor.go, task.go) to its delivered end
// (deliver.go), one step at a time. Intake (package consumer) admits jobs and hands them over
// with Launch. A Runner is safe for concurrent use.
type Runner struct {
	cfg    Config
	log    *zap.Logger
	store  *state.Store
	keeper *state.Keeper
	slots  *slots
	sched  *sched

	claimer     *claimer
	aborts      *abortPoller
	reconciler  *reconciler
	releaser    *releaser
	lines       *lines
	keeperStart startstopKeeper
	mailStart   startstopKeeper
	closeConns  []func() error

	drainCh   chan struct{}
	drainOnce sync.Once
	jobsWG    sync.WaitGroup
	started   atomic.Bool
	stopOnce  sync.Once

	tally    callTally
	progress progressBudget

	// testFinished, when set (by tests only), is told of every run's end
	// once the runner's bookkeeping for it is done.
	testFinished func(*jobRun)

	sessMu sync.Mutex
	sess   *state.Session // the session jobs were last launched under

	lanesMu    sync.Mutex
	sdbLane    *lane                // job steps (SampleDB and ledger calls)
	startLanes map[string]*lane     // per task kind: StartConcurrency starts
	vendors    map[edr.Driver]*lane // per vendor account: VendorConcurrency calls
}

// startstopKeeper runs the keeper's loop as a service.
type startstopKeeper struct {
	svc  startstop.Service
	loop func(context.Context)
}

// New returns a Runner for cfg.
func New(cfg Config) (*Runner, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	r := &Runner{
		cfg:        cfg,
		log:        cfg.Logger.Named("runner"),
		store:      cfg.Store,
		slots:      newSlots(cfg.MaxInflight),
		sched:      newSched(cfg.CallConcurrency),
		drainCh:    make(chan struct{}),
		sdbLane:    &lane{name: "sampledb", max: max(cfg.CallConcurrency/2, 1)},
		startLanes: map[string]*lane{},
		vendors:    map[edr.Driver]*lane{},
	}
	r.tally.since = time.Now()
	r.claimer = &claimer{periodic{r: r, every: cfg.ClaimInterval}}
	r.aborts = &abortPoller{periodic: periodic{r: r, every: cfg.AbortPollInterval}}
	r.reconciler = newReconciler(r, cfg.ReconcileInterval)
	r.releaser = newReleaser(r)
	r.lines = newLines(r)
	cfg.Store.OnQuarantine(func(keys []string) {
		r.log.Error("ledger keys of the wrong type were quarantined (renamed under quarantine:, listed by fleetctl status); the fleet goes on without them",
			zap.Strings("keys", keys))
		cfg.Observer.Quarantined(len(keys))
	})
	// Renewals and the mailbox's BLPOP each get a connection of their own:
	// a renewal must never queue behind a burst of admissions and
	// checkpoints, and BLPOP holds its connection while it waits.
	renew, closeRenew, err := cfg.Store.Dedicated(2)
	if err != nil {
		return nil, err
	}
	mail, closeMail, err := cfg.Store.Dedicated(1)
	if err != nil {
		_ = closeRenew()
		return nil, err
	}
	r.closeConns = []func() error{closeRenew, closeMail}
	r.keeper = state.NewKeeper(renew, mail, state.KeeperConfig{
		Worker:        cfg.WorkerID,
		OnLost:        r.onLeaseLost,
		OnSessionLost: r.onSessionLost,
		OnAbort:       r.onAbort,
		OnEpoch:       r.onEpoch,
		OnRenew:       cfg.Observer.LeaseRenewed,
		Stats:         r.statsJSON,
		Logger:        cfg.Logger,
	})
	r.keeperStart = startstopKeeper{loop: r.keeper.Run}
	r.mailStart = startstopKeeper{loop: r.keeper.RunMail}
	return r, nil
}

// Keeper returns the lease keeper (for tests and metrics).
func (r *Runner) Keeper() *state.Keeper { return r.keeper }

// Session returns the worker's current session: the one admissions and
// claims are made under. Its ID is empty between a lost session and the
// next.
func (r *Runner) Session() state.Session { return r.keeper.Session() }

// WorkerID returns the worker's ID.
func (r *Runner) WorkerID() string { return r.cfg.WorkerID }

// Start loads the ledger scripts and starts the services. They run until
// Drain or Stop.
func (r *Runner) Start(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("runner: already started")
	}
	r.sched.start()
	if err := r.store.Load(ctx); err != nil {
		return err
	}
	epoch, err := r.store.Epoch(ctx)
	if err != nil {
		return err
	}
	r.keeper.SetEpoch(epoch)
	if err := r.keeper.Open(ctx); err != nil {
		return err
	}
	for _, start := range []func(context.Context) error{
		func(ctx context.Context) error { return r.keeperStart.svc.Start(ctx, r.keeperStart.loop) },
		func(ctx context.Context) error { return r.mailStart.svc.Start(ctx, r.mailStart.loop) },
		r.claimer.start, r.aborts.start, r.reconciler.start, r.releaser.start, r.lines.start,
	} {
		if err := start(ctx); err != nil {
			r.stopServices()
			return err
		}
	}
	return nil
}

// TryAcquire reserves up to n job slots and returns how many it got. Each
// reserved slot is either used by Launch or returned with Unacquire.
// Nothing is granted while draining.
func (r *Runner) TryAcquire(n int) int { return r.slots.tryAcquire(n) }

// Unacquire returns n reserved slots.
func (r *Runner) Unacquire(n int) { r.slots.release(n) }

// Room returns a channel closed the next time a slot frees up.
func (r *Runner) Room() <-chan struct{} { return r.slots.roomChan() }

// Free returns the number of free slots.
func (r *Runner) Free() int { return r.slots.free() }

// InFlight returns the number of jobs running on this worker.
func (r *Runner) InFlight() int { return r.slots.running() }

// Launch starts running a job this worker now holds the lease for, under
// sess, in a slot reserved with TryAcquire. A lease of a session lost
// meanwhile is not run (the job is already anybody's): the slot is
// returned.
//
// A job this worker runs already under the same lease is left alone (an
// admission whose answer was lost was made again, and found the job held
// by this session): the slot is returned.
func (r *Runner) Launch(sess state.Session, l state.Lease, rec *state.Record) {
	if cur := r.slots.get(l.ID); cur != nil && cur.lease.Token == l.Token && cur.sess.ID == sess.ID {
		r.slots.release(1)
		return
	}
	if !r.keeper.Add(sess, l) {
		r.log.Info("job acquired under a session lost meanwhile; left to others", zap.String("job_id", l.ID))
		r.slots.release(1)
		return
	}
	j := newJobRun(r, sess, l, rec)
	prev := r.slots.put(j)
	r.jobsWG.Add(1)
	j.launched = true
	if prev != nil {
		// This worker had lost the job and claimed it again: the old run
		// must be gone before the new one starts.
		go func() {
			prev.lose(errLeaseLost)
			<-prev.doneChan()
			r.begin(j)
		}()
		return
	}
	r.begin(j)
}

// shared returns sess as one pointer for all the jobs launched under it.
func (r *Runner) shared(sess state.Session) *state.Session {
	r.sessMu.Lock()
	defer r.sessMu.Unlock()
	if r.sess == nil || *r.sess != sess {
		r.sess = &sess
	}
	return r.sess
}

// begin puts a launched job on the scheduler.
func (r *Runner) begin(j *jobRun) {
	j.schedule()
	select {
	case <-r.drainCh:
		j.stop(haltDrain)
	default:
	}
}

// startLane is the lane of kind's starts.
func (r *Runner) startLane(kind string) *lane {
	r.lanesMu.Lock()
	defer r.lanesMu.Unlock()
	ln := r.startLanes[kind]
	if ln == nil {
		ln = &lane{name: "start " + kind, max: r.cfg.StartConcurrency}
		r.startLanes[kind] = ln
	}
	return ln
}

// vendorLane is the lane of the vendor account j's customer uses for kind
// (nil when it has none: the step fails on its own).
func (r *Runner) vendorLane(j *jobRun, kind string) *lane {
	d, err := j.driver(kind)
	if err != nil {
		return nil
	}
	r.lanesMu.Lock()
	defer r.lanesMu.Unlock()
	ln := r.vendors[d]
	if ln == nil {
		ln = &lane{name: kind, max: r.cfg.VendorConcurrency}
		if bp, ok := d.(edr.BatchPoller); ok {
			ln.batch, ln.period = true, r.cfg.PollMin
			ln.step.run = func() { r.pollBatch(ln, bp, kind) }
		}
		r.vendors[d] = ln
	}
	return ln
}

// finished is a launched job's end: the runner's bookkeeping.
func (r *Runner) finished(j *jobRun) {
	defer r.jobsWG.Done()
	r.keeper.Remove(j.lease.ID, j.lease.Token)
	r.slots.done(j)
	r.lines.jobEnded(j)
	switch j.exit {
	case exitDrained:
		r.releaser.queue(*j.sess, j.lease)
	case exitMissing:
		r.reseed(j)
	}
	if r.testFinished != nil {
		r.testFinished(j)
	}
}

// ClaimOnce claims up to the free capacity (at most 100) of expired leases
// and returns how many jobs it took over.
func (r *Runner) ClaimOnce(ctx context.Context) int { return r.claimer.runOnce(ctx) }

// PollAborts lists active jobs once and aborts the ones this worker runs
// whose abort was requested.
func (r *Runner) PollAborts(ctx context.Context) { r.aborts.runOnce(ctx) }

// Reconcile runs one reconciliation pass (see reconciler.runOnce).
func (r *Runner) Reconcile(ctx context.Context, full bool) (int, error) {
	return r.reconciler.runOnce(ctx, full)
}

// onLeaseLost is the keeper's report: stop the job at once, no more writes.
func (r *Runner) onLeaseLost(id string, token int64, reason state.LossReason) {
	r.cfg.Observer.LeaseLost(string(reason))
	if j := r.slots.get(id); j != nil && j.lease.Token == token {
		if reason == state.LostMissing {
			// The record is gone: re-seed it from what this worker holds
			// in memory.
			j.lose(errLedgerLost)
		} else {
			j.lose(errLeaseLost)
		}
	}
}

// onSessionLost: every job of the session is lost too (each reported to
// onLeaseLost); this is the one log line and metric for the session.
func (r *Runner) onSessionLost(reason state.LossReason, jobs int) {
	r.cfg.Observer.SessionLost(string(reason))
	r.log.Warn("this worker's session was lost; its jobs are others' now", zap.String("reason", string(reason)), zap.Int("jobs", jobs))
}

// onAbort is the mailbox's report of an analyst's abort of a job this
// worker holds (see abortPoller).
func (r *Runner) onAbort(id string) {
	if j := r.slots.get(id); j != nil {
		j.requestAbort("abort requested in SampleDB")
	}
}

// onEpoch: Redis came back without our data. The jobs this worker holds
// re-seed themselves (their renewals report them missing); the reconciler
// re-creates the epoch and, once the ledger is a lease lifetime old,
// re-adopts what SampleDB shows active and nobody re-seeded.
func (r *Runner) onEpoch(old, cur string) {
	r.log.Error("the ledger's epoch changed: Redis lost its data; re-seeding held jobs and reconciling with SampleDB",
		zap.String("old_epoch", old), zap.String("epoch", cur))
	r.reconciler.ledgerLost()
}

// reseed puts a job whose record vanished (Redis data loss) back in the
// ledger from what this worker knew, unowned, so it is claimed at once and
// resumed from its checkpoints instead of restarted.
func (r *Runner) reseed(j *jobRun) {
	kv, err := j.fieldsSnapshot()
	if err != nil {
		r.log.Error("could not re-seed job after ledger loss: its message cannot be read back; the reconciler will adopt it", zap.String("job_id", j.lease.ID), zap.Error(err))
		return
	}
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

// Drain stops taking work, lets every job reach a safe point (in-flight
// vendor calls finish and are checkpointed, for at most DrainTimeout), hands
// the leases over at once so other workers resume the jobs from their
// checkpoints, and stops the services. It does not cancel anything at the
// vendors.
func (r *Runner) Drain(ctx context.Context) {
	r.drainOnce.Do(func() {
		r.tally.draining(time.Now()) // published with the next renewal (WorkerStats.Draining)
		r.slots.shutDown()
		close(r.drainCh)
	})
	r.claimer.Stop() // nothing more is taken over while draining
	for _, j := range r.slots.snapshot() {
		j.stop(haltDrain)
	}
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
		for _, j := range r.slots.snapshot() {
			j.interrupt()
		}
		<-done
	case <-ctx.Done():
		for _, j := range r.slots.snapshot() {
			j.interrupt()
		}
		<-done
	}
	r.Stop()
}

// Stop stops every job at once, without handing leases over (they expire
// after the TTL, as after a crash), then the services. Safe to call more
// than once; Drain calls it last.
func (r *Runner) Stop() {
	r.stopOnce.Do(func() {
		r.sched.start() // the jobs' last steps run on it
		for _, j := range r.slots.snapshot() {
			j.lose(errStopped)
		}
		r.jobsWG.Wait()
		r.stopServices()
	})
}

func (r *Runner) stopServices() {
	r.claimer.Stop()
	r.aborts.Stop()
	r.reconciler.Stop()
	r.releaser.Stop() // flushes what the last jobs queued
	r.lines.Stop()    // deletes the last jobs' lines
	r.keeperStart.svc.Stop()
	r.mailStart.svc.Stop()
	r.sched.stop()
	for _, c := range r.closeConns {
		_ = c()
	}
	r.closeConns = nil
}
