package node_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

// Two workers on one ledger: the first stops without releasing its leases
// (a crash); the second takes the jobs over after the TTL and finishes them
// without starting the CB Cloud exports again.
func TestTakeoverAfterCrashResumesWithoutRestart(t *testing.T) {
	t.Parallel()
	f, a, msgs, ids := midExport(t, "win", testutil.TopicOSL)
	a.Stop() // crash: no drain, no release

	f.waitTerminal(ids, time.Minute)
	for _, m := range msgs {
		f.requireExactlyOneTerminal(m.JobID, sampledb.StateSuccess)
		require.Equal(t, 1, f.stack.CBC.Starts(m.Submission.Sample.ID), "the takeover re-attached to the running export")
		require.Len(t, f.stack.SampleDB.Tasks(m.JobID), 1, "the SampleDB task was not created again")
	}
	finishedBy := map[string]int{}
	for _, id := range ids {
		for _, tr := range f.stack.SampleDB.History(id) {
			if tr.To == sampledb.StateSuccess && tr.TaskID == "" {
				finishedBy[workerOf(tr.UserAgent)]++
			}
		}
	}
	require.Equal(t, map[string]int{"w-b": len(ids)}, finishedBy)
}

// A worker cut off from Redis longer than the TTL loses its jobs to another
// worker, makes no vendor call and no SampleDB write for them from then on,
// and stays silent about them when it comes back.
func TestLostWorkerMakesNoWritesForJobsItLost(t *testing.T) {
	t.Parallel()
	f, a, msgs, ids := midExport(t, "linux", testutil.TopicSVG)

	a.dialer.partition()
	cut := time.Now()
	// w-a's local view of its leases runs out within the TTL: after that it
	// must not talk to anyone about those jobs.
	silentFrom := cut.Add(1500 * time.Millisecond)
	f.waitTerminal(ids, time.Minute)
	a.dialer.heal()
	require.Eventually(t, func() bool { return a.Runner.Keeper().Len() == 0 }, 20*time.Second, 20*time.Millisecond,
		"w-a dropped every lease it lost")
	// Give w-a's loops a moment after healing, then look at the logs.
	require.Eventually(t, func() bool { return a.Runner.InFlight() == 0 }, 20*time.Second, 20*time.Millisecond)

	for _, m := range msgs {
		f.requireExactlyOneTerminal(m.JobID, sampledb.StateSuccess)
		require.Equal(t, 1, f.stack.CBC.Starts(m.Submission.Sample.ID))
	}
	for name, k := range map[string]*simhttp.Kit{"sampledb": f.stack.SampleDB.Kit(), "cbc": f.stack.CBC.Kit()} {
		for _, r := range k.Requests() {
			if workerOf(r.UserAgent) == "w-a" && r.Time.After(silentFrom) && isAboutJobs(name, r) {
				t.Errorf("zombie write: w-a sent %s %s to %s at +%s after it lost its leases", r.Method, r.Path, name, r.Time.Sub(cut))
			}
		}
	}
}

// isAboutJobs excludes w-a's job-independent traffic (the abort poll lists
// active jobs; it writes nothing).
func isAboutJobs(sim string, r simhttp.Request) bool {
	return !(sim == "sampledb" && r.Method == "GET" && r.Path == "/sampledb/v2/job")
}

func workerOf(ua string) string {
	i, j := strings.LastIndex(ua, "("), strings.LastIndex(ua, ")")
	if i < 0 || j < i {
		return ""
	}
	return ua[i+1 : j]
}

// midExport starts worker w-a on a fleet whose CB Cloud exports run 3s and
// whose leases live 1.5s, submits 20 jobs for platform to topic, waits
// until w-a started every export, and starts worker w-b.
func midExport(t *testing.T, platform, topic string) (f *fleet, a *workerHandle, msgs []job.Message, ids []string) {
	t.Helper()
	slow := simstack.TestTiming
	slow.CBCRun = 3 * time.Second
	f = newFleet(t, fleetOpts{timing: slow, leaseTTL: 1500 * time.Millisecond})
	a = f.startWorker("w-a")
	msgs, ids = newJobs(20, platform, nil)
	f.submit(topic, msgs...)
	require.Eventually(t, func() bool { return f.stack.CBC.TotalStarts() == len(ids) }, 30*time.Second, 10*time.Millisecond,
		"w-a started every export")
	f.startWorker("w-b")
	return f, a, msgs, ids
}
