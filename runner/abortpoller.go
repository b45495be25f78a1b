package runner

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/startstop"
	"github.com/analysisfleet/analysisfleet/sampledb"
)

// abortPoller notices aborts analysts requested in SampleDB (DELETE on a
// job sets abortRequested): one paged list of active jobs per interval,
// whatever the number of jobs, and the jobs this worker runs whose abort
// was requested are told to abort. (Any PUT answer showing the flag aborts
// a job too.)
type abortPoller struct {
	startstop.Service
	r     *Runner
	every time.Duration
}

func (p *abortPoller) start(ctx context.Context) error {
	return p.Start(ctx, func(ctx context.Context) {
		t := time.NewTicker(p.every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p.runOnce(ctx)
			}
		}
	})
}

// runOnce lists the active jobs once and aborts the ones this worker runs
// whose abort was requested. It returns how many it told to abort.
func (p *abortPoller) runOnce(ctx context.Context) int {
	r := p.r
	if r.slots.running() == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, p.every*4)
	defer cancel()
	n := 0
	err := r.cfg.SampleDB.ListJobs(ctx, sampledb.ListOptions{PageSize: 1000}, func(page []sampledb.Job) error {
		for _, sj := range page {
			if !sj.AbortRequested {
				continue
			}
			if j := r.slots.get(sj.ID); j != nil {
				j.requestAbort("abort requested in SampleDB")
				n++
			}
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		r.log.Warn("abort poll failed", zap.Error(err))
	}
	return n
}
