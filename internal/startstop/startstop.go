// Package startstop is the base every long-running service of a worker
// embeds (after river's rivershared/startstop): Start launches the service's
// loop in a goroutine it owns, Stop cancels it and blocks until the
// goroutine has returned, and both are safe to call more than once and from
// any goroutine. A service that embeds Service keeps its loop body in a
// runOnce method that tests call directly; its run function just ticks it.
package startstop

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrStarted is returned by Start when the service already runs.
var ErrStarted = errors.New("startstop: already started")

// Service runs one loop. The zero value is ready to use.
type Service struct {
	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	started chan struct{} // closed once the loop began (tests)
}

// Start runs loop in a new goroutine with a context that Stop cancels.
// ctx's values pass on; its cancellation does not (Stop ends the loop).
func (s *Service) Start(ctx context.Context, loop func(ctx context.Context)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		select {
		case <-s.done:
		default:
			return ErrStarted
		}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	done, started := make(chan struct{}), make(chan struct{})
	s.done, s.started = done, started
	go func() {
		defer close(done)
		close(started)
		loop(ctx)
	}()
	return nil
}

// Stop cancels the loop's context and waits for the loop to return. It
// returns at once when the service never started.
func (s *Service) Stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// Started returns a channel closed once the loop has begun (nil before
// Start).
func (s *Service) Started() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// Stopped returns a channel closed once the loop has returned (nil before
// Start).
func (s *Service) Stopped() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// Every calls f every d (the first time d from now) until ctx ends: the loop
// of a service whose runOnce only needs a tick.
func Every(ctx context.Context, d time.Duration, f func(ctx context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}
