package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unique"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

type exitReason uint8

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

// jobRun is one job this worker holds. It owns no goroutine: its work is
// done in steps on the runner's scheduler (sched.go) — the job's own step
// (begin, then its deadline, then its conclusion) and one step per task
// (start, polls, collect) — and between steps the job is data.
//
// It holds what it needs to act — IDs, the lease, due times, the tasks'
// checkpoints — and the job message as the ledger has it (msg: the one
// copy, packed, for re-seeding a ledger that lost its data; decoded when
// needed).
// What the record held besides is read in begin and dropped with rec.
type jobRun struct {
	r     *Runner
	sess  *state.Session // the session the lease was acquired under (shared: Runner.shared)
	lease state.Lease
	// rec is the record the job was acquired with, until begin has made
	// its tasks; until then the ledger fields this run writes go into
	// rec.Fields (for re-seeding), afterwards into the tasks' checkpoints
	// (task:<kind>), outcome and kept.
	rec     *state.Record
	msg     packed // the job message, as in the ledger
	source  string
	created time.Time

	// ctx ends when the job must stop at once and write nothing more: lease
	// lost, worker stopped, or drain timeout; cause says which. It is jc.
	ctx context.Context
	jc  jobCtx

	step step // begin → deadline → conclusion
	// cust is submission.customer, whose accounts alone the job may use
	// (interned: a worker's jobs share a few customers).
	cust     string
	deadline time.Time
	// launched: Launch runs the job, and end hands it back to the runner
	// (Runner.finished).
	launched bool
	exit     exitReason

	mu     sync.Mutex
	events []state.Event // timeline events waiting for the next checkpoint
	// rare holds what few jobs need (an abort, notes, a decided outcome,
	// other fields): nil until one does.
	rare  *jobRare
	phase jobPhase
	// workHalted: the calls of work contexts are cut short (haltWork).
	workHalted bool
	// halted says why the job stops before its tasks end: aborted,
	// timeout, haltDrain, haltLost; "" while running or when every task
	// ended.
	halted string
	// halt fires to make tasks leave at their next safe point.
	halt signal
	// working are the cancel functions of the calls that an abort or the
	// job timeout cut short (workCtx), while they run.
	working []*context.CancelFunc
	tasks   []*taskRun
	running int32 // task steps running now
	open    int32 // tasks not yet ended
	// done fires when the job ended.
	done signal
}

type jobPhase uint8

const (
	phaseBegin   jobPhase = iota // the begin step: PUT executing, plan
	phaseRunning                 // tasks are stepping; the job step waits for the deadline
	phaseHalting                 // waiting for running task steps to leave
	phaseEnding                  // the conclusion step decides and delivers
	phaseDone
)

// jobRare is what few jobs hold: a waiting job carries none of it.
type jobRare struct {
	// abortWhy and abortSince are set once, by the first abort request.
	abortWhy   string
	abortSince time.Time
	// notes say what of the job message could not be used (TargetOf); they
	// go into the outcome's reason.
	notes []string
	// outcome is the decided outcome as the ledger holds it (nil: none);
	// kept are the other ledger fields (name, value pairs: the abort mark,
	// a delivery refusal, checkpoints of tasks not in the plan) that a
	// re-seeded record must carry.
	outcome []byte
	kept    []string
}

// rareLocked returns the job's jobRare, made if need be. j.mu is held.
func (j *jobRun) rareLocked() *jobRare {
	if j.rare == nil {
		j.rare = &jobRare{}
	}
	return j.rare
}

// abort returns why and since when an abort was requested ("": none).
func (j *jobRun) abort() (string, time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.rare == nil {
		return "", time.Time{}
	}
	return j.rare.abortWhy, j.rare.abortSince
}

// notes returns what of the job message could not be used.
func (j *jobRun) notes() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.rare == nil {
		return nil
	}
	return j.rare.notes
}

// Halt reasons that are not job states.
const (
	haltDrain = "drain"
	haltLost  = "lost"
)

func newJobRun(r *Runner, sess state.Session, l state.Lease, rec *state.Record) *jobRun {
	// Every API request made for the job names it (httpc.HeaderJob), so a
	// request can be traced to its job at the vendor and in SampleDB.
	j := &jobRun{}
	if rec.Fields == nil {
		rec.Fields = map[string]string{}
	}
	*j = jobRun{
		r: r, sess: r.shared(sess), lease: l, rec: rec,
		msg: pack(rec.Msg), source: rec.Source, created: rec.Created,
	}
	// JOB_TIMEOUT from first admission; from now for a record without
	// its admission time.
	j.deadline = cmp.Or(rec.Created, time.Now()).Add(r.cfg.JobTimeout)
	j.jc.j = j
	j.ctx = &j.jc
	j.step.run = j.jobStep
	if rec.Fields[state.FieldAbort] == "1" {
		// An abort noted in the ledger while nobody (or another worker)
		// held the job.
		j.requestAbort("abort requested in SampleDB")
	}
	return j
}

// message decodes the ledger's copy of the job message with the one decoder
// intake used (job.Decode): a record re-adopted from SampleDB is validated
// the same way. It is decoded when needed, not kept.
func (j *jobRun) message() (*job.Message, error) {
	raw, err := j.msg.unpack()
	if err != nil {
		return &job.Message{JobID: j.lease.ID}, err
	}
	m, err := job.Decode(raw, 0)
	if m == nil {
		m = &job.Message{JobID: j.lease.ID}
	}
	return m, err
}

// target is what the vendors are asked to look for, from the job message
// (decoded again: it is needed for starts only, not while the job waits).
func (j *jobRun) target() (edr.Target, error) {
	msg, err := j.message()
	if err != nil {
		return edr.Target{}, err
	}
	t, _, err := msg.Target()
	return t, err
}

// log is the job's logger, made when something is logged: a logger with
// fields costs its encoded fields' buffer, too much to keep per waiting job.
func (j *jobRun) log() *zap.Logger {
	return j.r.log.With(zap.String("job_id", j.lease.ID), zap.Int64("token", j.lease.Token))
}

// debugOn says whether debug lines are logged at all (so that none of
// their fields are made for nothing).
func (j *jobRun) debugOn() bool { return j.r.log.Core().Enabled(zap.DebugLevel) }

// customer is the submitting customer, whose accounts alone the job may use.
func (j *jobRun) customer() string { return j.cust }

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
func (j *jobRun) lose(cause error) {
	j.cancel(cause)
	j.stop(haltLost)
}

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

// cancel ends the job's context with cause (the first cause stands), and
// with it every call made for the job.
func (j *jobRun) cancel(cause error) { j.jc.cancel(cause) }

// cause says why the job's context ended: nil while it has not.
func (j *jobRun) cause() error { return j.jc.causeOf() }

func (j *jobRun) stopTasks() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.halt.fire()
}

// haltChan returns the channel closed when tasks are to leave.
func (j *jobRun) haltChan() <-chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.halt.wait()
}

// tasksHalted says whether tasks are to leave (stopTasks).
func (j *jobRun) tasksHalted() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.halt.fired()
}

// workCtx returns the context of a call that an abort or the job timeout
// cuts short (SampleDB task calls, polls, collects): the job's, also ended
// by haltWork. release must be called when the call returned.
func (j *jobRun) workCtx() (ctx context.Context, release func()) {
	ctx, cancel := context.WithCancel(j.ctx)
	j.mu.Lock()
	if j.workHalted {
		j.mu.Unlock()
		cancel()
		return ctx, cancel
	}
	c := &cancel
	j.working = append(j.working, c)
	j.mu.Unlock()
	return ctx, func() {
		j.mu.Lock()
		if i := slices.Index(j.working, c); i >= 0 {
			j.working = slices.Delete(j.working, i, i+1)
			if len(j.working) == 0 {
				j.working = nil
			}
		}
		j.mu.Unlock()
		cancel()
	}
}

// haltWork cuts short the calls running with a work context, and every
// later one.
func (j *jobRun) haltWork() {
	j.mu.Lock()
	j.workHalted = true
	calls := j.working
	j.working = nil
	j.mu.Unlock()
	for _, c := range calls {
		(*c)()
	}
}

// workStopped says whether a work context would be ended now.
func (j *jobRun) workStopped() bool {
	j.mu.Lock()
	halted := j.workHalted
	j.mu.Unlock()
	return halted || j.cause() != nil
}

// doneChan returns the channel closed when the job ended.
func (j *jobRun) doneChan() <-chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.done.wait()
}

func (j *jobRun) requestAbort(why string) {
	j.mu.Lock()
	a := j.rareLocked()
	first := a.abortSince.IsZero()
	if first {
		a.abortWhy, a.abortSince = why, time.Now()
	}
	j.mu.Unlock()
	if first {
		j.log().Info("abort requested", zap.String("reason", why))
		j.note("abort noticed", why)
		j.stop(sampledb.StateAborted)
	}
}

// guard is checked before every external call: the lease must be certainly
// valid by the local clock, and the job not stopped.
func (j *jobRun) guard() error {
	if err := j.cause(); err != nil {
		return err
	}
	if !j.r.keeper.Valid(j.lease.ID, j.lease.Token) {
		j.lose(errLeaseLost)
		return errLeaseLost
	}
	return nil
}

func (j *jobRun) exitFor(err error) exitReason {
	cause := j.cause()
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

// jobStep is the job's own step: its beginning, then (while its tasks
// step) its deadline, then its conclusion.
func (j *jobRun) jobStep() {
	j.mu.Lock()
	ph := j.phase
	j.mu.Unlock()
	switch ph {
	case phaseBegin:
		if exit, done := j.begin(); done {
			j.end(exit)
			return
		}
		j.startTasks()
	case phaseRunning:
		j.stop(sampledb.StateTimeout) // the deadline came
	case phaseHalting:
		j.conclude()
	}
}

// stop halts the job for why (an abort, the job timeout, a drain, or the
// lease lost): its task steps leave at their next safe point — at once
// for those waiting — and the job then concludes. The first reason
// stands; a lost lease always wins at the conclusion (no more writes).
func (j *jobRun) stop(why string) {
	j.mu.Lock()
	switch j.phase {
	case phaseBegin:
		// The begin step looks before it plans and before it starts tasks.
		if j.halted == "" {
			j.halted = why
		}
		j.mu.Unlock()
		return
	case phaseRunning:
	default:
		j.mu.Unlock()
		return
	}
	j.phase, j.halted = phaseHalting, why
	idle := j.running == 0
	for _, t := range j.tasks {
		j.r.sched.cancel(&t.step)
	}
	if idle {
		j.r.sched.schedule(&j.step, time.Time{}, httpc.PriorityCancel, j.r.sdbLane)
	}
	j.mu.Unlock()
	j.stopTasks()
	if why != haltDrain {
		j.haltWork() // cut vendor polls short; starts finish and are checkpointed
	}
}

// conclude ends a job whose tasks all left: it decides and delivers the
// outcome, or leaves the job (drained, lost).
func (j *jobRun) conclude() {
	j.mu.Lock()
	j.phase = phaseEnding
	why := j.halted
	j.mu.Unlock()
	var exit exitReason
	switch {
	case j.cause() != nil:
		exit = j.exitFor(nil)
	case why == haltDrain:
		exit = exitDrained
	case why == sampledb.StateAborted:
		why, _ := j.abort()
		exit = j.finish(sampledb.StateAborted, why)
	case why == sampledb.StateTimeout:
		exit = j.finish(sampledb.StateTimeout, fmt.Sprintf("job timeout (%s) reached with vendor work still running", j.r.cfg.JobTimeout))
	default:
		exit = j.finish(verdict(j.tasks))
	}
	j.end(exit)
}

// end records how the job left and hands it back to the runner.
func (j *jobRun) end(exit exitReason) {
	j.mu.Lock()
	j.phase = phaseDone
	j.mu.Unlock()
	j.r.sched.cancel(&j.step)
	j.exit = exit
	switch exit {
	case exitDone:
	case exitDrained:
		j.log().Info("job left at a safe point for another worker")
	default:
		j.log().Info("job stopped without further writes", zap.Error(j.cause()))
	}
	j.cancel(nil)
	j.mu.Lock()
	j.done.fire()
	j.mu.Unlock()
	if j.launched {
		j.r.finished(j)
	}
}

// schedule puts a new job on the scheduler.
func (j *jobRun) schedule() {
	j.r.sched.schedule(&j.step, time.Time{}, httpc.PriorityStart, j.r.sdbLane)
}

// run runs the job to its end and waits for it (tests).
func (j *jobRun) run() {
	j.schedule()
	<-j.doneChan()
}

// begin reads what the job was acquired with and readies it: a decided
// outcome is delivered at once; otherwise PUT executing, then the plan. It
// reports done with the exit when the job ended there.
func (j *jobRun) begin() (exitReason, bool) {
	cfg := &j.r.cfg
	rec := j.rec
	_, planned, _ := rec.Plan()
	resumed := planned || rec.Outcome() != nil
	cfg.Observer.JobStarted(resumed)

	if rec.Outcome() != nil {
		out, err := rec.Decision()
		if err != nil {
			out = &state.Outcome{State: sampledb.StateFailed, Reason: "unreadable outcome in the ledger", By: cfg.WorkerID}
		}
		return j.deliver(*out), true
	}

	msg, err := job.Decode(rec.Msg, 0)
	if err != nil {
		return j.finish(sampledb.StateFailed, "invalid job message in the ledger: "+err.Error()), true
	}
	target, notes, err := msg.Target()
	if err != nil {
		return j.finish(sampledb.StateFailed, "invalid job message: "+err.Error()), true
	}
	for _, n := range notes {
		j.log().Warn("job message metaData not usable; the job runs without it", zap.String("note", n))
	}
	j.cust = unique.Make(msg.Submission.Customer).Value()
	if len(notes) > 0 {
		j.mu.Lock()
		j.rareLocked().notes = notes
		j.mu.Unlock()
	}
	drivers, derr := cfg.Accounts.Drivers(j.customer())

	sj, err := j.putJob(j.ctx, sampledb.StateExecuting)
	if err != nil {
		return j.afterFailedPut(err), true
	}
	j.note("executing", "SampleDB accepted the executing state")
	if sj.AbortRequested {
		j.requestAbort("abort requested before the job started")
	}
	if j.halting() == sampledb.StateAborted {
		why, _ := j.abort()
		return j.finish(sampledb.StateAborted, why), true
	}
	if time.Now().After(j.deadline) {
		return j.finish(sampledb.StateTimeout, "job timeout passed before work began"), true
	}
	if derr != nil {
		j.log().Warn("the job's customer has no vendor accounts; failing it", zap.String("customer", j.customer()), zap.Error(derr))
		return j.finish(sampledb.StateFailed, derr.Error()), true
	}

	plan, err := j.plan(msg, rec, target, drivers)
	if err != nil {
		return j.exitFor(err), true
	}
	if len(plan) == 0 {
		return j.finish(sampledb.StateFailed, fmt.Sprintf("no configured vendor applies to platform %q", target.Platform)), true
	}
	cps := j.checkpoints(plan)
	tasks := make([]*taskRun, len(plan))
	for i, pt := range plan {
		tasks[i] = newTaskRun(j, pt, cps[pt.Kind])
	}
	j.mu.Lock()
	j.tasks = tasks
	j.dropRecord()
	j.mu.Unlock()
	return 0, false
}

// dropRecord lets go of the record once the tasks hold their checkpoints:
// the fields a re-seeded record needs besides (the abort mark, a delivery
// refusal, checkpoints of tasks not in the plan, fields this version does
// not know) go to kept, the decided outcome to outcome. j.mu is held.
func (j *jobRun) dropRecord() {
	planned := make(map[string]bool, len(j.tasks))
	for _, t := range j.tasks {
		planned[state.FieldTaskPrefix+t.pt.Kind] = true
	}
	for k, v := range j.rec.Fields {
		switch {
		case k == state.FieldPlan, planned[k]:
		case k == state.FieldOutcome:
			j.rareLocked().outcome = []byte(v)
		default:
			r := j.rareLocked()
			r.kept = append(r.kept, k, v)
		}
	}
	j.rec = nil
}

// keep remembers a ledger field this run wrote, for re-seeding. j.mu is
// held.
func (j *jobRun) keep(name, value string) {
	if j.rec != nil {
		j.rec.Fields[name] = value
		return
	}
	switch {
	case name == state.FieldPlan:
		// The plan is the tasks'.
	case strings.HasPrefix(name, state.FieldTaskPrefix) && j.task(strings.TrimPrefix(name, state.FieldTaskPrefix)) != nil:
		// The task's checkpoint is what was written (saveTask).
	case name == state.FieldOutcome:
		j.rareLocked().outcome = []byte(value)
	default:
		r := j.rareLocked()
		for i := 0; i+1 < len(r.kept); i += 2 {
			if r.kept[i] == name {
				r.kept[i+1] = value
				return
			}
		}
		r.kept = append(r.kept, name, value)
	}
}

// task returns the task of kind, nil when the plan has none. j.mu is held.
func (j *jobRun) task(kind string) *taskRun {
	for _, t := range j.tasks {
		if t.pt.Kind == kind {
			return t
		}
	}
	return nil
}

// note adds an event to the job's timeline: it is written with the next
// checkpoint (no round trip of its own).
func (j *jobRun) note(ev, detail string) {
	e := state.Event{At: time.Now(), Ev: ev, Worker: j.r.cfg.WorkerID, Token: j.lease.Token, Detail: j.r.cfg.Redact.String(detail)}
	j.mu.Lock()
	if len(j.events) >= state.MaxTimeline { // the ledger keeps no more anyway
		j.events = j.events[1:]
	}
	j.events = append(j.events, e)
	j.mu.Unlock()
}

// halting returns why the job was asked to stop, if it was.
func (j *jobRun) halting() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.halted
}

// startTasks schedules every task that has something left to do, and the
// job's deadline; or concludes at once when none has (or a stop came
// during begin).
func (j *jobRun) startTasks() {
	j.mu.Lock()
	why := j.halted
	var todo []*taskRun
	if why == "" {
		for _, t := range j.tasks {
			if !(t.cp.Done() && t.cp.Reported) {
				todo = append(todo, t)
			}
		}
	}
	if why != "" || len(todo) == 0 {
		j.phase = phaseHalting
		j.mu.Unlock()
		if why != "" {
			j.stopTasks()
		}
		j.conclude()
		return
	}
	j.phase, j.open = phaseRunning, int32(len(todo))
	for _, t := range todo {
		t.schedule(time.Time{})
	}
	j.r.sched.schedule(&j.step, j.deadline, httpc.PriorityCancel, j.r.sdbLane)
	j.mu.Unlock()
}

// enterTask is called by a task step before it works: false when the job
// no longer runs (the step was cancelled while it was being dispatched).
func (j *jobRun) enterTask() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.phase != phaseRunning {
		return false
	}
	j.running++
	return true
}

// leaveTask is called when a task step is done: the task ended, waits
// until due (zero: it waits for nothing — the job is stopping), and the
// job concludes when this was the last thing running.
func (j *jobRun) leaveTask(t *taskRun, due time.Time, ended bool) {
	j.mu.Lock()
	j.running--
	if ended {
		j.open--
	}
	conclude := false
	switch j.phase {
	case phaseRunning:
		switch {
		case j.open == 0:
			j.phase, conclude = phaseHalting, true
		case !ended && !due.IsZero():
			t.schedule(due)
		}
	case phaseHalting:
		conclude = j.running == 0
	}
	if conclude {
		j.r.sched.schedule(&j.step, time.Time{}, httpc.PriorityCancel, j.r.sdbLane)
	}
	j.mu.Unlock()
}

// verdict decides the job's state once every task ended: failed if any task
// failed, timeout if any timed out, else success (finding nothing is success).
func verdict(tasks []*taskRun) (string, string) {
	var failed, timedOut []string
	for _, t := range tasks {
		switch t.cp.State {
		case sampledb.TaskFailed:
			failed = append(failed, t.pt.Kind+": "+t.cp.Error)
		case sampledb.TaskTimeout:
			timedOut = append(timedOut, t.pt.Kind)
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

func (j *jobRun) plan(msg *job.Message, rec *state.Record, t edr.Target, drivers map[string]edr.Driver) ([]state.PlannedTask, error) {
	plan, stored, err := rec.Plan()
	if stored && err == nil {
		return plan, nil
	}
	if err != nil {
		j.log().Warn("unreadable plan in the ledger; planning again", zap.Error(err))
	}
	plan = j.r.cfg.Playbook.Plan(msg, t, func(kind string) bool { return drivers[kind] != nil })
	if err := j.save(state.PlanField(plan)); err != nil {
		return nil, err
	}
	return plan, nil
}

// checkpoints returns the plan's checkpoints as this run last wrote or read
// them: the tasks' own once they run; before, from the record (a fresh one
// for a task without one, or with one that is unreadable: that task
// restarts, and the log says so).
func (j *jobRun) checkpoints(plan []state.PlannedTask) map[string]*state.TaskCheckpoint {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make(map[string]*state.TaskCheckpoint, len(plan))
	for _, pt := range plan {
		if t := j.task(pt.Kind); t != nil {
			out[pt.Kind] = t.cp
			continue
		}
		var fields map[string]string
		if j.rec != nil {
			fields = j.rec.Fields
		}
		cp, err := state.TaskOf(fields, pt.Kind)
		if err != nil {
			j.log().Warn("unreadable task checkpoint; the task restarts", zap.String("task", pt.Kind), zap.Error(err))
		}
		out[pt.Kind] = cp
	}
	return out
}

// planned returns the job's plan as this run knows it: its tasks' once
// they run, before that the record's (nil when it has none).
func (j *jobRun) planned() []state.PlannedTask {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.rec != nil {
		plan, _, _ := j.rec.Plan()
		return plan
	}
	plan := make([]state.PlannedTask, len(j.tasks))
	for i, t := range j.tasks {
		plan[i] = t.pt
	}
	return plan
}

// save writes ledger fields (name, value pairs), fenced, retrying while
// Redis is unreachable and the lease is still valid. A stale token stops
// the job (or, when the record vanished, has it re-seeded).
func (j *jobRun) save(kv ...string) error {
	err := j.do(j.ledgerWrite("checkpoint failed", true), func(ctx context.Context) error {
		// The pending events go with this write; tasks save concurrently,
		// so they are taken out first and put back in front when the
		// write fails.
		j.mu.Lock()
		evs := j.events
		j.events = nil
		j.mu.Unlock()
		err := j.r.store.CheckpointNotes(ctx, *j.sess, j.lease, evs, kv...)
		if err != nil && len(evs) > 0 {
			j.mu.Lock()
			j.events = append(evs, j.events...)
			j.mu.Unlock()
		}
		return err
	})
	if errors.Is(err, state.ErrStale) {
		return j.loseFor(err)
	}
	if err != nil {
		return err
	}
	j.mu.Lock()
	for i := 0; i+1 < len(kv); i += 2 {
		j.keep(kv[i], kv[i+1])
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

// fieldsSnapshot returns every field this run knows, for re-seeding: the
// message, where it came from and when, and what the record held and this
// run wrote — the plan, each task's checkpoint as this run holds it, the
// outcome and the kept fields. It is called once the job ended.
func (j *jobRun) fieldsSnapshot() ([]string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	msg, err := j.msg.unpack()
	if err != nil {
		return nil, err // never: the bytes were packed here
	}
	kv := []string{state.FieldMsg, string(msg), state.FieldSource, j.source}
	if !j.created.IsZero() {
		kv = append(kv, state.FieldCreated, strconv.FormatInt(j.created.UnixMilli(), 10))
	}
	if j.rec != nil {
		for k, v := range j.rec.Fields {
			kv = append(kv, k, v)
		}
		return kv, nil
	}
	plan := make([]state.PlannedTask, len(j.tasks))
	for i, t := range j.tasks {
		plan[i] = t.pt
		if name, value := t.cp.Field(); value != fresh(t.pt.Kind) {
			kv = append(kv, name, value)
		}
	}
	name, value := state.PlanField(plan)
	kv = append(kv, name, value)
	if r := j.rare; r != nil {
		if r.outcome != nil {
			kv = append(kv, state.FieldOutcome, string(r.outcome))
		}
		kv = append(kv, r.kept...)
	}
	return kv, nil
}

// fresh is the checkpoint of a task that has done nothing yet, encoded: a
// re-seeded record leaves it out, as the ledger did.
func fresh(kind string) string {
	_, v := (&state.TaskCheckpoint{Kind: kind}).Field()
	return v
}
