package sampledb_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
	sim "github.com/analysisfleet/analysisfleet/sim/sampledb"
)

// The tests in this file play a SampleDB written by someone else from the
// same documents: it answers in shapes the documents leave open, and the
// client must still work.

// foreign is a scripted SampleDB: serve answers every request.
type foreign struct {
	mu   sync.Mutex
	reqs []*http.Request
	logs *observer.ObservedLogs
	c    *sampledb.Client
}

func newForeign(t *testing.T, serve func(w http.ResponseWriter, r *http.Request)) *foreign {
	t.Helper()
	f := &foreign{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Clone(r.Context()))
		f.mu.Unlock()
		serve(w, r)
	}))
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(func() { hs.Close(); tr.CloseIdleConnections() })
	core, logs := observer.New(zap.DebugLevel)
	f.logs = logs
	c, err := sampledb.New(sampledb.Config{
		URL: hs.URL, APIKey: analyzerKey, Transport: tr, Logger: zap.New(core),
		InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, MaxElapsed: time.Second,
	})
	require.NoError(t, err)
	f.c = c
	return f
}

func (f *foreign) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// answerOnly answers method path with status and body (no body for 204)
// and any other request 418.
func answerOnly(method, path string, status int, body string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != method || r.URL.Path != path:
			w.WriteHeader(http.StatusTeapot)
		case status == http.StatusNoContent:
			w.WriteHeader(status)
		default:
			writeJSON(w, status, body)
		}
	}
}

func jobJSON(id, state string) string {
	return fmt.Sprintf(`{"id":%q,"state":%q,"abortRequested":false}`, id, state)
}

func collect(t *testing.T, c *sampledb.Client, opts sampledb.ListOptions) ([]string, error) {
	t.Helper()
	var ids []string
	err := c.ListJobs(ctx(t), opts, func(page []sampledb.Job) error {
		require.NotEmpty(t, page, "fn is never called with an empty page")
		for _, j := range page {
			ids = append(ids, j.ID)
		}
		return nil
	})
	return ids, err
}

// TestListJobsOneListingPerState: a server that reads the state parameter
// once still lists every state asked for; a job seen in two states (it
// moved between the listings) is passed once.
func TestListJobsOneListingPerState(t *testing.T) {
	t.Parallel()
	byState := map[string][]string{
		"enqueued":  {jobJSON("a", "enqueued"), jobJSON("b", "enqueued")},
		"executing": {jobJSON("b", "executing"), jobJSON("c", "executing")},
	}
	f := newForeign(t, func(w http.ResponseWriter, r *http.Request) {
		st := r.URL.Query().Get("state") // the parameter, read once
		items := byState[st]
		if off, _ := strconv.Atoi(r.URL.Query().Get("offset")); off > 0 {
			items = nil
		}
		writeJSON(w, 200, fmt.Sprintf(`{"count":%d,"data":[%s]}`, len(items), strings.Join(items, ",")))
	})
	ids, err := collect(t, f.c, sampledb.ListOptions{States: []string{sampledb.StateEnqueued, sampledb.StateExecuting}})
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b", "c"}, ids)
	reqs := f.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, []string{"enqueued"}, reqs[0].URL.Query()["state"])
	require.Equal(t, []string{"executing"}, reqs[1].URL.Query()["state"])
}

// pagedServer serves n jobs (j00, j01, …) by limit/offset. count is what
// it puts in the envelope for a page of size items; cap, when positive, is
// the most it returns per page (and says so in limit).
func pagedServer(n, capPage int, count func(total, size int) string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit, _ := strconv.Atoi(q.Get("limit"))
		offset, _ := strconv.Atoi(q.Get("offset"))
		if capPage > 0 {
			limit = min(limit, capPage)
		}
		var items []string
		for i := offset; i < n && len(items) < limit; i++ {
			items = append(items, jobJSON(fmt.Sprintf("j%02d", i), "executing"))
		}
		c := count(n, len(items))
		if c != "" {
			c = `"count":` + c + `,`
		}
		writeJSON(w, 200, fmt.Sprintf(`{"limit":%d,"offset":%d,%s"data":[%s]}`, limit, offset, c, strings.Join(items, ",")))
	}
}

// TestListJobsPagingWithoutATrustworthyCount: the listing goes on while
// pages come back full, whatever count says, and ends at a short or empty
// page.
func TestListJobsPagingWithoutATrustworthyCount(t *testing.T) {
	t.Parallel()
	noCount := func(int, int) string { return "" }
	pageCount := func(_, size int) string { return strconv.Itoa(size) }
	trueCount := func(total, _ int) string { return strconv.Itoa(total) }
	for _, c := range []struct {
		name    string
		n, cap  int
		count   func(total, size int) string
		offsets []string
	}{
		{"no count", 7, 0, noCount, []string{"0", "3", "6"}},
		{"no count, last page full", 6, 0, noCount, []string{"0", "3", "6"}},
		{"count of the page only", 7, 0, pageCount, []string{"0", "3", "6"}},
		{"true count", 7, 0, trueCount, []string{"0", "3", "6"}},
		{"true count, last page full", 6, 0, trueCount, []string{"0", "3", "6"}},
		{"server caps the page at 2", 7, 2, noCount, []string{"0", "2", "4", "6"}},
		{"nothing", 0, 0, trueCount, []string{"0"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newForeign(t, pagedServer(c.n, c.cap, c.count))
			ids, err := collect(t, f.c, sampledb.ListOptions{PageSize: 3})
			require.NoError(t, err)
			var want []string
			for i := range c.n {
				want = append(want, fmt.Sprintf("j%02d", i))
			}
			require.Equal(t, want, ids)
			var offsets []string
			for _, r := range f.requests() {
				offsets = append(offsets, r.URL.Query().Get("offset"))
			}
			require.Equal(t, c.offsets, offsets)
		})
	}
}

// TestListJobsSkipsBadItems: an item that is not a readable job is left
// out and counted; the rest of its page is listed and the offset moves by
// every item the page held.
func TestListJobsSkipsBadItems(t *testing.T) {
	t.Parallel()
	f := newForeign(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("offset") {
		case "0":
			writeJSON(w, 200, `{"count":5,"data":[`+jobJSON("a", "executing")+`,{"id":"x"},`+jobJSON("b", "ABORTED")+`]}`)
		case "3":
			writeJSON(w, 200, `{"count":5,"data":[`+jobJSON("c", "executing")+`,{"id":"y","state":"executing","startTimestamp":"yesterday"}]}`)
		default:
			writeJSON(w, 200, `{"count":5,"data":[]}`)
		}
	})
	var got []sampledb.Job
	err := f.c.ListJobs(ctx(t), sampledb.ListOptions{PageSize: 3}, func(page []sampledb.Job) error {
		got = append(got, page...)
		return nil
	})
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, "a", got[0].ID)
	require.Equal(t, "b", got[1].ID)
	require.Equal(t, sampledb.StateAborted, got[1].State, "states are lower-cased")
	require.Equal(t, "c", got[2].ID)
	require.Len(t, f.requests(), 2, "offsets 0 and 3; 5 reached count")

	warns := f.logs.FilterMessage("SampleDB listing: skipped items that are not readable jobs").All()
	require.Len(t, warns, 2)
	require.EqualValues(t, 1, warns[0].ContextMap()["skipped"])
	require.EqualValues(t, 3, warns[0].ContextMap()["items"])
	require.Contains(t, warns[0].ContextMap()["first"], "jobs[1]")
	require.EqualValues(t, 1, warns[1].ContextMap()["skipped"])
}

// TestListJobsStopsWhenTheServerIgnoresOffset: full pages that bring
// nothing new end the listing with an error instead of looping forever.
func TestListJobsStopsWhenTheServerIgnoresOffset(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	n := 0
	for _, c := range []struct {
		name  string
		serve func(w http.ResponseWriter, r *http.Request)
	}{
		{"same bytes", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, `{"count":100,"data":[`+jobJSON("a", "executing")+`,`+jobJSON("b", "executing")+`]}`)
		}},
		{"same jobs, changing fields", func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			n++
			ts := n
			mu.Unlock()
			writeJSON(w, 200, fmt.Sprintf(`{"data":[{"id":"a","state":"executing","startTimestamp":%d},{"id":"b","state":"executing"}]}`, ts))
		}},
		{"same bad items", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, `{"data":[{"id":"a"},{"id":"b"}]}`)
		}},
	} {
		for _, brief := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/brief=%v", c.name, brief), func(t *testing.T) {
				f := newForeign(t, c.serve)
				ids, err := collect(t, f.c, sampledb.ListOptions{PageSize: 2, Brief: brief})
				require.ErrorContains(t, err, "does the server ignore offset?")
				require.Len(t, f.requests(), 2)
				if c.name != "same bad items" {
					require.Equal(t, []string{"a", "b"}, ids)
				}
			})
		}
	}
}

// TestBriefPagesDoNotShareTheirBuffer: a brief listing reads every page
// into a buffer the next page reuses (httpc.DoBorrowed); the jobs of an
// earlier page, kept by the caller, are still what that page said once the
// later ones were read.
func TestBriefPagesDoNotShareTheirBuffer(t *testing.T) {
	t.Parallel()
	const pages, size = 6, 50
	f := newForeign(t, func(w http.ResponseWriter, r *http.Request) {
		off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		items := make([]string, 0, size)
		for i := off; i < off+size && i < pages*size; i++ {
			items = append(items, jobJSON(fmt.Sprintf("job-%04d", i), "executing"))
		}
		writeJSON(w, 200, fmt.Sprintf(`{"count":%d,"data":[%s]}`, pages*size, strings.Join(items, ",")))
	})
	var kept []sampledb.Job
	require.NoError(t, f.c.ListJobs(ctx(t), sampledb.ListOptions{PageSize: size, Brief: true}, func(p []sampledb.Job) error {
		kept = append(kept, p...)
		return nil
	}))
	require.Len(t, kept, pages*size)
	for i, j := range kept {
		require.Equal(t, fmt.Sprintf("job-%04d", i), j.ID)
		require.Equal(t, sampledb.StateExecuting, j.State)
	}
}

// TestCreateTaskAnswerShapes: the task ID is found wherever a SampleDB
// written from the document may put it, never taken from the job, and an
// answer without one is still a created task: one POST, no error, no ID.
func TestCreateTaskAnswerShapes(t *testing.T) {
	t.Parallel()
	const jobID = "12345678-1234-1234-1234-123456789abc"
	const w = "cbc.event_export"
	for _, c := range []struct {
		name   string
		status int
		body   string
		want   sampledb.ID
	}{
		{"our simulator", 200, `{"responseCode":200,"data":{"id":1,"worker":"cbc.event_export","state":"executing","startTimestamp":5,"endTimestamp":0}}`, "1"},
		{"taskId", 201, `{"responseCode":201,"data":{"taskId":"t-7","worker":"cbc.event_export","state":"executing"}}`, "t-7"},
		{"taskID number", 200, `{"data":{"taskID":8}}`, "8"},
		{"task id beside the job's", 200, `{"data":{"id":"` + jobID + `","taskId":9,"state":"executing"}}`, "9"},
		{"the job holding its tasks", 200, `{"data":{"id":"` + jobID + `","state":"executing","tasks":[{"id":3,"worker":"sophos.xdr_query","state":"executing"},{"id":4,"worker":"cbc.event_export","state":"executing"}]}}`, "4"},
		{"no envelope", 201, `{"id":10,"worker":"cbc.event_export","state":"executing"}`, "10"},
		{"bare id", 200, `{"data":11}`, "11"},
		{"bare list, no envelope", 200, `[{"id":12,"worker":"cbc.event_export","state":"executing"}]`, "12"},
		{"bare number, no envelope", 201, `13`, "13"},
		{"ID with leading zeros", 200, `{"data":{"id":"0042"}}`, "0042"},

		{"the job only", 200, `{"responseCode":200,"data":{"id":"` + jobID + `","state":"executing","abortRequested":false}}`, ""},
		{"data null", 201, `{"responseCode":201,"data":null}`, ""},
		{"empty body", 201, ``, ""},
		{"no content", 204, ``, ""},
		{"not JSON", 200, `created`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newForeign(t, answerOnly(http.MethodPost, jobRoot+"/"+jobID+"/task", c.status, c.body))
			tk, err := f.c.CreateTask(ctx(t), jobID, w)
			require.NoError(t, err)
			require.Equal(t, c.want, tk.ID)
			require.NotEqual(t, sampledb.ID(jobID), tk.ID)
			require.Equal(t, w, tk.Worker)
			require.Equal(t, sampledb.TaskExecuting, tk.State)
			require.Len(t, f.requests(), 1, "a created task is never posted again")
			warned := f.logs.FilterMessageSnippet("names no task ID").Len()
			require.Equal(t, c.want == "", warned == 1)
		})
	}
}

// TestUpdateTaskAcceptsAny2xx: the answer to a task update is not
// documented and not used: any 2xx is success.
func TestUpdateTaskAcceptsAny2xx(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		status int
		body   string
		want   sampledb.Task
	}{
		{"our simulator", 200, `{"data":{"id":5,"worker":"w","state":"success","startTimestamp":1,"endTimestamp":2}}`,
			sampledb.Task{ID: "5", Worker: "w", State: "success", StartTimestamp: 1, EndTimestamp: 2}},
		{"no content", 204, ``, sampledb.Task{ID: "5", State: "success"}},
		{"empty body", 200, ``, sampledb.Task{ID: "5", State: "success"}},
		{"data null", 200, `{"responseCode":200,"data":null}`, sampledb.Task{ID: "5", State: "success"}},
		{"the job", 200, `{"data":` + jobJSON("J", "executing") + `}`, sampledb.Task{ID: "5", State: "success"}},
		{"another task", 200, `{"data":{"id":6,"state":"failed"}}`, sampledb.Task{ID: "5", State: "success"}},
		{"a list", 200, `[]`, sampledb.Task{ID: "5", State: "success"}},
		{"not JSON", 202, `accepted`, sampledb.Task{ID: "5", State: "success"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newForeign(t, answerOnly(http.MethodPut, jobRoot+"/J/task/5", c.status, c.body))
			tk, err := f.c.UpdateTask(ctx(t), "J", "5", sampledb.TaskSuccess)
			require.NoError(t, err)
			require.Equal(t, c.want, *tk)
			require.Len(t, f.requests(), 1)
		})
	}
}

// TestJobStatesAnyCase: a state in another case is read lower-case, so
// "ABORTED" is terminal.
func TestJobStatesAnyCase(t *testing.T) {
	t.Parallel()
	f := newForeign(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"data":{"id":"J","state":"ABORTED"}}`)
	})
	j, err := f.c.GetJob(ctx(t), "J")
	require.NoError(t, err)
	require.Equal(t, sampledb.StateAborted, j.State)
	require.True(t, sampledb.IsTerminal(j.State))
	j, err = f.c.UpdateJob(ctx(t), "J", sampledb.StateAborted)
	require.NoError(t, err)
	require.Equal(t, sampledb.StateAborted, j.State)
}

// TestForbiddenNamesTheRoles: a 403 says which role the call needs.
func TestForbiddenNamesTheRoles(t *testing.T) {
	t.Parallel()
	const noRoleKey = "nobody/k3y-S3CRET-0004"
	srv := sim.New(sim.Config{Keys: map[string]sim.Role{viewerKey: sim.RoleViewer, noRoleKey: "SAMPLEDB-NOTHING"}})
	hs := httptest.NewServer(srv)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(func() { srv.Close(); hs.Close(); tr.CloseIdleConnections() })
	srv.CreateJob(job.Message{JobID: "J"})
	client := func(key string) *sampledb.Client {
		c, err := sampledb.New(sampledb.Config{URL: hs.URL, APIKey: key, Transport: tr})
		require.NoError(t, err)
		return c
	}
	viewer, nobody := client(viewerKey), client(noRoleKey)

	_, err := viewer.UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	require.ErrorIs(t, err, sampledb.ErrForbidden)
	require.ErrorContains(t, err, "(PUT/POST) needs SAMPLEDB-ANALYZER")
	require.ErrorContains(t, err, "(GET) SAMPLEDB-VIEWER or higher")
	_, err = viewer.CreateTask(ctx(t), "J", "cbc.event_export")
	require.ErrorContains(t, err, "(PUT/POST) needs SAMPLEDB-ANALYZER")
	_, err = nobody.GetJob(ctx(t), "J")
	require.ErrorIs(t, err, sampledb.ErrForbidden)
	require.ErrorContains(t, err, "needs SAMPLEDB-VIEWER or higher")
	require.NotContains(t, err.Error(), "ANALYZER")
	err = nobody.ListJobs(ctx(t), sampledb.ListOptions{}, func([]sampledb.Job) error { return nil })
	require.ErrorContains(t, err, "needs SAMPLEDB-VIEWER or higher")
	err = nobody.SearchJobs(ctx(t), sampledb.SearchCriteria{}, func([]sampledb.Job) error { return nil })
	require.ErrorContains(t, err, "needs SAMPLEDB-VIEWER or higher")
	_, err = viewer.AbortJob(ctx(t), "J")
	require.ErrorContains(t, err, "needs SAMPLEDB-USER or higher")
	requireNoKey(t, err)
}

// TestJobMessageFieldsTheFleetDoesNotRead: producers may send other shapes
// than the document shows for fields the fleet never reads; the message
// decodes, the fields it reads are intact, objects are kept verbatim.
func TestJobMessageFieldsTheFleetDoesNotRead(t *testing.T) {
	t.Parallel()
	raw := `{
	  "jobID": "12345678-1234-1234-1234-123456789abc",
	  "submission": {
	    "id": 17,
	    "customer": "acme",
	    "sample": {"id": "` + sha + `", "size": 5},
	    "createdByUser": {"id": "u-1", "shortName": 5, "name": "n", "customer": {"id": 1, "shortName": "acme"}, "domain": {"id": 2, "name": "d"}},
	    "createdTimestamp": "2024-01-01T00:00:00Z",
	    "name": "x.exe",
	    "timestamp": 1.5,
	    "mimeType": null,
	    "metaData": {"sensorId": 9007199254740993},
	    "tlp": {"name": "white"},
	    "acl": {"x": 1},
	    "userAgent": {"name": "python-requests", "version": 3}
	  },
	  "classification": {
	    "sample": "` + sha + `",
	    "classificationID": 5,
	    "createdTimestamp": "yesterday",
	    "version": 1,
	    "type": "PE",
	    "superType": ["executable"],
	    "arch": 64,
	    "platform": "win",
	    "meta": []
	  }
	}`
	var m job.Message
	require.NoError(t, json.Unmarshal([]byte(raw), &m))
	require.Equal(t, "12345678-1234-1234-1234-123456789abc", m.JobID)
	require.Equal(t, "acme", m.Submission.Customer)
	require.Equal(t, sha, m.Submission.Sample.ID)
	require.Equal(t, "x.exe", m.Submission.Name)
	require.Equal(t, json.Number("9007199254740993"), m.Submission.MetaData["sensorId"])
	require.Equal(t, "PE", m.Classification.Type)
	require.Equal(t, "win", m.Classification.Platform)
	require.Equal(t, sha, m.Classification.Sample)
	require.Equal(t, "n", m.Submission.CreatedByUser.Name)
	require.JSONEq(t, `{"id": 1, "shortName": "acme"}`, string(m.Submission.CreatedByUser.Customer))
	require.JSONEq(t, `{"id": 2, "name": "d"}`, string(m.Submission.CreatedByUser.Domain))
	require.Equal(t, "python-requests", m.Submission.UserAgent.Name)
	require.Zero(t, m.Submission.UserAgent.Version, "a number where the document shows a string is left out")
	require.Zero(t, m.Classification.Version)
	require.JSONEq(t, `[]`, string(m.Classification.Meta))

	// Re-encoded (the reconciler's re-seed) and read again: the same.
	b, err := json.Marshal(m)
	require.NoError(t, err)
	var again job.Message
	require.NoError(t, json.Unmarshal(b, &again))
	b2, err := json.Marshal(again)
	require.NoError(t, err)
	require.Equal(t, string(b), string(b2))
	require.Equal(t, m.Submission.MetaData, again.Submission.MetaData)

	// The document's nulls stay nulls.
	var u job.User
	require.NoError(t, json.Unmarshal([]byte(`{"id":0,"shortName":"sn","name":"name","customer":null,"domain":null}`), &u))
	b, err = json.Marshal(u)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":0,"shortName":"sn","name":"name","customer":null,"domain":null}`, string(b))
	for _, odd := range []string{`"bob"`, `7`, `[]`, `null`, `true`} {
		require.NoError(t, json.Unmarshal([]byte(`{"createdByUser":`+odd+`,"userAgent":`+odd+`}`), &job.Submission{}), odd)
	}
}

// TestJobMessageFieldsTheFleetReads stay strict: a wrong type is a
// *json.UnmarshalTypeError naming the field, so the consumer dead-letters
// the record.
func TestJobMessageFieldsTheFleetReads(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		body, field string
	}{
		{`{"jobID": 5}`, "jobID"},
		{`{"submission": "x"}`, "submission"},
		{`{"submission": [1]}`, "submission"},
		{`{"submission": {"customer": {"id": 1}}}`, "submission.customer"},
		{`{"submission": {"sample": "` + sha + `"}}`, "submission.sample"},
		{`{"submission": {"sample": {"id": 5}}}`, "submission.sample.id"},
		{`{"submission": {"name": 5}}`, "submission.name"},
		{`{"submission": {"metaData": "k=v"}}`, "submission.metaData"},
		{`{"submission": {"metaData": [1]}}`, "submission.metaData"},
		{`{"classification": 5}`, "classification"},
		{`{"classification": {"platform": ["win"]}}`, "classification.platform"},
		{`{"classification": {"type": 1}}`, "classification.type"},
		{`{"classification": {"sample": {"id": "x"}}}`, "classification.sample"},
	} {
		var m job.Message
		err := json.Unmarshal([]byte(c.body), &m)
		var te *json.UnmarshalTypeError
		require.ErrorAs(t, err, &te, c.body)
		require.Equal(t, c.field, te.Field, c.body)
	}

	// Decoded alone (as the client reads a job's submission), the other
	// fields survive a wrong one.
	var s job.Submission
	err := json.Unmarshal([]byte(`{"customer":"acme","name":5,"sample":{"id":"`+sha+`"},"tlp":"white","metaData":{"k":1}}`), &s)
	var te *json.UnmarshalTypeError
	require.ErrorAs(t, err, &te)
	require.Equal(t, "acme", s.Customer)
	require.Equal(t, sha, s.Sample.ID)
	require.Equal(t, "white", s.TLP)
	require.Equal(t, map[string]any{"k": json.Number("1")}, s.MetaData)
}
