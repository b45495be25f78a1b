package console

import (
	"net/http"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/job"
)

// actions are the mutating operations, by URL name.
var actions = map[string]struct{ Verb, Explain string }{
	"release": {"Release the lease of",
		"The job's lease expires now. Its holder is told at once and is fenced off (its next ledger write fails); " +
			"the next worker with a free slot claims the job and resumes every task from its checkpoint — running " +
			"vendor queries are re-attached, not started again. Use it for a job stuck on a worker."},
	"abort": {"Abort",
		"The job is marked abort-requested in the ledger and its holder is told at once: it cancels the vendor " +
			"operations where the vendor allows it, marks open tasks cancelled and reports the job aborted to SampleDB. " +
			"This cannot be undone."},
}

type confirmPage struct {
	ID      string
	Action  string
	Verb    string
	Explain string
	Detail  *jobDetail
}

// confirm shows what an action will do and asks for the POST.
func (s *Server) confirm(w http.ResponseWriter, r *http.Request) {
	a, ok := actions[r.PathValue("action")]
	if !ok {
		s.fail(w, r, http.StatusNotFound, "no such page")
		return
	}
	id := job.CanonicalID(r.PathValue("id"))
	d, err := s.readJob(r.Context(), id)
	if err != nil {
		s.fail(w, r, http.StatusServiceUnavailable, "cannot read the ledger: "+s.scrub(err.Error()))
		return
	}
	s.render(w, r, http.StatusOK, "confirm", a.Verb+" job "+id, "jobs",
		confirmPage{ID: id, Action: r.PathValue("action"), Verb: a.Verb, Explain: a.Explain, Detail: d})
}

// act performs a confirmed action: refused unless the console may write,
// recorded in the audit stream whatever the result.
func (s *Server) act(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if _, ok := actions[action]; !ok {
		s.fail(w, r, http.StatusNotFound, "no such action")
		return
	}
	id := job.CanonicalID(r.PathValue("id"))
	ctx := r.Context()
	user := who(r)
	audit := s.auditor(r, action, id)
	if !s.cfg.Write {
		audit("refused: read-only console")
		s.fail(w, r, http.StatusForbidden, "this console is read-only: start it with write access (fleetctl console --write) to "+action+" jobs")
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		audit("refused: not confirmed")
		s.fail(w, r, http.StatusBadRequest, "not confirmed: use the confirmation page's button")
		return
	}
	rec, err := s.st.Get(ctx, id)
	if err != nil {
		s.fail(w, r, http.StatusServiceUnavailable, "cannot read the ledger: "+s.scrub(err.Error()))
		return
	}
	if rec == nil {
		audit("refused: no record (finished or unknown)")
		http.Redirect(w, r, "/jobs/"+id+"?done=finished", http.StatusSeeOther)
		return
	}
	done := action
	switch action {
	case "release":
		owner, ok, err := s.st.ForceRelease(ctx, id, "console, by "+user)
		switch {
		case err != nil:
			audit("error: " + s.scrub(err.Error()))
			s.fail(w, r, http.StatusServiceUnavailable, "release failed: "+s.scrub(err.Error()))
			return
		case !ok:
			audit("refused: no record")
			done = "finished"
		case owner == "":
			audit("ok: was not held")
		default:
			audit("ok: taken from " + owner)
		}
	case "abort":
		n, err := s.st.NotifyAborts(ctx, []string{id}, "console, by "+user+"; the holder is told")
		switch {
		case err != nil:
			audit("error: " + s.scrub(err.Error()))
			s.fail(w, r, http.StatusServiceUnavailable, "abort failed: "+s.scrub(err.Error()))
			return
		case n == 0:
			audit("ok: already requested")
			done = "noop"
		default:
			audit("ok: abort requested")
		}
	}
	s.forget("job:" + id)
	s.forget("snapshot")
	http.Redirect(w, r, "/jobs/"+id+"?done="+done, http.StatusSeeOther)
}

// auditor returns what records the results of one action on target (a job
// ID, or what a replay chose) in the audit stream and the log, naming who.
func (s *Server) auditor(r *http.Request, action, target string) func(result string) {
	user := who(r)
	return func(result string) {
		if err := s.record(r.Context(), user, action, target, result); err != nil {
			s.log.Error("console audit stream write failed", zap.String("who", user), zap.String("action", action),
				zap.String("target", target), zap.String("result", result), zap.Error(err))
		}
		s.log.Info("console action", zap.String("who", user), zap.String("action", action),
			zap.String("target", target), zap.String("result", result))
	}
}

// forget drops a cached read, so the page after an action shows its effect.
func (s *Server) forget(key string) {
	s.mu.Lock()
	delete(s.cache, key)
	s.mu.Unlock()
}
