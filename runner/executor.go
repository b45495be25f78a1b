package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

type exitReason int

const (
	exitDone    exitReason = iota // terminal state acknowledged, tombstoned
	exitDrained                   // stopped at a safe point; lease handed over
	exitLost                      // lease lost: no further writes
	exitMissing                   // ledger record vanished (Redis data loss): re-seed
	exitStopped                   // worker stopped hard; lease left to expire
)

var (
	errLeaseLost   = errors.New("lease lost")
	errLedgerLost  = errors.New("ledger record lost (Redis data loss)")
	errStopped     = errors.New("worker stopped")
	errInterrupted = errors.New("interrupted by drain timeout")
	errHalted      = errors.New("job halted") // abort, timeout or drain: leave at a safe point
)

// jobRun is one running job: a coordinator goroutine (run) and one
// goroutine per task.
type jobRun struct {
	r     *Runner
	sess  state.Session // the session the lease was acquired under
	lease state.Lease
	rec   *state.Record
	log   *zap.Logger
	start time.Time

	// ctx ends when the job must stop at once and write nothing more: lease
	// lost, worker stopped, or drain timeout. Its cause says which.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// work is ctx, also ended on abort and timeout, for vendor polls.
	work     context.Context
	haltWork context.CancelFunc
	// halt is closed to make tasks leave at their next safe point.
	halt     chan struct{}
	haltOnce sync.Once

	abort      chan struct{}
	abortOnce  sync.Once
	abortWhy   string
	abortSince time.Time

	mu     sync.Mutex
	fields map[string]string // last written ledger fields, for re-seeding

	// notes say what of the job message could not be used (TargetOf); they
	// go into the outcome's reason.
	notes []string

	msgOnce sync.Once
	msg     *job.Message
	msgErr  error

	exit exitReason
	done chan struct{}
}

func newJobRun(r *Runner, sess state.Session, l state.Lease, rec *state.Record) *jobRun {
	// Every API request made for the job names it (httpc.HeaderJob), so a
	// request can be traced to its job at the vendor and in SampleDB.
	j := &jobRun{}
	ctx, cancel := context.WithCancelCause(httpc.WithGuard(httpc.WithJob(context.Background(), l.ID), j.guard))
	work, haltWork := context.WithCancel(ctx)
	fields := map[string]string{state.FieldMsg: string(rec.Msg), state.FieldSource: rec.Source}
	if !rec.Created.IsZero() {
		fields[state.FieldCreated] = fmt.Sprint(rec.Created.UnixMilli())
	}
	for k, v := range rec.Fields {
		fields[k] = v
	}
	*j = jobRun{
		r: r, sess: sess, lease: l, rec: rec, start: time.Now(),
		log: r.log.With(zap.String("job_id", l.ID), zap.Int64("token", l.Token)),
		ctx: ctx, cancel: cancel, work: work, haltWork: haltWork,
		halt: make(chan struct{}), abort: make(chan struct{}),
		fields: fields, done: make(chan struct{}),
	}
	if rec.Fields[state.FieldAbort] == "1" {
		// An abort noted in the ledger while nobody (or another worker)
		// held the job.
		j.requestAbort("abort requested in SampleDB")
	}
	return j
}

// message decodes the ledger's copy of the job message, once, with the one
// decoder intake used (job.Decode): a record re-adopted from SampleDB is
// validated the same way.
func (j *jobRun) message() (*job.Message, error) {
	j.msgOnce.Do(func() {
		j.msg, j.msgErr = job.Decode(j.rec.Msg, 0)
		if j.msg == nil {
			j.msg = &job.Message{JobID: j.lease.ID}
		}
	})
	return j.msg, j.msgErr
}

// customer is the submitting customer, whose accounts alone the job may use.
func (j *jobRun) customer() string {
	m, _ := j.message()
	return m.Submission.Customer
}

// driver resolves the driver of the customer's account for kind, afresh for
// every call: a reload of the tenants file may have replaced it.
func (j *jobRun) driver(kind string) (edr.Driver, error) {
	ds, err := j.r.cfg.Accounts.Drivers(j.customer())
	if err != nil {
		return nil, &edr.Error{Vendor: edr.Vendor(kind), Op: "account", Msg: err.Error(), Err: err}
	}
	d := ds[kind]
	if d == nil {
		return nil, edr.Permanent(edr.Vendor(kind), "account", fmt.Sprintf("no %s account is configured for customer %q on worker %s", kind, j.customer(), j.r.cfg.WorkerID))
	}
	return d, nil
}

// lose stops the job at once: no further vendor call or SampleDB write.
func (j *jobRun) lose(cause error) { j.cancel(cause) }

// loseFor stops the job after a fenced write failed: when the record is
// gone (Redis lost data) the job ends re-seedable, otherwise lost.
func (j *jobRun) loseFor(err error) error {
	cause := errLeaseLost
	if errors.Is(err, state.ErrGone) {
		cause = errLedgerLost
	}
	j.lose(cause)
	return cause
}

// interrupt cuts in-flight calls short at drain timeout; the lease is still
// handed over.
func (j *jobRun) interrupt() { j.cancel(errInterrupted) }

func (j *jobRun) stopTasks() {
	j.haltOnce.Do(func() { close(j.halt) })
}

func (j *jobRun) requestAbort(why string) {
	j.abortOnce.Do(func() {
		j.abortWhy = why
		j.abortSince = time.Now()
		j.log.Info("abort requested", zap.String("reason", why))
		close(j.abort)
	})
}

// guard is checked before every external call: the lease must be certainly
// valid by the local clock, and the job not stopped.
func (j *jobRun) guard() error {
	if err := context.Cause(j.ctx); err != nil {
		return err
	}
	if !j.r.keeper.Valid(j.lease.ID, j.lease.Token) {
		j.lose(errLeaseLost)
		return errLeaseLost
	}
	return nil
}

func (j *jobRun) exitFor(err error) exitReason {
	cause := context.Cause(j.ctx)
	if cause == nil {
		cause = err
	}
	switch {
	case errors.Is(cause, errLedgerLost):
		return exitMissing
	case errors.Is(cause, errStopped):
		return exitStopped
	case errors.Is(cause, errInterrupted), errors.Is(cause, errHalted):
		return exitDrained
	default:
		return exitLost
	}
}

func (j *jobRun) run() {
	defer close(j.done)
	defer j.cancel(nil)
	j.exit = j.execute()
	switch j.exit {
	case exitDone:
	case exitDrained:
		j.log.Info("job left at a safe point for another worker")
	default:
		j.log.Info("job stopped without further writes", zap.Error(context.Cause(j.ctx)))
	}
}

func (j *jobRun) execute() exitReason {
	cfg := &j.r.cfg
	_, planned, _ := j.rec.Plan()
	resumed := planned || j.rec.Outcome() != nil
	cfg.Observer.JobStarted(resumed)

	if j.rec.Outcome() != nil {
		out, err := j.rec.Decision()
		if err != nil {
			out = &state.Outcome{State: sampledb.StateFailed, Reason: "unreadable outcome in the ledger", By: cfg.WorkerID}
		}
		return j.deliver(*out)
	}

	msg, err := j.message()
	if err != nil {
		return j.finish(sampledb.StateFailed, "invalid job message in the ledger: "+err.Error())
	}
	target, notes, err := msg.Target()
	if err != nil {
		return j.finish(sampledb.StateFailed, "invalid job message: "+err.Error())
	}
	for _, n := range notes {
		j.log.Warn("job message metaData not usable; the job runs without it", zap.String("note", n))
	}
	j.notes = notes
	drivers, derr := cfg.Accounts.Drivers(j.customer())
	deadline := j.rec.Created.Add(cfg.JobTimeout)
	if j.rec.Created.IsZero() {
		deadline = j.start.Add(cfg.JobTimeout)
	}

	sj, err := j.putJob(j.ctx, sampledb.StateExecuting)
	if err != nil {
		return j.afterFailedPut(err)
	}
	if sj.AbortRequested {
		j.requestAbort("abort requested before the job started")
		return j.finish(sampledb.StateAborted, j.abortWhy)
	}
	if time.Now().After(deadline) {
		return j.finish(sampledb.StateTimeout, "job timeout passed before work began")
	}
	if derr != nil {
		j.log.Warn("the job's customer has no vendor accounts; failing it", zap.String("customer", j.customer()), zap.Error(derr))
		return j.finish(sampledb.StateFailed, derr.Error())
	}

	plan, err := j.plan(msg, target, drivers)
	if err != nil {
		return j.exitFor(err)
	}
	if len(plan) == 0 {
		return j.finish(sampledb.StateFailed, fmt.Sprintf("no configured vendor applies to platform %q", target.Platform))
	}

	tasks := j.tasks(plan)
	var wg sync.WaitGroup
	for _, pt := range plan {
		cp := tasks[pt.Kind]
		if cp.Done() && cp.Reported {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			j.runTask(pt, cp, target, deadline)
		}()
	}
	allDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(allDone)
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()

	var halted string
	select {
	case <-allDone:
	case <-j.abort:
		halted = sampledb.StateAborted
	case <-timer.C:
		halted = sampledb.StateTimeout
	case <-j.r.drainCh:
		halted = "drain"
	case <-j.ctx.Done():
		j.stopTasks()
	}
	if halted != "" {
		j.stopTasks()
		if halted != "drain" {
			j.haltWork() // cut vendor polls short; starts finish and are checkpointed
		}
	}
	<-allDone
	if err := context.Cause(j.ctx); err != nil {
		return j.exitFor(err)
	}
	switch halted {
	case "drain":
		return exitDrained
	case sampledb.StateAborted:
		return j.finish(sampledb.StateAborted, j.abortWhy)
	case sampledb.StateTimeout:
		return j.finish(sampledb.StateTimeout, fmt.Sprintf("job timeout (%s) reached with vendor work still running", cfg.JobTimeout))
	}
	return j.finish(verdict(tasks, plan))
}

// verdict decides the job's state once every task ended: failed if any task
// failed, timeout if any timed out, else success (finding nothing is success).
func verdict(tasks map[string]*state.TaskCheckpoint, plan []state.PlannedTask) (string, string) {
	var failed, timedOut []string
	for _, pt := range plan {
		cp := tasks[pt.Kind]
		switch cp.State {
		case sampledb.TaskFailed:
			failed = append(failed, pt.Kind+": "+cp.Error)
		case sampledb.TaskTimeout:
			timedOut = append(timedOut, pt.Kind)
		}
	}
	switch {
	case len(failed) > 0:
		return sampledb.StateFailed, strings.Join(failed, "; ")
	case len(timedOut) > 0:
		return sampledb.StateTimeout, "task timeout: " + strings.Join(timedOut, ", ")
	}
	return sampledb.StateSuccess, ""
}

func (j *jobRun) plan(msg *job.Message, t edr.Target, drivers map[string]edr.Driver) ([]state.PlannedTask, error) {
	plan, stored, err := j.rec.Plan()
	if stored && err == nil {
		return plan, nil
	}
	if err != nil {
		j.log.Warn("unreadable plan in the ledger; planning again", zap.Error(err))
	}
	plan = j.r.cfg.Playbook.Plan(msg, t, func(kind string) bool { return drivers[kind] != nil })
	if err := j.save(state.PlanField(plan)); err != nil {
		return nil, err
	}
	return plan, nil
}

// tasks returns the plan's checkpoints as this run last wrote or read them
// (a fresh one for a task without one, or with one that is unreadable: that
// task restarts, and the log says so).
func (j *jobRun) tasks(plan []state.PlannedTask) map[string]*state.TaskCheckpoint {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make(map[string]*state.TaskCheckpoint, len(plan))
	for _, pt := range plan {
		cp, err := state.TaskOf(j.fields, pt.Kind)
		if err != nil {
			j.log.Warn("unreadable task checkpoint; the task restarts", zap.String("task", pt.Kind), zap.Error(err))
		}
		out[pt.Kind] = cp
	}
	return out
}

// save writes ledger fields (name, value pairs), fenced, retrying while
// Redis is unreachable and the lease is still valid. A stale token stops
// the job (or, when the record vanished, has it re-seeded).
func (j *jobRun) save(kv ...string) error {
	err := j.do(retry{ctx: j.ctx, guard: true, attempt: 5 * time.Second,
		again: permanentIf(state.ErrStale),
		waiting: func(err error, _ time.Duration) time.Duration {
			j.log.Warn("checkpoint failed; retrying", zap.Error(err))
			return 0
		},
	}, func(ctx context.Context) error {
		return j.r.store.Checkpoint(ctx, j.sess, j.lease, kv...)
	})
	if errors.Is(err, state.ErrStale) {
		return j.loseFor(err)
	}
	if err != nil {
		return err
	}
	j.mu.Lock()
	for i := 0; i+1 < len(kv); i += 2 {
		j.fields[kv[i]] = kv[i+1]
	}
	j.mu.Unlock()
	return nil
}

// saveTask checkpoints a task. Vendor text reaches the ledger, SampleDB's
// readers and the result topic only through here and finish: credentials a
// vendor echoed are masked before anything is written down.
func (j *jobRun) saveTask(cp *state.TaskCheckpoint) error {
	red := j.r.cfg.Redact
	cp.Error, cp.Cancel, cp.Progress = red.String(cp.Error), red.String(cp.Cancel), red.String(cp.Progress)
	if cp.Result != nil {
		for i, n := range cp.Result.Notes {
			cp.Result.Notes[i] = red.String(n)
		}
	}
	return j.save(cp.Field())
}

// fieldsSnapshot returns every field this run knows, for re-seeding.
func (j *jobRun) fieldsSnapshot() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	kv := make([]string, 0, 2*len(j.fields))
	for k, v := range j.fields {
		kv = append(kv, k, v)
	}
	return kv
}
