package runner

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/state"
)

// claimer takes over jobs whose leases expired (their worker died or
// paused) or were released (a drain, an operator's release), while this
// worker has room, and resumes each from its checkpoints.
type claimer struct{ periodic }

func (c *claimer) start(ctx context.Context) error {
	return c.startEvery(ctx, func(ctx context.Context) { c.runOnce(ctx) })
}

// runOnce claims up to the free capacity (at most 100) of expired leases
// and launches the jobs. It returns how many it took over.
func (c *claimer) runOnce(ctx context.Context) int {
	r := c.r
	n := r.slots.tryAcquire(100)
	if n == 0 {
		return 0
	}
	sess := r.keeper.Session()
	if sess.ID == "" {
		r.slots.release(n) // between sessions: the keeper is opening a new one
		return 0
	}
	got, _, err := r.store.Claim(ctx, sess, n)
	if err != nil {
		r.slots.release(n)
		if ctx.Err() == nil && !errors.Is(err, state.ErrSessionGone) {
			r.log.Warn("claim failed", zap.Error(err))
		}
		return 0
	}
	r.slots.release(n - len(got))
	for _, cl := range got {
		r.log.Info("took over job", zap.String("job_id", cl.Lease.ID), zap.Int64("token", cl.Lease.Token), zap.String("previous_source", cl.Record.Source))
		r.Launch(sess, cl.Lease, cl.Record)
	}
	if len(got) > 0 {
		r.cfg.Observer.Claimed(len(got))
	}
	return len(got)
}
