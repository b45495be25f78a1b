package sampledb

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/analysisfleet/analysisfleet/job"
	"github.com/stretchr/testify/require"
)

// requireDecoded checks what a decoder returned: an error when ok is false,
// else no error and want.
func requireDecoded[T any](t *testing.T, ok bool, want, got T, err error) {
	t.Helper()
	if !ok {
		require.Error(t, err)
		return
	}
	require.NoError(t, err)
	require.Equal(t, want, got)
}

func TestDecodeEnvelope(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		body string
		ok   bool
		want Envelope
	}{
		{"full", `{"responseCode":200,"limit":25,"offset":50,"count":120,"size":25,"metaData":{"k":"v"},"messages":[],"data":[]}`, true,
			Envelope{ResponseCode: 200, Limit: 25, Offset: 50, Count: 120, Size: 25, MetaData: map[string]any{"k": "v"}, Data: json.RawMessage(`[]`)}},
		{"nulls and strings", ` {"count":"7","size":null,"metaData":null,"messages":null,"data":null,"extra":{"x":[1]}} `, true,
			Envelope{Count: 7, Data: json.RawMessage(`null`)}},
		{"odd metaData and messages", `{"metaData":[1],"messages":{"a":1},"count":1.0}`, true, Envelope{Count: 1}},
		{"messages", `{"messages":[{"type":"ERROR","message":"m","field":"state","timestamp":1},"plain",{"message":{"nested":true}},7,{}]}`, true,
			Envelope{Messages: []Message{{Type: "ERROR", Message: "m", Field: "state"}, {Message: "plain"}, {Message: `{"nested":true}`}}}},
		{"array", `[]`, false, Envelope{}},
		{"null", `null`, false, Envelope{}},
		{"empty", ``, false, Envelope{}},
		{"truncated", `{"data": [ {"id": "trunc`, false, Envelope{}},
		{"count not a number", `{"count":"many"}`, false, Envelope{}},
		{"count a bool", `{"count":true}`, false, Envelope{}},
		{"html", `<html>502</html>`, false, Envelope{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env, err := decodeEnvelope([]byte(c.body))
			requireDecoded(t, c.ok, c.want, env, err)
		})
	}
}

func TestDecodeJob(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		data string
		ok   bool
		want Job
	}{
		{"ours", `{"id":"J","state":"executing","abortRequested":false,"submission":{"customer":"c","sample":{"id":"h"}},"classification":{"platform":"win"},"enqueuedTimestamp":1,"startTimestamp":2,"endTimestamp":0}`, true,
			Job{ID: "J", State: "executing", Submission: job.Submission{Customer: "c", Sample: job.Sample{ID: "h"}}, Classification: job.Classification{Platform: "win"}, EnqueuedTimestamp: 1, StartTimestamp: 2}},
		{"loose", `{"id":42,"state":"success","abortRequested":null,"submission":null,"enqueuedTimestamp":"2023-11-14T22:13:20Z","endTimestamp":1.5e3}`, true,
			Job{ID: "42", State: "success", EnqueuedTimestamp: 1_700_000_000_000, EndTimestamp: 1500}},
		{"no id", `{"state":"executing"}`, false, Job{}},
		{"null id", `{"id":null,"state":"executing"}`, false, Job{}},
		{"no state", `{"id":"J"}`, false, Job{}},
		{"state not a string", `{"id":"J","state":3}`, false, Job{}},
		{"submission not an object", `{"id":"J","state":"enqueued","submission":"x"}`, false, Job{}},
		{"bad timestamp", `{"id":"J","state":"enqueued","startTimestamp":"yesterday"}`, false, Job{}},
		{"array", `[{"id":"J","state":"enqueued"}]`, false, Job{}},
		{"absent", ``, false, Job{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			j, err := decodeJob(json.RawMessage(c.data))
			requireDecoded(t, c.ok, c.want, j, err)
		})
	}
}

func TestDecodeTaskAndLists(t *testing.T) {
	t.Parallel()
	tk, err := decodeTask(json.RawMessage(`{"id":"7","worker":"w","state":"executing","startTimestamp":3,"endTimestamp":null,"extra":1}`))
	require.NoError(t, err)
	require.Equal(t, Task{ID: "7", Worker: "w", State: "executing", StartTimestamp: 3}, tk)
	_, err = decodeTask(json.RawMessage(`{"worker":"w"}`))
	require.Error(t, err)
	_, err = decodeTask(json.RawMessage(`{"id":{"x":1}}`))
	require.Error(t, err)

	ts, err := decodeTasks(json.RawMessage(`[{"id":1},{"id":"2"}]`))
	require.NoError(t, err)
	require.Equal(t, []ID{"1", "2"}, []ID{ts[0].ID, ts[1].ID})
	pg, err := decodeJobs(json.RawMessage(`null`), false)
	require.NoError(t, err)
	require.Empty(t, pg.jobs)
	require.Zero(t, pg.items)
	_, err = decodeJobs(json.RawMessage(`{"id":"J","state":"x"}`), false)
	require.Error(t, err, "data that is not a list")
	_, err = decodeJobs(nil, false)
	require.Error(t, err, "a list answer without data")

	// One bad item does not fail the page: it is skipped and counted, in
	// a whole listing and in a brief one alike.
	for _, brief := range []bool{false, true} {
		pg, err = decodeJobs(json.RawMessage(`[{"id":"J","state":"x"},{"id":"K"},7,{"id":"L","state":"EXECUTING","abortRequested":true,"submission":{"customer":"acme"}},{"id":"M","state":"x","startTimestamp":"yesterday"}]`), brief)
		require.NoError(t, err)
		require.Equal(t, 5, pg.items)
		require.Equal(t, 3, pg.bad)
		require.ErrorContains(t, pg.first, "jobs[1]")
		require.Len(t, pg.jobs, 2)
		require.Equal(t, "J", pg.jobs[0].ID)
		require.Equal(t, "L", pg.jobs[1].ID)
		require.Equal(t, StateExecuting, pg.jobs[1].State, "states are lower-cased")
		require.True(t, pg.jobs[1].AbortRequested)
		require.Equal(t, !brief, pg.jobs[1].Submission.Customer == "acme", "brief: no submission")
	}
	// The brief page's one-pass reading: ids canonical, null items counted.
	pg, err = decodeJobs(json.RawMessage(`[{"id":"ABCDEF01-1234-1234-1234-123456789ABC","state":"executing","startTimestamp":"1700000000000"},null,{"state":"x"}]`), true)
	require.NoError(t, err)
	require.Equal(t, 3, pg.items)
	require.Equal(t, 2, pg.bad)
	require.ErrorContains(t, pg.first, "jobs[1]")
	require.Equal(t, "abcdef01-1234-1234-1234-123456789abc", pg.jobs[0].ID)
	require.EqualValues(t, 1_700_000_000_000, pg.jobs[0].StartTimestamp)

	// A task list skips what is not a task.
	ts, err = decodeTasks(json.RawMessage(`[{"id":1},{"worker":"w"},{"taskId":"3"}]`))
	require.NoError(t, err)
	require.Equal(t, []ID{"1", "3"}, []ID{ts[0].ID, ts[1].ID})
}

func TestDecodeStatesAnyCase(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"ABORTED": StateAborted, " Success ": StateSuccess, "executing": StateExecuting, "TimeOut": StateTimeout} {
		j, err := decodeJob(json.RawMessage(`{"id":"J","state":"` + in + `"}`))
		require.NoError(t, err)
		require.Equal(t, want, j.State)
		require.Equal(t, want != StateExecuting, IsTerminal(j.State), in)
	}
	_, err := decodeJob(json.RawMessage(`{"id":"J","state":"  "}`))
	require.Error(t, err, "a blank state is no state")
	tk, err := decodeTask(json.RawMessage(`{"id":"1","state":"CANCELLED"}`))
	require.NoError(t, err)
	require.Equal(t, TaskCancelled, tk.State)
	require.True(t, IsTaskTerminal(tk.State))
}

func TestDecodeTaskIDKeys(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		data string
		want ID
	}{
		{`{"id":7}`, "7"},
		{`{"id":"t-9"}`, "t-9"},
		{`{"taskId":12}`, "12"},
		{`{"taskID":"0042"}`, "0042"},
		{`{"TaskId":"x"}`, "x"},
		{`{"taskId":5,"id":"J"}`, "5"},
		{`{"taskId":null,"id":3}`, "3"},
		{`{"taskId":"","id":3}`, "3"},
		{`{"id":" 8 "}`, "8"},
	} {
		tk, err := decodeTask(json.RawMessage(c.data))
		require.NoError(t, err, c.data)
		require.Equal(t, c.want, tk.ID, c.data)
	}
	for _, bad := range []string{`{}`, `{"id":null}`, `{"id":""}`, `{"id":{"x":1}}`, `{"taskId":[1]}`} {
		_, err := decodeTask(json.RawMessage(bad))
		require.Error(t, err, bad)
	}
}

// TestCreatedTask reads the task ID from every answer shape a SampleDB
// written from the document may give to POST /job/{id}/task, and never
// takes the job's own ID for the task's.
func TestCreatedTask(t *testing.T) {
	t.Parallel()
	const job = "12345678-1234-1234-1234-123456789abc"
	const w = "cbc.event_export"
	for _, c := range []struct {
		name string
		data string
		want ID // "" = no task ID found
		st   string
	}{
		{"task with id", `{"id":7,"worker":"cbc.event_export","state":"executing"}`, "7", TaskExecuting},
		{"string id", `{"id":"t-9"}`, "t-9", TaskExecuting},
		{"taskId", `{"taskId":"11","state":"EXECUTING"}`, "11", TaskExecuting},
		{"taskID number", `{"taskID":12}`, "12", TaskExecuting},
		{"taskId beside the job's id", `{"id":"` + job + `","taskId":13,"state":"executing"}`, "13", TaskExecuting},
		{"bare number", `14`, "14", TaskExecuting},
		{"bare string", `"t-15"`, "t-15", TaskExecuting},
		{"job with task", `{"id":"` + job + `","state":"executing","task":{"id":16,"worker":"cbc.event_export"}}`, "16", TaskExecuting},
		{"job with tasks", `{"id":"` + job + `","state":"executing","tasks":[
			{"id":1,"worker":"cbc.event_export","state":"failed"},
			{"id":2,"worker":"sophos.xdr_query","state":"executing"},
			{"id":3,"worker":"cbc.event_export","state":"executing"},
			{"id":4,"worker":"cytomic.osquery","state":"executing"}]}`, "3", TaskExecuting},
		{"job with only a finished task of ours", `{"id":"` + job + `","tasks":[{"id":1,"worker":"cbc.event_export","state":"failed"}]}`, "1", TaskFailed},
		{"list of tasks", `[{"id":5,"worker":"cbc.event_export","state":"executing"},{"id":6,"worker":"sophos.xdr_query","state":"executing"}]`, "5", TaskExecuting},
		{"upper-case job id", `{"id":"` + strings.ToUpper(job) + `","state":"executing"}`, "", ""},

		{"the job only", `{"id":"` + job + `","state":"executing","abortRequested":false}`, "", ""},
		{"the job, tasks of others", `{"id":"` + job + `","tasks":[{"id":2,"worker":"sophos.xdr_query"}]}`, "", ""},
		{"the job's id bare", `"` + job + `"`, "", ""},
		{"null", `null`, "", ""},
		{"absent", ``, "", ""},
		{"empty object", `{}`, "", ""},
		{"id null", `{"id":null,"worker":"cbc.event_export"}`, "", ""},
		{"id an object", `{"id":{"value":1}}`, "", ""},
		{"bool", `true`, "", ""},
		{"empty list", `[]`, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tk, ok := createdTask(json.RawMessage(c.data), job, w)
			require.Equal(t, c.want != "", ok)
			require.Equal(t, c.want, tk.ID)
			if ok {
				require.Equal(t, w, tk.Worker)
				require.Equal(t, c.st, tk.State)
				require.NotEqual(t, ID(job), tk.ID)
			}
		})
	}
}

func TestIDJSON(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in, out string
	}{
		{`17`, `17`},
		{`-3`, `-3`},
		{`0`, `0`},
		{`1.5`, `1.5`},
		{`1e3`, `1e3`},
		{`12345678901234567890123`, `12345678901234567890123`},
		{`"t-9"`, `"t-9"`},
		{`"0042"`, `"0042"`},
		{`"+7"`, `"+7"`},
		{`"-0x1F"`, `"-0x1F"`},
		{`"1."`, `"1."`},
		{`".5"`, `".5"`},
		{`"1e"`, `"1e"`},
		{`"-"`, `"-"`},
		{`" 7"`, `" 7"`},
		{`"NaN"`, `"NaN"`},
		{`""`, `""`},
	} {
		var id ID
		require.NoError(t, json.Unmarshal([]byte(c.in), &id), c.in)
		b, err := json.Marshal(id)
		require.NoError(t, err)
		require.Equal(t, c.out, string(b), c.in)
		require.True(t, json.Valid(b), c.in)
		var back ID
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, id, back, "round trip")
	}
	// In a struct, as the worker's checkpoints hold it.
	b, err := json.Marshal(struct {
		A, B, C ID
	}{"0042", "+7", "42"})
	require.NoError(t, err)
	require.JSONEq(t, `{"A":"0042","B":"+7","C":42}`, string(b))
}

// FuzzDecodeEnvelope feeds untrusted bytes through every decoder the
// client applies to a SampleDB answer. Nothing may panic, and whatever is
// accepted satisfies the decoders' promises.
// envelopeSeeds are the seeds of the fuzz tests of envelope decoding
// (FuzzDecodeEnvelope, FuzzBriefFastMatchesReference).
var envelopeSeeds = []string{
	`{"responseCode":200,"limit":0,"offset":0,"count":1,"size":1,"metaData":{},"messages":[],"data":{"id":"J","state":"executing","abortRequested":true,"submission":{"id":"s","customer":"c","sample":{"id":"8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"},"metaData":{"sensorIds":["1"]},"acl":[]},"classification":{"platform":"win","type":"PE","meta":{}},"enqueuedTimestamp":1700000000000,"startTimestamp":1700000000001,"endTimestamp":0}}`,
	`{"responseCode":200,"limit":25,"offset":0,"count":2,"size":2,"metaData":{},"messages":[],"data":[{"id":"a","state":"enqueued"},{"id":5,"state":"executing","startTimestamp":"1.5e3"}]}`,
	`{"responseCode":200,"count":1,"size":1,"data":{"id":1,"worker":"cbc.event_export","state":"executing","startTimestamp":1,"endTimestamp":0}}`,
	`{"responseCode":200,"data":[{"id":"1","worker":"w","state":"success"}]}`,
	`{"responseCode":412,"messages":[{"type":"ERROR","message":"illegal","field":"state"},"x",{"message":[1,2]}],"data":null}`,
	`{"count":"7","metaData":[1],"messages":{"a":1},"data":null}`,
	`{"data":{"id":"J","state":"x","enqueuedTimestamp":"2023-11-14T22:13:20.5Z","submission":{"createdByUser":{"id":"x"}}}}`,
	`{"data": [ {"id": "trunc`,
	`[]`, `null`, ``, `{}`, `{"count":1e300}`, `{"count":-1e19}`,
	`{"data":{"id":7,"jobId":"K","worker":"w","state":"executing"}}`,
	`{"data":{"id":"K","state":"executing","tasks":[{"id":3,"JOBID":"J"}]}}`,
	`{"data":[{"id":1,"job_id":null},{"id":2,"jobID":17}]}`,
	// One-pass brief pages against two passes: names in other cases,
	// repeated names, a repeated data, bytes that are not UTF-8.
	`{"data":[{"ID":"a","STATE":"executing","abortrequested":true,"StartTimestamp":"5"}]}`,
	`{"data":[{"id":"a","id":"b","state":"executing","state":"enqueued"}],"count":2,"count":1}`,
	`{"Data":[{"id":"a","state":"executing"}],"data":null}`,
	`{"data":[{"id":"a","state":"executing"}],"DATA":[null,{"id":"b","state":"x"}]}`,
	"{\"data\":[{\"id\":\"\xff\",\"state\":\"executing\"}]}",
	`{"data":[{"id":"a","state":"executing","start_timestamp":1,"start-timestamp":2}]}`,
}

func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range envelopeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := decodeEnvelope(b)
		if err != nil {
			return
		}
		if j, err := decodeJob(env.Data); err == nil {
			if j.ID == "" || j.State == "" {
				t.Fatalf("accepted a job without id or state: %q", b)
			}
			if j.ID != job.CanonicalID(j.ID) {
				t.Fatalf("job id %q is not canonical: %q", j.ID, b)
			}
		}
		if other, ok := otherJobIn(env.Data, "J"); ok && (other == "" || job.SameID(other, "J")) {
			t.Fatalf("our own job (or none) taken for another: %q from %q", other, b)
		}
		full, fullErr := decodeJobs(env.Data, false)
		brief, briefErr := decodeJobs(env.Data, true)
		if (fullErr == nil) != (briefErr == nil) {
			t.Fatalf("a brief reading of the page disagrees on whether it is a page (%v, %v): %q", fullErr, briefErr, b)
		}
		if fullErr == nil {
			for _, pg := range []jobPage{full, brief} {
				if pg.items != len(pg.jobs)+pg.bad || (pg.bad > 0) != (pg.first != nil) {
					t.Fatalf("page counts do not add up: %q", b)
				}
				for _, j := range pg.jobs {
					if j.ID == "" || j.State == "" || j.ID != job.CanonicalID(j.ID) {
						t.Fatalf("accepted a listed job without id or state, or a non-canonical id: %q", b)
					}
				}
			}
			if brief.items != full.items || brief.bad > full.bad {
				t.Fatalf("a brief reading read fewer jobs (%d of %d items, %d bad) than the whole one (%d bad): %q", len(brief.jobs), brief.items, brief.bad, full.bad, b)
			}
		}
		// The one-pass reading of a brief page, where it applies, reads
		// what the envelope and then the page read.
		if one, ok := decodeBriefEnvelope(b); ok {
			if briefErr != nil {
				t.Fatalf("one pass read a page the envelope's data is not (%v): %q", briefErr, b)
			}
			if one.Count != env.Count || one.Limit != env.Limit || one.Offset != env.Offset || one.ResponseCode != env.ResponseCode ||
				one.brief.items != brief.items || one.brief.bad != brief.bad || !reflect.DeepEqual(one.brief.jobs, brief.jobs) {
				t.Fatalf("one pass read %+v, two passes %+v: %q", one.brief, brief, b)
			}
		}
		if tk, err := decodeTask(env.Data); err == nil && tk.ID == "" {
			t.Fatalf("accepted a task without id: %q", b)
		}
		if tk, ok := createdTask(env.Data, "J", "w"); ok && (tk.ID == "" || tk.ID == "J" || tk.Worker == "" || tk.State == "") {
			t.Fatalf("created task without id, or with the job's: %+v from %q", tk, b)
		}
		if ts, err := decodeTasks(env.Data); err == nil {
			for _, tk := range ts {
				if tk.ID == "" {
					t.Fatalf("accepted a listed task without id: %q", b)
				}
			}
		}
		for _, m := range env.Messages {
			if m == (Message{}) {
				t.Fatalf("kept an empty message: %q", b)
			}
		}
	})
}
