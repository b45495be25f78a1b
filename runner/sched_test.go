package runner

import (
	"container/heap"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// recorder collects the names of steps as they run.
type recorder struct {
	mu  sync.Mutex
	ran []string
}

func (r *recorder) step(name string, also func()) *step {
	st := &step{}
	st.run = func() {
		r.mu.Lock()
		r.ran = append(r.ran, name)
		r.mu.Unlock()
		if also != nil {
			also()
		}
	}
	return st
}

func (r *recorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ran...)
}

func (r *recorder) wait(t *testing.T, n int) []string {
	t.Helper()
	require.Eventually(t, func() bool { return len(r.names()) >= n }, 10*time.Second, time.Millisecond)
	return r.names()
}

func TestSchedRunsByPriorityThenDueThenArrival(t *testing.T) {
	t.Parallel()
	s := newSched(1)
	rec := &recorder{}
	past := time.Now().Add(-time.Minute)
	s.schedule(rec.step("poll-old", nil), past, httpc.PriorityPoll, nil)
	s.schedule(rec.step("poll-new", nil), time.Time{}, httpc.PriorityPoll, nil)
	s.schedule(rec.step("start", nil), time.Time{}, httpc.PriorityStart, nil)
	s.schedule(rec.step("cancel-1", nil), time.Time{}, httpc.PriorityCancel, nil)
	s.schedule(rec.step("collect", nil), time.Time{}, httpc.PriorityCollect, nil)
	s.schedule(rec.step("cancel-2", nil), time.Time{}, httpc.PriorityCancel, nil)
	s.start()
	t.Cleanup(s.stop)
	require.Equal(t, []string{"cancel-1", "cancel-2", "start", "collect", "poll-old", "poll-new"}, rec.wait(t, 6),
		"priority first; within one, the longest due first")
}

// TestSchedLaneBoundsItsStepsAndFollowsAMove: a lane runs at most its
// bound at once; a step that reschedules itself into another lane while
// running frees its place in the lane it ran in.
func TestSchedLaneBoundsItsStepsAndFollowsAMove(t *testing.T) {
	t.Parallel()
	s := newSched(4)
	a := &lane{name: "a", max: 1}
	b := &lane{name: "b", max: 1}
	rec := &recorder{}
	release := make(chan struct{})
	var mover *step
	mover = rec.step("mover", func() {
		<-release
		s.schedule(mover, time.Now().Add(time.Hour), httpc.PriorityPoll, b) // off to lane b, much later
	})
	s.schedule(mover, time.Time{}, httpc.PriorityStart, a)
	s.start()
	t.Cleanup(s.stop)
	require.Equal(t, []string{"mover"}, rec.wait(t, 1))
	s.schedule(rec.step("second", nil), time.Time{}, httpc.PriorityStart, a)
	s.schedule(rec.step("other-lane", nil), time.Time{}, httpc.PriorityStart, nil)
	require.Equal(t, []string{"mover", "other-lane"}, rec.wait(t, 2), "lane a is full while mover runs; others go on")
	close(release)
	require.Equal(t, []string{"mover", "other-lane", "second"}, rec.wait(t, 3), "mover's place in lane a is freed")
	s.mu.Lock()
	defer s.mu.Unlock()
	require.Equal(t, 0, a.inflight)
	require.Equal(t, 0, b.inflight)
	require.Equal(t, stTimer, mover.st, "placed in lane b's future once it returned")
	require.Equal(t, b, mover.lane)
}

func TestSchedTimersAndCancel(t *testing.T) {
	t.Parallel()
	s := newSched(2)
	rec := &recorder{}
	later := rec.step("later", nil)
	gone := rec.step("cancelled", nil)
	s.schedule(later, time.Now().Add(30*time.Millisecond), httpc.PriorityPoll, nil)
	s.schedule(gone, time.Now().Add(20*time.Millisecond), httpc.PriorityPoll, nil)
	s.cancel(gone)
	s.start()
	t.Cleanup(s.stop)
	require.Equal(t, []string{"later"}, rec.wait(t, 1))
	require.Equal(t, stIdle, gone.st)

	// Rescheduling a waiting step moves it.
	moved := rec.step("moved", nil)
	s.schedule(moved, time.Now().Add(time.Hour), httpc.PriorityPoll, nil)
	s.schedule(moved, time.Time{}, httpc.PriorityPoll, nil)
	require.Equal(t, []string{"later", "moved"}, rec.wait(t, 2))
}

// TestSchedBatchLaneGathersDuePolls: due polls of a batch lane run as one
// step; a poll that comes due while a batch is being polled goes to the
// next batch.
func TestSchedBatchLaneGathersDuePolls(t *testing.T) {
	t.Parallel()
	s := newSched(2)
	ln := &lane{name: "cytomic", max: 4, batch: true, period: time.Millisecond}
	var mu sync.Mutex
	var batches [][]string
	release := make(chan struct{})
	names := map[*step]string{}
	ln.step.run = func() {
		got := s.takePending(ln, 100)
		var b []string
		mu.Lock()
		for _, st := range got {
			b = append(b, names[st])
		}
		batches = append(batches, b)
		mu.Unlock()
		<-release // the vendor call
		s.doneAll(got)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(batches) }
	poll := func(name string) {
		st := &step{}
		mu.Lock()
		names[st] = name
		mu.Unlock()
		s.schedule(st, time.Time{}, httpc.PriorityPoll, ln)
	}
	for _, n := range []string{"a", "b", "c"} {
		poll(n)
	}
	s.start()
	t.Cleanup(s.stop)
	require.Eventually(t, func() bool { return count() == 1 }, 10*time.Second, time.Millisecond)
	poll("d") // while the first batch is polled
	release <- struct{}{}
	require.Eventually(t, func() bool { return count() == 2 }, 10*time.Second, time.Millisecond)
	release <- struct{}{}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, [][]string{{"a", "b", "c"}, {"d"}}, batches)
}

// TestSchedKeepsEveryStepMovingUnderChurn drives the scheduler as the
// runner does — tasks that reschedule themselves from their own run, as
// batched polls, lone collects in the same lane or starts in another, while
// other goroutines cancel and reschedule them (a job stopping, a claim) —
// and checks that no step is ever stranded: once the churn stops, every
// task that is still scheduled runs again.
func TestSchedKeepsEveryStepMovingUnderChurn(t *testing.T) {
	t.Parallel()
	s := newSched(3)
	vendor := &lane{name: "cytomic", max: 2, batch: true, period: time.Millisecond}
	starts := &lane{name: "starts", max: 1}
	type task struct {
		mu   sync.Mutex
		st   step
		runs int
		mode int // 0 batched poll, 1 collect, 2 start
		live bool
	}
	const n = 16
	tasks := make([]*task, n)
	var rngMu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	intn := func(k int) int { rngMu.Lock(); defer rngMu.Unlock(); return rng.IntN(k) }
	place := func(tk *task, due time.Time) { // tk.mu held
		tk.live = true
		tk.mode = intn(3)
		switch tk.mode {
		case 0:
			s.schedule(&tk.st, due, httpc.PriorityPoll, vendor)
		case 1:
			s.schedule(&tk.st, due, httpc.PriorityCollect, vendor)
		default:
			s.schedule(&tk.st, due, httpc.PriorityStart, starts)
		}
	}
	advance := func(tk *task) {
		tk.mu.Lock()
		defer tk.mu.Unlock()
		tk.runs++
		if tk.live {
			place(tk, time.Now().Add(time.Duration(intn(2000))*time.Microsecond))
		}
	}
	for i := range tasks {
		tk := &task{}
		tk.st.run = func() { advance(tk) }
		tasks[i] = tk
	}
	vendor.step.run = func() {
		got := s.takePending(vendor, 5)
		for _, st := range got {
			for _, tk := range tasks {
				if &tk.st == st {
					advance(tk)
				}
			}
		}
		s.doneAll(got)
	}
	for _, tk := range tasks {
		tk.mu.Lock()
		place(tk, time.Time{})
		tk.mu.Unlock()
	}
	s.start()
	t.Cleanup(s.stop)

	var churn sync.WaitGroup
	for range 2 {
		churn.Add(1)
		go func() {
			defer churn.Done()
			for range 20000 {
				tk := tasks[intn(n)]
				tk.mu.Lock()
				if intn(2) == 0 {
					tk.live = false
					s.cancel(&tk.st)
				} else {
					place(tk, time.Now().Add(time.Duration(intn(1000))*time.Microsecond))
				}
				tk.mu.Unlock()
				runtime.Gosched()
			}
		}()
	}
	churn.Wait()

	before := make([]int, n)
	for i, tk := range tasks {
		tk.mu.Lock()
		before[i] = tk.runs
		tk.mu.Unlock()
	}
	require.Eventually(t, func() bool {
		for i, tk := range tasks {
			tk.mu.Lock()
			stuck := tk.live && tk.runs == before[i]
			tk.mu.Unlock()
			if stuck {
				return false
			}
		}
		return true
	}, 20*time.Second, time.Millisecond, "a scheduled step never ran again")
}

// BenchmarkTimerHeap100k is the timer heap's work per poll with 100,000
// jobs waiting: the earliest step out, and back in a minute later (the
// steps spread over the minute, each its own allocation as a job's is).
func BenchmarkTimerHeap100k(b *testing.B) {
	const n = 100_000
	h := &stepHeap{byDue: true}
	base := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		st := &step{due: base.Add(time.Duration(rng.Int64N(int64(time.Minute)))), seq: uint64(i)}
		heap.Push(h, st)
	}
	b.ResetTimer()
	for i := range b.N {
		st := heap.Pop(h).(*step)
		st.due, st.seq = st.due.Add(time.Minute), uint64(n+i)
		heap.Push(h, st)
	}
}
