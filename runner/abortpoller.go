package runner

import (
	"context"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/sampledb"
)

// abortPoller notices aborts analysts requested in SampleDB (DELETE on a
// job sets abortRequested) once for the whole fleet: each interval one
// worker — whichever takes the fleet lock "aborts" first — lists the active
// jobs (ceil(N/1000) requests, whatever the number of workers), and notes
// every requested abort in the ledger (state.Store.NotifyAborts): the
// holder's session is mailed and its job told at once (Runner.onAbort); a
// job nobody holds carries the mark to whoever takes it. (Any PUT answer
// showing the flag aborts a job too.)
type abortPoller struct{ periodic }

func (p *abortPoller) start(ctx context.Context) error {
	return p.startEvery(ctx, func(ctx context.Context) { p.runOnce(ctx) })
}

// runOnce lists the active jobs if no worker of the fleet did within this
// interval, and notes the aborts requested. It returns how many jobs it
// newly marked (-1: another worker's turn).
func (p *abortPoller) runOnce(ctx context.Context) int {
	r := p.r
	// The lock is not released: it spaces the listings one interval apart,
	// whichever worker makes them. A little less than the interval, so the
	// holder's next tick finds it free when no other worker came first.
	ok, err := r.store.TryLock(ctx, "aborts", r.cfg.WorkerID, p.every*9/10)
	if err != nil || !ok {
		if err != nil && ctx.Err() == nil {
			r.log.Warn("abort poll: could not take the fleet lock", zap.Error(err))
		}
		return -1
	}
	ctx, cancel := context.WithTimeout(ctx, p.every*4)
	defer cancel()
	var ids []string
	err = r.cfg.SampleDB.ListJobs(ctx, sampledb.ListOptions{PageSize: 1000}, func(page []sampledb.Job) error {
		for _, sj := range page {
			if sj.AbortRequested {
				ids = append(ids, sj.ID)
			}
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		r.log.Warn("abort poll failed", zap.Error(err))
	}
	if len(ids) == 0 {
		return 0
	}
	n, err := r.store.NotifyAborts(ctx, ids)
	if err != nil && ctx.Err() == nil {
		r.log.Warn("abort poll: could not note the aborts in the ledger", zap.Error(err))
	}
	if n > 0 {
		r.log.Info("aborts requested in SampleDB noted", zap.Int("jobs", n))
	}
	return n
}
