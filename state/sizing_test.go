package state_test

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/state"
)

// The figures of SIZING.md: what one job costs the one slot its fleet lives
// in, counted by Redis itself (INFO commandstats counts the commands a
// script runs, and EVALSHA once per round trip) and weighed by it (MEMORY
// USAGE, used_memory), on a private redis-server so nothing else runs
// there. `go test -run Sizing -v ./state/` prints them.

// sizingMsg is a job-creation record as SampleDB posts it (job/bench_test.go).
const sizingMsg = `{"jobID":"12345678-1234-1234-1234-123456789abc","submission":{"id":"abcdef01-abcd-abcd-abcd-abcdef012345","customer":"customerid","sample":{"id":"8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"},"createdByUser":{"id":0,"shortName":"sn","name":"name","customer":null,"domain":null},"createdTimestamp":123,"name":"fielname.exe","timestamp":124,"mimeType":"application/octet-stream","metaData":{"key":"value","sensorIds":[1,2]},"tlp":"white","acl":[],"userAgent":{"name":"python-requests","version":"3"}},"classification":{"sample":"8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9","classificationID":"12345678-1234-1234-1234-123456789012","createdTimestamp":123,"version":"1","type":"PE","superType":"executable","arch":"x86","platform":"win","meta":{}}}`

// sizingKinds is the default playbook for a Windows sample with sensors:
// every task runs.
var sizingKinds = []string{edr.KindCBCEventExport, edr.KindSophosXDR, edr.KindCytomicOSQuery, edr.KindCBLRTriage}

// sizingProgress is how many polls per task report new progress (each one
// checkpoint).
const sizingProgress = 2

type sizing struct {
	t   *testing.T
	rdb *redis.Client
	s   *state.Store
}

func newSizing(t *testing.T) *sizing {
	srv, err := testenv.StartRedis()
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: srv.Socket})
	t.Cleanup(func() { rdb.Close() })
	s, err := state.New(rdb, state.Config{}) // the defaults: namespace, 30s leases, 7-day tombstones
	require.NoError(t, err)
	require.NoError(t, s.Load(ctx(t)))
	return &sizing{t: t, rdb: rdb, s: s}
}

// cmdCount is one phase's INFO commandstats: round trips (EVALSHA), the
// commands the scripts ran, and the server time they took.
type cmdCount struct {
	evalsha int
	inner   map[string]int
	usec    int // server time of the EVALSHAs, scripts included
}

func (c cmdCount) total() int {
	n := 0
	for _, v := range c.inner {
		n += v
	}
	return n
}

func (c cmdCount) String() string {
	names := make([]string, 0, len(c.inner))
	for k := range c.inner {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s=%d", k, c.inner[k])
	}
	return fmt.Sprintf("round trips %d, commands %d (%s), %d µs", c.evalsha, c.total(), strings.Join(parts, " "), c.usec)
}

// measure runs fn with the server's command statistics reset before.
func (z *sizing) measure(fn func()) cmdCount {
	c := ctx(z.t)
	require.NoError(z.t, z.rdb.ConfigResetStat(c).Err())
	fn()
	info, err := z.rdb.Info(c, "commandstats").Result()
	require.NoError(z.t, err)
	out := cmdCount{inner: map[string]int{}}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		f := map[string]int{}
		for kv := range strings.SplitSeq(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			f[k], _ = strconv.Atoi(v)
		}
		switch name {
		case "config|resetstat", "info": // this measurement's own
		case "evalsha", "eval":
			out.evalsha += f["calls"]
			out.usec += f["usec"]
		default:
			out.inner[name] += f["calls"]
		}
	}
	return out
}

func (z *sizing) usedMemory() int64 {
	info, err := z.rdb.Info(ctx(z.t), "memory").Result()
	require.NoError(z.t, err)
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(z.t, err)
			return n
		}
	}
	z.t.Fatal("no used_memory in INFO memory")
	return 0
}

func (z *sizing) memoryUsage(key string) int64 {
	n, err := z.rdb.MemoryUsage(ctx(z.t), key, 0).Result() // SAMPLES 0: every element
	require.NoError(z.t, err)
	return n
}

func sizingID(i int) string { return fmt.Sprintf("%08x-1234-1234-1234-123456789abc", i) }

func (z *sizing) admit(worker string, from, n int) []state.Lease {
	reqs := make([]state.AdmitRequest, n)
	for i := range reqs {
		reqs[i] = state.AdmitRequest{ID: sizingID(from + i), Msg: []byte(sizingMsg), Source: "Sample.Analysis.Job.OSL/3@" + strconv.Itoa(123456+from+i)}
	}
	res, _, err := z.s.Admit(ctx(z.t), worker, reqs)
	require.NoError(z.t, err)
	out := make([]state.Lease, n)
	for i, r := range res {
		require.Equal(z.t, state.Admitted, r.Outcome)
		out[i] = r.Lease
	}
	return out
}

// sizingTask returns the checkpoints a task writes in its life, in order:
// the SampleDB task ID, the start intent, the vendor reference, progress,
// the end (with its result), SampleDB's acknowledgement.
func sizingTask(id string, kind string, result *edr.Result) []*state.TaskCheckpoint {
	cp := state.TaskCheckpoint{Kind: kind}
	var out []*state.TaskCheckpoint
	step := func(f func(*state.TaskCheckpoint)) {
		f(&cp)
		c := cp
		out = append(out, &c)
	}
	step(func(c *state.TaskCheckpoint) { c.TaskID = "5f0c6a3e-8d1b-4c52-9f43-2a7b9e1d0c88" })
	step(func(c *state.TaskCheckpoint) {
		c.Attempts = 1
		c.Intent = &edr.Intent{Key: id + "/" + kind + "/17.1", At: 1795437046000}
	})
	step(func(c *state.TaskCheckpoint) {
		c.Ref, c.Started = []byte(`{"id":"4522b6f0-1c2d-4e5f-8a9b-0c1d2e3f4a5b","org":"7DESJ9GN"}`), 1795437046500
	})
	for p := range sizingProgress {
		step(func(c *state.TaskCheckpoint) { c.Progress = fmt.Sprintf("running: %d of 3 hosts answered", p+1) })
	}
	step(func(c *state.TaskCheckpoint) { c.State, c.Ended, c.Result = "success", 1795440646000, result })
	step(func(c *state.TaskCheckpoint) { c.Reported = true })
	return out
}

var sizingResult = &edr.Result{Rows: 18234, Hosts: []string{"WS-0042", "WS-0043", "SRV-FILE01"}, HostsTotal: 3,
	Notes: []string{"1 of 3 machines answered after the first poll"}}

// sizingBigResult is a result with every list at its cap (edr.MaxListed).
func sizingBigResult() *edr.Result {
	r := &edr.Result{Rows: 1 << 30, HostsTotal: 5000}
	for i := range edr.MaxListed {
		host := fmt.Sprintf("WORKSTATION-%04d.corp.example.com", i)
		r.Hosts = append(r.Hosts, host)
		r.Files = append(r.Files, edr.File{Host: host, Path: `C:\Users\someone\AppData\Local\Temp\fielname.exe`, Size: 123456,
			SHA256: "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9", Matches: true})
	}
	return r
}

// life writes one job's whole ledger life after admission: plan, every
// task's checkpoints, decision, completion. It returns the Store calls made.
func (z *sizing) life(l state.Lease, result *edr.Result) int {
	c := ctx(z.t)
	plan := make([]state.PlannedTask, len(sizingKinds))
	for i, k := range sizingKinds {
		plan[i] = state.PlannedTask{Kind: k, Timeout: state.Duration(2 * time.Hour)}
	}
	calls := 1
	require.NoError(z.t, z.s.Checkpoint(c, "w1", l, must2(state.PlanField(plan))...))
	for _, k := range sizingKinds {
		for _, cp := range sizingTask(l.ID, k, result) {
			require.NoError(z.t, z.s.Checkpoint(c, "w1", l, must2(cp.Field())...))
			calls++
		}
	}
	out := state.Outcome{State: "success", By: "w1", At: 1795440650000}
	_, err := z.s.Decide(c, "w1", l, out.Encode())
	require.NoError(z.t, err)
	require.NoError(z.t, z.s.Complete(c, "w1", l, "success"))
	return calls + 2
}

func must2(name, value string) []string { return []string{name, value} }

// TestSizingOneJobOnOneSlot measures the commands and bytes one job costs
// its fleet's slot, and holds them to budgets so that a change that makes a
// job much dearer fails here (and SIZING.md is measured again).
func TestSizingOneJobOnOneSlot(t *testing.T) {
	t.Parallel()
	z := newSizing(t)
	c := ctx(t)
	pfx := "{" + state.DefaultNamespace + "}:"

	// Admission: one round trip per batch, commands per job.
	var batch []state.Lease
	adm := z.measure(func() { batch = z.admit("w1", 0, 100) })
	require.Equal(t, 1, adm.evalsha, "a batch is one round trip")
	t.Logf("admit, batch of 100: %s", adm)

	// One job's life after admission.
	var calls int
	life := z.measure(func() { calls = z.life(batch[0], sizingResult) })
	require.Equal(t, calls, life.evalsha, "every ledger write is one round trip")
	require.Equal(t, 1+len(sizingKinds)*(5+sizingProgress)+2, calls)
	t.Logf("life of one job (%d tasks, %d progress checkpoints each): %s", len(sizingKinds), sizingProgress, life)
	perJob := adm.total()/100 + life.total()
	require.LessOrEqual(t, perJob, 160, "commands per job lifetime, without renewals and vendor budget")
	t.Logf("commands per job lifetime without renewals: %d", perJob)

	// One renewal tick with 1 and 1000 leases: the per-lease part.
	one := z.measure(func() {
		_, err := z.s.Renew(c, "w1", batch[1:2])
		require.NoError(t, err)
	})
	many := z.admit("w2", 1000, 1000)
	thousand := z.measure(func() {
		res, err := z.s.Renew(c, "w2", many)
		require.NoError(t, err)
		require.Empty(t, res.Lost)
	})
	require.Equal(t, 1, thousand.evalsha)
	t.Logf("renew tick, 1 lease: %s", one)
	t.Logf("renew tick, 1000 leases: %s; per lease %.2f commands, %.2f µs", thousand,
		float64(thousand.total()-one.total())/999, float64(thousand.usec-one.usec)/999)

	// A claim tick that finds nothing expired; a rate limiter's ask.
	claim := z.measure(func() {
		got, _, err := z.s.Claim(c, "w3", 100)
		require.NoError(t, err)
		require.Empty(t, got)
	})
	t.Logf("claim tick, nothing expired: %s", claim)
	rl := z.s.RateLimiter("cbc:org", 1000, 1000, nil)
	ask := z.measure(func() { require.NoError(t, rl.Wait(c)) })
	fair := z.measure(func() { require.NoError(t, rl.ForTenant("acme").Wait(c)) })
	t.Logf("vendor budget per vendor call: %s; per tenant: %s", ask, fair)
	// The limiter's keys live about one interval past their last use (the
	// tenants set two FairWindows): weigh a slow credential's at once.
	slow := z.s.RateLimiter("sophos:slow", 0.01, 1, nil)
	require.NoError(t, slow.ForTenant("acme").Wait(c))
	slow.Throttled(c, time.Minute)
	t.Logf("rate limit keys: tat %d B, cool-down %d B, tenant tat %d B, tenants %d B", z.memoryUsage(pfx+"rl:sophos:slow"),
		z.memoryUsage(pfx+"cool:sophos:slow"), z.memoryUsage(pfx+"rl:sophos:slow:t:acme"), z.memoryUsage(pfx+"rl:sophos:slow:tenants"))

	// Bytes: one record, as admitted and with every checkpoint written.
	l := z.admit("w1", 5000, 1)[0]
	admitted := z.memoryUsage(pfx + "job:" + l.ID)
	plan := make([]state.PlannedTask, len(sizingKinds))
	for i, k := range sizingKinds {
		plan[i] = state.PlannedTask{Kind: k, Timeout: state.Duration(2 * time.Hour)}
	}
	kv := must2(state.PlanField(plan))
	for _, k := range sizingKinds {
		cps := sizingTask(l.ID, k, sizingResult)
		kv = append(kv, must2(cps[len(cps)-1].Field())...)
	}
	require.NoError(t, z.s.Checkpoint(c, "w1", l, kv...))
	full := z.memoryUsage(pfx + "job:" + l.ID)
	rec, err := z.s.Get(c, l.ID)
	require.NoError(t, err)
	payload := len(rec.Msg) + len(rec.Source)
	for k, v := range rec.Fields {
		payload += len(k) + len(v)
	}
	enc, err := z.rdb.ObjectEncoding(c, pfx+"job:"+l.ID).Result()
	require.NoError(t, err)
	t.Logf("record encoding: %s", enc)
	t.Logf("record: %d B admitted (msg %d B), %d B with plan and %d finished tasks (%d B of field names and values)",
		admitted, len(sizingMsg), full, len(sizingKinds), payload)
	require.Less(t, full, int64(8<<10), "a record with four finished tasks")

	big := z.admit("w1", 5001, 1)[0]
	kv = must2(state.PlanField(plan))
	for _, k := range sizingKinds {
		cps := sizingTask(big.ID, k, sizingBigResult())
		kv = append(kv, must2(cps[len(cps)-1].Field())...)
	}
	require.NoError(t, z.s.Checkpoint(c, "w1", big, kv...))
	t.Logf("record with every result list at its cap (%d hosts, %d files per task): %d B",
		edr.MaxListed, edr.MaxListed, z.memoryUsage(pfx+"job:"+big.ID))

	// Bytes per in-flight job, all included (record, lease, key space), and
	// per tombstone: used_memory over 2000 jobs.
	const n = 2000
	logBefore := z.memoryUsage(pfx + "leaselog")
	start := z.usedMemory()
	before := start
	var leases []state.Lease
	for i := range n / 500 {
		leases = append(leases, z.admit("w4", 10000+i*500, 500)...)
	}
	for _, l := range leases {
		kv := must2(state.PlanField(plan))
		for _, k := range sizingKinds {
			cps := sizingTask(l.ID, k, sizingResult)
			kv = append(kv, must2(cps[len(cps)-1].Field())...)
		}
		require.NoError(t, z.s.Checkpoint(c, "w4", l, kv...))
	}
	logMid := z.memoryUsage(pfx + "leaselog")
	inflight := (z.usedMemory() - before - (logMid - logBefore)) / n
	t.Logf("per in-flight job (record, lease, key space; lease log apart): %d B", inflight)

	for _, l := range leases {
		_, err := z.s.Decide(c, "w4", l, state.Outcome{State: "success", By: "w4", At: 1795440650000}.Encode())
		require.NoError(t, err)
	}
	t.Logf("outbox: %d B for %d decided jobs", z.memoryUsage(pfx+"outbox"), n)

	// Completed, nothing of the jobs is left but tombstones and log entries.
	for _, l := range leases {
		require.NoError(t, z.s.Complete(c, "w4", l, "success"))
	}
	logAfter := z.memoryUsage(pfx + "leaselog")
	tombs := (z.usedMemory() - start - (logAfter - logBefore)) / n
	ttl, err := z.rdb.PTTL(c, pfx+"tomb:"+leases[0].ID).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, 6*24*time.Hour)
	entries, err := z.rdb.XLen(c, pfx+"leaselog").Result()
	require.NoError(t, err)
	t.Logf("per tombstone (TTL %s): %d B (MEMORY USAGE of the key alone: %d B)", state.DefaultTombstoneTTL, tombs,
		z.memoryUsage(pfx+"tomb:"+leases[0].ID))
	t.Logf("lease log: %d entries, %d B, %.0f B per entry (capped near 100,000 entries)", entries, logAfter,
		float64(logAfter)/float64(entries))
	require.Less(t, tombs, int64(256), "a tombstone")
	t.Logf("worker key: %d B, its entry in %sworkers with it", z.memoryUsage(pfx+"worker:w2"), pfx)

}
