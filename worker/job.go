package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/failpoint"
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

// job is one running job: a coordinator goroutine (run) and one goroutine
// per task.
type jobRun struct {
	r     *Runner
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

func newJob(r *Runner, l state.Lease, rec *state.Record) *jobRun {
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
		r: r, lease: l, rec: rec, start: time.Now(),
		log: r.log.With(zap.String("job_id", l.ID), zap.Int64("token", l.Token)),
		ctx: ctx, cancel: cancel, work: work, haltWork: haltWork,
		halt: make(chan struct{}), abort: make(chan struct{}),
		fields: fields, done: make(chan struct{}),
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
		return nil, &edr.Error{Vendor: vendorOf(kind), Op: "account", Msg: err.Error(), Err: err}
	}
	d := ds[kind]
	if d == nil {
		return nil, edr.Permanent(vendorOf(kind), "account", fmt.Sprintf("no %s account is configured for customer %q on worker %s", kind, j.customer(), j.r.cfg.WorkerID))
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
	resumed := j.rec.Fields[fieldPlan] != "" || j.rec.Outcome() != nil
	cfg.Observer.JobStarted(resumed)

	if raw := j.rec.Outcome(); raw != nil {
		var out outcome
		if err := json.Unmarshal(raw, &out); err != nil || !sampledb.IsTerminal(out.State) {
			out = outcome{State: sampledb.StateFailed, Reason: "unreadable outcome in the ledger", By: cfg.WorkerID}
		}
		return j.deliver(out)
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

	tasks := j.loadTasks(plan)
	var wg sync.WaitGroup
	for _, pt := range plan {
		cp := tasks[pt.Kind]
		if cp.done() && cp.Reported {
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
func verdict(tasks map[string]*taskCheckpoint, plan []PlannedTask) (string, string) {
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

func (j *jobRun) plan(msg *job.Message, t edr.Target, drivers map[string]edr.Driver) ([]PlannedTask, error) {
	if raw := j.rec.Fields[fieldPlan]; raw != "" {
		var plan []PlannedTask
		if err := json.Unmarshal([]byte(raw), &plan); err == nil {
			return plan, nil
		}
		j.log.Warn("unreadable plan in the ledger; planning again")
	}
	plan := j.r.cfg.Playbook.Plan(msg, t, func(kind string) bool { return drivers[kind] != nil })
	if plan == nil {
		plan = []PlannedTask{}
	}
	b, _ := json.Marshal(plan)
	if err := j.save(fieldPlan, string(b)); err != nil {
		return nil, err
	}
	return plan, nil
}

func (j *jobRun) loadTasks(plan []PlannedTask) map[string]*taskCheckpoint {
	out := make(map[string]*taskCheckpoint, len(plan))
	for _, pt := range plan {
		cp := &taskCheckpoint{Kind: pt.Kind}
		if raw := j.rec.Fields[fieldTaskPrefix+pt.Kind]; raw != "" {
			if err := json.Unmarshal([]byte(raw), cp); err != nil {
				j.log.Warn("unreadable task checkpoint; the task restarts", zap.String("task", pt.Kind), zap.Error(err))
				cp = &taskCheckpoint{Kind: pt.Kind}
			}
		}
		out[pt.Kind] = cp
	}
	return out
}

// save writes ledger fields, fenced, retrying while Redis is unreachable and
// the lease is still valid.
func (j *jobRun) save(kv ...string) error {
	bo := j.backoff()
	for {
		if err := j.guard(); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(j.ctx, 5*time.Second)
		err := j.r.store.Checkpoint(ctx, j.r.cfg.WorkerID, j.lease, kv...)
		cancel()
		if err == nil {
			j.mu.Lock()
			for i := 0; i+1 < len(kv); i += 2 {
				j.fields[kv[i]] = kv[i+1]
			}
			j.mu.Unlock()
			return nil
		}
		if errors.Is(err, state.ErrStale) {
			return j.loseFor(err)
		}
		j.log.Warn("checkpoint failed; retrying", zap.Error(err))
		if err := j.sleep(j.ctx, nil, bo.next(0)); err != nil {
			return err
		}
	}
}

func (j *jobRun) saveTask(cp *taskCheckpoint) error {
	// Vendor text reaches the ledger, SampleDB's readers and the result
	// topic only through here and finish: credentials a vendor echoed are
	// masked before anything is written down.
	red := j.r.cfg.Redact
	cp.Error, cp.Cancel, cp.Progress = red.String(cp.Error), red.String(cp.Cancel), red.String(cp.Progress)
	if cp.Result != nil {
		for i, n := range cp.Result.Notes {
			cp.Result.Notes[i] = red.String(n)
		}
	}
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	return j.save(fieldTaskPrefix+cp.Kind, string(b))
}

func (j *jobRun) fieldsSnapshot() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	kv := make([]string, 0, 2*len(j.fields))
	for k, v := range j.fields {
		kv = append(kv, k, v)
	}
	return kv
}

// finish decides the terminal outcome (fenced; the first decision stands)
// and delivers it. The job's notes are added to the reason.
func (j *jobRun) finish(st, reason string) exitReason {
	if len(j.notes) > 0 {
		parts := j.notes
		if reason != "" {
			parts = append([]string{reason}, j.notes...)
		}
		reason = strings.Join(parts, "; ")
	}
	out := outcome{State: st, Reason: j.r.cfg.Redact.String(reason), By: j.r.cfg.WorkerID, At: time.Now().UnixMilli()}
	raw, _ := json.Marshal(out)
	bo := j.backoff()
	for {
		if err := j.guard(); err != nil {
			return j.exitFor(err)
		}
		ctx, cancel := context.WithTimeout(j.ctx, 5*time.Second)
		stood, err := j.r.store.Decide(ctx, j.r.cfg.WorkerID, j.lease, raw)
		cancel()
		if err == nil {
			var decided outcome
			if json.Unmarshal(stood, &decided) != nil || !sampledb.IsTerminal(decided.State) {
				decided = out
			}
			j.mu.Lock()
			j.fields[state.FieldOutcome] = string(stood)
			j.mu.Unlock()
			failpoint.Hit(failpoint.DecidedBeforePut)
			return j.deliver(decided)
		}
		if errors.Is(err, state.ErrStale) {
			return j.exitFor(j.loseFor(err))
		}
		j.log.Warn("could not record the job outcome; retrying", zap.Error(err))
		if err := j.sleep(j.ctx, nil, bo.next(0)); err != nil {
			return j.exitFor(err)
		}
	}
}

// deliver carries a decided outcome to the end: vendor operations of
// unfinished tasks are cancelled (or abandoned where the API has no cancel),
// the tasks are closed in SampleDB, the job's terminal state is PUT, the
// summary published, and the job tombstoned. Any later owner re-runs
// deliver from the ledger if this worker dies half-way.
func (j *jobRun) deliver(out outcome) exitReason {
	cfg := &j.r.cfg
	log := j.log.With(zap.String("state", out.State))
	var plan []PlannedTask
	_ = json.Unmarshal([]byte(j.rec.Fields[fieldPlan]), &plan)
	j.mu.Lock()
	if raw := j.fields[fieldPlan]; raw != "" {
		_ = json.Unmarshal([]byte(raw), &plan)
	}
	j.mu.Unlock()
	tasks := j.loadTasksFromFields(plan)

	// gone: SampleDB says the job does not exist. jobSeen: it answered for
	// the job during this delivery, so a task 404 is about the task only.
	gone, jobSeen := false, false
	for _, pt := range plan {
		cp := tasks[pt.Kind]
		if !cp.done() {
			cp.State = unfinishedTaskState(out.State)
			cp.Ended = time.Now().UnixMilli()
			if cp.Ref != nil {
				cp.Cancel = j.cancelVendor(pt.Kind, cp.Ref)
			}
			if cp.Error == "" {
				cp.Error = out.Reason
			}
			if err := j.saveTask(cp); err != nil {
				return j.exitFor(err)
			}
			cfg.Observer.TaskFinished(pt.Kind, cp.State)
		}
		if cp.TaskID == "" && cp.Ref != nil {
			// SampleDB refused the task or did not name it (CreateTask).
			log.Warn("task ran without a SampleDB task ID; its end is not reported to SampleDB",
				zap.String("task", pt.Kind), zap.String("task_state", cp.State))
		}
		if cp.TaskID != "" && !cp.Reported && !gone {
			err := j.reportTask(j.ctx, cp)
			if errors.Is(err, sampledb.ErrNotFound) {
				// A 404 on /job/{id}/task/{taskId} says the task was not
				// found; only the job's own 404 says the job is gone.
				if !jobSeen {
					switch _, gerr := j.getJob(); {
					case errors.Is(gerr, sampledb.ErrNotFound):
						gone = true
					case gerr != nil:
						return j.exitFor(gerr)
					default:
						jobSeen = true
					}
				}
				if !gone {
					log.Warn("SampleDB does not know the task; its end is not reported, the job's is",
						zap.String("task", pt.Kind), zap.String("task_id", string(cp.TaskID)), zap.Error(err))
				}
			} else if err != nil {
				return j.exitFor(err)
			}
		}
	}

	final := out.State
	bo := j.backoff()
	for attempt := 1; !gone; attempt++ {
		sj, err := j.putJob(j.ctx, out.State)
		var refused *refusedError
		switch {
		case err == nil && sj != nil && sj.State != "" && sj.State != out.State && sampledb.IsTerminal(sj.State):
			final = sj.State
		case errors.Is(err, sampledb.ErrNotFound):
			gone = true
		case errors.Is(err, sampledb.ErrPrecondition):
			st, rerr := j.resolveRefusedTerminal(out.State, err)
			if errors.As(rerr, &refused) {
				break
			}
			if rerr != nil {
				return j.exitFor(rerr)
			}
			final = st
		case err != nil:
			return j.exitFor(err)
		}
		if refused == nil {
			break
		}
		// SampleDB refuses the decided state and does not hold another
		// terminal one: keep the job (and its lease), say so loudly, and
		// ask again with backoff. Giving up would leave the job active in
		// SampleDB forever; letting the lease lapse would only hand the
		// same refusal to another worker.
		wait := bo.next(0)
		cfg.Observer.DeliveryRefused(out.State)
		log.Warn("SampleDB refuses the job's terminal state; retrying", zap.Int("attempt", attempt),
			zap.String("sampledb_state", refused.state), zap.String("answer", refused.answer), zap.Duration("in", wait))
		rec, _ := json.Marshal(deliveryRefusal{Attempts: attempt, State: refused.state, Answer: refused.answer, At: time.Now().UnixMilli()})
		if err := j.save(fieldDelivery, string(rec)); err != nil {
			return j.exitFor(err)
		}
		if err := j.sleep(j.ctx, nil, wait); err != nil {
			return j.exitFor(err)
		}
	}
	if gone {
		log.Warn("job no longer exists in SampleDB; finishing it locally")
		if final == out.State && out.State != sampledb.StateFailed {
			final = sampledb.StateFailed
		}
	}
	if final != out.State {
		log.Error("SampleDB holds another terminal state for this job; keeping SampleDB's", zap.String("sampledb_state", final))
	}
	failpoint.Hit(failpoint.TerminalPutBeforeComplete)
	j.publish(out, final, plan, tasks)
	if err := j.complete(final); err != nil {
		return j.exitFor(err)
	}
	if !j.abortSince.IsZero() && final == sampledb.StateAborted {
		cfg.Observer.AbortNoticed(time.Since(j.abortSince))
	}
	cfg.Observer.JobFinished(final, time.Since(j.rec.Created))
	log.Info("job finished", zap.String("reason", out.Reason))
	return exitDone
}

func (j *jobRun) loadTasksFromFields(plan []PlannedTask) map[string]*taskCheckpoint {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make(map[string]*taskCheckpoint, len(plan))
	for _, pt := range plan {
		cp := &taskCheckpoint{Kind: pt.Kind}
		if raw := j.fields[fieldTaskPrefix+pt.Kind]; raw != "" {
			_ = json.Unmarshal([]byte(raw), cp)
		}
		out[pt.Kind] = cp
	}
	return out
}

func unfinishedTaskState(jobState string) string {
	if jobState == sampledb.StateTimeout {
		return sampledb.TaskTimeout
	}
	return sampledb.TaskCancelled
}

// cancelVendor stops a vendor operation where the API allows it. It never
// fails the delivery: what happened is recorded on the task.
func (j *jobRun) cancelVendor(kind string, ref json.RawMessage) string {
	d, err := j.driver(kind)
	if err != nil {
		return "operation abandoned: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(j.ctx, j.r.cfg.CancelTimeout)
	defer cancel()
	bo := j.backoff()
	for {
		if err := j.guard(); err != nil {
			return "not cancelled: " + err.Error()
		}
		began := time.Now()
		err := d.Cancel(ctx, edr.Ref(ref))
		if !errors.Is(err, edr.ErrCancelUnsupported) {
			j.r.cfg.Observer.VendorCall(vendorOf(kind), "cancel", callResult(err), time.Since(began))
		}
		switch {
		case err == nil:
			return "cancelled at the vendor"
		case errors.Is(err, edr.ErrCancelUnsupported):
			return "abandoned: the vendor API has no cancel"
		case !edr.IsRetryable(err) || ctx.Err() != nil:
			j.log.Warn("vendor cancel failed", zap.String("task", kind), zap.Error(err))
			return "cancel failed: " + err.Error()
		}
		if j.sleep(ctx, nil, bo.next(edr.RetryAfter(err))) != nil {
			return "cancel failed: " + err.Error()
		}
	}
}

func (j *jobRun) reportTask(ctx context.Context, cp *taskCheckpoint) error {
	err := j.sdb(ctx, func(ctx context.Context) error {
		_, err := j.r.cfg.SampleDB.UpdateTask(ctx, j.lease.ID, cp.TaskID, cp.State)
		return err
	})
	if errors.Is(err, sampledb.ErrPrecondition) {
		// The task already holds a terminal state (an earlier attempt of ours
		// whose answer was lost): nothing more to say.
		err = nil
	}
	if err != nil {
		return err
	}
	cp.Reported = true
	return j.saveTask(cp)
}

// putJob PUTs a job state, retrying until SampleDB answers or the job must
// stop. 412 and 404 are returned to the caller.
func (j *jobRun) putJob(ctx context.Context, st string) (*sampledb.Job, error) {
	var sj *sampledb.Job
	err := j.sdb(ctx, func(ctx context.Context) error {
		var err error
		sj, err = j.r.cfg.SampleDB.UpdateJob(ctx, j.lease.ID, st)
		return err
	})
	return sj, err
}

// afterFailedPut handles a refused PUT executing.
func (j *jobRun) afterFailedPut(err error) exitReason {
	switch {
	case errors.Is(err, sampledb.ErrNotFound):
		return j.finishGone()
	case errors.Is(err, sampledb.ErrPrecondition):
		// SampleDB refuses executing: the job is already terminal there
		// (finished by a worker whose tombstone Redis lost).
		sj, gerr := j.getJob()
		if gerr != nil {
			return j.exitFor(gerr)
		}
		if sampledb.IsTerminal(sj.State) {
			j.log.Info("job already finished in SampleDB; dropping", zap.String("sampledb_state", sj.State))
			if err := j.complete(sj.State); err != nil {
				return j.exitFor(err)
			}
			return exitDone
		}
		return j.finish(sampledb.StateFailed, "SampleDB refused the executing state: "+err.Error())
	}
	return j.exitFor(err)
}

func (j *jobRun) finishGone() exitReason {
	out := outcome{State: sampledb.StateFailed, Reason: "job not found in SampleDB", By: j.r.cfg.WorkerID, At: time.Now().UnixMilli()}
	raw, _ := json.Marshal(out)
	if _, err := j.r.store.Decide(j.ctx, j.r.cfg.WorkerID, j.lease, raw); err != nil {
		return j.exitFor(err)
	}
	j.log.Warn("job not found in SampleDB; finishing it locally as failed")
	if err := j.complete(sampledb.StateFailed); err != nil {
		return j.exitFor(err)
	}
	return exitDone
}

// refusedError says SampleDB refuses the decided terminal state of a job it
// holds in a non-terminal state: answer is SampleDB's message.
type refusedError struct {
	state, answer string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("SampleDB refuses the terminal state for a job it holds as %s: %s", e.state, e.answer)
}

// resolveRefusedTerminal handles a 412 on the terminal PUT: either SampleDB
// already holds a terminal state (ours from an attempt whose answer was lost,
// or another: it stands), or the job never went to executing (decided
// before start: PUT executing first). Anything else is a *refusedError.
func (j *jobRun) resolveRefusedTerminal(want string, putErr error) (string, error) {
	sj, err := j.getJob()
	if err != nil {
		return "", err
	}
	if sampledb.IsTerminal(sj.State) {
		return sj.State, nil
	}
	answer := j.r.cfg.Redact.String(putErr.Error())
	if sj.State == sampledb.StateEnqueued {
		_, err := j.putJob(j.ctx, sampledb.StateExecuting)
		if err == nil {
			_, err = j.putJob(j.ctx, want)
		}
		switch {
		case err == nil:
			return want, nil
		case errors.Is(err, sampledb.ErrPrecondition):
			answer = j.r.cfg.Redact.String(err.Error())
		default:
			return "", err
		}
	}
	return "", &refusedError{state: sj.State, answer: clip(answer, 500)}
}

func (j *jobRun) getJob() (*sampledb.Job, error) {
	var sj *sampledb.Job
	err := j.sdb(j.ctx, func(ctx context.Context) error {
		var err error
		sj, err = j.r.cfg.SampleDB.GetJob(ctx, j.lease.ID)
		return err
	})
	return sj, err
}

// sdb runs a SampleDB call behind the lease guard, retrying everything but
// 412 and 404 (the client already retried 5xx/429/network with backoff):
// credentials problems are loud and retried slowly, never a crash loop.
func (j *jobRun) sdb(ctx context.Context, call func(context.Context) error) error {
	bo := j.backoff()
	for {
		if err := j.guard(); err != nil {
			return err
		}
		err := call(ctx)
		if err == nil || errors.Is(err, sampledb.ErrPrecondition) || errors.Is(err, sampledb.ErrNotFound) {
			return err
		}
		if cause := context.Cause(j.ctx); cause != nil {
			return cause
		}
		if ctx.Err() != nil {
			return errHalted
		}
		wait := bo.next(0)
		if errors.Is(err, sampledb.ErrUnauthorized) || errors.Is(err, sampledb.ErrForbidden) {
			j.log.Error("SampleDB refused our credentials; check SAMPLEDB_API_KEY and its role (SAMPLEDB-ANALYZER for the PUT/POST updates, SAMPLEDB-VIEWER or higher for GET/list); the job is held", zap.Error(err))
			wait = j.r.cfg.RetryMax
		} else {
			j.log.Warn("SampleDB call failed; retrying", zap.Error(err), zap.Duration("in", wait))
		}
		if err := j.sleep(ctx, nil, wait); err != nil {
			return err
		}
	}
}

func (j *jobRun) publish(out outcome, final string, plan []PlannedTask, tasks map[string]*taskCheckpoint) {
	pub := j.r.cfg.Results
	if pub == nil {
		return
	}
	msg, _ := j.message()
	s := Summary{
		JobID: j.lease.ID, State: final, Reason: out.Reason,
		SHA256: strings.ToLower(msg.Submission.Sample.ID), Platform: msg.Classification.Platform,
		Customer: msg.Submission.Customer, Worker: j.r.cfg.WorkerID,
		Admitted: j.rec.Created.UnixMilli(), Finished: time.Now().UnixMilli(),
		Generation: j.lease.Token, Tasks: []TaskSummary{},
	}
	kinds := make([]string, 0, len(plan))
	for _, pt := range plan {
		kinds = append(kinds, pt.Kind)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		cp := tasks[k]
		s.Tasks = append(s.Tasks, TaskSummary{Kind: k, State: cp.State, TaskID: cp.TaskID, Result: cp.Result, Error: cp.Error, Cancel: cp.Cancel})
	}
	body, truncated := capSummary(&s)
	if truncated {
		j.log.Warn("the job summary was too large; its lists were cut", zap.Int("bytes", len(body)))
	}
	ctx, cancel := context.WithTimeout(j.ctx, j.r.cfg.PublishTimeout)
	defer cancel()
	bo := j.backoff()
	for {
		err := pub.Publish(ctx, j.lease.ID, body)
		if err == nil {
			return
		}
		if context.Cause(j.ctx) != nil {
			return // stopped: the job is not tombstoned, its next owner publishes
		}
		if errors.Is(err, ErrNotPublishable) {
			j.log.Error("the job summary cannot be published; SampleDB has the state, the summary is lost", zap.Error(err))
			return
		}
		if ctx.Err() != nil {
			j.log.Error("could not publish the job summary; SampleDB has the state, the summary is lost", zap.Error(err))
			return
		}
		if j.sleep(ctx, nil, bo.next(0)) != nil {
			return
		}
	}
}

// complete tombstones the job (fenced), retrying while Redis is unreachable.
func (j *jobRun) complete(final string) error {
	bo := j.backoff()
	for {
		if err := context.Cause(j.ctx); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(j.ctx, 5*time.Second)
		err := j.r.store.Complete(ctx, j.r.cfg.WorkerID, j.lease, final)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, state.ErrStale) {
			return j.loseFor(err)
		}
		j.log.Warn("could not tombstone the job; retrying", zap.Error(err))
		if err := j.sleep(j.ctx, nil, bo.next(0)); err != nil {
			return err
		}
	}
}

// sleep waits d, or until ctx ends (returns the job's cause, or errHalted
// for a work context) or halt closes (errHalted), whichever is first.
func (j *jobRun) sleep(ctx context.Context, halt <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-halt:
		return errHalted
	case <-ctx.Done():
		if cause := context.Cause(j.ctx); cause != nil {
			return cause
		}
		return errHalted
	}
}

func (j *jobRun) backoff() *backoffState {
	return &backoffState{min: j.r.cfg.RetryMin, max: j.r.cfg.RetryMax}
}
