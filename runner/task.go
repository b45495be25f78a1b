package runner

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/failpoint"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

var errTaskTimeout = errors.New("task timeout")

// taskRun is one task of a job, driven one step at a time: create its
// SampleDB task and start the vendor operation (checkpointing the reference
// before anything else), then poll — each poll one step, the next one due
// after an adaptive delay or the vendor's Retry-After — then collect and
// report. A task waiting for its next poll is a step in the scheduler's
// heap, nothing more.
type taskRun struct {
	j        *jobRun
	pt       state.PlannedTask
	cp       *state.TaskCheckpoint
	step     step
	deadline time.Time     // the task's own timeout, or the job's deadline
	delay    time.Duration // the next poll's delay (adaptive)
	bo       *backoffState // retryable failures in a row, nil after a success
	// progressAt is when a poll last wrote the vendor's progress line, to
	// the ledger or to the lines hash (Unix ms; 0: never): see
	// progressEvery. lined: a line went to the lines hash (lines.go).
	progressAt int64
	lined      bool
	collect    bool // the operation is done: collect next
	// created: this run asked SampleDB for the task (it may have answered
	// without a task ID, or refused: the task runs without one).
	created bool
}

func newTaskRun(j *jobRun, pt state.PlannedTask, cp *state.TaskCheckpoint) *taskRun {
	t := &taskRun{j: j, pt: pt, cp: cp, deadline: j.deadline, delay: j.r.cfg.PollMin}
	if pt.Timeout > 0 && cp.Started > 0 {
		t.deadline = earliest(t.deadline, time.UnixMilli(cp.Started).Add(time.Duration(pt.Timeout)))
	}
	t.step.run, t.step.task = t.run, t
	return t
}

// schedule makes the task's next step due at due, in the lane and with the
// priority of what it will do. The job's mu is held.
func (t *taskRun) schedule(due time.Time) {
	r := t.j.r
	switch {
	case t.cp.Ref == nil && !t.cp.Done():
		r.sched.schedule(&t.step, due, httpc.PriorityStart, r.startLane(t.pt.Kind))
	case t.collect:
		r.sched.schedule(&t.step, due, httpc.PriorityCollect, r.vendorLane(t.j, t.pt.Kind))
	default:
		// In a batch lane (edr.BatchPoller) the poll joins the lane's next
		// batch.
		r.sched.schedule(&t.step, due, httpc.PriorityPoll, r.vendorLane(t.j, t.pt.Kind))
	}
}

// run is the task's step.
func (t *taskRun) run() {
	j := t.j
	if !j.enterTask() {
		return
	}
	due, ended := t.advance()
	j.leaveTask(t, due, ended)
}

// advance does the task's next piece of work and returns when the next is
// due, or that the task ended. A zero due and not ended: the job stops
// (halted or lost) and the task waits for nothing.
func (t *taskRun) advance() (time.Time, bool) {
	j, cp, kind := t.j, t.cp, t.pt.Kind
	cfg := &j.r.cfg
	if cp.Done() {
		if cp.TaskID != "" && !cp.Reported {
			ctx, release := j.workCtx()
			_ = j.reportTask(ctx, cp) // if interrupted, deliver reports it
			release()
		}
		return time.Time{}, true
	}
	if _, err := j.driver(kind); err != nil {
		return t.end(sampledb.TaskFailed, err.Error())
	}
	if cp.TaskID == "" && !t.created {
		var task *sampledb.Task
		ctx, release := j.workCtx()
		err := j.sdb(ctx, func(ctx context.Context) error {
			var err error
			task, err = cfg.SampleDB.CreateTask(ctx, j.lease.ID, kind)
			return err
		})
		release()
		if err != nil {
			if !errors.Is(err, sampledb.ErrPrecondition) && !errors.Is(err, sampledb.ErrNotFound) {
				return time.Time{}, false // halted or lost
			}
			t.created = true
			t.log().Warn("SampleDB refused the task", zap.Error(err))
		} else {
			t.created = true
			cp.TaskID = task.ID
			j.note("task created", fmt.Sprintf("%s: SampleDB task %s", kind, task.ID))
			if j.saveTask(cp) != nil {
				return time.Time{}, false
			}
		}
	}
	if cp.Ref == nil {
		return t.startOp()
	}
	if t.collect {
		return t.collectOp()
	}
	return t.poll()
}

// startOp starts the vendor operation (see startOnce) and checkpoints its
// reference. The starts of one kind run at most StartConcurrency at once
// (the start lane): each holds its place from the request until the
// reference is checkpointed, the window a crash turns into a restarted
// operation.
func (t *taskRun) startOp() (time.Time, bool) {
	j, cp := t.j, t.cp
	if t.pt.Timeout > 0 {
		t.deadline = earliest(j.deadline, time.Now().Add(time.Duration(t.pt.Timeout)))
	}
	target, err := j.target()
	if err != nil {
		return t.end(sampledb.TaskFailed, "invalid job message: "+err.Error())
	}
	ref, err := j.startOnce(t.pt.Kind, cp, target, t.deadline, t.log())
	if err != nil {
		return t.failed(err)
	}
	cp.Ref, cp.Started = ref, time.Now().UnixMilli()
	j.note("vendor operation started", fmt.Sprintf("%s: %s", t.pt.Kind, refText(ref)))
	failpoint.Hit(failpoint.StartedBeforeCheckpoint)
	if j.saveTask(cp) != nil {
		return time.Time{}, false
	}
	if j.debugOn() {
		t.log().Debug("vendor operation started")
	}
	return time.Now().Add(t.delay), false
}

// poll asks the vendor once how the operation is doing.
func (t *taskRun) poll() (time.Time, bool) {
	if due, ended, over := t.overdue(); over {
		return due, ended
	}
	st, err := vendorOnce(t, "poll", httpc.PriorityPoll, func(ctx context.Context, d edr.Driver) (edr.Status, error) {
		return d.Poll(ctx, t.cp.Ref)
	})
	return t.polled(st, err)
}

// overdue handles a task whose deadline passed: its own timeout ends it
// (the operation is cancelled at the vendor); the job's deadline is the
// job's to act on.
func (t *taskRun) overdue() (time.Time, bool, bool) {
	if time.Now().Before(t.deadline) {
		return time.Time{}, false, false
	}
	if t.deadline.Equal(t.j.deadline) {
		return time.Time{}, false, true
	}
	due, ended := t.timeout()
	return due, ended, true
}

// polled acts on a poll's answer.
func (t *taskRun) polled(st edr.Status, err error) (time.Time, bool) {
	j, cp := t.j, t.cp
	if err != nil {
		return t.retryLater(err)
	}
	t.bo = nil
	cp.Polls++
	changed := cp.LastError != ""
	cp.LastError = ""
	if st.Ref != nil {
		cp.Ref, changed = st.Ref, true
	}
	now := time.Now()
	line := false
	if st.Progress != "" && st.Progress != cp.Progress {
		// The progress line (rows found so far) changes with nearly every
		// poll of a long export. It is for people; nothing resumes from it:
		// alone it goes to the session's lines hash (lines.go), at most
		// once per progressEvery for a task and progressLines a second for
		// the worker, and is not worth a checkpoint.
		cp.Progress = st.Progress
		line = !changed && now.UnixMilli()-t.progressAt >= progressEvery.Milliseconds() && j.r.progress.take(now)
	}
	if changed {
		if j.saveTask(cp) != nil {
			return time.Time{}, false
		}
		t.progressAt = now.UnixMilli()
	}
	if st.Done {
		t.collect = true
		return time.Now(), false
	}
	if st.NextPoll > 0 {
		t.delay = max(st.NextPoll, time.Millisecond)
	} else {
		t.delay = min(t.delay*3/2, j.r.cfg.PollMax)
	}
	next := earliest(now.Add(pollWait(t.delay, st.NextPoll > 0)), t.deadline)
	cp.NextPoll = next.UnixMilli()
	if line {
		j.r.lines.put(*j.sess, j.lease.ID, t.pt.Kind, state.ProgressLine{Progress: j.r.cfg.Redact.String(cp.Progress), Polls: cp.Polls, NextPoll: cp.NextPoll})
		t.progressAt, t.lined = now.UnixMilli(), true
	}
	return next, false
}

// pollWait is the wait before the next poll, spread so that operations
// started together (a burst of submissions) do not poll together for ever
// after: the vendor's own interval (vendorNamed) is never shortened, and
// waited up to a tenth longer; ours is waited up to a fifth shorter, so
// never longer than POLL_INTERVAL_MAX.
func pollWait(delay time.Duration, vendorNamed bool) time.Duration {
	if vendorNamed {
		return delay + rand.N(delay/10+1)
	}
	return delay - rand.N(delay/5+1)
}

// progressEvery is how often at most a poll whose only news is the
// vendor's progress line writes the line (lines.go): at 100,000 exports in
// flight a checkpoint per poll was most of the ledger's traffic.
const progressEvery = time.Minute

// progressLines is how many progress lines a second a worker writes at
// most (progressBudget): with N tasks polling, a task's line is at most
// about max(progressEvery, N/progressLines) old (at 100,000 tasks, under
// 17 minutes). The lines of a second go to the ledger in one HSET, so this
// bounds the bytes, not the commands.
const progressLines = 100

// progressBudget is a token bucket of progressLines a second (as many at
// once) shared by a worker's tasks. The zero value is a full bucket.
type progressBudget struct {
	mu     sync.Mutex
	spent  float64 // tokens missing from a full bucket
	filled time.Time
}

// take spends a token at now if one is left.
func (b *progressBudget) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.After(b.filled) {
		if !b.filled.IsZero() {
			b.spent = max(0, b.spent-now.Sub(b.filled).Seconds()*progressLines)
		}
		b.filled = now
	}
	if b.spent > progressLines-1 {
		return false
	}
	b.spent++
	return true
}

// collectOp fetches and summarises the results.
func (t *taskRun) collectOp() (time.Time, bool) {
	if due, ended, over := t.overdue(); over {
		return due, ended
	}
	res, err := vendorOnce(t, "collect", httpc.PriorityCollect, func(ctx context.Context, d edr.Driver) (edr.Result, error) {
		return d.Collect(ctx, t.cp.Ref)
	})
	if err != nil {
		return t.retryLater(err)
	}
	t.cp.Result = &res
	return t.end(sampledb.TaskSuccess, "")
}

// retryLater waits out a retryable failure (backoff, or the vendor's
// Retry-After) as a due time, not a sleep; a permanent one ends the task.
func (t *taskRun) retryLater(err error) (time.Time, bool) {
	j := t.j
	if j.workStopped() {
		return time.Time{}, false // halted or lost
	}
	if !edr.IsRetryable(err) {
		return t.failed(err)
	}
	if t.bo == nil {
		t.bo = j.backoff()
	}
	due := time.Now().Add(t.bo.next(edr.RetryAfter(err)))
	if due.After(t.deadline) {
		if t.deadline.Equal(j.deadline) {
			return time.Time{}, false // the job's deadline comes first
		}
		return t.timeout()
	}
	if j.debugOn() {
		t.log().Debug("vendor call failed; retrying", zap.Error(err), zap.Time("at", due))
	}
	// Operators see the failure on the task (a write only when one fails),
	// and on the timeline when it is not the same failure again.
	if msg := err.Error(); msg != t.cp.LastError {
		j.note("vendor call failed", fmt.Sprintf("%s: %s; retrying", t.pt.Kind, msg))
	}
	t.cp.LastError, t.cp.NextPoll = err.Error(), due.UnixMilli()
	if j.saveTask(t.cp) != nil {
		return time.Time{}, false
	}
	return due, false
}

// timeout ends the task at its own timeout, cancelling the operation.
func (t *taskRun) timeout() (time.Time, bool) {
	t.cp.Cancel = t.j.cancelVendor(t.pt.Kind, t.cp.Ref)
	return t.end(sampledb.TaskTimeout, fmt.Sprintf("task timeout (%s) reached", time.Duration(t.pt.Timeout)))
}

// failed ends the task for a permanent failure, or leaves it for the job
// to deliver when the job halted, lost its lease, or reached its deadline.
func (t *taskRun) failed(err error) (time.Time, bool) {
	j := t.j
	switch {
	case errors.Is(err, errTaskTimeout):
		if !t.deadline.Equal(j.deadline) {
			return t.timeout()
		}
		return time.Time{}, false
	case errors.Is(err, errHalted), j.cause() != nil:
		return time.Time{}, false
	}
	return t.end(sampledb.TaskFailed, err.Error())
}

// end records the task's end and reports it to SampleDB.
func (t *taskRun) end(st, msg string) (time.Time, bool) {
	j, cp := t.j, t.cp
	cp.State, cp.Error, cp.Ended, cp.NextPoll = st, msg, time.Now().UnixMilli(), 0
	detail := t.pt.Kind + ": " + st
	if msg != "" {
		detail += ": " + msg
	}
	j.note("task ended", detail)
	if err := j.saveTask(cp); err != nil {
		return time.Time{}, false
	}
	j.r.cfg.Observer.TaskFinished(t.pt.Kind, st)
	if st == sampledb.TaskFailed {
		t.log().Warn("task failed", zap.String("error", msg))
	}
	if cp.TaskID != "" {
		ctx, release := j.workCtx()
		_ = j.reportTask(ctx, cp) // if interrupted, deliver reports it
		release()
	}
	return time.Time{}, true
}

func (t *taskRun) log() *zap.Logger {
	j := t.j
	return j.r.log.With(zap.String("job_id", j.lease.ID), zap.Int64("token", j.lease.Token),
		zap.String("task", t.pt.Kind), zap.String("vendor", edr.Vendor(t.pt.Kind)))
}

// startOnce starts the task's vendor operation once, across crashes and lost
// answers. An intent (a unique key and the instant the start was decided) is
// checkpointed before the request; a worker that finds an intent without a
// reference asks the vendor for the operation (Driver.Find) and re-attaches
// to it, and a start whose request may have reached the vendor (no answer,
// or a 5xx) is looked up the same way before it is sent again. The
// operation is started anew only when the vendor surely has none, or cannot
// be searched.
//
// Start and Find run on the job context, not the work context: an abort
// must not cut a start short, because the reference it returns is what lets
// the abort cancel the operation at the vendor.
func (j *jobRun) startOnce(kind string, cp *state.TaskCheckpoint, t edr.Target, deadline time.Time, log *zap.Logger) (edr.Ref, error) {
	vendor := edr.Vendor(kind)
	obs := j.r.cfg.Observer
	how := "first"
	if cp.Intent != nil {
		ref, err := vendorCall(j, kind, "find", j.ctx, deadline, func(ctx context.Context, d edr.Driver) (edr.Ref, error) { return d.Find(ctx, t, *cp.Intent) })
		switch {
		case err == nil:
			log.Info("re-attached to the vendor operation an earlier start launched", zap.String("intent", cp.Intent.Key))
			j.note("re-attached", fmt.Sprintf("%s: found the operation an earlier start launched (%s)", kind, cp.Intent.Key))
			obs.VendorStarted(vendor, "reattached")
			return ref, nil
		case errors.Is(err, edr.ErrNotStarted):
			how = "again"
		case errors.Is(err, edr.ErrFindUnsupported):
			how = "again_unverified"
			log.Warn("an earlier start may have reached the vendor, whose API cannot be searched; starting again", zap.String("intent", cp.Intent.Key))
		case errors.Is(err, errHalted), errors.Is(err, errTaskTimeout), j.cause() != nil:
			return nil, err
		default:
			// The vendor refuses to be searched (a key without the list
			// permission, say): waiting cannot help, and a duplicate query
			// costs less than a job that never runs.
			how = "again_unverified"
			log.Warn("could not look up the operation an earlier start may have launched; starting again", zap.String("intent", cp.Intent.Key), zap.Error(err))
		}
	}
	cp.Attempts++
	in := edr.Intent{Key: fmt.Sprintf("%s/%s/%d.%d", j.lease.ID, kind, j.lease.Token, cp.Attempts), At: time.Now().UnixMilli()}
	cp.Intent = &in
	if err := j.saveTask(cp); err != nil {
		return nil, err
	}
	lookFirst := false
	ref, err := vendorCall(j, kind, "start", j.ctx, deadline, func(ctx context.Context, d edr.Driver) (edr.Ref, error) {
		if lookFirst {
			ref, err := d.Find(ctx, t, in)
			switch {
			case err == nil:
				how = "reattached"
				return ref, nil
			case errors.Is(err, edr.ErrNotStarted):
			case errors.Is(err, edr.ErrFindUnsupported):
				how = "again_unverified"
			case edr.IsRetryable(err):
				return nil, err
			default:
				how = "again_unverified"
			}
		}
		ref, err := d.Start(ctx, t, in)
		lookFirst = err != nil && mayHaveReached(err)
		return ref, err
	})
	if err == nil {
		obs.VendorStarted(vendor, how)
	}
	return ref, err
}

// mayHaveReached says whether a failed request may still have been carried
// out by the vendor: no answer arrived, or a 5xx (a gateway may answer 502
// for a request its backend completed). A 429 or another 4xx is a refusal.
func mayHaveReached(err error) bool {
	var e *edr.Error
	if errors.As(err, &e) && e.Status != 0 {
		return e.Status >= 500
	}
	return edr.IsRetryable(err)
}

// vendorCall calls the customer's driver for kind behind the lease guard,
// retrying retryable failures with backoff (honouring Retry-After) until the
// deadline; a halt ends it between attempts. The driver is resolved for
// every attempt. It is for starts and look-ups, whose retries hold the
// task's place in its start lane; polls and collects wait between attempts
// as due steps (vendorOnce).
func vendorCall[T any](j *jobRun, kind, op string, ctx context.Context, deadline time.Time, call func(context.Context, edr.Driver) (T, error)) (T, error) {
	var v T
	vendor := edr.Vendor(kind)
	// A context of the call's own under the priority: contexts derived
	// from a value over the job's context would each wait on a goroutine
	// (jobCtx).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctx = httpc.WithPriority(ctx, httpc.PriorityStart)
	err := j.do(retry{ctx: ctx, guard: true, halt: true, deadline: deadline,
		again: func(err error) (bool, time.Duration) {
			return edr.IsRetryable(err), edr.RetryAfter(err)
		},
		waiting: func(err error, wait time.Duration) time.Duration {
			if j.debugOn() {
				j.log().Debug("vendor call failed; retrying", zap.Error(err), zap.Duration("in", wait))
			}
			return 0
		},
	}, func(ctx context.Context) error {
		began := time.Now()
		d, err := j.driver(kind)
		if err != nil {
			return err
		}
		v, err = call(ctx, d)
		j.r.vendorCall(vendor, op, err, began)
		return err
	})
	return v, err
}

// vendorOnce makes one call of the customer's driver for the task, behind
// the lease guard, with the priority of what it does.
func vendorOnce[T any](t *taskRun, op string, p httpc.Priority, call func(context.Context, edr.Driver) (T, error)) (T, error) {
	var zero T
	j := t.j
	if err := j.guard(); err != nil {
		return zero, err
	}
	d, err := j.driver(t.pt.Kind)
	if err != nil {
		return zero, err
	}
	ctx, release := j.workCtx()
	defer release()
	began := time.Now()
	v, err := call(httpc.WithPriority(ctx, p), d)
	j.r.vendorCall(edr.Vendor(t.pt.Kind), op, err, began)
	return v, err
}

func callResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case edr.IsRetryable(err):
		return "retryable"
	}
	return "permanent"
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// pollBatchTimeout bounds one batched poll call.
const pollBatchTimeout = 2 * time.Minute

// pollBatch is the step of a batch lane: every due poll of the lane's
// vendor account in one call (edr.BatchPoller).
func (r *Runner) pollBatch(ln *lane, bp edr.BatchPoller, kind string) {
	steps := r.sched.takePending(ln, maxPollBatch)
	defer r.sched.doneAll(steps)
	ts := make([]*taskRun, 0, len(steps))
	refs := make([]edr.Ref, 0, len(steps))
	for _, st := range steps {
		t := st.task
		if !t.j.enterTask() {
			continue
		}
		if due, ended, over := t.overdue(); over {
			t.j.leaveTask(t, due, ended)
			continue
		}
		if err := t.j.guard(); err != nil {
			t.j.leaveTask(t, time.Time{}, false)
			continue
		}
		ts = append(ts, t)
		refs = append(refs, t.cp.Ref)
	}
	if len(ts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(httpc.WithPriority(context.Background(), httpc.PriorityPoll), pollBatchTimeout)
	began := time.Now()
	answers := bp.PollBatch(ctx, refs)
	cancel()
	var first error
	for _, a := range answers {
		if a.Err != nil {
			first = a.Err
			break
		}
	}
	r.vendorCall(edr.Vendor(kind), "poll", first, began)
	for i, t := range ts {
		a := edr.PollAnswer{Err: errors.New("the batched poll gave no answer for this operation")}
		if i < len(answers) {
			a = answers[i]
		}
		due, ended := t.polled(a.Status, a.Err)
		t.j.leaveTask(t, due, ended)
	}
}

// maxPollBatch bounds the operations of one batched poll (the driver splits
// larger requests itself).
const maxPollBatch = 1000

// refText is a vendor operation reference as the timeline shows it:
// compact, and cut short.
func refText(ref edr.Ref) string {
	const max = 200
	s := string(ref)
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
