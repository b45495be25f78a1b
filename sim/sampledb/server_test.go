package sampledb_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/job"
	sdb "github.com/analysisfleet/analysisfleet/sampledb"
	sim "github.com/analysisfleet/analysisfleet/sim/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	viewerKey   = "viewer-key"
	userKey     = "user-key"
	analyzerKey = "analyzer-key"
	jobRoot     = "/sampledb/v2/job"
	sha         = "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"
)

type bundle struct {
	srv   *sim.Server
	url   string
	clock *testutil.Clock
	hc    *http.Client
}

func setup(t *testing.T) *bundle {
	t.Helper()
	clk := testutil.NewClock(time.UnixMilli(1_700_000_000_000).UTC())
	srv := sim.New(sim.Config{
		Keys: map[string]sim.Role{viewerKey: sim.RoleViewer, userKey: sim.RoleUser, analyzerKey: sim.RoleAnalyzer},
		Now:  clk.Now,
	})
	hs := simtest.Serve(t, srv)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &bundle{srv: srv, url: hs.URL, clock: clk, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func message(id string) job.Message {
	return job.Message{
		JobID: id,
		Submission: job.Submission{
			ID: "sub-" + id, Customer: "acme", Sample: job.Sample{ID: sha},
			Name: "sample.exe", MimeType: "application/octet-stream", TLP: "white",
			MetaData: map[string]any{"sensorId": "42"},
		},
		Classification: job.Classification{Sample: sha, Type: "PE", Platform: "win"},
	}
}

// reply is a decoded response: status, raw body, envelope.
type reply struct {
	status int
	raw    []byte
	env    struct {
		ResponseCode int             `json:"responseCode"`
		Limit        int             `json:"limit"`
		Offset       int             `json:"offset"`
		Count        int             `json:"count"`
		Size         int             `json:"size"`
		Messages     []sdb.Message   `json:"messages"`
		Data         json.RawMessage `json:"data"`
	}
}

func (r reply) job(t *testing.T) sdb.Job {
	t.Helper()
	var j sdb.Job
	require.NoError(t, json.Unmarshal(r.env.Data, &j), string(r.raw))
	return j
}

func (r reply) jobs(t *testing.T) []sdb.Job {
	t.Helper()
	var js []sdb.Job
	require.NoError(t, json.Unmarshal(r.env.Data, &js), string(r.raw))
	return js
}

func (r reply) task(t *testing.T) sdb.Task {
	t.Helper()
	var tk sdb.Task
	require.NoError(t, json.Unmarshal(r.env.Data, &tk), string(r.raw))
	return tk
}

func (b *bundle) call(t *testing.T, method, path, key, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, b.url+path, rd)
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Argus-API-Key", key)
	}
	req.Header.Set("User-Agent", "analysisfleet/test (w1)")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, raw := simtest.Do(t, b.hc, req)
	out := reply{status: resp.StatusCode, raw: raw}
	if strings.HasPrefix(path, "/sampledb/") {
		require.NoError(t, json.Unmarshal(out.raw, &out.env), "every API answer is an envelope: %s", out.raw)
		require.Equal(t, out.status, out.env.ResponseCode)
	}
	return out
}

// put moves a job (analyzer) and requires 200.
func (b *bundle) put(t *testing.T, id string, states ...string) {
	t.Helper()
	for _, s := range states {
		r := b.call(t, http.MethodPut, jobRoot+"/"+id, analyzerKey, `{"state":"`+s+`"}`)
		require.Equal(t, http.StatusOK, r.status, string(r.raw))
	}
}

// jobIn creates a job and drives it to state.
func (b *bundle) jobIn(t *testing.T, id, state string) {
	t.Helper()
	b.srv.CreateJob(message(id))
	switch {
	case state == sdb.StateExecuting:
		b.put(t, id, sdb.StateExecuting)
	case sdb.IsTerminal(state):
		b.put(t, id, sdb.StateExecuting, state)
	}
}

func (b *bundle) newTask(t *testing.T, id, worker string) string {
	t.Helper()
	r := b.call(t, http.MethodPost, jobRoot+"/"+id+"/task", analyzerKey, `{"worker":"`+worker+`","state":"executing"}`)
	require.Equal(t, http.StatusOK, r.status, string(r.raw))
	return string(r.task(t).ID)
}

var jobStates = []string{sdb.StateEnqueued, sdb.StateExecuting, sdb.StateSuccess, sdb.StateFailed, sdb.StateAborted, sdb.StateTimeout}

func TestRoles(t *testing.T) {
	t.Parallel()
	type call struct {
		name, method, path, body string
		need                     sim.Role
	}
	calls := []call{
		{"list", http.MethodGet, jobRoot, "", sim.RoleViewer},
		{"search", http.MethodPost, jobRoot + "/search", `{}`, sim.RoleViewer},
		{"fetch", http.MethodGet, jobRoot + "/J", "", sim.RoleViewer},
		{"tasks", http.MethodGet, jobRoot + "/J/task", "", sim.RoleViewer},
		{"task", http.MethodGet, jobRoot + "/J/task/T", "", sim.RoleViewer},
		{"abort", http.MethodDelete, jobRoot + "/J", "", sim.RoleUser},
		{"update", http.MethodPut, jobRoot + "/J", `{"state":"success"}`, sim.RoleAnalyzer},
		{"create task", http.MethodPost, jobRoot + "/J/task", `{"worker":"cbc.event_export","state":"executing"}`, sim.RoleAnalyzer},
		{"update task", http.MethodPut, jobRoot + "/J/task/T", `{"state":"success"}`, sim.RoleAnalyzer},
	}
	keys := map[string]sim.Role{"": "", "nonsense": "", viewerKey: sim.RoleViewer, userKey: sim.RoleUser, analyzerKey: sim.RoleAnalyzer}
	rank := map[sim.Role]int{sim.RoleViewer: 1, sim.RoleUser: 2, sim.RoleAnalyzer: 3}
	for _, c := range calls {
		for key, role := range keys {
			t.Run(c.name+"/"+cmpOr(string(role), "key="+key), func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				b.jobIn(t, "J", sdb.StateExecuting)
				tid := b.newTask(t, "J", "cbc.event_export")
				before, _ := b.srv.Job("J")
				path := strings.Replace(c.path, "/T", "/"+tid, 1)
				r := b.call(t, c.method, path, key, c.body)
				switch {
				case role == "":
					require.Equal(t, http.StatusUnauthorized, r.status, string(r.raw))
				case rank[role] < rank[c.need]:
					require.Equal(t, http.StatusForbidden, r.status, string(r.raw))
					after, _ := b.srv.Job("J")
					require.Equal(t, before, after, "a refused call changes nothing")
					require.Equal(t, sdb.TaskExecuting, b.srv.Tasks("J")[0].State)
					require.Len(t, b.srv.Tasks("J"), 1)
				default:
					require.Equal(t, http.StatusOK, r.status, string(r.raw))
				}
				if r.status != http.StatusOK {
					require.Len(t, r.env.Messages, 1)
					require.Equal(t, "ERROR", r.env.Messages[0].Type)
					require.JSONEq(t, "null", string(r.env.Data))
				}
			})
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestJobStateMachine(t *testing.T) {
	t.Parallel()
	allowed := func(from, to string) bool {
		return from == to ||
			(from == sdb.StateEnqueued && to == sdb.StateExecuting) ||
			(from == sdb.StateExecuting && sdb.IsTerminal(to))
	}
	for _, from := range jobStates {
		for _, to := range append(slices.Clone(jobStates), "bogus", "SUCCESS") {
			t.Run(from+"->"+to, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				b.jobIn(t, "J", from)
				before, _ := b.srv.Job("J")
				nBefore := len(b.srv.History("J"))
				b.clock.Advance(time.Second)
				r := b.call(t, http.MethodPut, jobRoot+"/J", analyzerKey, `{"state":"`+to+`"}`)
				after, _ := b.srv.Job("J")
				hist := b.srv.History("J")[nBefore:]
				if !allowed(from, to) {
					require.Equal(t, http.StatusPreconditionFailed, r.status, string(r.raw))
					require.Len(t, r.env.Messages, 1)
					require.Equal(t, "ERROR", r.env.Messages[0].Type)
					require.Contains(t, r.env.Messages[0].Message, to)
					require.Equal(t, before, after, "refused: nothing changes")
					require.Equal(t, []sim.Transition{{
						Time: b.clock.Now(), JobID: "J", From: from, To: to,
						UserAgent: "analysisfleet/test (w1)", Status: http.StatusPreconditionFailed,
					}}, hist, "a refusal is recorded")
					return
				}
				require.Equal(t, http.StatusOK, r.status, string(r.raw))
				got := r.job(t)
				require.Equal(t, to, got.State)
				require.Equal(t, after, got)
				if from == to {
					require.Equal(t, before, after, "a repeat changes nothing")
					require.Empty(t, hist, "a repeat is not a transition")
					return
				}
				require.Len(t, hist, 1)
				require.True(t, hist[0].Applied())
				require.Equal(t, from, hist[0].From)
				require.Equal(t, to, hist[0].To)
				now := b.clock.Now().UnixMilli()
				if to == sdb.StateExecuting {
					require.Equal(t, now, after.StartTimestamp)
					require.Zero(t, after.EndTimestamp)
				} else {
					require.Equal(t, before.StartTimestamp, after.StartTimestamp)
					require.Equal(t, now, after.EndTimestamp)
				}
			})
		}
	}
}

func TestTaskStateMachine(t *testing.T) {
	t.Parallel()
	taskStates := []string{sdb.TaskExecuting, sdb.TaskSuccess, sdb.TaskFailed, sdb.TaskTimeout, sdb.TaskCancelled}
	for _, from := range taskStates {
		for _, to := range append(slices.Clone(taskStates), "bogus", "aborted") {
			t.Run(from+"->"+to, func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				b.jobIn(t, "J", sdb.StateExecuting)
				tid := b.newTask(t, "J", "sophos.xdr_query")
				path := jobRoot + "/J/task/" + tid
				if from != sdb.TaskExecuting {
					r := b.call(t, http.MethodPut, path, analyzerKey, `{"state":"`+from+`"}`)
					require.Equal(t, http.StatusOK, r.status, string(r.raw))
				}
				before := b.srv.Tasks("J")[0]
				n := len(b.srv.History("J"))
				r := b.call(t, http.MethodPut, path, analyzerKey, `{"state":"`+to+`"}`)
				after := b.srv.Tasks("J")[0]
				hist := b.srv.History("J")[n:]
				switch {
				case from == to:
					require.Equal(t, http.StatusOK, r.status, string(r.raw))
					require.Equal(t, before, after)
					require.Empty(t, hist)
				case from == sdb.TaskExecuting && sdb.IsTaskTerminal(to):
					require.Equal(t, http.StatusOK, r.status, string(r.raw))
					require.Equal(t, to, r.task(t).State)
					require.Equal(t, to, after.State)
					require.NotZero(t, after.EndTimestamp)
					require.Equal(t, []sim.Transition{{Time: b.clock.Now(), JobID: "J", TaskID: tid, From: from, To: to,
						UserAgent: "analysisfleet/test (w1)", Status: http.StatusOK}}, hist)
				default:
					require.Equal(t, http.StatusPreconditionFailed, r.status, string(r.raw))
					require.NotEmpty(t, r.env.Messages)
					require.Equal(t, before, after)
					require.Len(t, hist, 1)
					require.Equal(t, http.StatusPreconditionFailed, hist[0].Status)
				}
			})
		}
	}
}

func TestTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.jobIn(t, "A", sdb.StateExecuting)
	b.jobIn(t, "B", sdb.StateEnqueued)
	b.jobIn(t, "F", sdb.StateSuccess)

	// IDs are numbers, unique per server.
	require.Equal(t, "1", b.newTask(t, "A", "cbc.event_export"))
	require.Equal(t, "2", b.newTask(t, "B", "cbc.event_export"))
	r := b.call(t, http.MethodPost, jobRoot+"/A/task", analyzerKey, `{"worker":"sophos.xdr_query"}`)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, string(r.env.Data), `"id":3`, "task IDs are JSON numbers")

	r = b.call(t, http.MethodGet, jobRoot+"/A/task", viewerKey, "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, 2, r.env.Count)
	var tasks []sdb.Task
	require.NoError(t, json.Unmarshal(r.env.Data, &tasks))
	require.Equal(t, []string{"cbc.event_export", "sophos.xdr_query"}, []string{tasks[0].Worker, tasks[1].Worker})

	// No new tasks on a finished job; a task is created executing.
	r = b.call(t, http.MethodPost, jobRoot+"/F/task", analyzerKey, `{"worker":"cbc.event_export","state":"executing"}`)
	require.Equal(t, http.StatusPreconditionFailed, r.status)
	require.Contains(t, r.env.Messages[0].Message, "success")
	r = b.call(t, http.MethodPost, jobRoot+"/A/task", analyzerKey, `{"worker":"x","state":"success"}`)
	require.Equal(t, http.StatusPreconditionFailed, r.status)
	r = b.call(t, http.MethodPost, jobRoot+"/A/task", analyzerKey, `{"state":"executing"}`)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, "worker", r.env.Messages[0].Field)

	// Unknown job or task.
	require.Equal(t, http.StatusNotFound, b.call(t, http.MethodPost, jobRoot+"/nope/task", analyzerKey, `{"worker":"x"}`).status)
	require.Equal(t, http.StatusNotFound, b.call(t, http.MethodPut, jobRoot+"/A/task/99", analyzerKey, `{"state":"success"}`).status)
	require.Equal(t, http.StatusNotFound, b.call(t, http.MethodPut, jobRoot+"/B/task/1", analyzerKey, `{"state":"success"}`).status, "task 1 belongs to A")
	require.Equal(t, http.StatusNotFound, b.call(t, http.MethodGet, jobRoot+"/A/task/x", viewerKey, "").status)
	require.Len(t, b.srv.Tasks("F"), 0)
}

func TestAbortRequested(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, st := range jobStates {
		b.jobIn(t, st, st)
		r := b.call(t, http.MethodDelete, jobRoot+"/"+st, userKey, "")
		require.Equal(t, http.StatusOK, r.status, string(r.raw))
		j := r.job(t)
		require.Equal(t, st, j.State, "DELETE never changes the state")
		require.Equal(t, !sdb.IsTerminal(st), j.AbortRequested, "abortRequested only on an active job")
		stored, _ := b.srv.Job(st)
		require.Equal(t, j, stored)
		// Twice is the same.
		require.Equal(t, j, b.call(t, http.MethodDelete, jobRoot+"/"+st, userKey, "").job(t))
	}
	// The flag shows in PUT answers and survives to the end.
	r := b.call(t, http.MethodPut, jobRoot+"/"+sdb.StateEnqueued, analyzerKey, `{"state":"executing"}`)
	require.True(t, r.job(t).AbortRequested)
	r = b.call(t, http.MethodPut, jobRoot+"/"+sdb.StateEnqueued, analyzerKey, `{"state":"aborted"}`)
	require.Equal(t, sdb.StateAborted, r.job(t).State)
	require.True(t, r.job(t).AbortRequested)
	require.Equal(t, http.StatusNotFound, b.call(t, http.MethodDelete, jobRoot+"/nope", userKey, "").status)
	// The Go API does the same.
	_, ok := b.srv.Abort("nope")
	require.False(t, ok)
}

func TestHistory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.CreateJob(message("J"))
	b.srv.CreateJob(message("K"))
	b.put(t, "J", sdb.StateExecuting)
	tid := b.newTask(t, "J", "cbc.event_export")
	b.put(t, "K", sdb.StateExecuting)
	r := b.call(t, http.MethodPut, jobRoot+"/J/task/"+tid, analyzerKey, `{"state":"success"}`)
	require.Equal(t, http.StatusOK, r.status)
	b.put(t, "J", sdb.StateSuccess, sdb.StateSuccess)
	r = b.call(t, http.MethodPut, jobRoot+"/J", analyzerKey, `{"state":"failed"}`)
	require.Equal(t, http.StatusPreconditionFailed, r.status)

	type step struct{ job, task, from, to string }
	var got []step
	for _, tr := range b.srv.AllHistory() {
		require.Equal(t, "analysisfleet/test (w1)", tr.UserAgent)
		got = append(got, step{tr.JobID, tr.TaskID, tr.From, tr.To})
	}
	require.Equal(t, []step{
		{"J", "", "enqueued", "executing"},
		{"J", tid, "", "executing"},
		{"K", "", "enqueued", "executing"},
		{"J", tid, "executing", "success"},
		{"J", "", "executing", "success"},
		{"J", "", "success", "failed"},
	}, got)
	require.Len(t, b.srv.History("K"), 1)
	require.Empty(t, b.srv.History("nope"))

	// The same over the admin endpoints.
	var hist []sim.Transition
	require.NoError(t, json.Unmarshal(b.call(t, http.MethodGet, "/_sim/jobs/J/history", "", "").raw, &hist))
	require.Equal(t, b.srv.History("J"), hist)
	var allHist []sim.Transition
	require.NoError(t, json.Unmarshal(b.call(t, http.MethodGet, "/_sim/history", "", "").raw, &allHist))
	require.Equal(t, b.srv.AllHistory(), allHist)
	require.Equal(t, http.StatusNotFound, b.call(t, http.MethodGet, "/_sim/jobs/nope/history", "", "").status)
}

// keys returns the member names of a JSON object.
func keys(t *testing.T, raw []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &m), string(raw))
	return slices.Sorted(maps.Keys(m))
}

func TestEnvelopeShape(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.jobIn(t, "J", sdb.StateExecuting)
	tid := b.newTask(t, "J", "cbc.event_export")
	envKeys := []string{"count", "data", "limit", "messages", "metaData", "offset", "responseCode", "size"}
	jobKeys := []string{"abortRequested", "classification", "endTimestamp", "enqueuedTimestamp", "id", "startTimestamp", "state", "submission"}
	taskKeys := []string{"endTimestamp", "id", "startTimestamp", "state", "worker"}

	r := b.call(t, http.MethodGet, jobRoot+"/J", viewerKey, "")
	require.Equal(t, envKeys, keys(t, r.raw))
	require.Equal(t, jobKeys, keys(t, r.env.Data))
	var env map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(r.raw, &env))
	require.JSONEq(t, `[]`, string(env["messages"]))
	require.JSONEq(t, `{}`, string(env["metaData"]))
	require.JSONEq(t, `200`, string(env["responseCode"]))
	var job map[string]any
	require.NoError(t, json.Unmarshal(r.env.Data, &job))
	require.Equal(t, "J", job["id"])
	require.Equal(t, "executing", job["state"])
	require.Equal(t, false, job["abortRequested"])
	require.Equal(t, float64(0), job["endTimestamp"], "unset timestamps are 0")
	require.Equal(t, float64(b.clock.Now().UnixMilli()), job["startTimestamp"], "epoch milliseconds")
	require.Equal(t, sha, job["submission"].(map[string]any)["sample"].(map[string]any)["id"], "the submission as in the Kafka message")
	require.Equal(t, "win", job["classification"].(map[string]any)["platform"])

	r = b.call(t, http.MethodGet, jobRoot+"/J/task/"+tid, viewerKey, "")
	require.Equal(t, taskKeys, keys(t, r.env.Data))

	r = b.call(t, http.MethodGet, jobRoot+"?limit=5", viewerKey, "")
	require.Equal(t, envKeys, keys(t, r.raw))
	require.Equal(t, []int{5, 0, 1, 1}, []int{r.env.Limit, r.env.Offset, r.env.Count, r.env.Size})
	require.Equal(t, jobKeys, keys(t, json.RawMessage(strings.TrimSuffix(strings.TrimPrefix(string(r.env.Data), "["), "]"))))

	r = b.call(t, http.MethodGet, jobRoot+"/nope", viewerKey, "")
	require.Equal(t, http.StatusNotFound, r.status)
	require.Equal(t, envKeys, keys(t, r.raw))
	require.NoError(t, json.Unmarshal(r.raw, &env))
	require.JSONEq(t, `null`, string(env["data"]))
	require.JSONEq(t, `404`, string(env["responseCode"]))
	require.Len(t, r.env.Messages, 1)
	var msgs []json.RawMessage
	require.NoError(t, json.Unmarshal(env["messages"], &msgs))
	require.Len(t, msgs, 1)
	require.Equal(t, []string{"message", "type"}, keys(t, msgs[0]))
	require.Equal(t, "ERROR", r.env.Messages[0].Type)
	require.Contains(t, r.env.Messages[0].Message, "nope")

	// 401, 405 and unknown routes are envelopes too.
	for _, c := range []struct {
		method, path, key string
		status            int
	}{
		{http.MethodGet, jobRoot, "", http.StatusUnauthorized},
		{http.MethodPatch, jobRoot + "/J", viewerKey, http.StatusMethodNotAllowed},
		{http.MethodGet, jobRoot + "/J/tasks", viewerKey, http.StatusNotFound},
		{http.MethodGet, "/sampledb/v2/jobs", viewerKey, http.StatusNotFound},
	} {
		r := b.call(t, c.method, c.path, c.key, "")
		require.Equal(t, c.status, r.status, c.path)
		require.Equal(t, envKeys, keys(t, r.raw))
		require.Equal(t, "ERROR", r.env.Messages[0].Type)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.jobIn(t, "J", sdb.StateExecuting)
	for _, c := range []struct {
		name, method, path, body string
		status                   int
		field                    string
	}{
		{"bad json", http.MethodPut, jobRoot + "/J", `{"state":`, http.StatusBadRequest, ""},
		{"no body", http.MethodPut, jobRoot + "/J", ``, http.StatusBadRequest, ""},
		{"no state", http.MethodPut, jobRoot + "/J", `{"status":"success"}`, http.StatusBadRequest, "state"},
		{"wrong type", http.MethodPut, jobRoot + "/J", `{"state":1}`, http.StatusBadRequest, ""},
		{"unknown job", http.MethodPut, jobRoot + "/nope", `{"state":"executing"}`, http.StatusNotFound, ""},
		{"unknown job get", http.MethodGet, jobRoot + "/nope", ``, http.StatusNotFound, ""},
		{"task bad json", http.MethodPost, jobRoot + "/J/task", `[`, http.StatusBadRequest, ""},
		{"search bad json", http.MethodPost, jobRoot + "/search", `{"state":`, http.StatusBadRequest, ""},
		{"search bad state type", http.MethodPost, jobRoot + "/search", `{"state":7}`, http.StatusBadRequest, ""},
		{"limit too big", http.MethodGet, jobRoot + "?limit=10001", ``, http.StatusBadRequest, "limit"},
		{"limit negative", http.MethodGet, jobRoot + "?limit=-1", ``, http.StatusBadRequest, "limit"},
		{"limit not a number", http.MethodGet, jobRoot + "?limit=ten", ``, http.StatusBadRequest, "limit"},
		{"offset negative", http.MethodGet, jobRoot + "?offset=-5", ``, http.StatusBadRequest, "offset"},
		{"unknown state filter", http.MethodGet, jobRoot + "?state=done", ``, http.StatusBadRequest, "state"},
		{"unknown sort", http.MethodGet, jobRoot + "?sortBy=colour", ``, http.StatusBadRequest, "sortBy"},
		{"search limit too big", http.MethodPost, jobRoot + "/search", `{"limit":10001}`, http.StatusBadRequest, "limit"},
		{"search bad match", http.MethodPost, jobRoot + "/search", `{"timeMatchStrategy":"some"}`, http.StatusBadRequest, "timeMatchStrategy"},
		{"search bad field", http.MethodPost, jobRoot + "/search", `{"timeFieldStrategy":["lastSeen"]}`, http.StatusBadRequest, "timeFieldStrategy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := b.call(t, c.method, c.path, analyzerKey, c.body)
			require.Equal(t, c.status, r.status, string(r.raw))
			require.Len(t, r.env.Messages, 1)
			require.Equal(t, c.field, r.env.Messages[0].Field)
			require.NotEmpty(t, r.env.Messages[0].Message)
		})
	}
	j, _ := b.srv.Job("J")
	require.Equal(t, sdb.StateExecuting, j.State)
	require.Len(t, b.srv.AllHistory(), 1)
}

func TestList(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// 30 jobs: every 10th finished, every 3rd executing.
	var active []string
	for i := range 30 {
		id := fmt.Sprintf("job-%02d", i)
		b.clock.Advance(time.Millisecond)
		switch {
		case i%10 == 0:
			b.jobIn(t, id, sdb.StateFailed)
		case i%3 == 0:
			b.jobIn(t, id, sdb.StateExecuting)
			active = append(active, id)
		default:
			b.jobIn(t, id, sdb.StateEnqueued)
			active = append(active, id)
		}
	}
	ids := func(js []sdb.Job) []string {
		out := []string{}
		for _, j := range js {
			out = append(out, j.ID)
		}
		return out
	}

	r := b.call(t, http.MethodGet, jobRoot, viewerKey, "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, 25, r.env.Limit, "default limit")
	require.Equal(t, len(active), r.env.Count, "active jobs only by default")
	require.Equal(t, 25, r.env.Size)
	require.Equal(t, active[:25], ids(r.jobs(t)), "sorted by enqueuedTimestamp")

	r = b.call(t, http.MethodGet, jobRoot+"?limit=10&offset=20", viewerKey, "")
	require.Equal(t, active[20:], ids(r.jobs(t)))
	require.Equal(t, []int{10, 20, len(active), len(active) - 20}, []int{r.env.Limit, r.env.Offset, r.env.Count, r.env.Size})

	r = b.call(t, http.MethodGet, jobRoot+"?limit=10&offset=100", viewerKey, "")
	require.Equal(t, []string{}, ids(r.jobs(t)))
	require.JSONEq(t, `[]`, string(r.env.Data), "an empty page is [], not null")

	r = b.call(t, http.MethodGet, jobRoot+"?limit=0", viewerKey, "")
	require.Equal(t, []int{0, len(active)}, []int{r.env.Size, r.env.Count})

	r = b.call(t, http.MethodGet, jobRoot+"?state=failed&state=executing&limit=100", viewerKey, "")
	r2 := b.call(t, http.MethodGet, jobRoot+"?state=failed,executing&limit=100", viewerKey, "")
	require.Equal(t, 3+9, r.env.Count)
	require.Equal(t, r.env.Data, r2.env.Data, "repeated and comma-separated state are the same")

	r = b.call(t, http.MethodGet, jobRoot+"?sortBy=-enqueuedTimestamp&limit=3", viewerKey, "")
	require.Equal(t, []string{"job-29", "job-28", "job-27"}, ids(r.jobs(t)))

	r = b.call(t, http.MethodGet, jobRoot+"?customer=other&limit=3", viewerKey, "")
	require.Zero(t, r.env.Count)
}

func TestSearch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := b.clock.Now()
	mk := func(id, customer, hash, state string) {
		m := message(id)
		m.Submission.Customer = customer
		m.Submission.Sample.ID = hash
		b.srv.CreateJob(m)
		switch {
		case state == sdb.StateExecuting:
			b.put(t, id, sdb.StateExecuting)
		case sdb.IsTerminal(state):
			b.put(t, id, sdb.StateExecuting, state)
		}
		b.clock.Advance(24 * time.Hour)
	}
	other := strings.Repeat("ab", 32)
	mk("a1", "acme", sha, sdb.StateAborted)   // day 0
	mk("a2", "acme", other, sdb.StateTimeout) // day 1
	mk("a3", "initech", sha, sdb.StateSuccess)
	mk("a4", "acme", sha, sdb.StateExecuting)
	mk("a5", "initech", sha, sdb.StateEnqueued) // day 4; now is day 5

	search := func(body string) (reply, []string) {
		r := b.call(t, http.MethodPost, jobRoot+"/search", viewerKey, body)
		require.Equal(t, http.StatusOK, r.status, string(r.raw))
		var out []string
		for _, j := range r.jobs(t) {
			out = append(out, j.ID)
		}
		return r, out
	}
	_, got := search(`{}`)
	require.Equal(t, []string{"a4", "a5"}, got, "active by default")
	_, got = search(`{"state":["aborted","timeout"]}`)
	require.Equal(t, []string{"a1", "a2"}, got)
	_, got = search(`{"state":"aborted,timeout,success","customer":["acme"]}`)
	require.Equal(t, []string{"a1", "a2"}, got)
	_, got = search(`{"state":["aborted","timeout","success","executing"],"sampleSha256":["` + strings.ToUpper(sha) + `"]}`)
	require.Equal(t, []string{"a1", "a3", "a4"}, got)

	// Time ranges: epoch ms, the document's relative strings, any/all.
	day := func(n int) int64 { return start.Add(time.Duration(n) * 24 * time.Hour).UnixMilli() }
	all := `"state":["enqueued","executing","success","failed","aborted","timeout"]`
	_, got = search(fmt.Sprintf(`{%s,"startTimestamp":%d,"endTimestamp":%d,"timeFieldStrategy":["enqueuedTimestamp"]}`, all, day(1), day(3)))
	require.Equal(t, []string{"a2", "a3", "a4"}, got)
	_, got = search(fmt.Sprintf(`{%s,"startTimestamp":%d,"timeFieldStrategy":["enqueuedTimestamp","endTimestamp"],"timeMatchStrategy":"all"}`, all, day(1)))
	require.Equal(t, []string{"a2", "a3"}, got, "all: a4 and a5 have no endTimestamp")
	_, got = search(`{` + all + `,"startTimestamp":"now - 2 days","endTimestamp":"now","timeFieldStrategy":["enqueuedTimestamp"]}`)
	require.Equal(t, []string{"a4", "a5"}, got)
	_, got = search(`{` + all + `,"startTimestamp":"last tuesday-ish","timeFieldStrategy":"enqueuedTimestamp"}`)
	require.Len(t, got, 5, "relative forms we don't understand are ignored, not refused")
	_, got = search(`{"state":["aborted","timeout"],"startTimestamp":"now - 1 week","endTimestamp":"now","timeFieldStrategy":["enqueuedTimestamp","startTimestamp","endTimestamp"],"timeMatchStrategy":"any"}`)
	require.Equal(t, []string{"a1", "a2"}, got, "the document's example")

	// Paging from the body or the query; the body wins.
	r, got := search(`{` + all + `,"limit":2,"offset":1}`)
	require.Equal(t, []string{"a2", "a3"}, got)
	require.Equal(t, []int{2, 1, 5, 2}, []int{r.env.Limit, r.env.Offset, r.env.Count, r.env.Size})
	r = b.call(t, http.MethodPost, jobRoot+"/search?limit=1&offset=4", viewerKey, `{`+all+`}`)
	require.Equal(t, []int{1, 4, 5, 1}, []int{r.env.Limit, r.env.Offset, r.env.Count, r.env.Size})
	r = b.call(t, http.MethodPost, jobRoot+"/search?limit=1&offset=4", viewerKey, `{`+all+`,"limit":3,"offset":0}`)
	require.Equal(t, []int{3, 0, 5, 3}, []int{r.env.Limit, r.env.Offset, r.env.Count, r.env.Size})
}

func TestAdmin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Faults apply to the API, never to the admin endpoints.
	b.srv.Kit().Add(simhttp.Fault{Status: http.StatusServiceUnavailable})

	body := mustMarshal(t, message("11111111-2222-3333-4444-555555555555"))
	r := b.call(t, http.MethodPost, "/_sim/jobs", "", string(body))
	require.Equal(t, http.StatusCreated, r.status, string(r.raw))
	var j sdb.Job
	require.NoError(t, json.Unmarshal(r.raw, &j))
	require.Equal(t, "11111111-2222-3333-4444-555555555555", j.ID)
	require.Equal(t, sdb.StateEnqueued, j.State)
	require.Equal(t, b.clock.Now().UnixMilli(), j.EnqueuedTimestamp)
	require.Equal(t, "acme", j.Submission.Customer)
	stored, ok := b.srv.Job(j.ID)
	require.True(t, ok)
	require.Equal(t, j.Message(), stored.Message())

	require.Equal(t, http.StatusOK, b.call(t, http.MethodPost, "/_sim/jobs", "", string(body)).status, "existing job")
	require.Equal(t, http.StatusBadRequest, b.call(t, http.MethodPost, "/_sim/jobs", "", `{"jobID":`).status)
	r = b.call(t, http.MethodPost, "/_sim/jobs", "", `{}`)
	require.Equal(t, http.StatusCreated, r.status, "an empty jobID gets one")
	require.Len(t, b.srv.Jobs(), 2)

	r = b.call(t, http.MethodGet, "/_sim/jobs/"+j.ID, "", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, []string{"job", "tasks"}, keys(t, r.raw))
	var all []sdb.Job
	require.NoError(t, json.Unmarshal(b.call(t, http.MethodGet, "/_sim/jobs", "", "").raw, &all))
	require.Len(t, all, 2)
	require.Equal(t, j.ID, all[0].ID)
	require.Equal(t, http.StatusNotFound, b.call(t, http.MethodGet, "/_sim/nothing", "", "").status)

	// The API itself is faulted, and the fault control endpoint works.
	require.Equal(t, http.StatusServiceUnavailable, b.hcGet(t, jobRoot))
	req, err := http.NewRequest(http.MethodDelete, b.url+"/_sim/faults", nil)
	require.NoError(t, err)
	resp, err := b.hc.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, b.call(t, http.MethodGet, jobRoot, viewerKey, "").status)
}

func (b *bundle) hcGet(t *testing.T, path string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.url+path, nil)
	require.NoError(t, err)
	req.Header.Set("Argus-API-Key", viewerKey)
	resp, err := b.hc.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// TestApplyThenHang: the PUT takes effect, its answer never comes, and
// Close releases the held request.
func TestApplyThenHang(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.CreateJob(message("J"))
	b.srv.Kit().Add(simhttp.Fault{Method: http.MethodPut, AfterApply: true, Count: 1})

	req, err := http.NewRequest(http.MethodPut, b.url+jobRoot+"/J", bytes.NewReader([]byte(`{"state":"executing"}`)))
	require.NoError(t, err)
	req.Header.Set("Argus-API-Key", analyzerKey)
	applied := func() bool {
		j, _ := b.srv.Job("J")
		return j.State == sdb.StateExecuting
	}
	simtest.CloseReleases(t, b.srv, b.hc, req, applied)
	require.Len(t, b.srv.History("J"), 1)
}

// TestJobIDsAreCaseInsensitive: SampleDB's job IDs are UUIDs, and a UUID
// is the same whatever its case: a job created with an upper-case ID is
// addressed by its lower-case form (and any other spelling), served with
// its canonical (lower-case) ID, and never created twice.
func TestJobIDsAreCaseInsensitive(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const upper = "ABCDEF01-ABCD-ABCD-ABCD-ABCDEF012345"
	const mixed = "abcdef01-ABCD-abcd-ABCD-abcdef012345"
	lower := strings.ToLower(upper)
	created := b.srv.CreateJob(message(upper))
	require.Equal(t, lower, created.ID)
	again := b.srv.CreateJob(message(lower))
	require.Equal(t, created, again, "the same job, not a second one")
	require.Len(t, b.srv.Jobs(), 1)

	r := b.call(t, http.MethodGet, jobRoot+"/"+lower, viewerKey, "")
	require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
	require.Equal(t, lower, r.job(t).ID)
	r = b.call(t, http.MethodPut, jobRoot+"/"+mixed, analyzerKey, `{"state":"executing"}`)
	require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
	r = b.call(t, http.MethodPut, jobRoot+"/"+upper, analyzerKey, `{"state":"executing"}`)
	require.Equal(t, http.StatusOK, r.status, "a repeat under another spelling is a repeat")
	tid := b.newTask(t, lower, "cbc.event_export")
	r = b.call(t, http.MethodPut, jobRoot+"/"+upper+"/task/"+tid, analyzerKey, `{"state":"success"}`)
	require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
	r = b.call(t, http.MethodGet, jobRoot+"/"+mixed+"/task", viewerKey, "")
	require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
	r = b.call(t, http.MethodDelete, jobRoot+"/"+lower, userKey, "")
	require.Equal(t, http.StatusOK, r.status, "%s", r.raw)
	require.True(t, r.job(t).AbortRequested)
	r = b.call(t, http.MethodPut, jobRoot+"/"+lower, analyzerKey, `{"state":"aborted"}`)
	require.Equal(t, http.StatusOK, r.status, "%s", r.raw)

	for _, id := range []string{upper, lower, mixed} {
		j, ok := b.srv.Job(id)
		require.True(t, ok, id)
		require.Equal(t, sdb.StateAborted, j.State)
		require.Len(t, b.srv.Tasks(id), 1, id)
		h := b.srv.History(id)
		require.Len(t, h, 4, id)
		for _, tr := range h {
			require.Equal(t, lower, tr.JobID)
		}
	}
	r = b.call(t, http.MethodGet, jobRoot, viewerKey, "")
	require.Equal(t, http.StatusOK, r.status)
	require.Empty(t, r.jobs(t), "aborted is not active")

	// Not a UUID: an exact name (the simulator's tests use such IDs).
	b.srv.CreateJob(message("Job-X"))
	_, ok := b.srv.Job("job-x")
	require.False(t, ok)
}
