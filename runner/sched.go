package runner

import (
	"container/heap"
	"sync"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// sched runs the steps of every job on a small, fixed pool of goroutines.
// A job waiting for anything — its next poll, a retry after a 429, its
// deadline, a free start slot — is a step in a heap, not a goroutine: it
// costs its memory and nothing else until it is due.
//
// Due steps run by priority (httpc.Priority: cancel, start, collect, poll),
// then oldest due first, so a budget too short for every poll stretches the
// poll interval of all jobs alike instead of starving some, and a cancel
// never waits behind polls. A step may belong to a lane (a vendor account,
// the starts of one task kind, SampleDB) that bounds how many of its steps
// run at once; the rest wait in the lane, in the same order. A lane of a
// vendor that polls many operations with one request (edr.BatchPoller)
// gathers its due polls and runs them as one step: one queue entry per
// round.
//
// The vendor calls themselves still wait for the fleet-wide budget
// (state.RateLimiter), where the same priorities apply.
type sched struct {
	workers int

	mu      sync.Mutex
	cond    *sync.Cond // a step became ready, or stop
	timers  stepHeap   // by due time
	ready   stepHeap   // by (priority, due, arrival)
	seq     uint64
	kick    chan struct{} // an earlier timer was added
	stopped bool
	wg      sync.WaitGroup
	started bool
}

type stepState uint8

const (
	stIdle    stepState = iota
	stTimer             // in timers, until due
	stReady             // in ready
	stBlocked           // in its lane's blocked heap (lane full)
	stPending           // in its batch lane's pending list
	stRunning
)

// step is something to do for a job, when due. A step is in at most one
// place; scheduling it again moves it (or, while it runs, takes effect when
// it returns).
type step struct {
	run  func()
	prio httpc.Priority
	lane *lane
	due  time.Time
	seq  uint64
	idx  int // in timers, ready or its lane's blocked heap
	st   stepState

	// task is the task a poll step advances (batch lanes need it).
	task *taskRun

	// Scheduled while running: placed so when it returns (its lane stays
	// the one it runs in until then).
	again     bool
	againDue  time.Time
	againPrio httpc.Priority
	againLane *lane
}

// lane bounds the steps of one resource that run at once.
type lane struct {
	name     string
	max      int
	inflight int
	blocked  stepHeap

	// A batch lane gathers due polls (pending) and runs them as one step
	// (step), at most every period.
	batch   bool
	period  time.Duration
	pending []*step
	step    step
	last    time.Time
}

func newSched(workers int) *sched {
	s := &sched{workers: workers, kick: make(chan struct{}, 1), timers: stepHeap{byDue: true}}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// start starts the pool and the timekeeper. Idempotent.
func (s *sched) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return
	}
	s.started = true
	s.wg.Add(s.workers + 1)
	for range s.workers {
		go s.work()
	}
	go s.keepTime()
}

// stop stops the pool once the running steps returned; steps still queued
// are dropped (Runner.Stop ends every job first).
func (s *sched) stop() {
	s.mu.Lock()
	s.stopped = true
	s.cond.Broadcast()
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	s.wg.Wait()
}

// schedule makes st due at due (now or earlier: ready at once) with
// priority p in lane ln.
func (s *sched) schedule(st *step, due time.Time, p httpc.Priority, ln *lane) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.st == stRunning {
		st.again, st.againDue, st.againPrio, st.againLane = true, due, p, ln
		return
	}
	s.unlink(st)
	st.prio, st.lane = p, ln
	s.place(st, due)
}

// cancel takes st out of the schedule. A running step finishes, and is not
// placed again.
func (s *sched) cancel(st *step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.st == stRunning {
		st.again = false
		return
	}
	s.unlink(st)
}

// unlink removes st from wherever it waits. s.mu is held.
func (s *sched) unlink(st *step) {
	switch st.st {
	case stTimer:
		heap.Remove(&s.timers, st.idx)
	case stReady:
		heap.Remove(&s.ready, st.idx)
	case stBlocked:
		heap.Remove(&st.lane.blocked, st.idx)
	case stPending:
		ln := st.lane
		for i, p := range ln.pending {
			if p == st {
				ln.pending = append(ln.pending[:i], ln.pending[i+1:]...)
				break
			}
		}
	}
	st.st = stIdle
}

// place queues an idle step. s.mu is held.
func (s *sched) place(st *step, due time.Time) {
	s.seq++
	now := time.Now()
	if due.IsZero() {
		due = now // "now" is due now, not older than everything
	}
	st.due, st.seq = due, s.seq
	if due.After(now) {
		heap.Push(&s.timers, st)
		st.st = stTimer
		if st.idx == 0 {
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
		return
	}
	s.enqueue(st)
}

// enqueue makes a due step ready (or pending in its batch lane). s.mu is held.
func (s *sched) enqueue(st *step) {
	if ln := st.lane; ln != nil && ln.batch && st.prio == httpc.PriorityPoll && st != &ln.step {
		// A poll in a batch lane joins the lane's pending polls instead of
		// running alone (the rule is the lane's and the priority's, both
		// set under s.mu, so a step moving between kinds of work cannot
		// be placed by one and read by the other).
		ln.pending = append(ln.pending, st)
		st.st = stPending
		switch ln.step.st {
		case stIdle:
			ln.step.prio, ln.step.lane = st.prio, ln
			s.place(&ln.step, ln.last.Add(ln.period))
		case stRunning:
			// The batch being polled left these out: the next one takes them.
			ln.step.again, ln.step.againDue, ln.step.againPrio, ln.step.againLane = true, ln.last.Add(ln.period), st.prio, ln
		}
		return
	}
	heap.Push(&s.ready, st)
	st.st = stReady
	s.cond.Signal()
}

// next blocks until a step may run and returns it (nil: stopped).
func (s *sched) next() *step {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.stopped {
			return nil
		}
		for s.ready.Len() > 0 {
			st := heap.Pop(&s.ready).(*step)
			if ln := st.lane; ln != nil {
				if ln.inflight >= ln.max {
					heap.Push(&ln.blocked, st)
					st.st = stBlocked
					continue
				}
				ln.inflight++
			}
			st.st = stRunning
			return st
		}
		s.cond.Wait()
	}
}

// done is called when a step returned.
func (s *sched) done(st *step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ln := st.lane; ln != nil {
		ln.inflight--
		if ln.blocked.Len() > 0 {
			b := heap.Pop(&ln.blocked).(*step)
			heap.Push(&s.ready, b)
			b.st = stReady
			s.cond.Signal()
		}
	}
	st.st = stIdle
	s.replace(st)
}

// replace places a step that was scheduled while it ran. s.mu is held.
func (s *sched) replace(st *step) {
	if st.again {
		st.again = false
		st.prio, st.lane = st.againPrio, st.againLane
		s.place(st, st.againDue)
	}
}

func (s *sched) work() {
	defer s.wg.Done()
	for {
		st := s.next()
		if st == nil {
			return
		}
		st.run()
		s.done(st)
	}
}

// timerSlack is how late at most a step that falls due while keepTime
// sleeps is made ready: at 100,000 waiting polls a wake per due step was
// thousands of wakes a second. A step made due now (a cancel, a new job)
// wakes keepTime at once (kick).
const timerSlack = 5 * time.Millisecond

// keepTime moves due timers to the ready queue.
func (s *sched) keepTime() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			return
		}
		now := time.Now()
		for s.timers.Len() > 0 && !s.timers.first().due.After(now) {
			s.enqueue(heap.Pop(&s.timers).(*step))
		}
		wait := time.Hour
		if s.timers.Len() > 0 {
			// Not sooner than timerSlack: the steps that fall due meanwhile
			// go together at the next wake, not a wake each.
			wait = max(s.timers.first().due.Sub(now), timerSlack)
		}
		s.mu.Unlock()
		t.Reset(wait)
		select {
		case <-t.C:
		case <-s.kick:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		}
	}
}

// takePending takes up to max pending polls of a batch lane, as running
// steps; the batch step calls doneAll for them when it returns.
func (s *sched) takePending(ln *lane, max int) []*step {
	s.mu.Lock()
	defer s.mu.Unlock()
	ln.last = time.Now()
	n := min(len(ln.pending), max)
	out := append([]*step(nil), ln.pending[:n]...)
	ln.pending = append(ln.pending[:0], ln.pending[n:]...)
	for _, st := range out {
		st.st = stRunning
	}
	if len(ln.pending) > 0 {
		// More than one batch is due: the batch step runs again at once.
		ln.step.again, ln.step.againDue, ln.step.againPrio, ln.step.againLane = true, time.Time{}, ln.step.prio, ln
	}
	return out
}

// doneAll is done for the polls of a batch.
func (s *sched) doneAll(sts []*step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range sts {
		st.st = stIdle
		s.replace(st)
	}
}

// load reports how many of ln's steps wait for room and how many run.
func (s *sched) load(ln *lane) (waiting, running int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ln.blocked.Len() + len(ln.pending), ln.inflight
}

// stepHeap orders steps: a timer heap by due time; a ready (or blocked)
// heap by priority, then due time; arrival breaks ties. Each entry carries
// its step's keys, so ordering 100,000 waiting steps compares entries side
// by side in memory rather than following a pointer to each step.
type stepHeap struct {
	byDue bool
	s     []heapEntry
}

// heapEntry is a step in a heap, with its keys as they were when it went in
// (a step's keys change only while it is in no heap).
type heapEntry struct {
	due  int64 // since schedEpoch, monotonic
	seq  uint64
	prio httpc.Priority
	st   *step
}

// schedEpoch is what heap entries' due times count from.
var schedEpoch = time.Now()

func (h *stepHeap) Len() int { return len(h.s) }
func (h *stepHeap) Less(i, j int) bool {
	a, b := &h.s[i], &h.s[j]
	if !h.byDue && a.prio != b.prio {
		return a.prio < b.prio
	}
	if a.due != b.due {
		return a.due < b.due
	}
	return a.seq < b.seq
}
func (h *stepHeap) Swap(i, j int) {
	h.s[i], h.s[j] = h.s[j], h.s[i]
	h.s[i].st.idx, h.s[j].st.idx = i, j
}
func (h *stepHeap) Push(x any) {
	st := x.(*step)
	st.idx = len(h.s)
	h.s = append(h.s, heapEntry{due: int64(st.due.Sub(schedEpoch)), seq: st.seq, prio: st.prio, st: st})
}
func (h *stepHeap) Pop() any {
	old := h.s
	st := old[len(old)-1].st
	old[len(old)-1] = heapEntry{}
	h.s = old[:len(old)-1]
	st.idx = -1
	return st
}

// first returns the step first in the heap (Len must be > 0).
func (h *stepHeap) first() *step { return h.s[0].st }
