package runner

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/state"
)

// The job's context carries the job's ID and lease guard to every call
// made with a context derived from it, ends them all when the job must
// stop, keeps the first cause, and keeps nothing of a call that returned.
func TestJobContext(t *testing.T) {
	t.Parallel()
	j := &jobRun{lease: state.Lease{ID: "job-1", Token: 3}}
	j.jc.j = j
	j.ctx = &j.jc

	call, cancel := context.WithTimeout(j.ctx, time.Hour)
	call = httpc.WithPriority(call, httpc.PriorityPoll)
	require.Equal(t, "job-1", httpc.JobOf(call))
	require.Equal(t, httpc.PriorityPoll, httpc.PriorityOf(call))
	_, has := j.ctx.Deadline()
	require.False(t, has)
	require.Len(t, j.jc.funcs, 1, "a live call is remembered")
	cancel()
	require.Nil(t, j.jc.funcs, "a call that returned is forgotten")
	require.NoError(t, j.ctx.Err())

	call, cancel = context.WithCancel(j.ctx)
	defer cancel()
	done := j.ctx.Done()
	j.cancel(errLeaseLost)
	j.cancel(errStopped)
	<-done
	<-call.Done() // a call in flight ends with the job
	require.ErrorIs(t, j.ctx.Err(), context.Canceled)
	require.ErrorIs(t, j.cause(), errLeaseLost, "the first cause stands")
	require.Equal(t, done, j.ctx.Done(), "one Done channel")
	require.ErrorIs(t, httpc.CheckGuard(httpc.WithPriority(call, httpc.PriorityCancel)), errLeaseLost,
		"the lease guard reaches the calls")

	late, cancelLate := context.WithCancel(j.ctx)
	defer cancelLate()
	<-late.Done() // made after the job stopped: ended at once
}

// A job context ended before anybody asked for its Done channel hands out
// a closed one.
func TestJobContextCancelledFirst(t *testing.T) {
	t.Parallel()
	j := &jobRun{}
	j.jc.j = j
	j.ctx = &j.jc
	j.cancel(nil)
	<-j.ctx.Done()
	require.ErrorIs(t, j.cause(), context.Canceled)
	stopped := make(chan struct{})
	stop := context.AfterFunc(j.ctx, func() { close(stopped) })
	<-stopped
	require.False(t, stop())
}

// TestSignalFiresOnceWhoeverWaits: a signal fired before anybody waited
// hands out a closed channel; one waited on is closed when fired; firing
// again changes nothing.
func TestSignalFiresOnceWhoeverWaits(t *testing.T) {
	t.Parallel()
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	var early signal
	require.False(t, early.fired())
	early.fire()
	require.True(t, early.fired())
	require.True(t, closed(early.wait()), "fired before anybody waited")
	early.fire() // again: no panic

	var late signal
	c := late.wait()
	require.False(t, closed(c))
	require.False(t, late.fired())
	late.fire()
	require.True(t, closed(c), "the channel waited on is closed")
	require.True(t, late.fired())
	late.fire()
	require.Equal(t, c, late.wait(), "the same channel")
}
