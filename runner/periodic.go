package runner

import (
	"context"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/startstop"
)

// periodic is the base of a runner service whose loop only ticks its
// runOnce every interval (the claimer, the abort poller).
type periodic struct {
	startstop.Service
	r     *Runner
	every time.Duration
}

// startEvery starts the service's loop: runOnce every interval.
func (p *periodic) startEvery(ctx context.Context, runOnce func(ctx context.Context)) error {
	return p.Start(ctx, func(ctx context.Context) { startstop.Every(ctx, p.every, runOnce) })
}
