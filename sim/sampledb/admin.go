package sampledb

import (
	"net/http"
	"strings"

	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

// serveAdmin serves the simulator-only endpoints, for tests that run the
// simulator as its own process. They need no API key, are not faulted, and
// answer plain JSON (no envelope):
//
//	POST /_sim/jobs                 body: a Kafka job message → the job (201 new, 200 existing)
//	GET  /_sim/jobs                 every job, in creation order
//	GET  /_sim/jobs/{id}            {"job": …, "tasks": […]}
//	GET  /_sim/jobs/{id}/history    the job's transitions
//	GET  /_sim/history              every transition
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/_sim/"), "/")
	segs := strings.Split(rest, "/")
	switch {
	case rest == "history" && r.Method == http.MethodGet:
		simhttp.WriteJSON(w, http.StatusOK, nonNil(s.AllHistory()))
	case rest == "jobs" && r.Method == http.MethodPost:
		var msg job.Message
		if err := simhttp.ReadJSON(w, r, maxBodySize, &msg); err != nil {
			simhttp.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid job message: " + err.Error()})
			return
		}
		j, created := s.createJob(msg)
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		simhttp.WriteJSON(w, status, j)
	case rest == "jobs" && r.Method == http.MethodGet:
		simhttp.WriteJSON(w, http.StatusOK, s.Jobs())
	case len(segs) == 2 && segs[0] == "jobs" && r.Method == http.MethodGet:
		j, ok := s.Job(segs[1])
		if !ok {
			simhttp.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "job not found"})
			return
		}
		simhttp.WriteJSON(w, http.StatusOK, map[string]any{"job": j, "tasks": nonNil(s.Tasks(segs[1]))})
	case len(segs) == 3 && segs[0] == "jobs" && segs[2] == "history" && r.Method == http.MethodGet:
		if _, ok := s.Job(segs[1]); !ok {
			simhttp.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "job not found"})
			return
		}
		simhttp.WriteJSON(w, http.StatusOK, nonNil(s.History(segs[1])))
	default:
		simhttp.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "no such admin endpoint: " + r.Method + " " + r.URL.Path})
	}
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](xs []T) []T {
	if xs == nil {
		return []T{}
	}
	return xs
}
