package main

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/bench"
)

// benchWorkerEnv makes the test binary run as `worker run` (TestMain): the
// bench's child process in these tests.
const benchWorkerEnv = "ANALYSISFLEET_TEST_BENCH_WORKER"

// The bench runs end to end on a small N and reports sane figures. No
// figure is compared with a timing: only that each was measured.
func TestBenchRunsEndToEnd(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	code := realMain([]string{"bench", "--jobs", "50", "--window", "3s", "--waiting", "3s", "--idle", "1s", "--aborts", "5",
		"--abort-poll-interval", "500ms", "--lease-ttl", "5s", "--admit-timeout", "2m", "--quiet", "-o", "json",
		"--worker", os.Args[0], "--env", benchWorkerEnv + "=1", "--dir", t.TempDir()}, &out, &errb)
	require.Equal(t, 0, code, "stderr:\n%s\nstdout:\n%s", errb.String(), out.String())

	var rs []bench.Result
	require.NoError(t, json.Unmarshal(out.Bytes(), &rs), out.String())
	require.Len(t, rs, 1)
	r := rs[0]
	require.True(t, r.Steady, r.Note)
	require.Equal(t, 50, r.Jobs)
	require.Equal(t, 50, r.InFlight)
	require.GreaterOrEqual(t, r.Started["cbc"], 50, "every job's CB Cloud export started")
	require.Positive(t, r.AdmissionRate)
	require.Equal(t, "5s", r.Settings.LeaseTTL)

	require.Positive(t, r.Idle.RSS)
	w := r.Window
	require.NotNil(t, w)
	require.Positive(t, w.RSS, "the worker's RSS")
	require.Positive(t, w.Goroutines, "read from the worker's /metrics")
	require.GreaterOrEqual(t, w.WorkerInFlight, int64(45), "the runner holds the jobs (five were aborted)")
	require.LessOrEqual(t, w.WorkerInFlight, int64(50))
	require.Positive(t, w.RedisCommands, "lease renewals at least")
	require.Positive(t, w.RedisMemory)
	require.Positive(t, w.SampleDB.Requests, "the abort poller lists jobs every 500ms")
	require.Positive(t, w.SampleDB.BytesOut)
	require.Contains(t, w.SampleDB.Routes, "GET /sampledb/v2/job", "the abort poller's list")
	require.Contains(t, w.Vendors, "cbc")

	// Both the waiting phase and the window profile the worker's CPU.
	require.NotNil(t, r.Waiting)
	require.Positive(t, r.Waiting.RedisCommands, "lease renewals at least")
	for _, p := range []*bench.Phase{r.Waiting, w} {
		require.Empty(t, p.CPUSplitError)
		require.NotNil(t, p.CPUSplit)
		require.Positive(t, p.CPUSplit.Seconds)
		require.InDelta(t, p.CPUSplit.Profiled, p.CPUSplit.Vendor+p.CPUSplit.Rest, 1e-9)
		require.FileExists(t, p.CPUProfile)
	}

	require.NotNil(t, r.Aborts)
	require.Equal(t, bench.Aborts{Requested: 5, Aborted: 5}, bench.Aborts{Requested: r.Aborts.Requested, Aborted: r.Aborts.Aborted},
		"every aborted job ended aborted")
	require.Positive(t, r.Aborts.P50)
	require.GreaterOrEqual(t, r.Aborts.P99, r.Aborts.P50)
	require.GreaterOrEqual(t, r.Aborts.Max, r.Aborts.P99)
	require.FileExists(t, r.Log)
}

func TestBenchRefusesWhatCannotBeMeasured(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--jobs", "0"},
		{"--jobs", "100", "--max-inflight", "50"},
		{"--mix", "cblr"},
		{"-o", "yaml"},
		{"--env", "NOEQUALS"},
	} {
		var out, errb bytes.Buffer
		require.Equal(t, 2, realMain(append([]string{"bench"}, args...), &out, &errb), "%v", args)
		require.NotEmpty(t, errb.String(), "%v: says why", args)
	}
}
