package runner

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/startstop"
	"github.com/analysisfleet/analysisfleet/state"
)

// releaser hands the leases of jobs a drain left at a safe point over at
// once, in batches, so other workers resume them from their checkpoints
// without waiting out the lease TTL.
type releaser struct {
	startstop.Service
	r *Runner

	mu   sync.Mutex
	q    []state.Lease
	kick chan struct{}
}

func newReleaser(r *Runner) *releaser {
	return &releaser{r: r, kick: make(chan struct{}, 1)}
}

func (rl *releaser) start(ctx context.Context) error {
	return rl.Start(ctx, func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				rl.runOnce() // what the last jobs queued
				return
			case <-rl.kick:
				rl.runOnce()
			}
		}
	})
}

// queue adds a lease to hand over and wakes the loop.
func (rl *releaser) queue(l state.Lease) {
	rl.mu.Lock()
	rl.q = append(rl.q, l)
	rl.mu.Unlock()
	select {
	case rl.kick <- struct{}{}:
	default:
	}
}

// runOnce hands every queued lease over in one round trip and returns how
// many the ledger released.
func (rl *releaser) runOnce() int {
	rl.mu.Lock()
	q := rl.q
	rl.q = nil
	rl.mu.Unlock()
	if len(q) == 0 {
		return 0
	}
	r := rl.r
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := r.store.Release(ctx, r.cfg.WorkerID, q)
	if err != nil {
		r.log.Warn("could not hand leases over; they will expire after the TTL instead", zap.Int("leases", len(q)), zap.Error(err))
		return 0
	}
	r.log.Info("handed leases over", zap.Int("released", n))
	return n
}
