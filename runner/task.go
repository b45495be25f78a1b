package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/failpoint"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

var errTaskTimeout = errors.New("task timeout")

// runTask drives one task from its checkpoint to its end: create the
// SampleDB task, start the vendor operation (checkpointing its reference
// before anything else), poll with adaptive backoff, collect, report. It
// returns early, at a safe point, when the job halts (abort, timeout, drain)
// or stops; the job then delivers what is left.
func (j *jobRun) runTask(pt state.PlannedTask, cp *state.TaskCheckpoint, t edr.Target, jobDeadline time.Time) {
	cfg := &j.r.cfg
	log := j.log.With(zap.String("task", pt.Kind), zap.String("vendor", edr.Vendor(pt.Kind)))

	end := func(st, msg string) {
		cp.State, cp.Error, cp.Ended = st, msg, time.Now().UnixMilli()
		if err := j.saveTask(cp); err != nil {
			return
		}
		cfg.Observer.TaskFinished(pt.Kind, st)
		if st == sampledb.TaskFailed {
			log.Warn("task failed", zap.String("error", msg))
		}
		if cp.TaskID != "" {
			_ = j.reportTask(j.work, cp) // if interrupted, deliver reports it
		}
	}
	if cp.Done() {
		if cp.TaskID != "" && !cp.Reported {
			_ = j.reportTask(j.work, cp)
		}
		return
	}
	if _, err := j.driver(pt.Kind); err != nil {
		end(sampledb.TaskFailed, err.Error())
		return
	}

	if cp.TaskID == "" {
		var task *sampledb.Task
		err := j.sdb(j.work, func(ctx context.Context) error {
			var err error
			task, err = cfg.SampleDB.CreateTask(ctx, j.lease.ID, pt.Kind)
			return err
		})
		if err != nil {
			if !errors.Is(err, sampledb.ErrPrecondition) && !errors.Is(err, sampledb.ErrNotFound) {
				return // halted or lost
			}
			log.Warn("SampleDB refused the task", zap.Error(err))
		} else {
			cp.TaskID = task.ID
			if j.saveTask(cp) != nil {
				return
			}
		}
	}

	deadline := jobDeadline
	if cp.Ref == nil {
		if pt.Timeout > 0 {
			deadline = earliest(deadline, time.Now().Add(time.Duration(pt.Timeout)))
		}
		// A start slot is held from the request until the reference is
		// checkpointed: the window a crash turns into a restarted operation.
		slots := j.r.starting[pt.Kind]
		select {
		case slots <- struct{}{}:
		case <-j.halt:
			return
		case <-j.ctx.Done():
			return
		}
		ref, err := j.startOnce(pt.Kind, cp, t, deadline, log)
		if err != nil {
			<-slots
			j.taskError(cp, err, end)
			return
		}
		cp.Ref, cp.Started = ref, time.Now().UnixMilli()
		failpoint.Hit(failpoint.StartedBeforeCheckpoint)
		err = j.saveTask(cp)
		<-slots
		if err != nil {
			return
		}
		log.Debug("vendor operation started")
	} else if pt.Timeout > 0 && cp.Started > 0 {
		deadline = earliest(deadline, time.UnixMilli(cp.Started).Add(time.Duration(pt.Timeout)))
	}

	taskTimeout := func() {
		cp.Cancel = j.cancelVendor(pt.Kind, cp.Ref)
		end(sampledb.TaskTimeout, fmt.Sprintf("task timeout (%s) reached", time.Duration(pt.Timeout)))
	}
	delay := cfg.PollMin
	for {
		wait := min(delay, time.Until(deadline))
		if err := j.sleep(j.work, j.halt, max(wait, 0)); err != nil {
			return
		}
		if !time.Now().Before(deadline) {
			if !deadline.Equal(jobDeadline) {
				taskTimeout()
				return
			}
			// The job deadline: the job halts every task and delivers.
			select {
			case <-j.halt:
			case <-j.ctx.Done():
			}
			return
		}
		st, err := vendorCall(j, pt.Kind, "poll", j.work, deadline, func(ctx context.Context, d edr.Driver) (edr.Status, error) { return d.Poll(ctx, cp.Ref) })
		if errors.Is(err, errTaskTimeout) && !deadline.Equal(jobDeadline) {
			taskTimeout()
			return
		}
		if err != nil {
			j.taskError(cp, err, end)
			return
		}
		changed := false
		if st.Ref != nil {
			cp.Ref, changed = st.Ref, true
		}
		if st.Progress != "" && st.Progress != cp.Progress {
			cp.Progress, changed = st.Progress, true
		}
		if changed && j.saveTask(cp) != nil {
			return
		}
		if st.Done {
			break
		}
		if st.NextPoll > 0 {
			delay = max(st.NextPoll, time.Millisecond)
		} else {
			delay = min(delay*3/2, cfg.PollMax)
		}
	}

	res, err := vendorCall(j, pt.Kind, "collect", j.work, deadline, func(ctx context.Context, d edr.Driver) (edr.Result, error) { return d.Collect(ctx, cp.Ref) })
	if err != nil {
		j.taskError(cp, err, end)
		return
	}
	cp.Result = &res
	end(sampledb.TaskSuccess, "")
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
			obs.VendorStarted(vendor, "reattached")
			return ref, nil
		case errors.Is(err, edr.ErrNotStarted):
			how = "again"
		case errors.Is(err, edr.ErrFindUnsupported):
			how = "again_unverified"
			log.Warn("an earlier start may have reached the vendor, whose API cannot be searched; starting again", zap.String("intent", cp.Intent.Key))
		case errors.Is(err, errHalted), errors.Is(err, errTaskTimeout), context.Cause(j.ctx) != nil:
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

// taskError ends the task for a permanent vendor failure, or leaves it for
// the job to deliver when the job halted or lost its lease.
func (j *jobRun) taskError(cp *state.TaskCheckpoint, err error, end func(st, msg string)) {
	switch {
	case errors.Is(err, errTaskTimeout):
		// The job deadline: the job delivers the timeout.
	case errors.Is(err, errHalted), context.Cause(j.ctx) != nil:
	default:
		end(sampledb.TaskFailed, err.Error())
	}
}

// vendorCall calls the customer's driver for kind behind the lease guard,
// retrying retryable failures with backoff (honouring Retry-After) until the
// deadline; a halt ends it between attempts. The driver is resolved for
// every attempt.
func vendorCall[T any](j *jobRun, kind, op string, ctx context.Context, deadline time.Time, call func(context.Context, edr.Driver) (T, error)) (T, error) {
	var v T
	vendor := edr.Vendor(kind)
	err := j.do(retry{ctx: ctx, guard: true, halt: j.halt, deadline: deadline,
		again: func(err error) (bool, time.Duration) {
			return edr.IsRetryable(err), edr.RetryAfter(err)
		},
		waiting: func(err error, wait time.Duration) time.Duration {
			j.log.Debug("vendor call failed; retrying", zap.Error(err), zap.Duration("in", wait))
			return 0
		},
	}, func(ctx context.Context) error {
		began := time.Now()
		d, err := j.driver(kind)
		if err != nil {
			return err
		}
		v, err = call(ctx, d)
		j.r.cfg.Observer.VendorCall(vendor, op, callResult(err), time.Since(began))
		return err
	})
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
