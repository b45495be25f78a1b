package sampledb_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/sampledb"
)

const (
	ourJob   = "11111111-1111-1111-1111-111111111111"
	otherJob = "22222222-2222-2222-2222-222222222222"
)

// TestAnswerAboutAnotherJobIsRefused: SampleDB answering a call about one
// job with another job's object (a proxy mixing up responses, a cache, a
// bug) is not an answer about our job: the client says so with a
// retryable error naming what it asked for and what came, and never hands
// the foreign object on (issue 10: a PUT answered with another job's
// abortRequested made the worker abort its own job and tombstone it).
func TestAnswerAboutAnotherJobIsRefused(t *testing.T) {
	t.Parallel()
	foreignJob := `{"responseCode":200,"data":{"id":"` + otherJob + `","state":"executing","abortRequested":true}}`
	for _, c := range []struct {
		name string
		call func(*sampledb.Client) (*sampledb.Job, error)
	}{
		{"PUT", func(c *sampledb.Client) (*sampledb.Job, error) {
			return c.UpdateJob(t.Context(), ourJob, sampledb.StateExecuting)
		}},
		{"GET", func(c *sampledb.Client) (*sampledb.Job, error) { return c.GetJob(t.Context(), ourJob) }},
		{"DELETE", func(c *sampledb.Client) (*sampledb.Job, error) { return c.AbortJob(t.Context(), ourJob) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newForeign(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, foreignJob) })
			j, err := c.call(f.c)
			require.Nil(t, j, "the foreign object is never handed on")
			require.Error(t, err)
			require.True(t, httpc.IsRetryable(err), "a bad answer is retryable: %v", err)
			require.ErrorIs(t, err, sampledb.ErrBadAnswer)
			require.ErrorContains(t, err, "bad answer")
			require.ErrorContains(t, err, "asked about job "+ourJob)
			require.ErrorContains(t, err, "about job "+otherJob)
			require.Greater(t, len(f.requests()), 1, "retried like a 5xx")
		})
	}
}

// TestBadAnswerThenGoodOne: the client retries a bad answer, and the right
// job's answer ends the call; the same UUID in another case is the same job.
func TestBadAnswerThenGoodOne(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	f := newForeign(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			writeJSON(w, 200, `{"data":{"id":"`+otherJob+`","state":"executing","abortRequested":true}}`)
			return
		}
		writeJSON(w, 200, `{"data":{"id":"`+strings.ToUpper(ourJob)+`","state":"executing"}}`)
	})
	j, err := f.c.UpdateJob(t.Context(), ourJob, sampledb.StateExecuting)
	require.NoError(t, err)
	require.Equal(t, ourJob, j.ID)
	require.False(t, j.AbortRequested)
	require.Len(t, f.requests(), 2)
}

// TestBadAnswerErrorIsShortAndKeyless: what came is quoted capped and
// printable, and never with the API key.
func TestBadAnswerErrorIsShortAndKeyless(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 5000) + analyzerKey + "\n\x1b[31m"
	quoted, err := json.Marshal(long)
	require.NoError(t, err)
	f := newForeign(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"data":{"id":`+string(quoted)+`,"state":"executing"}}`)
	})
	_, err = f.c.GetJob(t.Context(), ourJob)
	require.ErrorIs(t, err, sampledb.ErrBadAnswer)
	require.Less(t, len(err.Error()), 600, err.Error())
	require.NotContains(t, err.Error(), "\x1b")
	requireNoKey(t, err)
}

// TestTaskAnswerAboutAnotherJobIsRefused: a task answer that names its job
// (jobId, in any case) must name ours.
func TestTaskAnswerAboutAnotherJobIsRefused(t *testing.T) {
	t.Parallel()
	f := newForeign(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			writeJSON(w, 200, `{"data":{"id":7,"jobId":"`+otherJob+`","worker":"cbc.event_export","state":"executing"}}`)
		case http.MethodPut:
			writeJSON(w, 200, `{"data":{"id":7,"JOBID":"`+otherJob+`","state":"success"}}`)
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	})
	tk, err := f.c.CreateTask(t.Context(), ourJob, "cbc.event_export")
	require.Nil(t, tk)
	require.ErrorIs(t, err, sampledb.ErrBadAnswer)
	require.True(t, httpc.IsRetryable(err))
	require.ErrorContains(t, err, "about job "+otherJob)
	tk, err = f.c.UpdateTask(t.Context(), ourJob, "7", sampledb.TaskSuccess)
	require.Nil(t, tk)
	require.ErrorIs(t, err, sampledb.ErrBadAnswer)

	// Naming our job, in any case, is fine.
	g := newForeign(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"data":{"id":7,"jobID":"`+strings.ToUpper(ourJob)+`","worker":"cbc.event_export","state":"executing"}}`)
	})
	tk, err = g.c.CreateTask(t.Context(), ourJob, "cbc.event_export")
	require.NoError(t, err)
	require.Equal(t, sampledb.ID("7"), tk.ID)
}
