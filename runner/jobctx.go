package runner

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// jobCtx is a job's context, held inline in its jobRun: a context.Context
// that ends when the job must stop at once (jobRun.cancel), with the cause
// kept apart (jobRun.cause; context.Cause sees context.Canceled).
//
// A context.WithCancelCause would cost a waiting job its context, its Done
// channel and a map of children that stays allocated, once the first call
// made with it, for as long as the job lives. jobCtx keeps its children's
// cancel functions (context.AfterFunc's contract, which the context package
// uses to propagate instead of a map or a goroutine) only while they live,
// and costs a waiting job only its Done channel.
//
// The context package finds AfterFunc only on a context's direct parent:
// a context derived from a value layered over a jobCtx (httpc.WithPriority)
// would wait for it on a goroutine of its own. Calls therefore put their
// values over a context derived from the jobCtx, not over the jobCtx.
type jobCtx struct {
	// j is the job: its ID and lease guard are the context's values
	// (httpc.WithJob, httpc.WithGuard), answered by Value.
	j *jobRun

	mu    sync.Mutex
	done  signal       // fired by cancel
	cause error        // why it ended; nil while it has not
	funcs []*afterFunc // run when cancelled; nil when none
}

type afterFunc struct{ f func() }

// closedChan is the channel of a signal fired before anybody waited on it.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// signal is a channel made only when somebody waits on it, and closed
// once: most jobs are never waited on, and a waiting job's memory is what
// 100,000 of them cost, so it is one pointer (closedChan: fired before
// anybody waited). Its owner's mutex guards it; the zero value has not
// fired.
type signal struct{ c chan struct{} }

// wait returns a channel closed when s fires.
func (s *signal) wait() <-chan struct{} {
	if s.c == nil {
		s.c = make(chan struct{})
	}
	return s.c
}

// fire closes s's channel, or has wait return a closed one; once.
func (s *signal) fire() {
	switch {
	case s.c == nil:
		s.c = closedChan
	case !s.fired():
		close(s.c)
	}
}

// fired says whether s fired (nothing is ever sent on its channel: a
// receive succeeds only once it is closed).
func (s *signal) fired() bool {
	if s.c == nil {
		return false
	}
	select {
	case <-s.c:
		return true
	default:
		return false
	}
}

// Deadline: a job's context has none (its calls set their own).
func (c *jobCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

// Value answers httpc's job ID and lease guard; there is no other value.
func (c *jobCtx) Value(key any) any {
	switch {
	case httpc.IsJobKey(key):
		return c.j.lease.ID
	case httpc.IsGuardKey(key):
		return c.j.guard
	}
	return nil
}

// Done returns the channel closed when the job must stop.
func (c *jobCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done.wait()
}

// Err is context.Canceled once the job must stop, else nil.
func (c *jobCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return context.Canceled
	}
	return nil
}

// AfterFunc runs f in its own goroutine once c is cancelled (at once if it
// is); stop undoes it and reports whether it did. The context package
// calls it for every context derived from c.
func (c *jobCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f}
	c.funcs = append(c.funcs, a)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.funcs, a)
		if i < 0 {
			return false
		}
		c.funcs = slices.Delete(c.funcs, i, i+1)
		if len(c.funcs) == 0 {
			c.funcs = nil // nothing kept while the job waits
		}
		return true
	}
}

// cancel ends c with cause (context.Canceled when nil); the first cause
// stands. It reports whether this call ended c.
func (c *jobCtx) cancel(cause error) bool {
	if cause == nil {
		cause = context.Canceled
	}
	c.mu.Lock()
	if c.cause != nil {
		c.mu.Unlock()
		return false
	}
	c.cause = cause
	c.done.fire()
	funcs := c.funcs
	c.funcs = nil
	c.mu.Unlock()
	for _, a := range funcs {
		go a.f()
	}
	return true
}

// causeOf returns why c ended, nil while it has not.
func (c *jobCtx) causeOf() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}
