package sampledb

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	sdb "github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

const (
	jobRoot     = "/sampledb/v2/job"
	maxBodySize = 1 << 20
)

// envelope is the Argus response envelope, errors included.
type envelope struct {
	ResponseCode int            `json:"responseCode"`
	Limit        int            `json:"limit"`
	Offset       int            `json:"offset"`
	Count        int            `json:"count"`
	Size         int            `json:"size"`
	MetaData     map[string]any `json:"metaData"`
	Messages     []sdb.Message  `json:"messages"`
	Data         any            `json:"data"`
}

// writeData answers one object. The document is silent on count/size for a
// single object; we say what the envelope means: one match, one item.
func writeData(w http.ResponseWriter, status int, data any) {
	simhttp.WriteJSON(w, status, envelope{
		ResponseCode: status, Count: 1, Size: 1,
		MetaData: map[string]any{}, Messages: []sdb.Message{}, Data: data,
	})
}

func writePage(w http.ResponseWriter, limit, offset, count int, data any, size int) {
	simhttp.WriteJSON(w, http.StatusOK, envelope{
		ResponseCode: http.StatusOK, Limit: limit, Offset: offset, Count: count, Size: size,
		MetaData: map[string]any{}, Messages: []sdb.Message{}, Data: data,
	})
}

// writeError answers an error envelope: one ERROR message, data null.
// field names the offending request field, if any.
func writeError(w http.ResponseWriter, status int, field, format string, args ...any) {
	simhttp.WriteJSON(w, status, envelope{
		ResponseCode: status,
		MetaData:     map[string]any{},
		Messages:     []sdb.Message{{Type: "ERROR", Field: field, Message: fmt.Sprintf(format, args...)}},
		Data:         nil,
	})
}

// route is one matched API call.
type route struct {
	need  Role
	serve func(w http.ResponseWriter, r *http.Request)
}

// serveAPI authenticates, routes, authorises and serves one API request.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, jobRoot)
	if !ok || (rest != "" && rest[0] != '/') {
		writeError(w, http.StatusNotFound, "", "no such resource: %s", r.URL.Path)
		return
	}
	role, ok := s.keys[r.Header.Get("Argus-API-Key")]
	if !ok || r.Header.Get("Argus-API-Key") == "" {
		writeError(w, http.StatusUnauthorized, "", "missing or invalid Argus-API-Key")
		return
	}
	var segs []string
	if rest = strings.Trim(rest, "/"); rest != "" {
		segs = strings.Split(rest, "/")
	}
	routes, ok := s.match(segs)
	if !ok {
		writeError(w, http.StatusNotFound, "", "no such resource: %s", r.URL.Path)
		return
	}
	rt, ok := routes[r.Method]
	if !ok {
		allow := make([]string, 0, len(routes))
		for m := range routes {
			allow = append(allow, m)
		}
		slices.Sort(allow)
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "", "method %s not allowed on %s", r.Method, r.URL.Path)
		return
	}
	if role.level() < rt.need.level() {
		writeError(w, http.StatusForbidden, "", "role %s required", rt.need)
		return
	}
	rt.serve(w, r)
}

// match maps the path segments below /sampledb/v2/job to the routes by
// method.
func (s *Server) match(segs []string) (map[string]route, bool) {
	switch {
	case len(segs) == 0:
		return map[string]route{
			http.MethodGet: {RoleViewer, s.listJobs},
		}, true
	case len(segs) == 1 && segs[0] == "search":
		return map[string]route{
			http.MethodPost: {RoleViewer, s.searchJobs},
		}, true
	case len(segs) == 1:
		id := segs[0]
		return map[string]route{
			http.MethodGet:    {RoleViewer, func(w http.ResponseWriter, r *http.Request) { s.getJob(w, id) }},
			http.MethodPut:    {RoleAnalyzer, func(w http.ResponseWriter, r *http.Request) { s.putJob(w, r, id) }},
			http.MethodDelete: {RoleUser, func(w http.ResponseWriter, r *http.Request) { s.deleteJob(w, id) }},
		}, true
	case len(segs) == 2 && segs[1] == "task":
		id := segs[0]
		return map[string]route{
			http.MethodGet:  {RoleViewer, func(w http.ResponseWriter, r *http.Request) { s.listTasks(w, id) }},
			http.MethodPost: {RoleAnalyzer, func(w http.ResponseWriter, r *http.Request) { s.postTask(w, r, id) }},
		}, true
	case len(segs) == 3 && segs[1] == "task":
		id, tid := segs[0], segs[2]
		return map[string]route{
			http.MethodGet: {RoleViewer, func(w http.ResponseWriter, r *http.Request) { s.getTask(w, id, tid) }},
			http.MethodPut: {RoleAnalyzer, func(w http.ResponseWriter, r *http.Request) { s.putTask(w, r, id, tid) }},
		}, true
	}
	return nil, false
}

// readBody decodes a JSON request body; it answers 400 and returns false
// when it can't.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	err := simhttp.ReadJSON(w, r, maxBodySize, v)
	switch {
	case err == nil:
		return true
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "", "request body required")
	default:
		writeError(w, http.StatusBadRequest, "", "invalid JSON body: %v", err)
	}
	return false
}

// readState decodes the {"state": …} body of a job or task PUT; it answers
// 400 and returns false when it can't or the state is missing.
func readState(w http.ResponseWriter, r *http.Request) (string, bool) {
	var body struct {
		State string `json:"state"`
	}
	if !readBody(w, r, &body) {
		return "", false
	}
	if body.State == "" {
		writeError(w, http.StatusBadRequest, "state", "state is required")
		return "", false
	}
	return body.State, true
}

func (s *Server) getJob(w http.ResponseWriter, id string) {
	s.mu.Lock()
	j, ok := s.jobLocked(id)
	var out sdb.Job
	if ok {
		out = j.Job
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "", "job %s not found", id)
		return
	}
	writeData(w, http.StatusOK, out)
}

// putJob moves a job along the state machine.
func (s *Server) putJob(w http.ResponseWriter, r *http.Request, id string) {
	to, ok := readState(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.findJobLocked(w, id)
	if j == nil {
		return
	}
	from := j.State
	if from == to {
		writeData(w, http.StatusOK, j.Job)
		return
	}
	if msg := jobMoveRefused(from, to); msg != "" {
		s.recordLocked(r, id, "", from, to, http.StatusPreconditionFailed)
		writeError(w, http.StatusPreconditionFailed, "state", "job %s: %s", id, msg)
		return
	}
	now := s.now().UnixMilli()
	j.State = to
	if to == sdb.StateExecuting {
		j.StartTimestamp = now
	} else {
		j.EndTimestamp = now
	}
	s.recordLocked(r, id, "", from, to, http.StatusOK)
	writeData(w, http.StatusOK, j.Job)
}

// jobMoveRefused explains why from → to is not allowed, or returns "".
// The caller has handled from == to.
func jobMoveRefused(from, to string) string {
	switch {
	case !knownJobState(to):
		return fmt.Sprintf("unknown job state %q", to)
	case to == sdb.StateEnqueued:
		return fmt.Sprintf("illegal state transition from %s to %s: a job can't go back to enqueued", from, to)
	case from == sdb.StateEnqueued && to == sdb.StateExecuting:
		return ""
	case from == sdb.StateExecuting && sdb.IsTerminal(to):
		return ""
	case sdb.IsTerminal(from):
		return fmt.Sprintf("illegal state transition from %s to %s: the job is finished", from, to)
	default:
		return fmt.Sprintf("illegal state transition from %s to %s: a job must be executing before it ends", from, to)
	}
}

func knownJobState(s string) bool {
	return s == sdb.StateEnqueued || s == sdb.StateExecuting || sdb.IsTerminal(s)
}

// deleteJob requests an abort: abortRequested on an active job, nothing on
// a finished one.
func (s *Server) deleteJob(w http.ResponseWriter, id string) {
	j, ok := s.Abort(id)
	if !ok {
		writeError(w, http.StatusNotFound, "", "job %s not found", id)
		return
	}
	writeData(w, http.StatusOK, j)
}

func (s *Server) listTasks(w http.ResponseWriter, id string) {
	s.mu.Lock()
	j, ok := s.jobLocked(id)
	var out []task
	if ok {
		out = make([]task, 0, len(j.tasks))
		for _, t := range j.tasks {
			out = append(out, *t)
		}
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "", "job %s not found", id)
		return
	}
	writePage(w, 0, 0, len(out), out, len(out))
}

// postTask creates a task, executing, on a job that has not finished.
func (s *Server) postTask(w http.ResponseWriter, r *http.Request, id string) {
	var body struct {
		Worker string `json:"worker"`
		State  string `json:"state"`
	}
	if !readBody(w, r, &body) {
		return
	}
	if body.Worker == "" {
		writeError(w, http.StatusBadRequest, "worker", "worker is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.findJobLocked(w, id)
	if j == nil {
		return
	}
	if body.State != "" && body.State != sdb.TaskExecuting {
		writeError(w, http.StatusPreconditionFailed, "state", "a task is created %s, not %q", sdb.TaskExecuting, body.State)
		return
	}
	if sdb.IsTerminal(j.State) {
		writeError(w, http.StatusPreconditionFailed, "", "job %s is %s: no new tasks", id, j.State)
		return
	}
	s.lastTID++
	t := &task{ID: s.lastTID, Worker: body.Worker, State: sdb.TaskExecuting, StartTimestamp: s.now().UnixMilli()}
	j.tasks = append(j.tasks, t)
	s.recordLocked(r, id, strconv.FormatInt(t.ID, 10), "", t.State, http.StatusOK)
	writeData(w, http.StatusOK, *t)
}

// findJobLocked returns job id, or answers 404. s.mu must be held.
func (s *Server) findJobLocked(w http.ResponseWriter, id string) *simJob {
	j, ok := s.jobLocked(id)
	if !ok {
		writeError(w, http.StatusNotFound, "", "job %s not found", id)
		return nil
	}
	return j
}

// findTaskLocked returns task tid of job id, or answers 404. s.mu must be
// held.
func (s *Server) findTaskLocked(w http.ResponseWriter, id, tid string) *task {
	j := s.findJobLocked(w, id)
	if j == nil {
		return nil
	}
	n, err := strconv.ParseInt(tid, 10, 64)
	if err == nil {
		for _, t := range j.tasks {
			if t.ID == n {
				return t
			}
		}
	}
	writeError(w, http.StatusNotFound, "", "task %s of job %s not found", tid, id)
	return nil
}

func (s *Server) getTask(w http.ResponseWriter, id, tid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.findTaskLocked(w, id, tid); t != nil {
		writeData(w, http.StatusOK, *t)
	}
}

// putTask moves a task along its state machine. The job's own state does
// not matter: a worker may close its tasks after the job has ended (the
// outbox may PUT the job first after a crash).
func (s *Server) putTask(w http.ResponseWriter, r *http.Request, id, tid string) {
	to, ok := readState(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.findTaskLocked(w, id, tid)
	if t == nil {
		return
	}
	from := t.State
	if from == to {
		writeData(w, http.StatusOK, *t)
		return
	}
	var msg string
	switch {
	case to != sdb.TaskExecuting && !sdb.IsTaskTerminal(to):
		msg = fmt.Sprintf("unknown task state %q", to)
	case from != sdb.TaskExecuting || to == sdb.TaskExecuting:
		msg = fmt.Sprintf("illegal task state transition from %s to %s", from, to)
	}
	if msg != "" {
		s.recordLocked(r, id, strconv.FormatInt(t.ID, 10), from, to, http.StatusPreconditionFailed)
		writeError(w, http.StatusPreconditionFailed, "state", "task %s of job %s: %s", tid, id, msg)
		return
	}
	t.State = to
	t.EndTimestamp = s.now().UnixMilli()
	s.recordLocked(r, id, strconv.FormatInt(t.ID, 10), from, to, http.StatusOK)
	writeData(w, http.StatusOK, *t)
}
