package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/sampledb"
	simsdb "github.com/analysisfleet/analysisfleet/sim/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

// The tests in this file run one job from admission to its tombstone on a
// real ledger (a private redis-server) against SampleDB's simulator behind
// a handler that can answer like a SampleDB written by someone else.

const (
	jtKey  = "analyzer/k3y-job-test"
	jtJob  = "12345678-1234-1234-1234-123456789abc"
	jtHash = "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"
)

// fakeDriver finishes its operation at once; collected is called when the
// result is fetched. It remembers the intent of every operation it started,
// so Find can look them up; startFails makes the first Start calls fail
// after the "vendor" accepted the operation (a lost answer).
type fakeDriver struct {
	kind       string
	starts     atomic.Int32
	finds      atomic.Int32
	collected  func()
	startFails atomic.Int32
	findErr    error // what Find answers when nothing matches; default edr.ErrNotStarted

	mu      sync.Mutex
	started map[string]bool // intent keys
	intents []edr.Intent
}

func (d *fakeDriver) Kind() string { return d.kind }
func (d *fakeDriver) Start(_ context.Context, _ edr.Target, in edr.Intent) (edr.Ref, error) {
	d.starts.Add(1)
	d.mu.Lock()
	if d.started == nil {
		d.started = map[string]bool{}
	}
	d.started[in.Key] = true
	d.intents = append(d.intents, in)
	d.mu.Unlock()
	if d.startFails.Add(-1) >= 0 {
		return nil, &edr.Error{Vendor: "fake", Op: "start", Status: 502, Retryable: true, Msg: "bad gateway"}
	}
	return edr.Ref(`{"op":1}`), nil
}
func (d *fakeDriver) Find(_ context.Context, _ edr.Target, in edr.Intent) (edr.Ref, error) {
	d.finds.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started[in.Key] {
		return edr.Ref(`{"op":1}`), nil
	}
	if d.findErr != nil {
		return nil, d.findErr
	}
	return nil, edr.ErrNotStarted
}
func (d *fakeDriver) Poll(context.Context, edr.Ref) (edr.Status, error) {
	return edr.Status{Done: true}, nil
}
func (d *fakeDriver) Collect(context.Context, edr.Ref) (edr.Result, error) {
	if d.collected != nil {
		d.collected()
	}
	return edr.Result{Rows: 1}, nil
}
func (d *fakeDriver) Cancel(context.Context, edr.Ref) error { return nil }
func (d *fakeDriver) Close()                                {}

// summaries keeps what the result topic would receive.
type summaries struct {
	mu  sync.Mutex
	got []results.Summary
}

func (s *summaries) Publish(_ context.Context, _ string, value []byte) error {
	var sum results.Summary
	if err := json.Unmarshal(value, &sum); err != nil {
		return err
	}
	s.mu.Lock()
	s.got = append(s.got, sum)
	s.mu.Unlock()
	return nil
}

// jobWorld is one job's world: the ledger, the simulator, and in front of
// it intercept, which answers a request itself when it returns true.
type jobWorld struct {
	t       *testing.T
	store   *state.Store
	sim     *simsdb.Server
	runner  *Runner
	logs    *observer.ObservedLogs
	results *summaries

	mu    sync.Mutex
	seen  []string                // "METHOD path" of every SampleDB request
	ended map[string]chan *jobRun // by job ID: its runs that ended
}

// endedChan is the channel the runs of job id are sent on when they end.
func (w *jobWorld) endedChan(id string) chan *jobRun {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended == nil {
		w.ended = map[string]chan *jobRun{}
	}
	ch := w.ended[id]
	if ch == nil {
		ch = make(chan *jobRun, 16)
		w.ended[id] = ch
	}
	return ch
}

func newJobWorld(t *testing.T, playbook *Playbook, drivers []edr.Driver, intercept func(w http.ResponseWriter, r *http.Request) bool) *jobWorld {
	t.Helper()
	srv, err := testenv.StartRedis()
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: srv.Socket})
	t.Cleanup(func() { _ = rdb.Close() })
	store, err := state.New(rdb, state.Config{Namespace: testenv.Namespace(t)})
	require.NoError(t, err)
	require.NoError(t, store.Load(context.Background()))

	w := &jobWorld{t: t, store: store, results: &summaries{}}
	w.sim = simsdb.New(simsdb.Config{Keys: map[string]simsdb.Role{jtKey: simsdb.RoleAnalyzer}})
	hs := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.seen = append(w.seen, r.Method+" "+r.URL.Path)
		w.mu.Unlock()
		if intercept != nil && intercept(rw, r) {
			return
		}
		w.sim.ServeHTTP(rw, r)
	}))
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(func() { w.sim.Close(); hs.Close(); tr.CloseIdleConnections() })
	client, err := sampledb.New(sampledb.Config{
		URL: hs.URL, APIKey: jtKey, Transport: tr,
		InitialInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond, MaxElapsed: time.Second,
	})
	require.NoError(t, err)

	core, logs := observer.New(zap.InfoLevel)
	w.logs = logs
	ds := map[string]edr.Driver{}
	for _, d := range drivers {
		ds[d.Kind()] = d
	}
	w.runner, err = New(Config{
		WorkerID: "worker-1", Store: store, SampleDB: client, Drivers: ds, Playbook: playbook,
		Results: w.results, Logger: zap.New(core),
		PollMin: time.Millisecond, PollMax: 5 * time.Millisecond,
		RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond,
	})
	require.NoError(t, err)
	w.runner.testFinished = func(j *jobRun) {
		select {
		case w.endedChan(j.lease.ID) <- j:
		default: // nobody reads this job's ends
		}
	}
	require.NoError(t, w.runner.keeper.Open(context.Background()))
	w.runner.sched.start()
	t.Cleanup(w.runner.Stop)
	return w
}

// admit admits one job under the runner's session and keeps its lease.
func (w *jobWorld) admit(id string, msg []byte) (state.Lease, *state.Record) {
	w.t.Helper()
	res, _, err := w.store.Admit(context.Background(), w.runner.Session(), []state.AdmitRequest{{ID: id, Msg: msg, Source: "test"}})
	require.NoError(w.t, err)
	require.Len(w.t, res, 1)
	require.Equal(w.t, state.Admitted, res[0].Outcome)
	return res[0].Lease, res[0].Record
}

// run admits msg and runs its job to the end, in the calling goroutine.
// fields (name, value pairs) are checkpointed first, as an earlier owner
// would have left them.
func (w *jobWorld) run(msg job.Message, fields ...string) *jobRun {
	w.t.Helper()
	w.sim.CreateJob(msg)
	b, err := json.Marshal(msg)
	require.NoError(w.t, err)
	l, rec := w.admit(msg.JobID, b)
	require.True(w.t, w.runner.keeper.Add(w.runner.Session(), l))
	if len(fields) > 0 {
		require.NoError(w.t, w.store.Checkpoint(context.Background(), w.runner.Session(), l, fields...))
		for i := 0; i+1 < len(fields); i += 2 {
			rec.Fields[fields[i]] = fields[i+1]
		}
	}
	j := newJobRun(w.runner, w.runner.Session(), l, rec)
	j.run()
	return j
}

func (w *jobWorld) tombstone(id string) string {
	w.t.Helper()
	st, ok, err := w.store.Tombstone(context.Background(), id)
	require.NoError(w.t, err)
	require.True(w.t, ok, "the job is tombstoned")
	return st
}

// requireEnded checks that run j ended (exitDone) and left job id
// tombstoned in state.
func (w *jobWorld) requireEnded(j *jobRun, id, state string) {
	w.t.Helper()
	require.Equal(w.t, exitDone, j.exit)
	require.Equal(w.t, state, w.tombstone(id))
}

func (w *jobWorld) count(method, pathPart string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.seen {
		if strings.HasPrefix(s, method+" ") && strings.Contains(s, pathPart) {
			n++
		}
	}
	return n
}

func (w *jobWorld) countExact(method, path string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.seen {
		if s == method+" "+path {
			n++
		}
	}
	return n
}

func (w *jobWorld) summary() results.Summary {
	w.t.Helper()
	w.results.mu.Lock()
	defer w.results.mu.Unlock()
	require.Len(w.t, w.results.got, 1)
	return w.results.got[0]
}

func jobMsg(meta map[string]any) job.Message {
	return job.Message{
		JobID: jtJob,
		Submission: job.Submission{
			ID: "sub-1", Customer: "acme", Name: "x.exe", Sample: job.Sample{ID: jtHash}, MetaData: meta,
		},
		Classification: job.Classification{Sample: jtHash, Type: "PE", Platform: "win"},
	}
}

func cbcOnly() *Playbook {
	return &Playbook{Tasks: []PlaybookTask{{Kind: edr.KindCBCEventExport}}}
}

func notFound(w http.ResponseWriter, what string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte(`{"responseCode":404,"messages":[{"type":"ERROR","message":"` + what + ` not found"}],"data":null}`))
}

// intercept is a newJobWorld interceptor: the requests match selects are
// answered by answer, the others go on to the simulated SampleDB.
func intercept(match func(r *http.Request) bool, answer func(rw http.ResponseWriter)) func(http.ResponseWriter, *http.Request) bool {
	return func(rw http.ResponseWriter, r *http.Request) bool {
		if !match(r) {
			return false
		}
		answer(rw)
		return true
	}
}

// isTaskPut matches PUT /sampledb/v2/job/{id}/task/{taskId}.
func isTaskPut(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/task/")
}

// TestTaskNotFoundIsNotJobGone: SampleDB answers 404 to every task update
// but still has the job. The job's terminal state is PUT all the same.
func TestTaskNotFoundIsNotJobGone(t *testing.T) {
	t.Parallel()
	d := &fakeDriver{kind: edr.KindCBCEventExport}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, intercept(isTaskPut,
		func(rw http.ResponseWriter) { notFound(rw, "task") }))
	j := w.run(jobMsg(nil))
	w.requireEnded(j, jtJob, sampledb.StateSuccess)

	sj, ok := w.sim.Job(jtJob)
	require.True(t, ok)
	require.Equal(t, sampledb.StateSuccess, sj.State, "the terminal PUT reached SampleDB")
	require.GreaterOrEqual(t, w.count(http.MethodPut, "/task/"), 1)
	require.Equal(t, 1, w.count(http.MethodGet, "/job/"+jtJob), "one look at the job after the task's 404")
	require.Equal(t, sampledb.StateSuccess, w.summary().State)
	require.Equal(t, 1, w.logs.FilterMessageSnippet("SampleDB does not know the task").Len())
	require.Zero(t, w.logs.FilterMessageSnippet("no longer exists in SampleDB").Len())
}

// TestTaskAndJobNotFoundIsJobGone: the job disappeared from SampleDB while
// its task ran. The task's 404 is confirmed by the job's own 404: the job
// ends locally as failed and no terminal PUT is sent.
func TestTaskAndJobNotFoundIsJobGone(t *testing.T) {
	t.Parallel()
	var vanished atomic.Bool
	d := &fakeDriver{kind: edr.KindCBCEventExport, collected: func() { vanished.Store(true) }}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, intercept(
		func(r *http.Request) bool { return vanished.Load() && strings.Contains(r.URL.Path, jtJob) },
		func(rw http.ResponseWriter) { notFound(rw, "job") }))
	j := w.run(jobMsg(nil))
	w.requireEnded(j, jtJob, sampledb.StateFailed)

	require.Equal(t, 1, w.count(http.MethodGet, "/job/"+jtJob), "the job was asked for once")
	require.Equal(t, 1, w.countExact(http.MethodPut, "/sampledb/v2/job/"+jtJob), "only PUT executing; no terminal PUT")
	sj, _ := w.sim.Job(jtJob)
	require.Equal(t, sampledb.StateExecuting, sj.State)
	require.Equal(t, sampledb.StateFailed, w.summary().State)
	require.Equal(t, 1, w.logs.FilterMessageSnippet("no longer exists in SampleDB").Len())
}

// TestCreateTaskWithoutTaskID: SampleDB answers the task creation with
// the job instead of the task. The task runs once without a SampleDB task
// ID (no task update is sent) and the job reaches its terminal state.
func TestCreateTaskWithoutTaskID(t *testing.T) {
	t.Parallel()
	d := &fakeDriver{kind: edr.KindCBCEventExport}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, intercept(
		func(r *http.Request) bool {
			return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/task")
		},
		func(rw http.ResponseWriter) {
			rw.Header().Set("Content-Type", "application/json")
			_, _ = rw.Write([]byte(`{"responseCode":200,"data":{"id":"` + jtJob + `","state":"executing","abortRequested":false}}`))
		}))
	j := w.run(jobMsg(nil))
	w.requireEnded(j, jtJob, sampledb.StateSuccess)
	sj, _ := w.sim.Job(jtJob)
	require.Equal(t, sampledb.StateSuccess, sj.State)

	require.Equal(t, 1, w.count(http.MethodPost, "/task"), "the task is created once, not retried")
	require.Zero(t, w.count(http.MethodPut, "/task/"), "no task update without a task ID; never the job's ID")
	require.EqualValues(t, 1, d.starts.Load())
	sum := w.summary()
	require.Len(t, sum.Tasks, 1)
	require.Equal(t, sampledb.TaskSuccess, sum.Tasks[0].State)
	require.Empty(t, sum.Tasks[0].TaskID)
	require.Equal(t, 1, w.logs.FilterMessageSnippet("task ran without a SampleDB task ID").Len())
}

// TestUnusableSensorIDSkipsLiveResponse: a sensor ID that is not a number
// no longer fails the job: the other vendors hunt, Live Response is not
// planned, and the outcome says why.
func TestUnusableSensorIDSkipsLiveResponse(t *testing.T) {
	t.Parallel()
	cbc := &fakeDriver{kind: edr.KindCBCEventExport}
	cblr := &fakeDriver{kind: edr.KindCBLRTriage}
	pb := &Playbook{Tasks: []PlaybookTask{{Kind: edr.KindCBCEventExport}, {Kind: edr.KindCBLRTriage, RequiresSensors: true}}}
	w := newJobWorld(t, pb, []edr.Driver{cbc, cblr}, nil)
	j := w.run(jobMsg(map[string]any{"sensorId": "host-7"}))
	w.requireEnded(j, jtJob, sampledb.StateSuccess)

	require.EqualValues(t, 1, cbc.starts.Load())
	require.Zero(t, cblr.starts.Load(), "no Live Response without a usable sensor")
	tasks := w.sim.Tasks(jtJob)
	require.Len(t, tasks, 1)
	require.Equal(t, edr.KindCBCEventExport, tasks[0].Worker)
	sum := w.summary()
	require.Equal(t, sampledb.StateSuccess, sum.State)
	require.Contains(t, sum.Reason, "metaData.sensorId")
	require.Contains(t, sum.Reason, "Live Response skipped")
	require.Equal(t, 1, w.logs.FilterMessageSnippet("metaData not usable").Len())
}

// taskField is the ledger field of a task checkpoint holding only an intent:
// an earlier owner decided to start, and died before it saved a reference.
func taskField(t *testing.T, kind string, in edr.Intent) []string {
	b, err := json.Marshal(state.TaskCheckpoint{Kind: kind, Intent: &in, Attempts: 1})
	require.NoError(t, err)
	return []string{state.FieldTaskPrefix + kind, string(b)}
}

// TestIntentFoundAtTheVendorIsReattached: the earlier owner's start reached
// the vendor; its reference never reached the ledger. The new owner finds
// the operation and does not start it again.
func TestIntentFoundAtTheVendorIsReattached(t *testing.T) {
	t.Parallel()
	d := &fakeDriver{kind: edr.KindCBCEventExport}
	in := edr.Intent{Key: jtJob + "/cbc.event_export/1.1", At: time.Now().UnixMilli()}
	d.started = map[string]bool{in.Key: true}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	j := w.run(jobMsg(nil), taskField(t, edr.KindCBCEventExport, in)...)
	w.requireEnded(j, jtJob, sampledb.StateSuccess)
	require.Zero(t, d.starts.Load(), "the operation the earlier start launched is re-attached, not started again")
	require.EqualValues(t, 1, d.finds.Load())
	require.Equal(t, 1, w.logs.FilterMessageSnippet("re-attached").Len())
}

// TestIntentNotAtTheVendorStartsOnce: the earlier owner died before its
// start reached the vendor. The vendor surely has nothing: start once, under
// a new intent.
func TestIntentNotAtTheVendorStartsOnce(t *testing.T) {
	t.Parallel()
	d := &fakeDriver{kind: edr.KindCBCEventExport}
	in := edr.Intent{Key: jtJob + "/cbc.event_export/1.1", At: time.Now().Add(-time.Minute).UnixMilli()}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	j := w.run(jobMsg(nil), taskField(t, edr.KindCBCEventExport, in)...)
	require.Equal(t, exitDone, j.exit)
	require.EqualValues(t, 1, d.starts.Load())
	require.EqualValues(t, 1, d.finds.Load())
	d.mu.Lock()
	defer d.mu.Unlock()
	require.Len(t, d.intents, 1)
	require.NotEqual(t, in.Key, d.intents[0].Key, "a new start is a new intent")
	require.Greater(t, d.intents[0].At, in.At)
}

// TestLostStartAnswerIsLookedUp: the vendor accepted the start but the
// answer was a 502. Before sending the start again, the runner looks the
// operation up, finds it, and re-attaches: one operation.
func TestLostStartAnswerIsLookedUp(t *testing.T) {
	t.Parallel()
	d := &fakeDriver{kind: edr.KindCBCEventExport}
	d.startFails.Store(1)
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	j := w.run(jobMsg(nil))
	w.requireEnded(j, jtJob, sampledb.StateSuccess)
	require.EqualValues(t, 1, d.starts.Load(), "the start whose answer was lost is not sent again")
	require.EqualValues(t, 1, d.finds.Load())
}

// TestUnsearchableVendorStartsAgain: a vendor whose API cannot be searched
// is started again (and the log says it may now run twice).
func TestUnsearchableVendorStartsAgain(t *testing.T) {
	t.Parallel()
	d := &fakeDriver{kind: edr.KindCBCEventExport, findErr: edr.ErrFindUnsupported}
	in := edr.Intent{Key: jtJob + "/cbc.event_export/1.1", At: time.Now().UnixMilli()}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	j := w.run(jobMsg(nil), taskField(t, edr.KindCBCEventExport, in)...)
	require.Equal(t, exitDone, j.exit)
	require.EqualValues(t, 1, d.starts.Load())
	require.Equal(t, 1, w.logs.FilterMessageSnippet("cannot be searched").Len())
}

// TestRefusedTerminalStateIsRetriedLoudly: SampleDB answers 412 to every
// terminal PUT while it shows the job executing. The runner keeps the job
// (no lease lapse, no re-claim loop), records the refusal in the ledger for
// operators, warns with SampleDB's answer, and delivers once SampleDB takes
// the state.
func TestRefusedTerminalStateIsRetriedLoudly(t *testing.T) {
	t.Parallel()
	d := &fakeDriver{kind: edr.KindCBCEventExport}
	var refuse atomic.Bool
	refuse.Store(true)
	var refusals atomic.Int32
	fourth := make(chan struct{})
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, func(rw http.ResponseWriter, r *http.Request) bool {
		if refuse.Load() && r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/job/"+jtJob) {
			var body struct{ State string }
			b, _ := io.ReadAll(r.Body)
			_ = json.Unmarshal(b, &body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			if body.State == sampledb.StateSuccess {
				rw.Header().Set("Content-Type", "application/json")
				rw.WriteHeader(http.StatusPreconditionFailed)
				_, _ = rw.Write([]byte(`{"responseCode":412,"messages":[{"type":"ERROR","message":"job is locked by a migration"}],"data":null}`))
				if refusals.Add(1) == 4 {
					close(fourth)
				}
				return true
			}
		}
		return false
	})
	done := make(chan *jobRun)
	go func() { done <- w.run(jobMsg(nil)) }()
	// By the fourth refusal the third is on record (it is saved before the
	// runner asks again).
	select {
	case <-fourth:
	case j := <-done:
		t.Fatalf("the job ended (%v) while SampleDB refused its state", j.exit)
	}
	rec, err := w.store.Get(context.Background(), jtJob)
	require.NoError(t, err)
	v := View(rec).Refused
	require.NotNil(t, v, "the refusal is on record for operators")
	require.GreaterOrEqual(t, v.Attempts, 3)
	require.Equal(t, sampledb.StateExecuting, v.SampleDBState)
	require.Contains(t, v.Answer, "locked by a migration")
	refuse.Store(false)
	j := <-done
	w.requireEnded(j, jtJob, sampledb.StateSuccess)
	sj, _ := w.sim.Job(jtJob)
	require.Equal(t, sampledb.StateSuccess, sj.State)
	require.GreaterOrEqual(t, w.logs.FilterMessageSnippet("SampleDB refuses the job's terminal state").Len(), 3)
	require.Zero(t, w.logs.FilterMessageSnippet("stopped without further writes").Len())
}

// sizedPublisher refuses, as Kafka does, records larger than max.
type sizedPublisher struct {
	summaries
	max int
}

func (p *sizedPublisher) Publish(ctx context.Context, key string, value []byte) error {
	if len(value) > p.max {
		return fmt.Errorf("%w: MESSAGE_TOO_LARGE", results.ErrNotPublishable)
	}
	return p.summaries.Publish(ctx, key, value)
}

// hugeDriver fails its task with a vendor answer of 2 MB and notes galore.
type hugeDriver struct{ fakeDriver }

func (d *hugeDriver) Collect(context.Context, edr.Ref) (edr.Result, error) {
	notes := make([]string, 5000)
	for i := range notes {
		notes[i] = strings.Repeat("n", 1000)
	}
	return edr.Result{Rows: 1, Notes: notes, Hosts: []string{strings.Repeat("h", 100000)}}, nil
}

// TestOversizedSummaryIsCutNotLost: a summary that would be megabytes is
// cut to fit (and says so) instead of being refused by the broker and lost
// after the slot was held for the whole publish timeout.
func TestOversizedSummaryIsCutNotLost(t *testing.T) {
	t.Parallel()
	d := &hugeDriver{fakeDriver{kind: edr.KindCBCEventExport}}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	pub := &sizedPublisher{max: 1 << 20}
	w.runner.cfg.Results = pub
	w.runner.cfg.PublishTimeout = time.Minute
	j := w.run(jobMsg(nil))
	require.Equal(t, exitDone, j.exit)
	pub.mu.Lock()
	defer pub.mu.Unlock()
	require.Len(t, pub.got, 1, "the summary was published")
	s := pub.got[0]
	require.Len(t, s.Tasks, 1)
	require.LessOrEqual(t, len(s.Tasks[0].Result.Notes), results.MaxSummaryNotes+1)
	require.Contains(t, s.Tasks[0].Result.Notes[results.MaxSummaryNotes], "more notes")
	require.LessOrEqual(t, len(s.Tasks[0].Result.Hosts[0]), results.MaxSummaryItem+len("…"))
}

// perCustomer serves drivers by customer, like tenant.Registry.
type perCustomer map[string]map[string]edr.Driver

func (p perCustomer) Drivers(customer string) (map[string]edr.Driver, error) {
	if d, ok := p[customer]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("customer %q has no vendor accounts", customer)
}

// TestJobRunsOnlyOnItsCustomersAccounts: a job is hunted with its own
// customer's drivers; a customer without accounts fails its job with the
// reason, and nothing is started on anyone else's.
func TestJobRunsOnlyOnItsCustomersAccounts(t *testing.T) {
	t.Parallel()
	acme := &fakeDriver{kind: edr.KindCBCEventExport}
	globex := &fakeDriver{kind: edr.KindCBCEventExport}
	w := newJobWorld(t, cbcOnly(), nil, nil)
	w.runner.cfg.Accounts = perCustomer{"acme": {edr.KindCBCEventExport: acme}, "globex": {edr.KindCBCEventExport: globex}}

	j := w.run(jobMsg(nil)) // submitted by acme
	w.requireEnded(j, jtJob, sampledb.StateSuccess)
	require.EqualValues(t, 1, acme.starts.Load())
	require.Zero(t, globex.starts.Load(), "another customer's account is never used")

	msg := jobMsg(nil)
	msg.JobID = "22345678-1234-1234-1234-123456789abc"
	msg.Submission.Customer = "initech"
	j = w.run(msg)
	w.requireEnded(j, msg.JobID, sampledb.StateFailed)
	require.EqualValues(t, 1, acme.starts.Load())
	require.Zero(t, globex.starts.Load())
	w.results.mu.Lock()
	defer w.results.mu.Unlock()
	require.Contains(t, w.results.got[len(w.results.got)-1].Reason, `customer "initech" has no vendor accounts`)
}

// TestFinishedJobLeavesTimelineAndResult: a job run to its end leaves, in
// the ledger, a timeline of what happened under which token and the
// summary that was published, for fleetctl and the console to show.
func TestFinishedJobLeavesTimelineAndResult(t *testing.T) {
	t.Parallel()
	d := &fakeDriver{kind: edr.KindCBCEventExport}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	j := w.run(jobMsg(nil))
	w.requireEnded(j, jtJob, sampledb.StateSuccess)

	tl, err := w.store.Timeline(context.Background(), jtJob)
	require.NoError(t, err)
	var evs []string
	for _, e := range tl {
		evs = append(evs, e.Ev)
	}
	for _, want := range []string{"admitted", "executing", "task created", "vendor operation started", "task ended", "decided", "finished"} {
		require.Contains(t, evs, want)
	}
	require.Equal(t, "admitted", evs[0])
	require.Equal(t, "finished", evs[len(evs)-1])
	require.Equal(t, j.lease.Token, tl[len(tl)-1].Token, "each step names the token it ran under")

	res, err := w.store.Result(context.Background(), jtJob)
	require.NoError(t, err)
	var got results.Summary
	require.NoError(t, json.Unmarshal(res, &got))
	require.Equal(t, jtJob, got.JobID)
	require.Equal(t, sampledb.StateSuccess, got.State)
	require.Equal(t, w.summary().State, got.State, "the ledger keeps what was published")
}

// TestWorkerPublishesVendorStatsWithRenewal: the renewal carries the
// worker's driver calls by vendor and result, for fleetctl and the console.
func TestWorkerPublishesVendorStatsWithRenewal(t *testing.T) {
	t.Parallel()
	d := &fakeDriver{kind: edr.KindCBCEventExport}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	j := w.run(jobMsg(nil))
	require.Equal(t, exitDone, j.exit)
	require.NoError(t, w.runner.Keeper().RenewOnce(context.Background()))
	ws, err := w.store.Workers(context.Background())
	require.NoError(t, err)
	require.Len(t, ws, 1)
	st, err := DecodeWorkerStats(ws[0].Stats)
	require.NoError(t, err)
	cbc := st.Vendors[edr.Vendor(edr.KindCBCEventExport)]
	require.Positive(t, cbc.OK, "the job's start and polls: %+v", st)
	require.Zero(t, cbc.Permanent)
	require.Zero(t, cbc.Waiting, "nothing queued once the job is done")
	require.False(t, st.Since.IsZero())
}

// TestReseedAfterLedgerLoss: Redis lost a waiting job's record. The job
// stops without another call and puts the record back from what it holds
// — the message, where and when it was admitted, the plan, each task's
// checkpoint (the vendor reference, the SampleDB task) and the fields it
// carried without using them — unowned, so that whoever claims it resumes
// the vendor operation instead of starting another.
func TestReseedAfterLedgerLoss(t *testing.T) {
	t.Parallel()
	d := &waitingDriver{kind: edr.KindCBCEventExport, want: 1, allPolled: make(chan struct{})}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	msg := jobMsg(nil)
	w.sim.CreateJob(msg)
	b, err := json.Marshal(msg)
	require.NoError(t, err)
	require.Equal(t, 1, w.runner.TryAcquire(1))
	l, rec := w.admit(msg.JobID, b)
	// A field an earlier owner left that this plan does not use.
	other := []string{state.FieldTaskPrefix + "retired-kind", `{"kind":"retired-kind","state":"success"}`}
	require.NoError(t, w.store.Checkpoint(ctx(t), w.runner.Session(), l, other...))
	rec.Fields[other[0]] = other[1]
	w.runner.Launch(w.runner.Session(), l, rec)
	<-d.allPolled // started, checkpointed, polled: the job waits

	require.NoError(t, w.store.Redis().Del(ctx(t), "{"+w.store.Namespace()+"}:job:"+msg.JobID).Err())
	w.runner.onLeaseLost(msg.JobID, l.Token, state.LostMissing)
	j := waitRun(t, w, msg.JobID)
	require.Equal(t, exitMissing, j.exit)

	got, err := w.store.Get(ctx(t), msg.JobID)
	require.NoError(t, err)
	require.NotNil(t, got, "the record is back")
	require.Empty(t, got.Session, "owned by nobody")
	require.JSONEq(t, string(b), string(got.Msg))
	require.Equal(t, "test", got.Source)
	require.Equal(t, rec.Created.UnixMilli(), got.Created.UnixMilli())
	plan, ok, err := got.Plan()
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, []state.PlannedTask{{Kind: edr.KindCBCEventExport}}, plan)
	cp, err := got.Task(edr.KindCBCEventExport)
	require.NoError(t, err)
	require.NotEmpty(t, cp.Ref, "the vendor operation's reference")
	require.NotNil(t, cp.Intent)
	require.NotEmpty(t, cp.TaskID, "the SampleDB task")
	require.False(t, cp.Done())
	require.Equal(t, other[1], got.Fields[other[0]])
	require.Nil(t, got.Outcome())
}
