package sampledb

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// ordinaryBriefPage is a page of the abort listing as the simulator serves
// it (BenchmarkDecodeBriefPage's): n active jobs with their submissions.
func ordinaryBriefPage(tb testing.TB, n int) []byte {
	tb.Helper()
	items := make([]map[string]any, n)
	for i := range items {
		items[i] = map[string]any{
			"id": fmt.Sprintf("%08d-1234-1234-1234-123456789abc", i), "state": "executing", "abortRequested": false,
			"enqueuedTimestamp": 1764763200000, "startTimestamp": 1764763201000, "endTimestamp": 0,
			"submission": map[string]any{"customer": "acme", "sample": map[string]any{
				"id": "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9", "fileName": "invoice.exe",
				"mimeType": "application/x-dosexec", "size": 123456},
				"createdByUser": map[string]any{"id": 42, "userName": "analyst"}, "priority": "normal",
				"sensors": []string{"WIN-01", "WIN-02"}},
			"classification": map[string]any{"verdict": "unknown"},
		}
	}
	body, err := json.Marshal(map[string]any{"responseCode": 200, "limit": n, "offset": 0, "count": 100000, "size": n, "data": items})
	require.NoError(tb, err)
	return body
}

// requireSameBrief fails unless the fast reading of b is the reference's.
// It returns whether the fast way read b.
func requireSameBrief(t *testing.T, b []byte) bool {
	t.Helper()
	fast, ok := decodeBriefEnvelopeFast(b)
	if !ok {
		return false
	}
	ref, refOK := decodeBriefEnvelopeRef(b)
	if !refOK {
		t.Fatalf("fast read a body the reference does not: %q", b)
	}
	require.NotNil(t, fast.brief, "%q", b)
	require.NotNil(t, ref.brief, "%q", b)
	fp, rp := *fast.brief, *ref.brief
	require.Equal(t, rp.items, fp.items, "items of %q", b)
	require.Equal(t, rp.bad, fp.bad, "bad items of %q", b)
	require.Equal(t, fmt.Sprint(rp.first), fmt.Sprint(fp.first), "first error of %q", b)
	require.Equal(t, rp.jobs, fp.jobs, "jobs of %q", b)
	require.Equal(t, ref.sum, fast.sum, "sum of %q", b)
	fast.brief, ref.brief = nil, nil
	require.Equal(t, ref, fast, "envelope of %q", b)
	return true
}

// TestBriefFastOrdinary holds ordinary pages to the fast way: it reads
// them (else every listing would pay for the reference) and reads them as
// the reference does.
func TestBriefFastOrdinary(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		string(ordinaryBriefPage(t, 1000)),
		string(ordinaryBriefPage(t, 1)),
		`{"responseCode":200,"limit":25,"offset":0,"count":0,"size":0,"metaData":{},"messages":[],"data":[]}`,
		`{"responseCode":200,"data":[{"id":"a","state":"enqueued"},{"id":5,"state":"executing","startTimestamp":"1.5e3"}]}`,
		" {\n \"data\" : [ {\"id\":\"ABCDEF01-1234-1234-1234-123456789ABC\" , \"state\":\"EXECUTING\",\"startTimestamp\":\"1700000000000\"} ,\tnull, {\"state\":\"x\"}, {\"id\":\"J\"}, {} ] ,\"count\":\"7\"}\r\n",
		`{"metaData":{"k":"v","n":[1,2.5e-3,true,false,null]},"messages":[{"type":"ERROR","message":"m\u00e9","field":"state"},"plain"],"data":[{"id":"J","state":" Success ","abortRequested":true,"endTimestamp":"2023-11-14T22:13:20.5Z","submission":{"fileName":"r\u00e9sum\u00e9 \ud83d\ude00.exe","note":"é \"quoted\"\\"}}]}`,
		`{"data":[{"id":-0.5e+2,"state":"failed","enqueuedTimestamp":-12,"startTimestamp":12.0,"endTimestamp":null,"abortRequested":null,"id2":"x"}],"size":1e2}`,
		`{"data":[{"id":"J","state":"executing","enqueuedTimestamp":1234567890123456789}]}`,
	} {
		require.True(t, requireSameBrief(t, []byte(body)), "the fast way did not read %.200q", body)
	}
	// In decodeBriefEnvelope too: the page is the fast way's.
	env, ok := decodeBriefEnvelope(ordinaryBriefPage(t, 3))
	require.True(t, ok)
	require.Len(t, env.brief.jobs, 3)
	require.Equal(t, "00000002-1234-1234-1234-123456789abc", env.brief.jobs[2].ID)
	require.EqualValues(t, 1764763201000, env.brief.jobs[2].StartTimestamp)
	require.Equal(t, 100000, env.Count)
}

// FuzzBriefFastMatchesReference holds decodeBriefEnvelopeFast to
// decodeBriefEnvelopeRef: whatever the fast way reads, the reference reads
// the same (envelope, page, first error).
func FuzzBriefFastMatchesReference(f *testing.F) {
	for _, s := range append(envelopeSeeds,
		// Ordinary pages, and the odd things the fast way reads itself.
		string(ordinaryBriefPage(f, 2)),
		`{"responseCode":200,"limit":25,"offset":0,"count":0,"size":0,"metaData":{},"messages":[],"data":[]}`,
		" {\n \"data\" : [ {\"id\":\"ABCDEF01-1234-1234-1234-123456789ABC\" , \"state\":\"EXECUTING\",\"startTimestamp\":\"1700000000000\"} ,\tnull, {\"state\":\"x\"}, {\"id\":\"J\"}, {} ] ,\"count\":\"7\"}\r\n",
		`{"metaData":{"k":"v","n":[1,2.5e-3,true,false,null]},"messages":[{"type":"ERROR","message":"m\u00e9","field":"state"},"plain"],"data":[{"id":"J","state":" Success ","abortRequested":true,"endTimestamp":"2023-11-14T22:13:20.5Z","submission":{"fileName":"r\u00e9sum\u00e9 \ud83d\ude00.exe","note":"é \"quoted\"\\"}}]}`,
		`{"data":[{"id":-0.5e+2,"state":"failed","enqueuedTimestamp":-12,"startTimestamp":12.0,"endTimestamp":null,"abortRequested":null,"id2":"x"}],"size":1e2}`,
		`{"data":[{"id":"J","state":"executing","enqueuedTimestamp":1234567890123456789,"endTimestamp":"0042","startTimestamp":" 7 "}]}`,
		`{"data":[{"id":"\u004a","state":"executing","x":"\ud800"}]}`,
		`{"data":[{"id":"J","state":"executing"}]}x`,
		`{"data":[{"id":"J","state":"executing"},]}`,
		`{"data":[{"id":"J","state":"executing","x":[1,]}]}`,
		`{"data":[{"id":true,"state":"executing"}]}`,
		`{"data":[{"id":"J","state":"executing","abortRequested":"true"}]}`,
		`{"data":[{"id":"J","state":"executing","x":01}]}`,
		`{"data":[{"id":"J","state":"executing","endTimestamp":{}}]}`,
		`{"data":[{"id":"J","state":"executing"}],"metaData":{"a":{"b":[[[{}]]]}}}`,
		"{\"data\":[{\"id\":\"J\",\"state\":\"exe\tcuting\"}]}",
	) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fastRead := requireSameBrief(t, b)
		// decodeBriefEnvelope is the fast way's reading, else the
		// reference's.
		got, ok := decodeBriefEnvelope(b)
		ref, refOK := decodeBriefEnvelopeRef(b)
		require.Equal(t, refOK, ok, "%q", b)
		if !ok {
			return
		}
		if !fastRead {
			require.Equal(t, ref.brief.jobs, got.brief.jobs, "%q", b)
		}
		require.Equal(t, ref.brief.items, got.brief.items, "%q", b)
		require.Equal(t, ref.sum, got.sum, "%q", b)
		got.brief, ref.brief = nil, nil
		require.Equal(t, ref, got, "%q", b)
	})
}

// BenchmarkDecodeBriefEnvelopeFast compares the fast way of reading a page
// of the abort listing with the reference (BenchmarkDecodeBriefPage's page).
func BenchmarkDecodeBriefEnvelopeFast(b *testing.B) {
	body := ordinaryBriefPage(b, 1000)
	for _, c := range []struct {
		name   string
		decode func([]byte) (Envelope, bool)
	}{{"fast", decodeBriefEnvelopeFast}, {"reference", decodeBriefEnvelopeRef}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				env, ok := c.decode(body)
				if !ok || len(env.brief.jobs) != 1000 {
					b.Fatal("not read")
				}
			}
		})
	}
}
