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
	q    map[state.Session][]state.Lease
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

// queue adds a lease held under sess to hand over and wakes the loop.
func (rl *releaser) queue(sess state.Session, l state.Lease) {
	rl.mu.Lock()
	if rl.q == nil {
		rl.q = map[state.Session][]state.Lease{}
	}
	rl.q[sess] = append(rl.q[sess], l)
	rl.mu.Unlock()
	select {
	case rl.kick <- struct{}{}:
	default:
	}
}

// runOnce hands every queued lease over, a round trip per session (there
// is one, or two around a lost session) and per state.MaxReleaseBatch
// leases, and returns how many the ledger released.
func (rl *releaser) runOnce() int {
	rl.mu.Lock()
	q := rl.q
	rl.q = nil
	rl.mu.Unlock()
	r := rl.r
	total := 0
	for sess, ls := range q {
		// 5 s for each batch: a drain of 100,000 jobs is 200 of them.
		batches := (len(ls) + state.MaxReleaseBatch - 1) / state.MaxReleaseBatch
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(batches)*5*time.Second)
		n, err := r.store.Release(ctx, sess, ls)
		cancel()
		total += n
		if err != nil {
			r.log.Warn("could not hand leases over; they will be claimable when the session's deadline passes instead",
				zap.Int("leases", len(ls)), zap.Int("released", n), zap.Error(err))
			continue
		}
		r.log.Info("handed leases over", zap.Int("released", n))
	}
	return total
}
