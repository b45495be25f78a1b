package runner

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/loadgen"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

// BenchmarkInflightJobMemory measures what one in-flight job costs the
// worker's Go heap: inflightJobs jobs are admitted to a real ledger (a
// private redis-server) and launched as intake launches them, each starts
// its CB Cloud export, and the benchmark waits until every task has polled
// once and waits an hour for its next poll — the state of `worker bench`'s
// window. The live heap after a GC, minus the heap before the first job,
// divided by the jobs, is reported as B/job. SampleDB is a stub that keeps
// nothing per job, and the driver keeps nothing per operation, so the
// figure is the runner's own (the jobRun, its tasks, steps, contexts, the
// keeper's and the slots' entries).
//
//	go test -run '^$' -bench InflightJobMemory -benchtime 1x ./runner/
//
// With -args -inflight-heapprofile=FILE it also writes a heap profile
// while the jobs wait (go tool pprof -sample_index=inuse_space FILE).
func BenchmarkInflightJobMemory(b *testing.B) {
	for range b.N {
		perJob := inflightJobMemory(b, inflightJobs)
		b.ReportMetric(perJob, "B/job")
	}
}

var inflightHeapProfile = flag.String("inflight-heapprofile", "", "BenchmarkInflightJobMemory: write a heap profile here while the jobs wait")

// inflightJobs is how many jobs BenchmarkInflightJobMemory holds at once.
const inflightJobs = 10_000

// intakeBatch is intake's admission batch (intake.MaxAdmitBatch).
const intakeBatch = 500

// waitingDriver starts operations that never end: every poll says "still
// running, ask again in an hour".
type waitingDriver struct {
	kind      string
	want      int64 // allPolled is closed at the want-th poll
	polls     atomic.Int64
	allPolled chan struct{}
}

func (d *waitingDriver) Kind() string { return d.kind }
func (d *waitingDriver) Start(_ context.Context, _ edr.Target, _ edr.Intent) (edr.Ref, error) {
	return edr.Ref(`{"id":"` + uuid.NewString() + `"}`), nil
}
func (d *waitingDriver) Find(context.Context, edr.Target, edr.Intent) (edr.Ref, error) {
	return nil, edr.ErrNotStarted
}
func (d *waitingDriver) Poll(context.Context, edr.Ref) (edr.Status, error) {
	if d.polls.Add(1) == d.want {
		close(d.allPolled)
	}
	return edr.Status{Progress: "running", NextPoll: time.Hour}, nil
}
func (d *waitingDriver) Collect(context.Context, edr.Ref) (edr.Result, error) {
	return edr.Result{}, nil
}
func (d *waitingDriver) Cancel(context.Context, edr.Ref) error { return nil }
func (d *waitingDriver) Close()                                {}

// stubSampleDB answers the calls of a job's beginning (PUT executing, POST
// task) and keeps nothing.
func stubSampleDB() http.Handler {
	var tasks atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/sampledb/v2/job/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		id, sub, _ := strings.Cut(rest, "/")
		var data string
		switch {
		case r.Method == http.MethodPost && sub == "task":
			data = `{"id":` + strconv.FormatInt(tasks.Add(1), 10) + `,"worker":"` + edr.KindCBCEventExport + `","state":"executing"}`
		case sub == "":
			data = `{"id":"` + id + `","state":"executing"}`
		default:
			data = `null`
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"responseCode":200,"data":%s}`, data)
	})
}

// inflightJobMemory runs n waiting jobs on a fresh runner and returns the
// live heap bytes per job.
func inflightJobMemory(tb testing.TB, n int) float64 {
	srv, err := testenv.StartRedis()
	require.NoError(tb, err)
	defer srv.Stop()
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: srv.Socket})
	defer func() { _ = rdb.Close() }()
	// A lease lifetime longer than the run: no keeper loop is needed.
	store, err := state.New(rdb, state.Config{Namespace: testenv.Namespace(tb), LeaseTTL: time.Hour})
	require.NoError(tb, err)
	ctx := context.Background()
	require.NoError(tb, store.Load(ctx))

	hs := httptest.NewServer(stubSampleDB())
	defer hs.Close()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	client, err := sampledb.New(sampledb.Config{URL: hs.URL, APIKey: jtKey, Transport: tr})
	require.NoError(tb, err)

	d := &waitingDriver{kind: edr.KindCBCEventExport, want: int64(n), allPolled: make(chan struct{})}
	r, err := New(Config{
		WorkerID: "worker-1", Store: store, SampleDB: client,
		Drivers: map[string]edr.Driver{d.kind: d}, Playbook: cbcOnly(),
		Logger: discardLogger(), MaxInflight: n,
	})
	require.NoError(tb, err)
	require.NoError(tb, r.keeper.Open(ctx))
	r.sched.start()
	defer r.Stop()

	before := liveHeap()

	// The messages arrive after the baseline, as Kafka records do: what
	// the jobs keep of them counts.
	rng := rand.New(rand.NewPCG(1, 2))
	require.Equal(tb, n, r.TryAcquire(n))
	for lo := 0; lo < n; lo += intakeBatch {
		reqs := make([]state.AdmitRequest, 0, intakeBatch)
		for i := lo; i < min(lo+intakeBatch, n); i++ {
			m := benchJob(rng)
			b, err := json.Marshal(m)
			require.NoError(tb, err)
			reqs = append(reqs, state.AdmitRequest{ID: m.JobID, Msg: b, Source: "Sample.Analysis.Job.OSL/" + strconv.Itoa(i%12) + "@" + strconv.Itoa(i)})
		}
		res, _, err := store.Admit(ctx, r.Session(), reqs)
		require.NoError(tb, err)
		for _, a := range res {
			require.Equal(tb, state.Admitted, a.Outcome)
			r.Launch(r.Session(), a.Lease, a.Record)
		}
	}
	// Every task polled once and waits an hour for the next poll; a
	// regression that never gets there fails instead of hanging.
	select {
	case <-d.allPolled:
	case <-time.After(5 * time.Minute):
		tb.Fatalf("only %d of %d tasks polled", d.polls.Load(), n)
	}
	require.Equal(tb, n, r.InFlight())
	after := liveHeap()
	if *inflightHeapProfile != "" {
		f, err := os.Create(*inflightHeapProfile)
		require.NoError(tb, err)
		require.NoError(tb, pprof.Lookup("heap").WriteTo(f, 0))
		require.NoError(tb, f.Close())
	}
	return float64(int64(after)-int64(before)) / float64(n)
}

// discardLogger is a production logger (JSON, info) writing nowhere: a
// logger's fields cost memory whether or not anything is written.
func discardLogger() *zap.Logger {
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// benchJob is a job message like `worker bench`'s (internal/bench).
func benchJob(rng *rand.Rand) job.Message {
	bench := loadgen.Submitter{User: job.User{ID: 42, ShortName: "bench", Name: "Bench Analyst"}, Agent: "bench"}
	return bench.Message(loadgen.Sample{SHA256: loadgen.RandomSHA256(rng), Name: "sample.exe", Type: "PE", Platform: "win"},
		"customer-a", map[string]any{"source": "bench"})
}
