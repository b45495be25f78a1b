package state

import (
	"container/heap"
	"context"
	"sync"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// gate lets one waiter of this process at a time ask the fleet-wide budget
// for a request, the one with the highest priority (httpc.Priority; FIFO
// within one). Everybody else waits here, locally, in order: the budget is
// spent by priority instead of by whoever happens to ask Redis first, and
// Redis is asked by one waiter per limiter, not by every one. A holder that
// is sleeping until the budget allows its request steps back for a waiter
// of a higher priority that arrives meanwhile (preempted), so a cancel waits
// behind no poll at all. Safe for concurrent use.
type gate struct {
	mu     sync.Mutex
	holder *gateWaiter // nil: free
	q      gateQueue
	seq    uint64
}

type gateWaiter struct {
	// granted: a holder's Redis call got this waiter's grant too; it
	// goes without holding the gate.
	granted bool
	prio    httpc.Priority
	seq     uint64
	idx     int           // in q; -1 when not queued
	ready   chan struct{} // closed when it becomes the holder
	preempt chan struct{} // closed when a higher priority waits (holder only)
}

// enter waits until the caller holds the gate or ctx ends. The returned
// waiter is passed to yield and leave.
func (g *gate) enter(ctx context.Context, p httpc.Priority) (*gateWaiter, error) {
	g.mu.Lock()
	g.seq++
	w := &gateWaiter{prio: p, seq: g.seq, idx: -1}
	g.mu.Unlock()
	return w, g.wait(ctx, w)
}

// wait queues w (new, or a holder that yielded) and waits for its turn.
func (g *gate) wait(ctx context.Context, w *gateWaiter) error {
	g.mu.Lock()
	if g.holder == nil && g.q.Len() == 0 {
		g.hold(w)
		g.mu.Unlock()
		return nil
	}
	w.ready = make(chan struct{})
	heap.Push(&g.q, w)
	if h := g.holder; h != nil && w.prio < h.prio && h.preempt != nil {
		close(h.preempt)
		h.preempt = nil
	}
	g.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		if w.idx >= 0 {
			heap.Remove(&g.q, w.idx)
			g.mu.Unlock()
			return ctx.Err()
		}
		g.mu.Unlock()
		g.leave(w, 0) // made the holder meanwhile: pass it on (a grant is lost)
		return ctx.Err()
	}
}

// hold makes w the holder. g.mu is held.
func (g *gate) hold(w *gateWaiter) {
	g.holder = w
	w.preempt = make(chan struct{})
	if g.q.Len() > 0 && g.q[0].prio < w.prio {
		close(w.preempt)
		w.preempt = nil
	}
}

// preempted returns a channel closed when a waiter of a higher priority
// than the holder w arrived (nil-safe: a closed one if it already did).
func (g *gate) preempted(w *gateWaiter) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.preempt == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return w.preempt
}

// yield hands the gate to the highest waiter and queues w again (with its
// original place among its priority), waiting for its next turn.
func (g *gate) yield(ctx context.Context, w *gateWaiter) error {
	g.leave(w, 0)
	return g.wait(ctx, w)
}

// leave hands grants the holder w obtained for others to the next waiters
// in order (they go at once), then the gate to the next one, or frees it.
// It returns the grants nobody was waiting for.
func (g *gate) leave(w *gateWaiter, grants int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holder != w {
		return 0
	}
	g.holder = nil
	for ; grants > 0 && g.q.Len() > 0; grants-- {
		next := heap.Pop(&g.q).(*gateWaiter)
		next.granted = true
		close(next.ready)
	}
	if g.q.Len() == 0 {
		return grants
	}
	next := heap.Pop(&g.q).(*gateWaiter)
	g.hold(next)
	close(next.ready)
	return grants
}

// queued returns how many wait behind the holder.
func (g *gate) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.q.Len()
}

// gateQueue is a heap of waiters by (priority, arrival).
type gateQueue []*gateWaiter

func (q gateQueue) Len() int { return len(q) }
func (q gateQueue) Less(i, j int) bool {
	if q[i].prio != q[j].prio {
		return q[i].prio < q[j].prio
	}
	return q[i].seq < q[j].seq
}
func (q gateQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].idx, q[j].idx = i, j
}
func (q *gateQueue) Push(x any) {
	w := x.(*gateWaiter)
	w.idx = len(*q)
	*q = append(*q, w)
}
func (q *gateQueue) Pop() any {
	old := *q
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	w.idx = -1
	return w
}
