package sampledb

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

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
			if !c.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, env)
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
			Job{ID: "J", State: "executing", Submission: Submission{Customer: "c", Sample: Sample{ID: "h"}}, Classification: Classification{Platform: "win"}, EnqueuedTimestamp: 1, StartTimestamp: 2}},
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
			if !c.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, j)
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
	js, err := decodeJobs(json.RawMessage(`null`))
	require.NoError(t, err)
	require.Empty(t, js)
	_, err = decodeJobs(json.RawMessage(`{"id":"J","state":"x"}`))
	require.Error(t, err)
	_, err = decodeJobs(json.RawMessage(`[{"id":"J","state":"x"},{"id":"K"}]`))
	require.ErrorContains(t, err, "jobs[1]")
	_, err = decodeJobs(nil)
	require.Error(t, err, "a list answer without data")
}

// FuzzDecodeEnvelope feeds untrusted bytes through every decoder the
// client applies to a SampleDB answer. Nothing may panic, and whatever is
// accepted satisfies the decoders' promises.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"responseCode":200,"limit":0,"offset":0,"count":1,"size":1,"metaData":{},"messages":[],"data":{"id":"J","state":"executing","abortRequested":true,"submission":{"id":"s","customer":"c","sample":{"id":"8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"},"metaData":{"sensorIds":["1"]},"acl":[]},"classification":{"platform":"win","type":"PE","meta":{}},"enqueuedTimestamp":1700000000000,"startTimestamp":1700000000001,"endTimestamp":0}}`,
		`{"responseCode":200,"limit":25,"offset":0,"count":2,"size":2,"metaData":{},"messages":[],"data":[{"id":"a","state":"enqueued"},{"id":5,"state":"executing","startTimestamp":"1.5e3"}]}`,
		`{"responseCode":200,"count":1,"size":1,"data":{"id":1,"worker":"cbc.event_export","state":"executing","startTimestamp":1,"endTimestamp":0}}`,
		`{"responseCode":200,"data":[{"id":"1","worker":"w","state":"success"}]}`,
		`{"responseCode":412,"messages":[{"type":"ERROR","message":"illegal","field":"state"},"x",{"message":[1,2]}],"data":null}`,
		`{"count":"7","metaData":[1],"messages":{"a":1},"data":null}`,
		`{"data":{"id":"J","state":"x","enqueuedTimestamp":"2023-11-14T22:13:20.5Z","submission":{"createdByUser":{"id":"x"}}}}`,
		`{"data": [ {"id": "trunc`,
		`[]`, `null`, ``, `{}`, `{"count":1e300}`, `{"count":-1e19}`,
	} {
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
		}
		if js, err := decodeJobs(env.Data); err == nil {
			for _, j := range js {
				if j.ID == "" || j.State == "" {
					t.Fatalf("accepted a listed job without id or state: %q", b)
				}
			}
		}
		if tk, err := decodeTask(env.Data); err == nil && tk.ID == "" {
			t.Fatalf("accepted a task without id: %q", b)
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
