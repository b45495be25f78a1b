// Package sampledb simulates the SampleDB v2 job API in memory, as an
// http.Handler: the Argus envelope on every response, Argus-API-Key roles,
// the job and task state machines with their 412s, abortRequested, paged
// listing and search. Tests, `worker dev` and multi-process fault tests run
// it; the sim kit (simhttp) puts fault switches and a request log in front.
//
//	/sampledb/v2/job                   GET list (viewer)
//	/sampledb/v2/job/search            POST search (viewer)
//	/sampledb/v2/job/{id}              GET (viewer), PUT {"state"} (analyzer), DELETE (user)
//	/sampledb/v2/job/{id}/task         GET list (viewer), POST {"worker","state"} (analyzer)
//	/sampledb/v2/job/{id}/task/{tid}   GET (viewer), PUT {"state"} (analyzer)
//	/_sim/faults, /_sim/requests       the kit's fault switches and request log (no key)
//	/_sim/jobs, /_sim/jobs/{id}, /_sim/jobs/{id}/history, /_sim/history
//	                                   admin: create jobs, inspect (no key, no faults)
//
// Job IDs are UUIDs, the same whatever their case: a job is keyed and
// served by its canonical (lower-case) ID, so any spelling of it addresses
// it (job.CanonicalID; an ID that is not a UUID is kept exactly).
//
// Job states: enqueued → executing → success | failed | aborted | timeout.
// Task states: executing → success | failed | timeout | cancelled.
// Repeating the current state answers 200 and changes nothing; any other
// move answers 412. SampleDB itself has no asynchronous work here: the fleet
// drives every change, so nothing runs in the background.
//
// A Server is safe for concurrent use; one mutex guards its state.
package sampledb

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/analysisfleet/analysisfleet/job"
	sdb "github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

// Role is a SampleDB role an API key holds.
type Role string

// The roles, lowest first: each may do what the ones below it may.
const (
	// RoleViewer may fetch, list and search jobs and tasks.
	RoleViewer Role = "SAMPLEDB-VIEWER"
	// RoleUser may also abort jobs (DELETE).
	RoleUser Role = "SAMPLEDB-USER"
	// RoleAnalyzer may also update jobs and create and update tasks.
	RoleAnalyzer Role = "SAMPLEDB-ANALYZER"
)

func (r Role) level() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleUser:
		return 2
	case RoleAnalyzer:
		return 3
	}
	return 0
}

// Config configures a Server.
type Config struct {
	// Keys maps each accepted API key to its role. Requests with another
	// key, or none, are answered 401.
	Keys map[string]Role
	// Now is the clock for timestamps; default time.Now.
	Now func() time.Time
}

// Transition is one job or task state change requested through the API:
// applied (Status 200) or refused by the state machine (Status 412).
// Repeats of the current state are not recorded (the kit's request log
// has them).
type Transition struct {
	Time      time.Time `json:"time"`
	JobID     string    `json:"jobId"`
	TaskID    string    `json:"taskId,omitempty"` // empty for a job transition
	From      string    `json:"from"`             // empty when a task is created
	To        string    `json:"to"`
	UserAgent string    `json:"userAgent"`
	Status    int       `json:"status"` // the HTTP status answered
}

// Applied reports whether the change took effect.
func (t Transition) Applied() bool { return t.Status == http.StatusOK }

// Server is the simulated SampleDB. It implements http.Handler.
type Server struct {
	kit     *simhttp.Kit
	api     http.Handler // kit-wrapped job API
	now     func() time.Time
	keys    map[string]Role
	mu      sync.Mutex
	jobs    map[string]*simJob
	order   []*simJob // jobs in creation order (seq); jobs are never removed
	seq     int64     // creation order, the last sort key
	lastTID int64
	history []Transition
}

type simJob struct {
	sdb.Job
	seq   int64
	tasks []*task
}

type task struct {
	ID             int64  `json:"id"`
	Worker         string `json:"worker"`
	State          string `json:"state"`
	StartTimestamp int64  `json:"startTimestamp"`
	EndTimestamp   int64  `json:"endTimestamp"`
}

func (t *task) public() sdb.Task {
	return sdb.Task{
		ID: sdb.ID(strconv.FormatInt(t.ID, 10)), Worker: t.Worker, State: t.State,
		StartTimestamp: t.StartTimestamp, EndTimestamp: t.EndTimestamp,
	}
}

// New returns a Server with no jobs.
func New(cfg Config) *Server {
	s := &Server{
		kit:  simhttp.New(),
		now:  cfg.Now,
		keys: make(map[string]Role, len(cfg.Keys)),
		jobs: make(map[string]*simJob),
	}
	if s.now == nil {
		s.now = time.Now
	}
	for k, r := range cfg.Keys {
		s.keys[k] = r
	}
	s.api = s.kit.Wrap(http.HandlerFunc(s.serveAPI))
	return s
}

// Kit returns the fault switches and request log in front of the API.
func (s *Server) Kit() *simhttp.Kit { return s.kit }

// Close releases requests held by hang faults. Call it before closing the
// HTTP server.
func (s *Server) Close() { s.kit.Close() }

// ServeHTTP serves the job API (behind the kit) and the admin endpoints
// (not faulted, no key).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_sim/") && r.URL.Path != "/_sim/faults" && r.URL.Path != "/_sim/requests" {
		s.serveAdmin(w, r)
		return
	}
	s.api.ServeHTTP(w, r)
}

// CreateJob creates an enqueued job from a Kafka job message, as SampleDB
// does for a submission, and returns it. An empty JobID gets a new UUID; a
// UUID is stored in its canonical (lower-case) form. A job that already
// exists, under any spelling of its ID, is returned unchanged.
func (s *Server) CreateJob(msg job.Message) sdb.Job {
	j, _ := s.createJob(msg)
	return j
}

func (s *Server) createJob(msg job.Message) (sdb.Job, bool) {
	if msg.JobID == "" {
		msg.JobID = uuid.NewString()
	}
	msg.JobID = job.CanonicalID(msg.JobID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if j, ok := s.jobs[msg.JobID]; ok {
		return j.Job, false
	}
	s.seq++
	j := &simJob{
		Job: sdb.Job{
			ID:                msg.JobID,
			State:             sdb.StateEnqueued,
			Submission:        msg.Submission,
			Classification:    msg.Classification,
			EnqueuedTimestamp: s.now().UnixMilli(),
		},
		seq: s.seq,
	}
	s.jobs[j.ID] = j
	s.order = append(s.order, j)
	return j.Job, true
}

// Job returns job id (any spelling of it) as the API would serve it.
func (s *Server) Job(id string) (sdb.Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobLocked(id)
	if !ok {
		return sdb.Job{}, false
	}
	return j.Job, true
}

// Jobs returns every job, in creation order.
func (s *Server) Jobs() []sdb.Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]sdb.Job, 0, len(s.jobs))
	for _, j := range s.sortedLocked() {
		out = append(out, j.Job)
	}
	return out
}

// Abort does what DELETE /sampledb/v2/job/{id} does: it sets
// abortRequested on an active job. It reports whether the job exists.
func (s *Server) Abort(id string) (sdb.Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobLocked(id)
	if !ok {
		return sdb.Job{}, false
	}
	if !sdb.IsTerminal(j.State) {
		j.AbortRequested = true
	}
	return j.Job, true
}

// Tasks returns the tasks of job jobID, in creation order.
func (s *Server) Tasks(jobID string) []sdb.Task {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobLocked(jobID)
	if !ok {
		return nil
	}
	out := make([]sdb.Task, 0, len(j.tasks))
	for _, t := range j.tasks {
		out = append(out, t.public())
	}
	return out
}

// History returns the transitions of job id (any spelling of it) and its
// tasks, in order.
func (s *Server) History(id string) []Transition {
	id = job.CanonicalID(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Transition
	for _, t := range s.history {
		if t.JobID == id {
			out = append(out, t)
		}
	}
	return out
}

// AllHistory returns every transition, in order.
func (s *Server) AllHistory() []Transition {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.history)
}

// jobLocked finds job id under any spelling of it. s.mu must be held.
func (s *Server) jobLocked(id string) (*simJob, bool) {
	j, ok := s.jobs[job.CanonicalID(id)]
	return j, ok
}

// sortedLocked returns the jobs in creation order. s.mu must be held.
// The slice is the server's own: callers read it under s.mu and do not
// modify it. (Kept in order as jobs are created: a listing of 100,000 jobs
// in pages of 1,000 no longer sorts them all for every page.)
func (s *Server) sortedLocked() []*simJob {
	return s.order
}

// recordLocked appends a transition. s.mu must be held.
func (s *Server) recordLocked(r *http.Request, jobID, taskID, from, to string, status int) {
	s.history = append(s.history, Transition{
		Time: s.now(), JobID: job.CanonicalID(jobID), TaskID: taskID, From: from, To: to,
		UserAgent: r.UserAgent(), Status: status,
	})
}
