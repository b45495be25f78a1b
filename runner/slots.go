package runner

import (
	"sync"
)

// slots is the worker's in-flight capacity (MAX_INFLIGHT) and the registry
// of the jobs running in it. A slot is reserved (TryAcquire) before a job is
// admitted or claimed, so intake and takeover never start more jobs than
// the worker may run, and is given back when the job's run ends. Safe for
// concurrent use.
type slots struct {
	max int

	mu   sync.Mutex
	used int                // reserved or running
	jobs map[string]*jobRun // running, by job ID
	room chan struct{}      // closed when a slot frees up
	shut bool               // draining: nothing more is granted
}

func newSlots(max int) *slots {
	return &slots{max: max, jobs: map[string]*jobRun{}, room: make(chan struct{})}
}

// tryAcquire reserves up to n slots and returns how many it got.
func (s *slots) tryAcquire(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut || n <= 0 {
		return 0
	}
	got := min(n, s.max-s.used)
	if got <= 0 {
		return 0
	}
	s.used += got
	return got
}

// release gives n reserved slots back.
func (s *slots) release(n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	s.used -= n
	s.signal()
	s.mu.Unlock()
}

// signal wakes whoever waits for room. s.mu is held.
func (s *slots) signal() {
	close(s.room)
	s.room = make(chan struct{})
}

func (s *slots) roomChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.room
}

func (s *slots) free() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.max-s.used, 0)
}

// shutDown stops granting slots (drain).
func (s *slots) shutDown() {
	s.mu.Lock()
	s.shut = true
	s.mu.Unlock()
}

// put registers a job run in its reserved slot and returns the run it
// replaces (this worker lost the job and claimed it again), if any.
func (s *slots) put(j *jobRun) (prev *jobRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev = s.jobs[j.lease.ID]
	s.jobs[j.lease.ID] = j
	return prev
}

// done removes a run that ended and frees its slot.
func (s *slots) done(j *jobRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jobs[j.lease.ID] == j {
		delete(s.jobs, j.lease.ID)
	}
	s.used--
	s.signal()
}

func (s *slots) get(id string) *jobRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobs[id]
}

func (s *slots) running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs)
}

func (s *slots) snapshot() []*jobRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*jobRun, 0, len(s.jobs))
	for _, j := range s.jobs {
		out = append(out, j)
	}
	return out
}
