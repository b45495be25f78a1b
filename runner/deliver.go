package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/failpoint"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
	"go.uber.org/zap"
)

// finish decides the terminal outcome (fenced; the first decision stands)
// and delivers it. The job's notes are added to the reason.
func (j *jobRun) finish(st, reason string) exitReason {
	if notes := j.notes(); len(notes) > 0 {
		parts := notes
		if reason != "" {
			parts = append([]string{reason}, notes...)
		}
		reason = strings.Join(parts, "; ")
	}
	out := state.Outcome{State: st, Reason: j.r.cfg.Redact.String(reason), By: j.r.cfg.WorkerID, At: time.Now().UnixMilli()}
	j.mu.Lock()
	unsaved := len(j.events) > 0
	j.mu.Unlock()
	if unsaved {
		if err := j.save(); err != nil { // the timeline before the decision
			return j.exitFor(err)
		}
	}
	ev := state.Event{At: time.Now(), Ev: "decided", Worker: j.r.cfg.WorkerID, Token: j.lease.Token, Detail: out.State}
	if out.Reason != "" {
		ev.Detail += ": " + out.Reason
	}
	var stood []byte
	err := j.do(j.ledgerWrite("could not record the job outcome", true), func(ctx context.Context) error {
		var err error
		stood, err = j.r.store.Decide(ctx, *j.sess, j.lease, out.Encode(), ev)
		return err
	})
	if errors.Is(err, state.ErrStale) {
		return j.exitFor(j.loseFor(err))
	}
	if err != nil {
		return j.exitFor(err)
	}
	decided, derr := state.DecodeOutcome(stood)
	if derr != nil {
		decided = out
	}
	j.mu.Lock()
	j.keep(state.FieldOutcome, string(stood))
	j.mu.Unlock()
	failpoint.Hit(failpoint.DecidedBeforePut)
	return j.deliver(decided)
}

// deliver carries a decided outcome to the end: vendor operations of
// unfinished tasks are cancelled (or abandoned where the API has no cancel),
// the tasks are closed in SampleDB, the job's terminal state is PUT, the
// summary published, and the job tombstoned. Any later owner re-runs
// deliver from the ledger if this worker dies half-way.
func (j *jobRun) deliver(out state.Outcome) exitReason {
	cfg := &j.r.cfg
	log := j.log().With(zap.String("state", out.State))
	plan := j.planned()
	tasks := j.checkpoints(plan)

	// gone: SampleDB says the job does not exist. jobSeen: it answered for
	// the job during this delivery, so a task 404 is about the task only.
	gone, jobSeen := false, false
	for _, pt := range plan {
		cp := tasks[pt.Kind]
		if !cp.Done() {
			cp.State = unfinishedTaskState(out.State)
			cp.Ended = time.Now().UnixMilli()
			if cp.Ref != nil {
				cp.Cancel = j.cancelVendor(pt.Kind, cp.Ref)
				j.note("vendor operation stopped", pt.Kind+": "+cp.Cancel)
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
	if !gone {
		attempts := 0
		err := j.do(retry{ctx: j.ctx,
			again: func(err error) (bool, time.Duration) {
				var refused *refusedError
				return errors.As(err, &refused), 0
			},
			// SampleDB refuses the decided state and does not hold
			// another terminal one: keep the job (and its lease), say so
			// loudly, and ask again with backoff. Giving up would leave the
			// job active in SampleDB forever; letting the lease lapse would
			// only hand the same refusal to another worker.
			waiting: func(err error, wait time.Duration) time.Duration {
				var refused *refusedError
				errors.As(err, &refused)
				attempts++
				cfg.Observer.DeliveryRefused(out.State)
				log.Warn("SampleDB refuses the job's terminal state; retrying", zap.Int("attempt", attempts),
					zap.String("sampledb_state", refused.state), zap.String("answer", refused.answer), zap.Duration("in", wait))
				_ = j.save(state.DeliveryRefusal{Attempts: attempts, State: refused.state, Answer: refused.answer, At: time.Now().UnixMilli()}.Field())
				return 0
			},
		}, func(context.Context) error {
			sj, err := j.putJob(j.ctx, out.State)
			switch {
			case err == nil && sj != nil && sj.State != "" && sj.State != out.State && sampledb.IsTerminal(sj.State):
				final = sj.State
			case errors.Is(err, sampledb.ErrNotFound):
				gone = true
			case errors.Is(err, sampledb.ErrPrecondition):
				st, rerr := j.resolveRefusedTerminal(out.State, err)
				if rerr != nil {
					return rerr
				}
				final = st
			case err != nil:
				return err
			}
			return nil
		})
		if err != nil {
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
	summary := j.summarize(out, final, plan, tasks)
	j.publish(summary)
	if err := j.complete(final, ledgerSummary(summary)); err != nil {
		return j.exitFor(err)
	}
	if _, since := j.abort(); !since.IsZero() && final == sampledb.StateAborted {
		cfg.Observer.AbortNoticed(time.Since(since))
	}
	cfg.Observer.JobFinished(final, time.Since(j.created))
	log.Info("job finished", zap.String("reason", out.Reason))
	return exitDone
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
	// The timeout under the priority: contexts derived from a value over
	// the job's context would each wait on a goroutine (jobCtx).
	ctx, cancel := context.WithTimeout(j.ctx, j.r.cfg.CancelTimeout)
	defer cancel()
	ctx = httpc.WithPriority(ctx, httpc.PriorityCancel)
	var last error
	err = j.do(retry{ctx: ctx, guard: true,
		again: func(err error) (bool, time.Duration) {
			return edr.IsRetryable(err), edr.RetryAfter(err)
		},
	}, func(ctx context.Context) error {
		began := time.Now()
		last = d.Cancel(ctx, edr.Ref(ref))
		if !errors.Is(last, edr.ErrCancelUnsupported) {
			j.r.vendorCall(edr.Vendor(kind), "cancel", last, began)
		}
		return last
	})
	switch {
	case err == nil:
		return "cancelled at the vendor"
	case errors.Is(err, edr.ErrCancelUnsupported):
		return "abandoned: the vendor API has no cancel"
	case last == nil:
		return "not cancelled: " + err.Error() // the lease was lost first
	}
	j.log().Warn("vendor cancel failed", zap.String("task", kind), zap.Error(last))
	return "cancel failed: " + last.Error()
}

func (j *jobRun) reportTask(ctx context.Context, cp *state.TaskCheckpoint) error {
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
			j.log().Info("job already finished in SampleDB; dropping", zap.String("sampledb_state", sj.State))
			if err := j.complete(sj.State, nil); err != nil {
				return j.exitFor(err)
			}
			return exitDone
		}
		return j.finish(sampledb.StateFailed, "SampleDB refused the executing state: "+err.Error())
	}
	return j.exitFor(err)
}

func (j *jobRun) finishGone() exitReason {
	out := state.Outcome{State: sampledb.StateFailed, Reason: "job not found in SampleDB", By: j.r.cfg.WorkerID, At: time.Now().UnixMilli()}
	raw, _ := json.Marshal(out)
	ev := state.Event{At: time.Now(), Ev: "decided", Worker: j.r.cfg.WorkerID, Token: j.lease.Token, Detail: "failed: job not found in SampleDB"}
	if _, err := j.r.store.Decide(j.ctx, *j.sess, j.lease, raw, ev); err != nil {
		return j.exitFor(err)
	}
	j.log().Warn("job not found in SampleDB; finishing it locally as failed")
	if err := j.complete(sampledb.StateFailed, nil); err != nil {
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
	return "", &refusedError{state: sj.State, answer: strings.ToValidUTF8(answer[:min(len(answer), 500)], "")}
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
	return j.do(retry{ctx: ctx, guard: true,
		again: permanentIf(sampledb.ErrPrecondition, sampledb.ErrNotFound),
		waiting: func(err error, wait time.Duration) time.Duration {
			if errors.Is(err, sampledb.ErrUnauthorized) || errors.Is(err, sampledb.ErrForbidden) {
				j.log().Error("SampleDB refused our credentials; check SAMPLEDB_API_KEY and its role (SAMPLEDB-ANALYZER for the PUT/POST updates, SAMPLEDB-VIEWER or higher for GET/list); the job is held", zap.Error(err))
				return j.r.cfg.RetryMax
			}
			j.log().Warn("SampleDB call failed; retrying", zap.Error(err), zap.Duration("in", wait))
			return 0
		},
	}, call)
}

// summarize is the job's result summary, as published and kept in the
// ledger.
func (j *jobRun) summarize(out state.Outcome, final string, plan []state.PlannedTask, tasks map[string]*state.TaskCheckpoint) *results.Summary {
	msg, _ := j.message()
	s := results.Summary{
		JobID: j.lease.ID, State: final, Reason: out.Reason,
		SHA256: strings.ToLower(msg.Submission.Sample.ID), Platform: msg.Classification.Platform,
		Customer: msg.Submission.Customer, Worker: j.r.cfg.WorkerID,
		Admitted: j.created.UnixMilli(), Finished: time.Now().UnixMilli(),
		Generation: j.lease.Token, Tasks: []results.TaskSummary{},
	}
	kinds := make([]string, 0, len(plan))
	for _, pt := range plan {
		kinds = append(kinds, pt.Kind)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		cp := tasks[k]
		s.Tasks = append(s.Tasks, results.TaskSummary{Kind: k, State: cp.State, TaskID: cp.TaskID, Result: cp.Result, Error: cp.Error, Cancel: cp.Cancel})
	}
	return &s
}

// MaxLedgerSummary bounds the summary the ledger keeps with a finished
// job's tombstone (its lists are dropped beyond it; the published one
// keeps them up to results.MaxSummaryBytes).
const MaxLedgerSummary = 32 << 10

// ledgerSummary encodes the summary the ledger keeps.
func ledgerSummary(s *results.Summary) []byte {
	c := *s
	c.Tasks = append([]results.TaskSummary(nil), s.Tasks...)
	b, _ := results.EncodeWithin(&c, MaxLedgerSummary)
	return b
}

// publish sends the summary to the result topic, when there is one.
func (j *jobRun) publish(s *results.Summary) {
	pub := j.r.cfg.Results
	if pub == nil {
		return
	}
	c := *s
	c.Tasks = append([]results.TaskSummary(nil), s.Tasks...)
	body, truncated := results.Encode(&c)
	if truncated {
		j.log().Warn("the job summary was too large; its lists were cut", zap.Int("bytes", len(body)))
	}
	ctx, cancel := context.WithTimeout(j.ctx, j.r.cfg.PublishTimeout)
	defer cancel()
	err := j.do(retry{ctx: ctx, again: permanentIf(results.ErrNotPublishable)}, func(ctx context.Context) error {
		return pub.Publish(ctx, j.lease.ID, body)
	})
	switch {
	case err == nil, j.cause() != nil:
		// Published, or stopped: the job is not tombstoned, its next owner
		// publishes.
	case errors.Is(err, results.ErrNotPublishable):
		j.log().Error("the job summary cannot be published; SampleDB has the state, the summary is lost", zap.Error(err))
	default:
		j.log().Error("could not publish the job summary in time; SampleDB has the state, the summary is lost", zap.Error(err))
	}
}

// complete tombstones the job (fenced), retrying while Redis is unreachable,
// and keeps its summary (nil: none) and timeline with the tombstone.
func (j *jobRun) complete(final string, summary []byte) error {
	ev := state.Event{At: time.Now(), Ev: "finished", Worker: j.r.cfg.WorkerID, Token: j.lease.Token,
		Detail: "SampleDB holds " + final}
	err := j.do(j.ledgerWrite("could not tombstone the job", false), func(ctx context.Context) error {
		return j.r.store.Complete(ctx, *j.sess, j.lease, final, ev, summary)
	})
	if errors.Is(err, state.ErrStale) {
		return j.loseFor(err)
	}
	return err
}
