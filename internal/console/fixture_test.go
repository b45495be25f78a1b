package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/kafkaview"
	"github.com/analysisfleet/analysisfleet/internal/redact"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/runner"
	"github.com/analysisfleet/analysisfleet/state"
)

func TestMain(m *testing.M) {
	testenv.OnExit(closeBrowser)
	testenv.Main(m)
}

// Job IDs of the fixture.
const (
	jobRunning  = "11111111-1111-4111-8111-111111111111" // w1, cbc done, sophos polling (with a failed poll)
	jobTakeover = "22222222-2222-4222-8222-222222222222" // w1 → released by an operator → claimed by w2
	jobAbort    = "33333333-3333-4333-8333-333333333333" // w2, abort requested
	jobDone     = "44444444-4444-4444-8444-444444444444" // finished success, with a result summary
	jobOther    = "55555555-5555-4555-8555-555555555555" // w2, customer globex, cytomic
)

// secret is a credential the fleet knows; it must never be rendered.
const secret = "s3cr3t-api-key-0123456789"

// world is a ledger with the fixture's jobs and a console over it.
type world struct {
	t     *testing.T
	rdb   *redis.Client
	st    *state.Store
	sess  map[string]state.Session
	srv   *Server
	http  *httptest.Server
	kafka *fakeKafka
}

type opts struct {
	write       bool
	token       string
	proxyHeader string
	interval    time.Duration
	maxStreams  int
	noKafka     bool
	kafka       Kafka // instead of the fake (a KafkaReader over kfake)
}

func ctx(t testing.TB) context.Context { return testutil.Context(t, time.Minute) }

func newWorld(t *testing.T, o opts) *world {
	t.Helper()
	rdb, ns := testenv.RedisClient(t)
	st, err := state.New(rdb, state.Config{Namespace: ns, LeaseTTL: 10 * time.Minute})
	require.NoError(t, err)
	require.NoError(t, st.Load(ctx(t)))
	w := &world{t: t, rdb: rdb, st: st, sess: map[string]state.Session{}}
	w.populate()
	w.start(o)
	return w
}

func (w *world) start(o opts) {
	w.t.Helper()
	cfg := Config{Store: w.st, Write: o.write, ProxyHeader: o.proxyHeader, Redact: redact.New(secret),
		Interval: o.interval, MaxStreams: o.maxStreams}
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	switch {
	case o.kafka != nil:
		cfg.Kafka = o.kafka
	case !o.noKafka:
		w.kafka = &fakeKafka{}
		cfg.Kafka = w.kafka
	}
	if o.token != "" {
		cfg.TokenFile = filepath.Join(w.t.TempDir(), "token")
		require.NoError(w.t, os.WriteFile(cfg.TokenFile, []byte(o.token+"\n"), 0o600))
	}
	srv, err := New(cfg)
	require.NoError(w.t, err)
	w.srv = srv
	w.http = httptest.NewServer(srv.Handler())
	w.t.Cleanup(func() {
		w.http.CloseClientConnections() // a browser's live stream too
		w.http.Close()
	})
}

func (w *world) session(worker string) state.Session {
	if s, ok := w.sess[worker]; ok {
		return s
	}
	s, _, err := w.st.OpenSession(ctx(w.t), worker)
	require.NoError(w.t, err)
	w.sess[worker] = s
	return s
}

func jobMsg(id, sha, customer, platform string) []byte {
	return fmt.Appendf(nil, `{"jobID":%q,"submission":{"id":"sub-%s","customer":%q,"sample":{"id":%q}},`+
		`"classification":{"sample":%q,"type":"PE","platform":%q}}`, id, id, customer, sha, sha, platform)
}

func (w *world) admit(worker, id, customer, platform, source string) state.Lease {
	w.t.Helper()
	sha := strings.Repeat(id[:1], 64)
	res, _, err := w.st.Admit(ctx(w.t), w.session(worker), []state.AdmitRequest{{ID: id, Msg: jobMsg(id, sha, customer, platform), Source: source}})
	require.NoError(w.t, err)
	require.Equal(w.t, state.Admitted, res[0].Outcome)
	return res[0].Lease
}

// note writes checkpoint fields and timeline events as the runner does.
func (w *world) note(worker string, l state.Lease, evs []string, cps ...state.TaskCheckpoint) {
	w.t.Helper()
	var events []state.Event
	for i := 0; i < len(evs); i += 2 {
		events = append(events, state.Event{At: time.Now(), Ev: evs[i], Worker: worker, Token: l.Token, Detail: evs[i+1]})
	}
	var kv []string
	for _, cp := range cps {
		n, v := cp.Field()
		kv = append(kv, n, v)
	}
	require.NoError(w.t, w.st.CheckpointNotes(ctx(w.t), w.session(worker), l, events, kv...))
}

func plan(kinds ...string) (string, string) {
	var p []state.PlannedTask
	for _, k := range kinds {
		p = append(p, state.PlannedTask{Kind: k, Timeout: state.Duration(time.Hour)})
	}
	return state.PlanField(p)
}

func (w *world) populate() {
	t := w.t
	c := ctx(t)
	// Running: cbc finished, sophos polling; its last poll failed with a
	// pre-signed URL and the API key in the error text.
	l := w.admit("w1", jobRunning, "acme", "win", "Sample.Analysis.Job.OSL/0@41")
	pn, pv := plan("cbc.event_export", "sophos.xdr_query")
	require.NoError(t, w.st.Checkpoint(c, w.session("w1"), l, pn, pv))
	w.note("w1", l, []string{"executing", "", "task created", "cbc.event_export", "vendor operation started", "cbc.event_export job 77"},
		state.TaskCheckpoint{Kind: "cbc.event_export", State: "success", TaskID: "9001", Attempts: 1, Polls: 4,
			Ref: json.RawMessage(`{"job":"77"}`), Result: &edr.Result{Rows: 3, Hosts: []string{"host-a"}, HostsTotal: 1}},
		state.TaskCheckpoint{Kind: "sophos.xdr_query", TaskID: "9002", Attempts: 1, Polls: 7,
			Ref:       json.RawMessage(`{"run":"r-1"}`),
			LastError: "GET https://bucket.s3.amazonaws.com/x?X-Amz-Signature=abcdef123456&X-Amz-Credential=AKIA: 503; key " + secret,
			NextPoll:  time.Now().Add(30 * time.Second).UnixMilli()})

	// Taken over: w1 held it, an operator released it, w2 claimed it.
	l = w.admit("w1", jobTakeover, "acme", "linux", "Sample.Analysis.Job.SVG/1@7")
	pn, pv = plan("cbc.event_export")
	require.NoError(t, w.st.Checkpoint(c, w.session("w1"), l, pn, pv))
	_, ok, err := w.st.ForceRelease(c, jobTakeover, "")
	require.NoError(t, err)
	require.True(t, ok)
	claimed, _, err := w.st.Claim(c, w.session("w2"), 10)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	w.note("w2", claimed[0].Lease, []string{"executing", "resumed from checkpoints"})

	// Abort requested.
	l = w.admit("w2", jobAbort, "acme", "win", "Sample.Analysis.Job.OSL/2@3")
	w.note("w2", l, []string{"executing", ""})
	n, err := w.st.NotifyAborts(c, []string{jobAbort}, "")
	require.NoError(t, err)
	require.Equal(t, 1, n)

	// Finished, with its result summary.
	l = w.admit("w2", jobDone, "acme", "win", "Sample.Analysis.Job.OSL/0@40")
	se := w.session("w2")
	w.note("w2", l, []string{"executing", ""})
	_, err = w.st.Decide(c, se, l, []byte(`{"state":"success","by":"w2","at":1}`), state.Event{Ev: "decided", Worker: "w2", Token: l.Token, Detail: "success"})
	require.NoError(t, err)
	sum, _ := results.Encode(&results.Summary{JobID: jobDone, State: "success", Worker: "w2", SHA256: strings.Repeat("4", 64),
		Customer: "acme", Platform: "win",
		Tasks: []results.TaskSummary{{Kind: "cbc.event_export", State: "success",
			Result: &edr.Result{Rows: 12, Hosts: []string{"ws-17", "ws-18"}, HostsTotal: 2,
				Files: []edr.File{{Host: "ws-17", Path: `C:\evil.exe`, Size: 4096, Matches: true}}}}}})
	require.NoError(t, w.st.Complete(c, se, l, "success", state.Event{Ev: "finished", Worker: "w2", Token: l.Token, Detail: "SampleDB answered 200"}, sum))

	// Another customer's job.
	l = w.admit("w2", jobOther, "globex", "mac", "Sample.Analysis.Job.SVG/0@1")
	pn, pv = plan("cytomic.osquery")
	require.NoError(t, w.st.Checkpoint(c, w.session("w2"), l, pn, pv))

	// A 429 cool-down and a limiter with budget spent ahead.
	// (One grant at a rate of one per 100 s spends the budget 100 s ahead.)
	lim := w.st.RateLimiter("sophos:abc123", 0.01, 1, nil)
	require.NoError(t, lim.Wait(c))
	lim.Throttled(c, time.Minute)

	// Both workers heartbeat and publish stats, as the keeper does with
	// its renewals.
	for _, wk := range []string{"w1", "w2"} {
		_, err := w.st.Renew(c, w.session(wk), 2)
		require.NoError(t, err)
	}
	// w1 published its calls (429s, 5xx and network failures apart); w2
	// is draining.
	require.NoError(t, w.rdb.HSet(c, "{"+w.st.Namespace()+"}:worker:w1", "stats",
		`{"since":"2026-12-03T08:00:00Z","vendors":{"sophos":{"ok":90,"retryable":10,"throttled":6,"serverError":3,"network":1,`+
			`"permanent":1,"waiting":4,"running":2},"cbc":{"ok":5}}}`).Err())
	draining, err := json.Marshal(runner.WorkerStats{Since: time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC),
		Draining: true, DrainingSince: time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)})
	require.NoError(t, err)
	require.NoError(t, w.rdb.HSet(c, "{"+w.st.Namespace()+"}:worker:w2", "stats", draining).Err())
}

// get fetches path with the given headers and returns status and body.
func (w *world) get(path string, hdr ...string) (*http.Response, string) {
	w.t.Helper()
	req, err := http.NewRequestWithContext(ctx(w.t), http.MethodGet, w.http.URL+path, nil)
	require.NoError(w.t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return w.do(req)
}

func (w *world) post(path string, form url.Values, hdr ...string) (*http.Response, string) {
	w.t.Helper()
	req, err := http.NewRequestWithContext(ctx(w.t), http.MethodPost, w.http.URL+path, strings.NewReader(form.Encode()))
	require.NoError(w.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return w.do(req)
}

func (w *world) do(req *http.Request) (*http.Response, string) {
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Do(req)
	require.NoError(w.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(w.t, err)
	return resp, string(b)
}

// audit returns the audit stream's entries, oldest first.
func (w *world) audit() []map[string]any {
	w.t.Helper()
	msgs, err := w.rdb.XRange(ctx(w.t), "{"+w.st.Namespace()+"}:audit", "-", "+").Result()
	require.NoError(w.t, err)
	var out []map[string]any
	for _, m := range msgs {
		out = append(out, m.Values)
	}
	return out
}

// fakeKafka serves fixed lag and dead letters.
type fakeKafka struct {
	mu       sync.Mutex
	asked    []fakeReplay
	replayed int
}

func (*fakeKafka) Lag(context.Context) (*kafkaview.Lag, error) {
	return &kafkaview.Lag{Total: 17, Topics: []kafkaview.TopicLag{{Topic: "Sample.Analysis.Job.OSL", Lag: 17}}}, nil
}

func (*fakeKafka) DeadLetters(context.Context) (*DeadLetters, error) {
	at := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	return &DeadLetters{Topic: "Sample.Analysis.Job.DLQ", Records: 3, Oldest: at, Read: 3, Replayable: 1, Groups: []LetterGroup{
		{Reason: "bad-json", Raw: "bad-json", Count: 2, Replayable: 1, Letters: []Letter{{Partition: 0, Offset: 1, Time: at, Error: "invalid character", Source: "Sample.Analysis.Job.OSL/0@9",
			ValueBytes: 9, Preview: `{"jobID":` + secret, Replayable: true},
			{Partition: 0, Offset: 3, Time: at, Error: "invalid character", Source: "Sample.Analysis.Result/0@1", ValueBytes: 19,
				Preview: `{"state":"success"}`, Why: `its source topic "Sample.Analysis.Result" is not a job topic`}}},
		{Reason: "bad-hash", Raw: "bad-hash", Count: 1, Letters: []Letter{{Partition: 0, Offset: 2, Time: at, Error: "sample hash is not 64 hex", ValueBytes: 40,
			Preview: `{"jobID":"x"}`, Why: "no dlq-source-topic header"}}},
	}}, nil
}

// Replay answers as a DLQ holding the letters DeadLetters shows would:
// 0@1 (bad-json, from a job topic) replayable; 0@2 (bad-hash, no source)
// and 0@3 (bad-json, forged into the result topic) refused. It records
// what it was asked.
func (f *fakeKafka) Replay(_ context.Context, sel ReplaySelection, dry bool) (*ReplayResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, fakeReplay{sel, dry})
	res := &ReplayResult{Topic: "Sample.Analysis.Job.DLQ", DryRun: dry, UpTo: map[int32]int64{0: 4}, ByRefusedTopic: map[string]int{}}
	refused := func(why string) {
		res.Skipped++
		res.Why = why
	}
	switch {
	case sel.Letter != nil && *sel.Letter == (kafkaview.Pos{Partition: 0, Offset: 1}):
		res.Matched, res.Replayable = 1, 1
	case sel.Letter != nil && *sel.Letter == (kafkaview.Pos{Partition: 0, Offset: 2}):
		res.Matched = 1
		refused("no dlq-source-topic header")
	case sel.Letter != nil && *sel.Letter == (kafkaview.Pos{Partition: 0, Offset: 3}):
		res.Matched, res.RefusedTopic, res.ByRefusedTopic[`"Sample.Analysis.Result"`] = 1, 1, 1
		refused(`its source topic "Sample.Analysis.Result" is not a job topic`)
	case sel.Letter != nil:
		return nil, ErrNoLetter
	case sel.Reason == "bad-json":
		res.Matched, res.Replayable, res.Skipped, res.RefusedTopic, res.ByRefusedTopic[`"Sample.Analysis.Result"`] = 2, 1, 1, 1, 1
	case sel.Reason == "bad-hash":
		res.Matched, res.Skipped = 1, 1
	}
	if !dry {
		res.Replayed = res.Replayable
		f.replayed += res.Replayed
	}
	return res, nil
}

type fakeReplay struct {
	sel ReplaySelection
	dry bool
}
