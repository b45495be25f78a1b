package runner

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/state"
)

// retry is the runner's one retry loop: every ledger write, SampleDB call,
// vendor call and publication of a job goes through it, so the lease guard,
// the stop conditions and the backoff are the same everywhere and decided
// once. A policy says only what is particular to its call: what to retry,
// and what to say when it does.
type retry struct {
	// ctx is the attempts' context: the job's (j.ctx, ends when the job
	// must stop writing) or its work context (also ends on abort and
	// timeout). When it ends for a reason of its own, the loop returns
	// errHalted.
	ctx context.Context
	// guard checks the lease (certainly valid by the local clock) before
	// each attempt.
	guard bool
	// halt: the job's halt (stopTasks) ends the loop with errHalted
	// between attempts.
	halt bool
	// deadline, when set, ends the loop with errTaskTimeout when the next
	// wait would pass it.
	deadline time.Time
	// attempt bounds each attempt (0: the context alone).
	attempt time.Duration
	// again classifies a failure: retry it (after at least the delay it
	// asks), or return it.
	again func(err error) (retry bool, after time.Duration)
	// waiting, if set, is told each failure about to be retried, and the
	// wait; it may log or record it. A longer wait it returns replaces the
	// backoff's.
	waiting func(err error, wait time.Duration) time.Duration
}

// ledgerWrite is the policy of the job's own fenced ledger writes: on the
// job's context, 5 s an attempt, retried while Redis is unreachable, a stale
// token returned at once (the job lost the record), each retry logged as
// what (e.g. "checkpoint failed"); guard as in retry.
func (j *jobRun) ledgerWrite(what string, guard bool) retry {
	return retry{ctx: j.ctx, guard: guard, attempt: 5 * time.Second,
		again: permanentIf(state.ErrStale),
		waiting: func(err error, _ time.Duration) time.Duration {
			j.log().Warn(what+"; retrying", zap.Error(err))
			return 0
		},
	}
}

// do calls call until it succeeds or the policy gives up. The job's own
// stop (lease lost, worker stopped, drain timeout) always wins: its cause
// is returned.
func (j *jobRun) do(p retry, call func(ctx context.Context) error) error {
	bo := j.backoff()
	for {
		if p.guard {
			if err := j.guard(); err != nil {
				return err
			}
		}
		if p.halt && j.tasksHalted() {
			return errHalted
		}
		ctx, cancel := p.ctx, context.CancelFunc(func() {})
		if p.attempt > 0 {
			ctx, cancel = context.WithTimeout(p.ctx, p.attempt)
		}
		err := call(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if cause := j.cause(); cause != nil {
			return cause
		}
		if p.ctx.Err() != nil {
			return errHalted
		}
		retry, after := true, time.Duration(0)
		if p.again != nil {
			retry, after = p.again(err)
		}
		if !retry {
			return err
		}
		wait := bo.next(after)
		if !p.deadline.IsZero() && time.Now().Add(wait).After(p.deadline) {
			return errTaskTimeout
		}
		if p.waiting != nil {
			wait = max(wait, p.waiting(err, wait))
		}
		var halt <-chan struct{}
		if p.halt {
			halt = j.haltChan()
		}
		if err := j.sleep(p.ctx, halt, wait); err != nil {
			return err
		}
	}
}

// permanentIf returns a classifier that gives up on the errors that match
// one of stop and retries everything else.
func permanentIf(stop ...error) func(error) (bool, time.Duration) {
	return func(err error) (bool, time.Duration) {
		for _, s := range stop {
			if errors.Is(err, s) {
				return false, 0
			}
		}
		return true, 0
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
		if cause := j.cause(); cause != nil {
			return cause
		}
		return errHalted
	}
}

func (j *jobRun) backoff() *backoffState {
	return &backoffState{min: j.r.cfg.RetryMin, max: j.r.cfg.RetryMax}
}

// backoffState is exponential backoff with jitter between min and max; a
// server's Retry-After wins when it asks for longer.
type backoffState struct {
	min, max time.Duration
	b        *backoff.ExponentialBackOff
}

func (s *backoffState) next(retryAfter time.Duration) time.Duration {
	if s.b == nil {
		s.b = backoff.NewExponentialBackOff()
		s.b.InitialInterval = s.min
		s.b.MaxInterval = s.max
		s.b.MaxElapsedTime = 0
		s.b.Reset()
	}
	return max(s.b.NextBackOff(), retryAfter)
}
