package runner

import (
	"context"
	"time"

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
type abortPoller struct {
	periodic
	// noted: jobs this worker's listings noted within notedFor, by when.
	// An abort stays requested in SampleDB until the job's terminal PUT,
	// seconds later; at 100k jobs a listing of 20 pages a second met such
	// jobs on nearly every page and noted them again (a script each page).
	noted map[string]time.Time
}

// notedFor is how long a noted abort is not noted again by the same
// worker. Noting is idempotent; it is repeated after this so that a mark
// Redis lost meanwhile is set again (a PUT answer showing the flag also
// aborts the job).
const notedFor = time.Minute

func (p *abortPoller) start(ctx context.Context) error {
	return p.startEvery(ctx, func(ctx context.Context) { p.runOnce(ctx) })
}

// abortListTimeout bounds one listing of SampleDB's active jobs: at 100,000
// of them, a hundred pages, far longer than an interval.
const abortListTimeout = 5 * time.Minute

// runOnce lists the active jobs if no worker of the fleet did within this
// interval, and notes the aborts requested as each page arrives. It
// returns how many jobs it newly marked (-1: another worker's turn).
//
// The fleet lock "aborts" is held for the whole listing (however long a
// hundred pages take, no second worker starts one), then set to expire one
// interval after the listing began, spacing listings an interval apart
// whichever worker makes them.
func (p *abortPoller) runOnce(ctx context.Context) int {
	r := p.r
	limit := max(p.every*4, abortListTimeout)
	ok, err := r.store.TryLock(ctx, "aborts", r.cfg.WorkerID, limit)
	if err != nil || !ok {
		if err != nil && ctx.Err() == nil {
			r.log.Warn("abort poll: could not take the fleet lock", zap.Error(err))
		}
		return -1
	}
	began := time.Now()
	defer func() {
		// A little less than the interval, so the holder's next tick finds
		// the lock free when no other worker came first.
		rest := p.every*9/10 - time.Since(began)
		if _, err := r.store.HoldLock(context.WithoutCancel(ctx), "aborts", r.cfg.WorkerID, rest); err != nil && ctx.Err() == nil {
			r.log.Warn("abort poll: could not set the fleet lock's expiry", zap.Error(err))
		}
	}()
	lctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	n, pages := 0, 0
	if p.noted == nil {
		p.noted = map[string]time.Time{}
	}
	for id, at := range p.noted {
		if began.Sub(at) >= notedFor {
			delete(p.noted, id)
		}
	}
	err = r.cfg.SampleDB.ListJobs(lctx, sampledb.ListOptions{PageSize: 1000, Brief: true}, func(page []sampledb.Job) error {
		pages++
		var ids []string
		for _, sj := range page {
			if _, done := p.noted[sj.ID]; sj.AbortRequested && !done {
				ids = append(ids, sj.ID)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		// Noted page by page: an abort is not held back until the last
		// of a hundred pages arrived.
		m, err := r.store.NotifyAborts(lctx, ids, "")
		if err != nil {
			r.log.Warn("abort poll: could not note the aborts in the ledger", zap.Error(err))
			return nil
		}
		n += m
		for _, id := range ids {
			p.noted[id] = began
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		r.log.Warn("abort poll failed", zap.Error(err), zap.Int("pages_read", pages), zap.Duration("after", time.Since(began)))
	}
	if n > 0 {
		r.log.Info("aborts requested in SampleDB noted", zap.Int("jobs", n))
	}
	return n
}
