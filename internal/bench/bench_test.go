package bench

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/runner"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestStatCPUCountsFieldsAfterTheCommandName(t *testing.T) {
	t.Parallel()
	// A command name with a space and a ')' must not shift the fields.
	line := "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 130 0 0 20 0 12 0 100 1000000 500 18446744073709551615\n"
	cpu, err := parseStatCPU([]byte(line))
	require.NoError(t, err)
	require.Equal(t, 3800*time.Millisecond, cpu, "utime 250 + stime 130 ticks at 100 Hz")

	_, err = parseStatCPU([]byte("4242 (x) S 1 2"))
	require.Error(t, err)
}

func TestStatusMemReadsRSSAndPeak(t *testing.T) {
	t.Parallel()
	status := "Name:\tworker\nVmPeak:\t 9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t7\n"
	rss, peak, err := parseStatusMem([]byte(status))
	require.NoError(t, err)
	require.Equal(t, int64(1024<<10), rss)
	require.Equal(t, int64(2048<<10), peak)

	_, _, err = parseStatusMem([]byte("Name:\tkthreadd\n"))
	require.Error(t, err, "a kernel thread has no VmRSS")
}

func TestProcReadsThisProcess(t *testing.T) {
	t.Parallel()
	rss, peak, err := procMem(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, rss)
	require.GreaterOrEqual(t, peak, rss)
	_, err = procCPU(os.Getpid())
	require.NoError(t, err)
}

func TestInfoCommandsExcludeTheBenchsOwnINFO(t *testing.T) {
	t.Parallel()
	a := parseInfo("# Commandstats\r\ncmdstat_evalsha:calls=100,usec=900,usec_per_call=9.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_info:calls=3,usec=10,usec_per_call=3.33,rejected_calls=0,failed_calls=0\r\n" +
		"# Memory\r\nused_memory:1000000\r\nused_memory_human:976.56K\r\n# Keyspace\r\ndb0:keys=5,expires=2,avg_ttl=100\r\n")
	require.Equal(t, int64(100), a.calls["evalsha"])
	require.Equal(t, int64(1000000), a.usedMemory)
	require.Equal(t, int64(5), a.keys)
	a.seq = 7

	a.netIn, a.netOut, a.reply = 1000, 5000, 800

	b := parseInfo("cmdstat_evalsha:calls=160,usec=1\r\ncmdstat_info:calls=5,usec=1\r\ncmdstat_get:calls=4,usec=1\r\n" +
		"total_net_input_bytes:3140\r\ntotal_net_output_bytes:10600\r\n")
	b.seq = 9 // the bench sent two INFO from a to b (a's own and one between)
	total, by := commandsBetween(a, b)
	require.Equal(t, map[string]int64{"evalsha": 60, "get": 4}, by)
	require.Equal(t, int64(64), total)
	in, out := netBetween(a, b)
	require.Equal(t, int64(3140-1000-2*infoRequest), in)
	require.Equal(t, int64(10600-5000-2*800), out)
}

func TestMixDealsJobsToGroupsByWeight(t *testing.T) {
	t.Parallel()
	m, err := ParseMix("cbc=3, sophos+cytomic")
	require.NoError(t, err)
	require.Equal(t, Mix{{Vendors: []string{"cbc"}, Weight: 3}, {Vendors: []string{"sophos", "cytomic"}, Weight: 1}}, m)
	require.Equal(t, "cbc=3,sophos+cytomic=1", m.String())
	require.Equal(t, map[string]int{"cbc": 75, "sophos": 25, "cytomic": 25}, m.expected(100))
	require.Equal(t, []string{"cbc", "sophos", "cytomic"}, m.vendors())

	for _, bad := range []string{"", "cblr", "cbc=0", "cbc=x", "cbc+cbc", "nope"} {
		_, err := ParseMix(bad)
		require.Error(t, err, bad)
	}
	d, err := ParseMix("cbc")
	require.NoError(t, err)
	require.Equal(t, DefaultMix, d)
}

// The playbook the bench hands the worker plans each group's vendors, and
// only those, for the jobs the bench submits.
func TestPlaybookPlansEachGroupsVendors(t *testing.T) {
	t.Parallel()
	m, err := ParseMix("cbc=2,sophos+cytomic=1")
	require.NoError(t, err)
	pb, err := runner.ParsePlaybook(m.playbook())
	require.NoError(t, err)
	all := func(string) bool { return true }
	kinds := func(gi int) []string {
		msg := newJob(rand.New(rand.NewPCG(1, 2)), groupType(gi))
		var out []string
		for _, pt := range pb.Plan(&msg, edr.Target{}, all) {
			out = append(out, pt.Kind)
		}
		return out
	}
	require.Equal(t, []string{edr.KindCBCEventExport}, kinds(0))
	require.Equal(t, []string{edr.KindSophosXDR, edr.KindCytomicOSQuery}, kinds(1))
}

func TestRouteHidesIDs(t *testing.T) {
	t.Parallel()
	require.Equal(t, "/sampledb/v2/job", route("/sampledb/v2/job"))
	require.Equal(t, "/sampledb/v2/job/{id}/task/{id}", route("/sampledb/v2/job/0b7c2d4e-9f7a-4c1b-8d2e-3f4a5b6c7d8e/task/17"))
	require.Equal(t, "/sampledb/v2/job/search", route("/sampledb/v2/job/search"))
}

func TestPercentileIsNearestRank(t *testing.T) {
	t.Parallel()
	require.Zero(t, percentile(nil, 0.5))
	var v []latency
	for i := 1; i <= 10; i++ {
		v = append(v, latency{s: float64(i)})
	}
	v[9].atLeast = true // the slowest had not ended
	require.Equal(t, latency{s: 5}, percentile(v, 0.5))
	require.Equal(t, latency{s: 10, atLeast: true}, percentile(v, 0.99))
	require.Equal(t, latency{s: 7}, percentile([]latency{{s: 7}}, 0.99))
}

func TestMetricsReadsRuntimeAndRunnerSeries(t *testing.T) {
	t.Parallel()
	m := parseMetrics(strings.NewReader("# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 1234\n" +
		"go_memstats_heap_inuse_bytes 5.4525952e+07\ngo_gc_duration_seconds{quantile=\"0\"} 1e-05\n" +
		"analysisfleet_jobs_inflight 998\n" +
		"analysisfleet_leases_lost_total{reason=\"expired\"} 3\nanalysisfleet_leases_lost_total{reason=\"fenced\"} 4\n"))
	require.Equal(t, workerMetrics{ok: true, goroutines: 1234, heapInuse: 54525952, inflight: 998, leasesLost: 7}, m)
}

func TestWarningsCountsLevelsAboveInfo(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "w.log")
	log := `{"level":"info","msg":"job started"}
{"level":"warn","msg":"lease lost"}
{"level":"warn","msg":"lease lost"}
{"level":"error","msg":"vendor cancel failed"}
panic: boom
`
	require.NoError(t, os.WriteFile(path, []byte(log), 0o600))
	require.Equal(t, map[string]int{"warn: lease lost": 2, "error: vendor cancel failed": 1, "(not JSON)": 1}, warnings(path))
	require.Equal(t, `{"level":"error","msg":"vendor cancel failed"}`+"\npanic: boom", tail(path, 2))
}

func TestTableShowsEveryRunAndWhyOneStopped(t *testing.T) {
	t.Parallel()
	steady := &Result{Jobs: 1000, InFlight: 1000, Steady: true, AdmissionSeconds: 2, AdmissionRate: 500,
		Idle: Phase{RSS: 20 << 20}, RSSPerJob: 50 << 10, RedisBytesPerJob: 1 << 10,
		Window: &Phase{RSS: 70 << 20, CPU: 0.5, RedisCommands: 1300, RedisByCommand: map[string]float64{"evalsha": 1000, "get": 300},
			SampleDB: Traffic{Requests: 14, BytesOut: 12.4e6}, Vendors: map[string]Traffic{"cbc": {Requests: 134, Errors: 2}}},
		Aborts: &Aborts{Requested: 50, Aborted: 50, P50: 1.2, P99: 2.5}}
	partial := &Result{Jobs: 100000, Admitted: 40000, InFlight: 40000, LastRSS: 3 << 30,
		Note: "stopped during admission: the worker's RSS passed the limit"}
	slow := &Result{Jobs: 20000, InFlight: 20000, Window: &Phase{WorkerInFlight: 15000, LeasesHeld: 15001, LeasesLostBefore: 16725, LeasesClaimedBefore: 16000, LeasesLost: 3, LeasesClaimed: 100},
		Aborts: &Aborts{Requested: 100, Aborted: 21, Pending: 79, P50: 61.5, P50AtLeast: true, P99: 90, P99AtLeast: true}}
	var buf bytes.Buffer
	WriteTable(&buf, []*Result{steady, partial, slow})
	out := buf.String()
	for _, want := range []string{
		"1000", "100000", "1000 of 1000", "40000 of 100000 (not steady)", "500 jobs/s (2.0 s)",
		"20 MiB → 70 MiB", "3072 MiB (last seen)", "50.0 KiB", "evalsha 1000, get 300",
		"12.4 MB/s", "CB Cloud requests/s", "134 (2.00 errors/s)", "1.20 s / 2.50 s (50 of 50 aborted)",
		"15000 (leases held 15001)", "16725, 16000; 3, 100", "≥ 61.5 s / ≥ 90.0 s (21 of 100 aborted, 79 not ended)",
		"N=100000: stopped during admission",
	} {
		require.Contains(t, out, want)
	}
}
